package cache

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/goaspire/goaspire/testserver"
)

// TestBusAcrossRotations: the invalidation subscription of a cache whose
// client's credentials rotate moves to a connection of the new user before
// the old token expires; killing the old user's connections after each
// rotation (Azure closing the connections of an expired token) then does
// not touch it. Invalidations from another instance keep arriving, and the
// cache never flushes L1 for a reconnection (Stats.Reconnects stays 0),
// which a subscription left on its first connection would do.
func TestBusAcrossRotations(t *testing.T) {
	srv := testserver.NewRedis(t)
	src := newRotatingUsers(t, srv, 6*time.Second) // refreshed after 4.5 s
	rdb := newCredentialedClient(t, srv, src.fetch, 2)
	t.Cleanup(func() { _ = CredentialsProviderOf(rdb).Close() })
	a := newCache[product](t, rdb, "rot", Options{L1TTL: time.Hour})
	b := newCache[product](t, openClient(t, srv), "rot", Options{L1TTL: time.Hour})
	waitSubscribed(t, src.admin, a.channel, 2)
	ctx := context.Background()

	// A writer on the other instance updates a key without pause; the
	// reader on a must see every update through its L1.
	var written atomic.Int64
	stop, done := make(chan struct{}), make(chan struct{})
	var stopOnce sync.Once
	halt := func() {
		stopOnce.Do(func() { close(stop) })
		<-done
	}
	t.Cleanup(halt)
	go func() {
		defer close(done)
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := b.Set(ctx, "k", sampleProduct(i)); err != nil {
				t.Errorf("Set %d: %v", i, err)
				return
			}
			written.Store(int64(i))
			time.Sleep(2 * time.Millisecond)
		}
	}()
	pubsubUsers := func() []string {
		var users []string
		for _, u := range src.appClients(t) {
			if u, ok := strings.CutSuffix(u, "/pubsub"); ok {
				users = append(users, u)
			}
		}
		return users
	}
	for gen := 2; gen <= 4; gen++ {
		eventually(t, 30*time.Second, "credentials generation "+strconv.Itoa(gen), func() bool { return src.generation() >= gen })
		want := "app" + strconv.Itoa(gen)
		moved := false
		for deadline := time.Now().Add(15 * time.Second); !moved && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			users := pubsubUsers()
			moved = len(users) == 1 && genOf(users[0]) >= gen // the next rotation may come first
		}
		if !moved {
			t.Errorf("rotation to %s: the invalidation subscription is on %v", want, pubsubUsers())
		}
		if err := src.admin.Do(ctx, "CLIENT", "KILL", "USER", "app"+strconv.Itoa(gen-1)).Err(); err != nil && !strings.Contains(err.Error(), "No such user") {
			t.Fatal(err)
		}
		// a keeps seeing b's writes: its L1 entry is invalidated.
		seen := written.Load()
		eventually(t, 15*time.Second, "an invalidation after the rotation to "+want, func() bool {
			v, _ := a.Get(ctx, "k")
			return int64(v.ID) > seen
		})
	}
	halt()
	last := written.Load()
	eventually(t, 15*time.Second, "the last write", func() bool {
		v, _ := a.Get(ctx, "k")
		return int64(v.ID) == last
	})
	s := a.Stats()
	if s.Reconnects != 0 {
		t.Errorf("Stats.Reconnects = %d, want 0: the subscription reconnected", s.Reconnects)
	}
	if s.InvalidationsReceived == 0 {
		t.Error("no invalidation received")
	}
	t.Logf("%d writes, %d invalidations received, %d L1 hits", last, s.InvalidationsReceived, s.L1Hits)
}
