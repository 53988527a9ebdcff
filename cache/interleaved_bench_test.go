package cache

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	rediscache "github.com/go-redis/cache/v9"

	"github.com/goaspire/goaspire/internal/testserver"
)

// The interleaved benchmarks run the cache and its peers in alternating
// rounds inside one benchmark, so that a change in the machine's load
// (other processes on a shared machine) hits every side alike. Each side
// is reported on its own as {side}-ns/op, {side}-allocs/op and {side}-B/op,
// with {side}-cpu-ns/op, the process's CPU time (steadier than wall time
// on a busy machine; for parallel rounds, every CPU's time added up), and
// the first side's wall time against each other one's as {first}/{other}
// (and {first}/{other}-median, the median of the rounds' ratios); the
// framework's own ns/op and allocs/op add up all sides and mean nothing.
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

// side is one contender of an interleaved benchmark: op does operation i.
type side struct {
	name string
	op   func(b *testing.B, i int)
}

// benchInterleaved runs b.N operations of every side, in rounds of round
// operations, the order of the sides turning every round.
func benchInterleaved(b *testing.B, round int, sides ...side) {
	type total struct {
		ns, cpu, allocs, bytes uint64
	}
	totals := make([]total, len(sides))
	rounds := make([][]float64, len(sides)) // ns/op of each round, by side
	var before, after runtime.MemStats
	b.ResetTimer()
	for done, r := 0, 0; done < b.N; r++ {
		n := min(round, b.N-done)
		for k := range sides {
			j := (k + r) % len(sides)
			s := sides[j]
			runtime.ReadMemStats(&before)
			cpu := cpuTime()
			start := time.Now()
			for i := done; i < done+n; i++ {
				s.op(b, i)
			}
			elapsed := time.Since(start)
			totals[j].cpu += uint64(cpuTime() - cpu)
			runtime.ReadMemStats(&after)
			totals[j].ns += uint64(elapsed)
			totals[j].allocs += after.Mallocs - before.Mallocs
			totals[j].bytes += after.TotalAlloc - before.TotalAlloc
			rounds[j] = append(rounds[j], float64(elapsed)/float64(n))
		}
		done += n
	}
	b.StopTimer()
	n := float64(b.N)
	for j, s := range sides {
		b.ReportMetric(float64(totals[j].ns)/n, s.name+"-ns/op")
		b.ReportMetric(float64(totals[j].cpu)/n, s.name+"-cpu-ns/op")
		b.ReportMetric(float64(totals[j].allocs)/n, s.name+"-allocs/op")
		b.ReportMetric(float64(totals[j].bytes)/n, s.name+"-B/op")
	}
	for j := 1; j < len(sides); j++ {
		b.ReportMetric(float64(totals[0].ns)/float64(totals[j].ns), sides[0].name+"/"+sides[j].name)
		// The median of the rounds' ratios: a burst of load on the
		// machine moves a few rounds, not the median.
		ratios := make([]float64, len(rounds[0]))
		for r := range ratios {
			ratios[r] = rounds[0][r] / rounds[j][r]
		}
		slices.Sort(ratios)
		b.ReportMetric(ratios[len(ratios)/2], sides[0].name+"/"+sides[j].name+"-median")
	}
}

// benchInterleavedParallel is benchInterleaved with every round of a side
// run by GOMAXPROCS goroutines at once, as b.RunParallel does: its ns/op
// is wall time per operation of all goroutines together. Each goroutine
// does operations i = g, g+P, g+2P, ...: every side reads the keys in the
// same order.
func benchInterleavedParallel(b *testing.B, round int, sides ...side) {
	procs := runtime.GOMAXPROCS(0)
	par := make([]side, len(sides))
	for k, s := range sides {
		par[k] = side{s.name, nil}
		op := s.op
		par[k].op = func(b *testing.B, i int) {
			// One call runs a whole slice of round operations: i is
			// its first; see below.
			var wg sync.WaitGroup
			for g := range procs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for j := i + g; j < i+round; j += procs {
						op(b, j)
					}
				}()
			}
			wg.Wait()
		}
	}
	// Each op call of par does round operations: run b.N/round of them.
	type total struct{ ns, cpu, allocs, bytes uint64 }
	totals := make([]total, len(par))
	var before, after runtime.MemStats
	b.ResetTimer()
	calls := max(b.N/round, 1)
	for r := range calls {
		for k := range par {
			j := (k + r) % len(par)
			runtime.ReadMemStats(&before)
			cpu := cpuTime()
			start := time.Now()
			par[j].op(b, r*round)
			elapsed := time.Since(start)
			totals[j].cpu += uint64(cpuTime() - cpu)
			runtime.ReadMemStats(&after)
			totals[j].ns += uint64(elapsed)
			totals[j].allocs += after.Mallocs - before.Mallocs
			totals[j].bytes += after.TotalAlloc - before.TotalAlloc
		}
	}
	b.StopTimer()
	n := float64(calls * round)
	for j, s := range par {
		b.ReportMetric(float64(totals[j].ns)/n, s.name+"-ns/op")
		b.ReportMetric(float64(totals[j].cpu)/n, s.name+"-cpu-ns/op")
		// The goroutines of a round cost a few allocations, a rounding
		// error over round operations.
		b.ReportMetric(float64(totals[j].allocs)/n, s.name+"-allocs/op")
		b.ReportMetric(float64(totals[j].bytes)/n, s.name+"-B/op")
	}
	for j := 1; j < len(par); j++ {
		b.ReportMetric(float64(totals[0].ns)/float64(totals[j].ns), par[0].name+"/"+par[j].name)
	}
}

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
	benchInterleavedParallel(b, 20_000,
		side{"cache", func(b *testing.B, i int) {
			if v, err := c.GetOrLoad(ctx, keys[i&1023], benchLoader); err != nil || v.ID != i&1023 {
				b.Error(v, err)
			}
		}},
		side{"otter", func(b *testing.B, i int) {
			if v, ok := oc.GetIfPresent(keys[i&1023]); !ok || v.ID != i&1023 {
				b.Error(v)
			}
		}},
		side{"map-rwmutex", func(b *testing.B, i int) {
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
	benchInterleaved(b, 20_000,
		side{"cache", func(b *testing.B, _ int) {
			if v, err := c.GetOrLoad(ctx, "p1", benchLoader); err != nil || v.ID != 1 {
				b.Fatal(v, err)
			}
		}},
		side{"otter", func(b *testing.B, _ int) {
			if v, ok := oc.GetIfPresent("p1"); !ok || v.ID != 1 {
				b.Fatal(v)
			}
		}},
		side{"map-rwmutex", func(b *testing.B, _ int) {
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
	benchInterleaved(b, 200,
		side{"cache", func(b *testing.B, _ int) {
			if v, err := c.GetOrLoad(ctx, "p1", benchLoader); err != nil || v.ID != 1 {
				b.Fatal(v, err)
			}
		}},
		side{"cache-msgpack", func(b *testing.B, _ int) {
			if v, err := same.GetOrLoad(ctx, "p1", benchLoader); err != nil || v.ID != 1 {
				b.Fatal(v, err)
			}
		}},
		side{"go-redis-cache", func(b *testing.B, _ int) {
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
	miss := func(name string, ctx context.Context, opts ...EntryOption) side {
		return side{name, func(b *testing.B, i int) {
			key := fmt.Sprint("im", run, name, i)
			if _, err := c.GetOrLoad(ctx, key, benchLoader, opts...); err != nil {
				b.Fatal(err)
			}
		}}
	}
	benchInterleaved(b, 100,
		miss("cache-no-lock", ctx, WithoutDistributedLock()),
		side{"once", func(b *testing.B, i int) {
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
