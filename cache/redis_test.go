package cache

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/goaspire/goaspire/testserver"
)

func TestStampede(t *testing.T) {
	srv := testserver.NewRedis(t)
	rdb := openClient(t, srv)
	c := newCache[product](t, rdb, "stampede", Options{})
	var n counter
	const callers = 500
	var wg sync.WaitGroup
	start := make(chan struct{})
	var errs atomic.Int64
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			v, err := c.GetOrLoad(context.Background(), "p1", n.loader(sampleProduct(1), nil, 50*time.Millisecond))
			if err != nil || v.ID != 1 {
				errs.Add(1)
			}
		}()
	}
	close(start)
	wg.Wait()
	if n.calls.Load() != 1 || errs.Load() != 0 {
		t.Fatalf("%d concurrent misses made %d loads and %d errors; want 1 load, 0 errors", callers, n.calls.Load(), errs.Load())
	}

	// A second instance (another client, as another process would have)
	// finds the value in Redis and does not load.
	other := newCache[product](t, openClient(t, srv), "stampede", Options{})
	v, err := other.GetOrLoad(context.Background(), "p1", n.loader(sampleProduct(99), nil, 0))
	if err != nil || v.ID != 1 || n.calls.Load() != 1 {
		t.Fatalf("second instance got %+v, %v after %d loads; want the L2 value", v, err, n.calls.Load())
	}
	if s := other.Stats(); s.L2Hits != 1 {
		t.Errorf("second instance stats %+v, want 1 L2 hit", s)
	}
}

func TestCrossInstanceInvalidation(t *testing.T) {
	srv := testserver.NewRedis(t)
	rdbA, rdbB := openClient(t, srv), openClient(t, srv)
	a := newCache[product](t, rdbA, "catalog", Options{})
	b := newCache[product](t, rdbB, "catalog", Options{})
	waitSubscribed(t, rdbA, a.channel, 2)
	ctx := context.Background()
	var n counter

	// B holds p1 in its L1 (for a minute, by default).
	if _, err := b.GetOrLoad(ctx, "p1", n.loader(sampleProduct(1), nil, 0)); err != nil {
		t.Fatal(err)
	}
	mustGet := func(c *Cache[product], key string) product {
		v, err := c.GetOrLoad(ctx, key, n.loader(product{ID: -1}, nil, 0))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}

	// Set on A reaches B's L1.
	p := sampleProduct(1)
	p.Price = 99
	start := time.Now()
	if err := a.Set(ctx, "p1", p); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Second, "B sees A's Set", func() bool { return mustGet(b, "p1").Price == 99 })
	t.Logf("Set on A visible on B after %v", time.Since(start))

	// Remove on A reaches B's L1.
	if err := a.Remove(ctx, "p1"); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Second, "B sees A's Remove", func() bool { return mustGet(b, "p1").ID == -1 })

	// RemoveByTag on A removes tagged entries from Redis and from B's L1.
	for i := range 3 {
		key := fmt.Sprint("shoe", i)
		if _, err := b.GetOrLoad(ctx, key, n.loader(sampleProduct(i), nil, 0), WithTags("shoes")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.GetOrLoad(ctx, "hat", n.loader(sampleProduct(10), nil, 0), WithTags("hats")); err != nil {
		t.Fatal(err)
	}
	if err := a.RemoveByTag(ctx, "shoes"); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Second, "B drops the tagged entries", func() bool {
		return b.l1.get("shoe0") == nil && b.l1.get("shoe1") == nil && b.l1.get("shoe2") == nil
	})
	if b.l1.get("hat") == nil {
		t.Error("RemoveByTag dropped an entry with another tag")
	}
	// A third instance, with nothing in L1, finds the tagged entries
	// expired in Redis and the other one fresh.
	third := newCache[product](t, openClient(t, srv), "catalog", Options{})
	for _, key := range []string{"shoe0", "shoe1", "shoe2"} {
		if _, ok := third.Get(ctx, key); ok {
			t.Errorf("%s is still fresh in Redis after RemoveByTag", key)
		}
	}
	if v, ok := third.Get(ctx, "hat"); !ok || v.ID != 10 {
		t.Errorf("hat = %+v, %v after removing another tag; want it fresh", v, ok)
	}
	if b.Stats().InvalidationsReceived < 3 {
		t.Errorf("B received %d invalidations, want at least 3", b.Stats().InvalidationsReceived)
	}
	if a.Stats().InvalidationsReceived != 0 {
		t.Errorf("A handled %d of its own messages", a.Stats().InvalidationsReceived)
	}
}

func TestInstancesSharingOneClient(t *testing.T) {
	srv := testserver.NewRedis(t)
	rdb := openClient(t, srv)
	a := newCache[int](t, rdb, "shared", Options{})
	b := newCache[int](t, rdb, "shared", Options{})
	other := newCache[string](t, rdb, "other", Options{})
	waitSubscribed(t, rdb, a.channel, 1)
	waitSubscribed(t, rdb, other.channel, 1)
	ctx := context.Background()
	_ = b.Set(ctx, "k", 1)
	_ = a.Set(ctx, "k", 2)
	eventually(t, time.Second, "b sees a's Set", func() bool { v, _ := b.Get(ctx, "k"); return v == 2 })
	if len(buses.m) != 1 {
		t.Errorf("%d buses for one client, want 1", len(buses.m))
	}
}

func TestStaleServedFromRedisOnLoaderFailure(t *testing.T) {
	srv := testserver.NewRedis(t)
	ctx := context.Background()
	opts := Options{TTL: 50 * time.Millisecond}
	a := newCache[product](t, openClient(t, srv), "stale", opts)
	var n counter
	if _, err := a.GetOrLoad(ctx, "p1", n.loader(sampleProduct(1), nil, 0)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	// A fresh instance has nothing in L1: the stale value comes from the
	// envelope in Redis.
	b := newCache[product](t, openClient(t, srv), "stale", opts)
	v, err := b.GetOrLoad(ctx, "p1", n.loader(product{}, errors.New("database down"), 0))
	if err != nil || v.ID != 1 {
		t.Fatalf("GetOrLoad = %+v, %v; want the stale value", v, err)
	}
	if s := b.Stats(); s.StaleServed != 1 {
		t.Errorf("stats %+v, want 1 stale served", s)
	}
}

func TestRedisKilledDuringLoad(t *testing.T) {
	srv := testserver.NewRedis(t)
	rdb := openClient(t, srv)
	c := newCache[product](t, rdb, "outage", Options{BreakDuration: 100 * time.Millisecond, L1TTL: 20 * time.Millisecond})
	db := func(key string) Loader[product] {
		return func(ctx context.Context) (product, error) {
			var id int
			_, _ = fmt.Sscan(key[1:], &id)
			return sampleProduct(id), nil
		}
	}

	var (
		stop  atomic.Bool
		calls atomic.Int64
		errs  atomic.Int64
		wg    sync.WaitGroup
		first sync.Once
		fail  error
	)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				id := rand.N(50)
				key := fmt.Sprint("p", id)
				v, err := c.GetOrLoad(context.Background(), key, db(key))
				calls.Add(1)
				if err != nil || v.ID != id {
					errs.Add(1)
					first.Do(func() { fail = fmt.Errorf("key %s: %+v, %v", key, v, err) })
				}
			}
		}()
	}
	waitCalls := func(n int64) {
		target := calls.Load() + n
		eventually(t, 10*time.Second, "load test progress", func() bool { return calls.Load() >= target })
	}
	eventually(t, 10*time.Second, "L2 hits before the outage", func() bool { return c.Stats().L2Hits > 100 })

	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	waitCalls(2000)
	eventually(t, 5*time.Second, "breaker opens", func() bool { return c.Stats().BreakerTrips > 0 })
	before := c.Stats()

	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "L2 used again", func() bool { return c.Stats().L2Hits > before.L2Hits+100 })
	eventually(t, 10*time.Second, "L1 flushed after reconnecting", func() bool { return c.Stats().Reconnects > before.Reconnects })
	waitCalls(2000)
	stop.Store(true)
	wg.Wait()

	s := c.Stats()
	t.Logf("%d calls; stats %+v", calls.Load(), s)
	if errs.Load() != 0 {
		t.Fatalf("%d of %d calls failed; first: %v", errs.Load(), calls.Load(), fail)
	}
	if s.BreakerOpen {
		t.Error("breaker still open after recovery")
	}
}

func TestWritesReplayedAfterOutage(t *testing.T) {
	srv := testserver.NewRedis(t)
	rdbA, rdbB := openClient(t, srv), openClient(t, srv)
	a := newCache[int](t, rdbA, "replay", Options{BreakDuration: 50 * time.Millisecond})
	b := newCache[int](t, rdbB, "replay", Options{})
	ctx := context.Background()
	load := func(v int) Loader[int] { return func(context.Context) (int, error) { return v, nil } }
	_, _ = b.GetOrLoad(ctx, "k", load(1))
	_, _ = b.GetOrLoad(ctx, "gone", load(1))

	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	// Writes while Redis is down succeed locally.
	if err := a.Set(ctx, "k", 2); err != nil {
		t.Fatal(err)
	}
	if err := a.Remove(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	if v, _ := a.Get(ctx, "k"); v != 2 {
		t.Fatalf("a.Get = %d during the outage, want 2", v)
	}
	if s := a.Stats(); s.PendingReplay != 2 {
		t.Fatalf("stats %+v, want 2 pending writes", s)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	// The restarted server lost its data; the replay writes k again.
	eventually(t, 10*time.Second, "writes replayed", func() bool { return a.Stats().Replayed == 2 })
	got, err := rdbA.Exists(ctx, a.dataKey("k")).Result()
	if err != nil || got != 1 {
		t.Fatalf("k in Redis after replay: %d, %v", got, err)
	}
	// B flushed its L1 when its subscription came back, and reads k from
	// Redis.
	eventually(t, 10*time.Second, "b sees the replayed value", func() bool {
		v, err := b.GetOrLoad(ctx, "k", load(-1))
		return err == nil && v == 2
	})
}

func TestRedisDownAtStart(t *testing.T) {
	srv := testserver.NewRedis(t)
	rdb := openClient(t, srv)
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	c := newCache[int](t, rdb, "late", Options{BreakDuration: 50 * time.Millisecond})
	ctx := context.Background()
	load := func(v int) Loader[int] { return func(context.Context) (int, error) { return v, nil } }
	for i := range 20 {
		v, err := c.GetOrLoad(ctx, fmt.Sprint(i), load(i))
		if err != nil || v != i {
			t.Fatalf("GetOrLoad while Redis is down: %d, %v", v, err)
		}
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "values reach Redis once it is up", func() bool {
		key := fmt.Sprint("new", rand.N(1_000_000))
		_, _ = c.GetOrLoad(ctx, key, load(0))
		n, _ := rdb.Exists(ctx, c.dataKey(key)).Result()
		return n == 1
	})
}

func TestNegativeCachingShared(t *testing.T) {
	srv := testserver.NewRedis(t)
	opts := Options{NegativeTTL: time.Minute}
	a := newCache[product](t, openClient(t, srv), "neg", opts)
	b := newCache[product](t, openClient(t, srv), "neg", opts)
	ctx := context.Background()
	var n counter
	if _, err := a.GetOrLoad(ctx, "missing", n.loader(product{}, ErrNotFound, 0)); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	if _, err := b.GetOrLoad(ctx, "missing", n.loader(product{}, ErrNotFound, 0)); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	if n.calls.Load() != 1 {
		t.Errorf("loader called %d times; the second instance should find the cached not-found", n.calls.Load())
	}
}

// TestSilentPartition cuts one instance off from Redis without any error
// (a black-holed connection): its subscription goes quiet, it misses an
// invalidation, and when the network heals it must notice, reconnect and
// drop its possibly stale L1.
func TestSilentPartition(t *testing.T) {
	defer func(d time.Duration) { busIdle = d }(busIdle)
	busIdle = 100 * time.Millisecond

	srv := testserver.NewRedis(t)
	px := newProxy(t, srv.Addr())
	cut := openClient(t, srv, "ConnectionStrings__cache", px.addr()+",password="+srv.Password())
	direct := openClient(t, srv)
	a := newCache[int](t, cut, "partition", Options{BreakDuration: 50 * time.Millisecond})
	b := newCache[int](t, direct, "partition", Options{})
	waitSubscribed(t, direct, a.channel, 2)
	ctx := context.Background()
	load := func(v int) Loader[int] { return func(context.Context) (int, error) { return v, nil } }
	if v, _ := a.GetOrLoad(ctx, "k", load(1)); v != 1 {
		t.Fatal(v)
	}

	px.hole.Store(true)
	if err := b.Set(ctx, "k", 2); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // A's subscription is silent by now
	if v, _ := a.GetOrLoad(ctx, "k", load(-1)); v != 1 {
		t.Fatalf("a got %d while cut off; its L1 should still say 1", v)
	}
	px.hole.Store(false)
	eventually(t, 15*time.Second, "a drops its stale L1 after the partition heals", func() bool {
		v, err := a.GetOrLoad(ctx, "k", load(-1))
		return err == nil && v == 2
	})
	if a.Stats().Reconnects == 0 {
		t.Error("no reconnection recorded")
	}
}

// TestBreakerSkipsUnresponsiveRedis black-holes Redis: the first call
// waits for L2Timeout, the breaker opens, and the following calls do not
// wait on Redis at all.
func TestBreakerSkipsUnresponsiveRedis(t *testing.T) {
	srv := testserver.NewRedis(t)
	px := newProxy(t, srv.Addr())
	rdb := openClient(t, srv, "ConnectionStrings__cache", px.addr()+",password="+srv.Password())
	c := newCache[int](t, rdb, "breaker", Options{L2Timeout: 50 * time.Millisecond, BreakDuration: time.Hour})
	ctx := context.Background()
	if err := ping(rdb); err != nil {
		t.Fatal(err)
	}
	px.hole.Store(true)
	for i := range 100 {
		v, err := c.GetOrLoad(ctx, fmt.Sprint(i), func(context.Context) (int, error) { return i, nil })
		if err != nil || v != i {
			t.Fatalf("GetOrLoad(%d) = %d, %v", i, v, err)
		}
	}
	s := c.Stats()
	if s.L2Errors != 1 || !s.BreakerOpen || s.Loads != 100 {
		t.Errorf("stats %+v: want exactly one Redis attempt, then the breaker open", s)
	}
}
