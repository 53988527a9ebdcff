package cache

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/goaspire/goaspire/internal/testserver"
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
	c := newCache[product](t, rdb, "trips", Options{})
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
