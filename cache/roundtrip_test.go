package cache

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/goaspire/goaspire/testserver"
)

// tripCounter is a go-redis hook counting round trips: commands and
// pipelines sent.
type tripCounter struct{ n atomic.Int64 }

func (*tripCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (t *tripCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		t.n.Add(1)
		return next(ctx, cmd)
	}
}

func (t *tripCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		t.n.Add(1)
		return next(ctx, cmds)
	}
}

// TestLockedMissTwoRoundTrips: a miss under the distributed lock, with a
// cancellable context, costs two Redis round trips as a plain GET and SET
// would: the read takes the lock, the write stores the value and releases
// it. The value is in Redis afterwards and the lock gone, also when Redis
// has forgotten the scripts (NOSCRIPT).
func TestLockedMissTwoRoundTrips(t *testing.T) {
	rdb := openClient(t, testserver.NewRedis(t))
	// A generous L2Timeout: this test counts round trips, and a Redis
	// call slowed past the default by a loaded machine would open the
	// breaker and skip the store it checks.
	c := newCache[product](t, rdb, "trips", Options{L2Timeout: 10 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := c.GetOrLoad(ctx, "warm", benchLoader); err != nil {
		t.Fatal(err)
	}
	var trips tripCounter
	rdb.AddHook(&trips)
	check := func(key string) {
		t.Helper()
		v, err := c.GetOrLoad(ctx, key, benchLoader)
		if err != nil || v.ID != 1 {
			t.Fatalf("GetOrLoad(%s) = %+v, %v", key, v, err)
		}
		data, err := rdb.Get(ctx, c.dataKey(key)).Bytes()
		if err != nil {
			t.Fatalf("%s not in Redis: %v", key, err)
		}
		env, err := parseEnvelope(data)
		if err != nil || env.lock || env.tombstone {
			t.Fatalf("%s in Redis: %+v, %v; want the value", key, env, err)
		}
	}
	const misses = 20
	for i := range misses {
		before := trips.n.Load()
		check(fmt.Sprint("k", i))
		if n := trips.n.Load() - before - 1; n != 2 { // the check's own GET aside
			t.Errorf("miss %d: %d round trips, want 2", i, n)
		}
	}
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	check("after-flush")
	if s := c.Stats(); s.Loads != misses+2 || s.L2Errors != 0 {
		t.Errorf("stats %+v: want %d loads, no Redis errors", s, misses+2)
	}
}

// TestLockEnvelopeIsNoValue: while an instance loads an absent key under
// the lock (its lock envelope under the key), another instance's Get
// misses, its GetOrLoad without the lock loads and stores its own value,
// and the holder's older load then leaves that value in place.
func TestLockEnvelopeIsNoValue(t *testing.T) {
	srv := testserver.NewRedis(t)
	rdbA := openClient(t, srv)
	a := newCache[product](t, rdbA, "envelope", Options{})
	b := newCache[product](t, openClient(t, srv), "envelope", Options{L1MaxEntries: -1})
	ctx := context.Background()
	started, release, done := make(chan struct{}), make(chan struct{}), make(chan product)
	go func() {
		v, err := a.GetOrLoad(ctx, "k", func(context.Context) (product, error) {
			close(started)
			<-release
			return sampleProduct(1), nil
		})
		if err != nil {
			t.Error(err)
		}
		done <- v
	}()
	<-started
	if data, err := rdbA.Get(ctx, a.dataKey("k")).Result(); err != nil || !isLockEnvelope(data) {
		t.Fatalf("Redis holds %q, %v under the key being loaded; want A's lock envelope", data, err)
	}
	if v, ok := b.Get(ctx, "k"); ok {
		t.Fatalf("B's Get = %+v; want a miss while A loads", v)
	}
	v, err := b.GetOrLoad(ctx, "k", func(context.Context) (product, error) { return sampleProduct(2), nil }, WithoutDistributedLock())
	if err != nil || v.ID != 2 {
		t.Fatalf("B's GetOrLoad without the lock = %+v, %v; want its own load", v, err)
	}
	close(release)
	if v := <-done; v.ID != 1 {
		t.Errorf("A's callers got %+v; want A's load", v)
	}
	if v, ok := b.Get(ctx, "k"); !ok || v.ID != 2 {
		t.Errorf("Redis serves %+v, %v; want B's newer value, not A's older load", v, ok)
	}
}

// TestReadWithoutSetGet: a Redis that refuses SET NX GET (here: out of
// memory, which refuses every write) still serves hits to GetOrLoad, with
// a plain GET, without counting a Redis failure.
func TestReadWithoutSetGet(t *testing.T) {
	rdb := openClient(t, testserver.NewRedis(t))
	c := newCache[product](t, rdb, "oom", Options{L1MaxEntries: -1})
	ctx := context.Background()
	if err := c.Set(ctx, "k", sampleProduct(3)); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.ConfigSet(context.Background(), "maxmemory", "0").Err() })
	for range 3 {
		v, err := c.GetOrLoad(ctx, "k", func(context.Context) (product, error) { return product{}, errors.New("loaded") })
		if err != nil || v.ID != 3 {
			t.Fatalf("GetOrLoad = %+v, %v; want the value in Redis", v, err)
		}
	}
	if s := c.Stats(); s.L2Hits != 3 || s.L2Errors != 0 || s.Loads != 0 {
		t.Errorf("stats %+v: want 3 L2 hits, no Redis error, no load", s)
	}
}

// TestLockRenewedWhileLoading: a load lasting longer than the lock's
// lease keeps the lock (its lease is renewed), so an instance waiting for
// it does not load too.
func TestLockRenewedWhileLoading(t *testing.T) {
	srv := testserver.NewRedis(t)
	opts := Options{LockTimeout: 2 * time.Second} // lease: 500 ms
	a := newCache[product](t, openClient(t, srv), "renew", opts)
	b := newCache[product](t, openClient(t, srv), "renew", opts)
	var calls atomic.Int64
	started := make(chan struct{})
	slow := func(context.Context) (product, error) {
		if calls.Add(1) == 1 {
			close(started)
		}
		time.Sleep(1200 * time.Millisecond) // past two leases
		return sampleProduct(4), nil
	}
	ctx := context.Background()
	done := make(chan error, 1)
	go func() {
		_, err := a.GetOrLoad(ctx, "k", slow)
		done <- err
	}()
	<-started
	v, err := b.GetOrLoad(ctx, "k", slow)
	if err != nil || v.ID != 4 {
		t.Fatalf("B's GetOrLoad = %+v, %v", v, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("%d loads; want 1: the lock expired while A loaded", n)
	}
}
