package benchratio

import (
	"runtime"
	"sync"
	"testing"
	"time"
)

// Step is one side of an interleaved benchmark: Op makes operation i
// (0 ≤ i < b.N), so that every side can read the same keys in the same
// order.
type Step struct {
	Name string
	Op   func(b *testing.B, i int)
}

// Interleave runs b.N operations of every side inside one benchmark, in
// rounds of round operations, the order of the sides turning every round,
// so that a change in the machine's load hits every side alike. Before
// timing, it runs warm operations of each side (pools, caches), with
// indices b.N and up. It reports each side on its own as {side}-ns/op,
// {side}-cpu-ns/op (the process's CPU time, steadier than wall time on a
// busy machine; zero where it cannot be read), {side}-allocs/op and
// {side}-B/op, and the first side's wall time against each other one's as
// {first}/{other} (totals) and {first}/{other}-median (the median of the
// rounds' ratios, which a burst of load moves less). The framework's own
// ns/op adds up every side and is reported as 0.
func Interleave(b *testing.B, round, warm int, steps ...Step) {
	b.Helper()
	interleave(b, steps, round, warm, func(s Step, from, n int) {
		for i := from; i < from+n; i++ {
			s.Op(b, i)
		}
	})
}

// InterleaveParallel is Interleave with every round of a side run by
// GOMAXPROCS goroutines at once, as b.RunParallel does: {side}-ns/op is
// wall time per operation of all goroutines together, {side}-cpu-ns/op
// adds up every CPU's time. Goroutine g of a round starting at operation
// i makes operations i+g, i+g+P, ...: every side still makes the same
// operations. The goroutines of a round cost a few allocations, a rounding
// error over round operations.
func InterleaveParallel(b *testing.B, round, warm int, steps ...Step) {
	b.Helper()
	procs := runtime.GOMAXPROCS(0)
	interleave(b, steps, round, warm, func(s Step, from, n int) {
		var wg sync.WaitGroup
		for g := range procs {
			wg.Go(func() {
				for i := from + g; i < from+n; i += procs {
					s.Op(b, i)
				}
			})
		}
		wg.Wait()
	})
}

// interleave makes warm untimed operations of every step, then times
// run(step, from, n) for every step, round operations at a time, until
// each has made b.N, and reports the figures.
func interleave(b *testing.B, steps []Step, round, warm int, run func(s Step, from, n int)) {
	for _, s := range steps {
		for i := range warm {
			s.Op(b, b.N+i)
		}
	}
	type total struct {
		ns, cpu       time.Duration
		allocs, bytes uint64
	}
	totals := make([]total, len(steps))
	rounds := make([][]float64, len(steps)) // ns/op of each round, by step
	var before, after runtime.MemStats
	b.ResetTimer()
	for done, r := 0, 0; done < b.N; r++ {
		n := min(round, b.N-done)
		for k := range steps {
			j := (k + r) % len(steps)
			runtime.ReadMemStats(&before)
			cpu := CPUTime()
			start := time.Now()
			run(steps[j], done, n)
			elapsed := time.Since(start)
			totals[j].cpu += CPUTime() - cpu
			runtime.ReadMemStats(&after)
			totals[j].ns += elapsed
			totals[j].allocs += after.Mallocs - before.Mallocs
			totals[j].bytes += after.TotalAlloc - before.TotalAlloc
			rounds[j] = append(rounds[j], float64(elapsed)/float64(n))
		}
		done += n
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(0, "ns/op")
	for j, s := range steps {
		b.ReportMetric(float64(totals[j].ns)/n, s.Name+"-ns/op")
		b.ReportMetric(float64(totals[j].cpu)/n, s.Name+"-cpu-ns/op")
		b.ReportMetric(float64(totals[j].allocs)/n, s.Name+"-allocs/op")
		b.ReportMetric(float64(totals[j].bytes)/n, s.Name+"-B/op")
	}
	for j := 1; j < len(steps); j++ {
		name := steps[0].Name + "/" + steps[j].Name
		b.ReportMetric(float64(totals[0].ns)/float64(totals[j].ns), name)
		ratios := make([]float64, len(rounds[0]))
		for r := range ratios {
			ratios[r] = rounds[0][r] / rounds[j][r]
		}
		b.ReportMetric(median(ratios), name+"-median")
	}
}
