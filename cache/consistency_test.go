package cache

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/goaspire/goaspire/testserver"
)

// TestSkewedWriteBeatsStaleLoad: a Set or Remove made during a load by an
// instance whose clock is a second behind wins over the load, whichever
// way the load holds the lock (the lock envelope under an absent key, the
// lock key over a tombstone, or no lock): Redis, not the clocks, says the
// load is older.
func TestSkewedWriteBeatsStaleLoad(t *testing.T) {
	srv := testserver.NewRedis(t)
	tests := []struct {
		name   string
		remove bool // the write is a Remove (else a Set)
		tomb   bool // Redis holds a tombstone when the load starts (the lock key)
		noLock bool
	}{
		{"Set over the lock envelope", false, false, false},
		{"Remove over the lock envelope", true, false, false},
		{"Set with the lock key", false, true, false},
		{"Remove with the lock key", true, true, false},
		{"Set without lock", false, true, true},
		{"Remove without lock", true, true, true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := fmt.Sprint("skew", i)
			rdbA := openClient(t, srv)
			a := newCache[product](t, rdbA, name, Options{})
			b := newCache[product](t, openClient(t, srv), name, Options{})
			b.skew = -time.Second // b's clock is a second behind
			waitSubscribed(t, rdbA, a.channel, 2)
			ctx := context.Background()
			if tt.tomb {
				if err := a.Remove(ctx, "k"); err != nil {
					t.Fatal(err)
				}
			}
			var opts []EntryOption
			if tt.noLock {
				opts = append(opts, WithoutDistributedLock())
			}
			started, release, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
			go func() {
				defer close(done)
				_, _ = a.GetOrLoad(ctx, "k", func(context.Context) (product, error) {
					close(started)
					<-release
					return sampleProduct(1), nil // read from the database before the write
				}, opts...)
			}()
			<-started
			if tt.remove {
				if err := b.Remove(ctx, "k"); err != nil {
					t.Fatal(err)
				}
			} else if err := b.Set(ctx, "k", sampleProduct(2)); err != nil {
				t.Fatal(err)
			}
			close(release)
			<-done

			fresh := newCache[product](t, openClient(t, srv), name, Options{})
			v, ok := fresh.Get(ctx, "k")
			switch {
			case tt.remove && ok:
				t.Errorf("Redis serves %+v after the Remove; the load brought the old value back", v)
			case !tt.remove && (!ok || v.ID != 2):
				t.Errorf("Redis serves %+v, %v; want the Set's value", v, ok)
			}
		})
	}
}

// isRenewal reports whether cmd renews a lock lease.
func isRenewal(cmd redis.Cmder) bool {
	args := cmd.Args()
	if len(args) < 2 || cmd.Name() != "evalsha" {
		return false
	}
	sha, _ := args[1].(string)
	return sha == renew.Hash() || sha == renewEnvelope.Hash()
}

// lostReplyHook lets the first store of a loaded value into dk (once
// armed) run on the server, then reports a timeout to the client, as when
// the reply is lost on the network.
type lostReplyHook struct {
	dk    string
	armed atomic.Bool
	hits  atomic.Int32
}

func (h *lostReplyHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *lostReplyHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h *lostReplyHook) isStore(cmd redis.Cmder) bool {
	args := cmd.Args()
	if !slices.Contains(args, any(h.dk)) || isRenewal(cmd) {
		return false
	}
	switch cmd.Name() {
	case "set":
		return !slices.Contains(args, any("nx")) // not the read taking the lock
	case "evalsha", "eval":
		return true
	}
	return false
}

func (h *lostReplyHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !h.armed.Load() || !h.isStore(cmd) || !h.armed.CompareAndSwap(true, false) {
			return next(ctx, cmd)
		}
		_ = next(ctx, cmd)
		h.hits.Add(1)
		err := &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}
		cmd.SetErr(err)
		return err
	}
}

// TestLostStoreReplyKeepsNewerWrite: the store ending a load under the
// lock runs on Redis but its reply is lost (a timeout): the Set made
// during the load is still what Redis serves.
func TestLostStoreReplyKeepsNewerWrite(t *testing.T) {
	srv := testserver.NewRedis(t)
	rdbA := openClient(t, srv)
	a := newCache[product](t, rdbA, "lostreply", Options{})
	h := &lostReplyHook{dk: a.dataKey("k")}
	rdbA.AddHook(h)
	b := newCache[product](t, openClient(t, srv), "lostreply", Options{})
	waitSubscribed(t, rdbA, a.channel, 2)
	ctx := context.Background()
	started, release, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		_, _ = a.GetOrLoad(ctx, "k", func(context.Context) (product, error) {
			close(started)
			<-release
			return sampleProduct(1), nil
		})
	}()
	<-started
	if err := b.Set(ctx, "k", sampleProduct(2)); err != nil {
		t.Fatal(err)
	}
	h.armed.Store(true)
	close(release)
	<-done
	if h.hits.Load() != 1 {
		t.Fatalf("the store's reply was lost %d times; want 1 (the hook did not see the store)", h.hits.Load())
	}
	fresh := newCache[product](t, openClient(t, srv), "lostreply", Options{})
	if v, ok := fresh.Get(ctx, "k"); !ok || v.ID != 2 {
		t.Errorf("Redis serves %+v, %v after the lost reply; want the Set's value", v, ok)
	}
}

// renewalHook fails the first renewal it sees (without sending it), and
// counts the renewals sent after it, and the largest number of renewals
// in one round trip.
type renewalHook struct {
	failOnce atomic.Bool // fail the next renewal
	failed   atomic.Bool
	after    atomic.Int64 // renewals sent after the failure
	maxBatch atomic.Int64
}

func (h *renewalHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *renewalHook) renewals(cmds []redis.Cmder) int64 {
	n := int64(0)
	for _, cmd := range cmds {
		if isRenewal(cmd) {
			n++
		}
	}
	return n
}

func (h *renewalHook) round(cmds []redis.Cmder) error {
	n := h.renewals(cmds)
	if n == 0 {
		return nil
	}
	if h.failOnce.CompareAndSwap(true, false) {
		err := errors.New("injected renewal failure")
		for _, cmd := range cmds {
			cmd.SetErr(err)
		}
		h.failed.Store(true)
		return err
	}
	if h.failed.Load() {
		h.after.Add(n)
	}
	for {
		m := h.maxBatch.Load()
		if n <= m || h.maxBatch.CompareAndSwap(m, n) {
			return nil
		}
	}
}

func (h *renewalHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if err := h.round([]redis.Cmder{cmd}); err != nil {
			return err
		}
		return next(ctx, cmd)
	}
}

func (h *renewalHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if err := h.round(cmds); err != nil {
			return err
		}
		return next(ctx, cmds)
	}
}

// TestRenewalFailingOnceKeepsLock: one renewal that fails (a transient
// error) does not drop the lock: the next ones extend it, and the lock
// envelope is still under the key several leases later.
func TestRenewalFailingOnceKeepsLock(t *testing.T) {
	srv := testserver.NewRedis(t)
	rdbA := openClient(t, srv)
	h := &renewalHook{}
	h.failOnce.Store(true)
	rdbA.AddHook(h)
	a := newCache[product](t, rdbA, "renewfail", Options{
		// A lease of 500 ms, and no Redis operation timing out on a
		// loaded machine (the lock would be lost for another reason).
		LockTimeout: 2 * time.Second, L2Timeout: 5 * time.Second,
	})
	ctx := context.Background()
	started, release, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		_, _ = a.GetOrLoad(ctx, "k", func(context.Context) (product, error) {
			close(started)
			<-release
			return sampleProduct(1), nil
		})
	}()
	<-started
	defer func() { close(release); <-done }()
	eventually(t, 5*time.Second, "a renewal failed", h.failed.Load)
	// Five renewals after the failure: more than a lease (three per lease).
	eventually(t, 10*time.Second, "renewals after the failed one", func() bool { return h.after.Load() >= 5 })
	s, err := openClient(t, srv).Get(ctx, a.dataKey("k")).Result()
	if err != nil || (s != a.lockEnv && s != a.lockEnv+"w") {
		t.Errorf("the key holds %q, %v mid-load; want the holder's lock envelope", s, err)
	}
}

// TestRenewalsPipelined: the leases of many held locks are renewed in one
// round trip, not one per lock.
func TestRenewalsPipelined(t *testing.T) {
	const n = 200
	srv := testserver.NewRedis(t)
	rdbA := openClient(t, srv)
	h := &renewalHook{}
	rdbA.AddHook(h)
	a := newCache[product](t, rdbA, "renewmany", Options{
		// A lease of 1 s, and no Redis operation timing out (which opens
		// the breaker, and loads go on without the lock) on a loaded machine.
		LockTimeout: 4 * time.Second, L2Timeout: 5 * time.Second,
	})
	ctx := context.Background()
	var started sync.WaitGroup
	var done sync.WaitGroup
	release := make(chan struct{})
	started.Add(n)
	done.Add(n)
	for i := range n {
		go func() {
			defer done.Done()
			_, _ = a.GetOrLoad(ctx, fmt.Sprint("k", i), func(context.Context) (product, error) {
				started.Done()
				<-release
				return sampleProduct(i), nil
			})
		}()
	}
	defer func() { close(release); done.Wait() }()
	started.Wait()
	eventually(t, 10*time.Second, fmt.Sprintf("%d renewals in one round trip", n), func() bool { return h.maxBatch.Load() >= n })
}
