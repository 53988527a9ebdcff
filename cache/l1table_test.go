package cache

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

// TestL1TableChurn: entries stored, replaced and removed many times over
// (growing, shrinking and rebuilding the open-addressing tables, leaving
// deleted marks for probes to step over) are found exactly while they are
// stored, by lock-free readers running meanwhile too.
func TestL1TableChurn(t *testing.T) {
	c := newL1[int](1<<20, 1)
	if c.hash("k1") == c.hash("k2") || c.hash("key-1") == c.hash("key-2") || c.hash("") == c.hash("a") {
		t.Fatal("the inline hash collides on neighbouring keys")
	}
	const n = 3000
	keys := make([]string, n)
	for i := range keys {
		// Every length the hash treats apart: 1-3, 4-7, 8-16, longer.
		keys[i] = fmt.Sprint([]string{"", "key-", "a-longer-key-", "a-key-longer-than-sixteen-bytes-"}[i%4], i)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				k := keys[i%n]
				if e := c.getFresh(k, 0); e != nil && (e.key != k || e.value != i%n) {
					t.Errorf("getFresh(%s) = entry %s %d", k, e.key, e.value)
					return
				}
			}
		}()
	}
	set := func(i int) { c.set(&entry[int]{key: keys[i], value: i, fresh: 1, stale: 1, cost: 1}, 0, false) }
	for round := range 5 {
		for i := range n {
			set(i)
		}
		for i := round % 2; i < n; i += 2 {
			if !c.remove(keys[i]) {
				t.Fatalf("round %d: remove(%s) found nothing", round, keys[i])
			}
		}
		for i := range n {
			e := c.get(keys[i])
			if removed := i%2 == round%2; removed != (e == nil) {
				t.Fatalf("round %d: get(%s) = %v, removed %v", round, keys[i], e, removed)
			}
		}
		if got, want := c.len(), n/2; got != want {
			t.Fatalf("round %d: %d entries, want %d", round, got, want)
		}
		for i := range n {
			set(i) // replaces half, adds the other half back
		}
		if got := c.len(); got != n {
			t.Fatalf("round %d: %d entries after refilling, want %d", round, got, n)
		}
		c.clear()
		if e := c.get(keys[0]); e != nil || c.len() != 0 {
			t.Fatalf("round %d: clear left %v, %d entries", round, e, c.len())
		}
	}
	stop.Store(true)
	wg.Wait()
}
