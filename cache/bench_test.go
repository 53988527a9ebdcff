package cache

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/goaspire/goaspire/internal/benchratio"
	"github.com/goaspire/goaspire/testserver"
)

// The benchmarks compare each tier with its plain baseline in the same run:
//
//	BenchmarkL1Hit*             vs BenchmarkMapRWMutex*     (in-process)
//	BenchmarkL2/cache*          vs BenchmarkL2/raw          (GET + JSON decode)
//	BenchmarkL2Overhead/cache*  vs BenchmarkL2Overhead/raw  (the same, GET answered in memory)
//	BenchmarkMiss/cache*        vs BenchmarkMiss/raw        (GET miss, load, SET)
//
// On a shared machine the network benchmarks vary by tens of percent from
// run to run and with their order; compare cache with raw within one run
// (cpu-ns/op is steadier than ns/op), and use BenchmarkL2Overhead for the
// cache's own cost.
//
// Run: go test -run XXX -bench . -benchmem ./cache/

func benchLoader(ctx context.Context) (product, error) { return sampleProduct(1), nil }

// measureCPU reports the process CPU time per operation as cpu-ns/op when
// the benchmark ends. Call it right before the loop. On a busy machine it
// is far steadier than ns/op, which counts the time the process waits for
// a CPU; for a parallel benchmark it adds up every CPU's time.
func measureCPU(b *testing.B) {
	start := benchratio.CPUTime()
	b.Cleanup(func() {
		if b.N > 0 && start > 0 {
			b.ReportMetric(float64(benchratio.CPUTime()-start)/float64(b.N), "cpu-ns/op")
		}
	})
}

func BenchmarkL1Hit(b *testing.B) {
	c := newCache[product](b, openClient(b, testserver.NewRedis(b)), "bench", Options{})
	ctx := context.Background()
	if _, err := c.GetOrLoad(ctx, "p1", benchLoader); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	measureCPU(b)
	for b.Loop() {
		v, err := c.GetOrLoad(ctx, "p1", benchLoader)
		if err != nil || v.ID != 1 {
			b.Fatal(v, err)
		}
	}
}

func BenchmarkL1HitParallel(b *testing.B) {
	c := newCache[product](b, openClient(b, testserver.NewRedis(b)), "bench", Options{})
	ctx := context.Background()
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = fmt.Sprint("p", i)
		_ = c.Set(ctx, keys[i], sampleProduct(i))
	}
	b.ReportAllocs()
	measureCPU(b)
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := c.GetOrLoad(ctx, keys[i&1023], benchLoader); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}

// rwMap is the baseline for L1: a plain map under a read-write mutex.
type rwMap struct {
	mu sync.RWMutex
	m  map[string]product
}

func (m *rwMap) get(k string) (product, bool) {
	m.mu.RLock()
	v, ok := m.m[k]
	m.mu.RUnlock()
	return v, ok
}

func BenchmarkMapRWMutex(b *testing.B) {
	m := &rwMap{m: map[string]product{"p1": sampleProduct(1)}}
	b.ReportAllocs()
	measureCPU(b)
	for b.Loop() {
		v, ok := m.get("p1")
		if !ok || v.ID != 1 {
			b.Fatal(v)
		}
	}
}

func BenchmarkMapRWMutexParallel(b *testing.B) {
	m := &rwMap{m: map[string]product{}}
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = fmt.Sprint("p", i)
		m.m[keys[i]] = sampleProduct(i)
	}
	b.ReportAllocs()
	measureCPU(b)
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, ok := m.get(keys[i&1023]); !ok {
				b.Fatal("missing")
			}
			i++
		}
	})
}

// BenchmarkL2 compares, on one server and one client, an L2 hit with a raw
// go-redis GET of the same JSON payload plus decoding:
//
//   - cache: a cache without L1, so every read is a GET plus envelope and
//     JSON decoding (and the stampede, breaker and timeout machinery);
//   - cache-filling-l1: two keys alternating through a one-entry L1, so
//     every read misses L1, hits Redis and stores into L1, evicting the
//     other key: the realistic cost of an L1 miss;
//   - raw: rdb.Get(...).Bytes() and json.Unmarshal.
func BenchmarkL2(b *testing.B) {
	rdb := openClient(b, testserver.NewRedis(b))
	ctx := context.Background()
	noL1 := newCache[product](b, rdb, "bench", Options{L1MaxEntries: -1})
	tinyL1 := newCache[product](b, rdb, "bench", Options{L1MaxEntries: 1})
	keys := []string{"p1", "p2"}
	for _, k := range keys {
		if err := noL1.Set(ctx, k, sampleProduct(1)); err != nil {
			b.Fatal(err)
		}
	}
	data, _ := json.Marshal(sampleProduct(1))
	if err := rdb.Set(ctx, "raw:p1", data, 0).Err(); err != nil {
		b.Fatal(err)
	}
	benchL2Reads(b, rdb, noL1, tinyL1, keys)
	b.StopTimer()
	if s := noL1.Stats(); s.Loads != 0 || s.L2Errors != 0 {
		b.Fatalf("no-L1 cache stats %+v: want L2 hits only", s)
	}
	if s := tinyL1.Stats(); s.Loads != 0 || s.L1Hits > s.L2Hits/100 {
		b.Fatalf("one-entry cache stats %+v: want L2 hits only", s)
	}
}

// benchL2Reads runs the sub-benchmarks BenchmarkL2 and BenchmarkL2Overhead
// share: cache reads "p1" through noL1, cache-filling-l1 alternates keys
// through tinyL1, and raw GETs and decodes "raw:p1" on rdb.
func benchL2Reads(b *testing.B, rdb redis.UniversalClient, noL1, tinyL1 *Cache[product], keys []string) {
	ctx := context.Background()
	b.Run("cache", func(b *testing.B) {
		b.ReportAllocs()
		measureCPU(b)
		for b.Loop() {
			v, err := noL1.GetOrLoad(ctx, "p1", benchLoader)
			if err != nil || v.ID != 1 {
				b.Fatal(v, err)
			}
		}
	})
	b.Run("cache-filling-l1", func(b *testing.B) {
		b.ReportAllocs()
		measureCPU(b)
		i := 0
		for b.Loop() {
			if _, err := tinyL1.GetOrLoad(ctx, keys[i&1], benchLoader); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("raw", func(b *testing.B) {
		b.ReportAllocs()
		measureCPU(b)
		for b.Loop() {
			raw, err := rdb.Get(ctx, "raw:p1").Bytes()
			if err != nil {
				b.Fatal(err)
			}
			var v product
			if err := json.Unmarshal(raw, &v); err != nil || v.ID != 1 {
				b.Fatal(v, err)
			}
		}
	})
}

// missKeys makes every miss benchmark key new, across -count runs too.
var missKeys atomic.Int64

// BenchmarkMiss compares a full miss (L1 miss, Redis GET miss, the loader,
// L1 store and Redis SET) with the raw baseline of GET (nil), encoding and
// SET on the same client.
func BenchmarkMiss(b *testing.B) {
	rdb := openClient(b, testserver.NewRedis(b))
	ctx := context.Background()
	c := newCache[product](b, rdb, "bench", Options{})
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
	b.Run("cache-cancelable-ctx", func(b *testing.B) {
		// A request context: the load runs on its own goroutine so that
		// the caller can leave early.
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		b.ReportAllocs()
		measureCPU(b)
		for b.Loop() {
			key := fmt.Sprint("m", missKeys.Add(1))
			if _, err := c.GetOrLoad(ctx, key, benchLoader); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("raw", func(b *testing.B) {
		b.ReportAllocs()
		measureCPU(b)
		for b.Loop() {
			key := fmt.Sprint("raw:m", missKeys.Add(1))
			if err := rdb.Get(ctx, key).Err(); err == nil {
				b.Fatal("unexpected hit")
			}
			v, _ := benchLoader(ctx)
			data, _ := json.Marshal(v)
			if err := rdb.Set(ctx, key, data, DefaultTTL).Err(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// memoryGet is a go-redis hook that answers GET from a map without
// touching the network, so BenchmarkL2Overhead measures what the cache
// adds to a GET plus decode in CPU alone, free of network noise.
type memoryGet map[string]string

func (memoryGet) DialHook(next redis.DialHook) redis.DialHook { return next }

func (m memoryGet) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c, ok := cmd.(*redis.StringCmd)
		if !ok || cmd.Name() != "get" {
			return next(ctx, cmd)
		}
		v, found := m[fmt.Sprint(cmd.Args()[1])]
		if !found {
			c.SetErr(redis.Nil)
			return redis.Nil
		}
		c.SetVal(v)
		return nil
	}
}

func (memoryGet) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// BenchmarkL2Overhead is BenchmarkL2 with GET answered in memory: the
// difference between cache and raw is the cache's own cost per L2 hit
// (stampede bookkeeping, timeout, envelope, entry).
func BenchmarkL2Overhead(b *testing.B) {
	rdb := openClient(b, testserver.NewRedis(b))
	// GET is answered in memory: no distributed lock, whose read is a
	// SET NX GET.
	noL1 := newCache[product](b, rdb, "bench", Options{L1MaxEntries: -1, LockTimeout: -1})
	tinyL1 := newCache[product](b, rdb, "bench", Options{L1MaxEntries: 1, LockTimeout: -1})
	keys := []string{"p1", "p2"}
	mem := memoryGet{}
	for _, k := range keys {
		_, env := noL1.newEntry(k, sampleProduct(1), false, entryOptions{}, clock.now(), time.Now(), time.Now().UnixMilli())
		mem[noL1.dataKey(k)] = string(env)
	}
	data, _ := json.Marshal(sampleProduct(1))
	mem["raw:p1"] = string(data)
	rdb.AddHook(mem)

	benchL2Reads(b, rdb, noL1, tinyL1, keys)
	b.StopTimer()
	if s := noL1.Stats(); s.Loads != 0 || s.L2Hits == 0 {
		b.Fatalf("stats %+v: want L2 hits only", s)
	}
}
