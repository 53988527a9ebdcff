package cache

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	rediscache "github.com/go-redis/cache/v9"
	"github.com/maypok86/otter/v2"

	"github.com/goaspire/goaspire/testserver"
)

// The peer benchmarks put the cache beside the Go libraries a service
// would otherwise use, as sub-benchmarks of one benchmark so that -count
// interleaves them:
//
//	BenchmarkPeersL1Hit          cache | otter v2 GetIfPresent | map+RWMutex
//	BenchmarkPeersL1HitParallel  the same under RunParallel, 1024 keys
//	BenchmarkPeersL2Hit          cache without L1 | go-redis/cache Get without local cache
//	BenchmarkPeersMiss           cache GetOrLoad (cancellable context; with and without
//	                             the distributed lock) | go-redis/cache Once
//
// Run: go test -run XXX -bench Peers -benchmem -count 3 ./cache/

func BenchmarkPeersL1Hit(b *testing.B) {
	c := newCache[product](b, openClient(b, testserver.NewRedis(b)), "bench", Options{})
	ctx := context.Background()
	if _, err := c.GetOrLoad(ctx, "p1", benchLoader); err != nil {
		b.Fatal(err)
	}
	oc := newOtter(b)
	oc.Set("p1", sampleProduct(1))
	m := &rwMap{m: map[string]product{"p1": sampleProduct(1)}}
	b.Run("cache", func(b *testing.B) {
		b.ReportAllocs()
		measureCPU(b)
		for b.Loop() {
			if v, err := c.GetOrLoad(ctx, "p1", benchLoader); err != nil || v.ID != 1 {
				b.Fatal(v, err)
			}
		}
	})
	b.Run("otter", func(b *testing.B) {
		b.ReportAllocs()
		measureCPU(b)
		for b.Loop() {
			if v, ok := oc.GetIfPresent("p1"); !ok || v.ID != 1 {
				b.Fatal(v)
			}
		}
	})
	b.Run("map-rwmutex", func(b *testing.B) {
		b.ReportAllocs()
		measureCPU(b)
		for b.Loop() {
			if v, ok := m.get("p1"); !ok || v.ID != 1 {
				b.Fatal(v)
			}
		}
	})
}

func BenchmarkPeersL1HitParallel(b *testing.B) {
	c := newCache[product](b, openClient(b, testserver.NewRedis(b)), "bench", Options{})
	ctx := context.Background()
	oc := newOtter(b)
	m := &rwMap{m: map[string]product{}}
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = fmt.Sprint("p", i)
		_ = c.Set(ctx, keys[i], sampleProduct(i))
		oc.Set(keys[i], sampleProduct(i))
		m.m[keys[i]] = sampleProduct(i)
	}
	b.Run("cache", func(b *testing.B) {
		b.ReportAllocs()
		measureCPU(b)
		b.RunParallel(func(pb *testing.PB) {
			for i := 0; pb.Next(); i++ {
				if _, err := c.GetOrLoad(ctx, keys[i&1023], benchLoader); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	b.Run("otter", func(b *testing.B) {
		b.ReportAllocs()
		measureCPU(b)
		b.RunParallel(func(pb *testing.PB) {
			for i := 0; pb.Next(); i++ {
				if _, ok := oc.GetIfPresent(keys[i&1023]); !ok {
					b.Fatal("missing")
				}
			}
		})
	})
	b.Run("map-rwmutex", func(b *testing.B) {
		b.ReportAllocs()
		measureCPU(b)
		b.RunParallel(func(pb *testing.PB) {
			for i := 0; pb.Next(); i++ {
				if _, ok := m.get(keys[i&1023]); !ok {
					b.Fatal("missing")
				}
			}
		})
	})
}

func newOtter(b *testing.B) *otter.Cache[string, product] {
	oc, err := otter.New(&otter.Options[string, product]{
		MaximumSize:      DefaultL1MaxEntries,
		ExpiryCalculator: otter.ExpiryWriting[string, product](DefaultL1TTL),
	})
	if err != nil {
		b.Fatal(err)
	}
	return oc
}

func BenchmarkPeersL2Hit(b *testing.B) {
	rdb := openClient(b, testserver.NewRedis(b))
	ctx := context.Background()
	c := newCache[product](b, rdb, "bench", Options{L1MaxEntries: -1})
	if err := c.Set(ctx, "p1", sampleProduct(1)); err != nil {
		b.Fatal(err)
	}
	peer := rediscache.New(&rediscache.Options{Redis: rdb})
	if err := peer.Set(&rediscache.Item{Ctx: ctx, Key: "peer:p1", Value: sampleProduct(1), TTL: time.Hour}); err != nil {
		b.Fatal(err)
	}
	b.Run("cache", func(b *testing.B) {
		b.ReportAllocs()
		measureCPU(b)
		for b.Loop() {
			if v, err := c.GetOrLoad(ctx, "p1", benchLoader); err != nil || v.ID != 1 {
				b.Fatal(v, err)
			}
		}
	})
	b.Run("go-redis-cache", func(b *testing.B) {
		b.ReportAllocs()
		measureCPU(b)
		for b.Loop() {
			var v product
			if err := peer.Get(ctx, "peer:p1", &v); err != nil || v.ID != 1 {
				b.Fatal(v, err)
			}
		}
	})
	b.StopTimer()
	if s := c.Stats(); s.Loads != 0 {
		b.Fatalf("stats %+v: want L2 hits only", s)
	}
}

func BenchmarkPeersMiss(b *testing.B) {
	rdb := openClient(b, testserver.NewRedis(b))
	c := newCache[product](b, rdb, "bench", Options{})
	peer := rediscache.New(&rediscache.Options{Redis: rdb, LocalCache: rediscache.NewTinyLFU(DefaultL1MaxEntries, DefaultL1TTL)})
	// A request context: cancellable.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.Run("cache", func(b *testing.B) {
		b.ReportAllocs()
		measureCPU(b)
		for b.Loop() {
			key := fmt.Sprint("m", missKeys.Add(1))
			if _, err := c.GetOrLoad(ctx, key, benchLoader); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cache-no-lock", func(b *testing.B) {
		b.ReportAllocs()
		measureCPU(b)
		for b.Loop() {
			key := fmt.Sprint("m", missKeys.Add(1))
			if _, err := c.GetOrLoad(ctx, key, benchLoader, WithoutDistributedLock()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("go-redis-cache-once", func(b *testing.B) {
		b.ReportAllocs()
		measureCPU(b)
		for b.Loop() {
			key := fmt.Sprint("peer:m", missKeys.Add(1))
			var v product
			err := peer.Once(&rediscache.Item{Ctx: ctx, Key: key, Value: &v, TTL: DefaultTTL,
				Do: func(it *rediscache.Item) (any, error) { return benchLoader(it.Ctx) }})
			if err != nil || v.ID != 1 {
				b.Fatal(v, err)
			}
		}
	})
}

// TestStampedeLoadsPerInstances reports the loader calls per stampede
// (100 callers per instance on one cold key) for 1, 2 and 4 instances,
// with and without the distributed lock.
func TestStampedeLoadsPerInstances(t *testing.T) {
	if testing.Short() {
		t.Skip("report only")
	}
	srv := testserver.NewRedis(t)
	for _, lock := range []bool{true, false} {
		for _, n := range []int{1, 2, 4} {
			name := fmt.Sprintf("report-%d-%v", n, lock)
			var caches []*Cache[int]
			for range n {
				caches = append(caches, newCache[int](t, openClient(t, srv), name, Options{}))
			}
			var mu sync.Mutex
			calls := 0
			load := func(context.Context) (int, error) {
				mu.Lock()
				calls++
				mu.Unlock()
				time.Sleep(20 * time.Millisecond)
				return 1, nil
			}
			var opts []EntryOption
			if !lock {
				opts = append(opts, WithoutDistributedLock())
			}
			var wg sync.WaitGroup
			for _, c := range caches {
				for range 100 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						if _, err := c.GetOrLoad(context.Background(), "cold", load, opts...); err != nil {
							t.Error(err)
						}
					}()
				}
			}
			wg.Wait()
			t.Logf("instances=%d distributed lock=%v: %d loader calls for %d callers", n, lock, calls, 100*n)
			if lock && calls != 1 {
				t.Errorf("%d loader calls with the lock, want 1", calls)
			}
		}
	}
}
