package cache

import (
	"context"
	"fmt"
	"testing"
	"time"

	rediscache "github.com/go-redis/cache/v9"

	"github.com/goaspire/goaspire/internal/benchratio"
	"github.com/goaspire/goaspire/testserver"
)

// The interleaved benchmarks run the cache and its peers in alternating
// rounds inside one benchmark (benchratio.Interleave), so that a change in
// the machine's load hits every side alike: each side is reported on its
// own as {side}-ns/op, {side}-cpu-ns/op, {side}-allocs/op and {side}-B/op,
// and the first side against each other one as {first}/{other} and
// {first}/{other}-median; the framework's own ns/op means nothing.
//
//	BenchmarkInterleavedL1Hit  cache | otter v2 GetIfPresent | map+RWMutex
//	BenchmarkInterleavedL1HitParallel  the same from GOMAXPROCS goroutines, 1024 keys
//	BenchmarkInterleavedL2Hit  cache without L1 (JSON, and go-redis/cache's msgpack codec)
//	                           | go-redis/cache Get without local cache
//	BenchmarkInterleavedMiss   cache GetOrLoad with a cancellable context (with and
//	                           without the distributed lock, and with context.Background)
//	                           | go-redis/cache Once
//
// Run: go test -run XXX -bench Interleaved -benchtime 20000x ./cache/

func BenchmarkInterleavedL1HitParallel(b *testing.B) {
	c := newCache[product](b, openClient(b, testserver.NewRedis(b)), "bench", Options{})
	ctx := context.Background()
	oc := newOtter(b)
	m := &rwMap{m: map[string]product{}}
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = fmt.Sprint("p", i)
		if err := c.Set(ctx, keys[i], sampleProduct(i)); err != nil {
			b.Fatal(err)
		}
		oc.Set(keys[i], sampleProduct(i))
		m.m[keys[i]] = sampleProduct(i)
	}
	benchratio.InterleaveParallel(b, 20_000, 0,
		benchratio.Step{Name: "cache", Op: func(b *testing.B, i int) {
			if v, err := c.GetOrLoad(ctx, keys[i&1023], benchLoader); err != nil || v.ID != i&1023 {
				b.Error(v, err)
			}
		}},
		benchratio.Step{Name: "otter", Op: func(b *testing.B, i int) {
			if v, ok := oc.GetIfPresent(keys[i&1023]); !ok || v.ID != i&1023 {
				b.Error(v)
			}
		}},
		benchratio.Step{Name: "map-rwmutex", Op: func(b *testing.B, i int) {
			if v, ok := m.get(keys[i&1023]); !ok || v.ID != i&1023 {
				b.Error(v)
			}
		}},
	)
	if s := c.Stats(); s.Loads != 0 {
		b.Fatalf("stats %+v: want L1 hits only", s)
	}
}

func BenchmarkInterleavedL1Hit(b *testing.B) {
	c := newCache[product](b, openClient(b, testserver.NewRedis(b)), "bench", Options{})
	ctx := context.Background()
	if _, err := c.GetOrLoad(ctx, "p1", benchLoader); err != nil {
		b.Fatal(err)
	}
	oc := newOtter(b)
	oc.Set("p1", sampleProduct(1))
	m := &rwMap{m: map[string]product{"p1": sampleProduct(1)}}
	benchratio.Interleave(b, 20_000, 0,
		benchratio.Step{Name: "cache", Op: func(b *testing.B, _ int) {
			if v, err := c.GetOrLoad(ctx, "p1", benchLoader); err != nil || v.ID != 1 {
				b.Fatal(v, err)
			}
		}},
		benchratio.Step{Name: "otter", Op: func(b *testing.B, _ int) {
			if v, ok := oc.GetIfPresent("p1"); !ok || v.ID != 1 {
				b.Fatal(v)
			}
		}},
		benchratio.Step{Name: "map-rwmutex", Op: func(b *testing.B, _ int) {
			if v, ok := m.get("p1"); !ok || v.ID != 1 {
				b.Fatal(v)
			}
		}},
	)
}

func BenchmarkInterleavedL2Hit(b *testing.B) {
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
	// The same cache with go-redis/cache's codec (msgpack, s2 above 64
	// bytes): the cache's own cost, codec aside.
	same := newCache[product](b, rdb, "bench-msgpack", Options{L1MaxEntries: -1, Codec: peer})
	if err := same.Set(ctx, "p1", sampleProduct(1)); err != nil {
		b.Fatal(err)
	}
	benchratio.Interleave(b, 200, 0,
		benchratio.Step{Name: "cache", Op: func(b *testing.B, _ int) {
			if v, err := c.GetOrLoad(ctx, "p1", benchLoader); err != nil || v.ID != 1 {
				b.Fatal(v, err)
			}
		}},
		benchratio.Step{Name: "cache-msgpack", Op: func(b *testing.B, _ int) {
			if v, err := same.GetOrLoad(ctx, "p1", benchLoader); err != nil || v.ID != 1 {
				b.Fatal(v, err)
			}
		}},
		benchratio.Step{Name: "go-redis-cache", Op: func(b *testing.B, _ int) {
			var v product
			if err := peer.Get(ctx, "peer:p1", &v); err != nil || v.ID != 1 {
				b.Fatal(v, err)
			}
		}},
	)
	if s := c.Stats(); s.Loads != 0 || s.L2Hits == 0 {
		b.Fatalf("stats %+v: want L2 hits only", s)
	}
}

func BenchmarkInterleavedMiss(b *testing.B) {
	rdb := openClient(b, testserver.NewRedis(b))
	c := newCache[product](b, rdb, "bench", Options{})
	peer := rediscache.New(&rediscache.Options{Redis: rdb, LocalCache: rediscache.NewTinyLFU(DefaultL1MaxEntries, DefaultL1TTL)})
	// A request context: cancellable.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	run := b.N
	miss := func(name string, ctx context.Context, opts ...EntryOption) benchratio.Step {
		return benchratio.Step{Name: name, Op: func(b *testing.B, i int) {
			key := fmt.Sprint("im", run, name, i)
			if _, err := c.GetOrLoad(ctx, key, benchLoader, opts...); err != nil {
				b.Fatal(err)
			}
		}}
	}
	benchratio.Interleave(b, 100, 0,
		miss("cache-no-lock", ctx, WithoutDistributedLock()),
		benchratio.Step{Name: "once", Op: func(b *testing.B, i int) {
			key := fmt.Sprint("peer:im", run, i)
			var v product
			err := peer.Once(&rediscache.Item{Ctx: ctx, Key: key, Value: &v, TTL: DefaultTTL,
				Do: func(it *rediscache.Item) (any, error) { return benchLoader(it.Ctx) }})
			if err != nil || v.ID != 1 {
				b.Fatal(v, err)
			}
		}},
		miss("cache-lock", ctx),
		miss("cache-no-lock-background", context.Background(), WithoutDistributedLock()),
	)
	if s := c.Stats(); s.Loads != int64(3*b.N) {
		b.Fatalf("stats %+v: want %d loads", s, 3*b.N)
	}
}
