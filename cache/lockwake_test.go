package cache

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/goaspire/goaspire/testserver"
)

// TestLockHolderTellsOnlyWaiters: on a single-node client, an instance
// that fails to take a key's lock marks the holder's lock envelope, and
// the holder publishes "loaded" (waking it) exactly when the mark is
// there; a load nobody waited for publishes nothing.
func TestLockHolderTellsOnlyWaiters(t *testing.T) {
	srv := testserver.NewRedis(t)
	tests := []struct {
		name   string
		waiter bool
	}{
		{"nobody waits", false},
		{"another instance waits", true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := fmt.Sprint("wake", i)
			rdbA := openClient(t, srv)
			a := newCache[int](t, rdbA, name, Options{})
			b := newCache[int](t, openClient(t, srv), name, Options{})
			waitSubscribed(t, rdbA, a.channel, 2)
			ctx := context.Background()

			sub := rdbA.Subscribe(ctx, a.channel)
			defer sub.Close()
			if _, err := sub.Receive(ctx); err != nil {
				t.Fatal(err)
			}

			started, release := make(chan struct{}), make(chan struct{})
			done := make(chan error, 1)
			go func() {
				_, err := a.GetOrLoad(ctx, "k", func(context.Context) (int, error) {
					close(started)
					<-release
					return 1, nil
				})
				done <- err
			}()
			<-started
			bDone := make(chan error, 1)
			if tt.waiter {
				go func() {
					v, err := b.GetOrLoad(ctx, "k", func(context.Context) (int, error) { return 2, nil })
					if err == nil && v != 1 {
						err = fmt.Errorf("B got %d, want A's 1", v)
					}
					bDone <- err
				}()
				eventually(t, 5*time.Second, "B marks A's lock envelope", func() bool {
					s, err := rdbA.Get(ctx, a.dataKey("k")).Result()
					return err == nil && isLockEnvelope(s) && strings.HasSuffix(s, "w")
				})
			}
			close(release)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if tt.waiter {
				if err := <-bDone; err != nil {
					t.Fatal(err)
				}
				if b.Stats().Loads != 0 {
					t.Errorf("B loaded; want it to wait for A")
				}
			}
			// Everything published before the sentinel arrives first.
			if err := rdbA.Publish(ctx, a.channel, "sentinel").Err(); err != nil {
				t.Fatal(err)
			}
			loaded := 0
			for msg := range sub.Channel() {
				if msg.Payload == "sentinel" {
					break
				}
				if strings.Contains(msg.Payload, "|l|k") {
					loaded++
				}
			}
			if want := map[bool]int{false: 0, true: 1}[tt.waiter]; loaded != want {
				t.Errorf("%d loaded messages, want %d", loaded, want)
			}
			if s, err := rdbA.Get(ctx, a.dataKey("k")).Result(); err != nil || isLockEnvelope(s) {
				t.Errorf("Redis holds %q, %v; want the value, the lock envelope gone", s, err)
			}
		})
	}
}
