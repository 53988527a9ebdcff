// Package benchratio compares the sides of a benchmark in interleaved
// rounds, so that load on a shared machine falls on every side alike, and
// reports each side's own ns/op and allocs/op. Compare and ComparePairs
// run each side as its own sub-benchmark and log the ratios; Interleave
// and InterleaveParallel run every side inside one benchmark and report
// each side's figures, and the ratios, as metrics.
package benchratio

import (
	"runtime"
	"slices"
	"testing"
)

// Side is one side of a comparison: Op makes one operation.
type Side struct {
	Name string
	Op   func(b *testing.B)
}

// Compare runs every side rounds times as b's sub-benchmarks, in an order
// that alternates round by round, and logs each side's median ns/op and
// allocs/op against the first side's.
func Compare(b *testing.B, rounds int, sides ...Side) {
	b.Helper()
	ns, allocs := run(b, rounds, sides)
	if len(ns[0]) == 0 {
		return
	}
	base, baseAllocs := median(ns[0]), median(allocs[0])
	for i := 1; i < len(sides); i++ {
		if len(ns[i]) == 0 {
			continue
		}
		v, a := median(ns[i]), median(allocs[i])
		b.Logf("%s / %s: %.3fx ns/op (%.0f vs %.0f), %+.1f allocs/op (%.1f vs %.1f), median of %d rounds",
			sides[i].Name, sides[0].Name, v/base, v, base, a-baseAllocs, a, baseAllocs, len(ns[i]))
	}
}

// ComparePairs runs the sides as Compare does, then logs each side's best
// and median ns/op and its allocs/op, and the ratios of each odd-numbered
// side (the second, fourth, ...) to the side just before it: the sides
// are pairs of (baseline, candidate).
func ComparePairs(b *testing.B, rounds int, sides ...Side) {
	b.Helper()
	ns, allocs := run(b, rounds, sides)
	for i := range sides {
		if len(ns[i]) < rounds {
			return // a -bench filter left some sides out
		}
	}
	for i, s := range sides {
		b.Logf("%-18s best %6.0f ns/op, median %6.0f ns/op, %5.1f allocs/op", s.Name, slices.Min(ns[i]), median(ns[i]), median(allocs[i]))
	}
	for i := 1; i < len(sides); i += 2 {
		b.Logf("%s / %s: best %.3fx, median %.3fx, %+.1f allocs/op", sides[i].Name, sides[i-1].Name,
			slices.Min(ns[i])/slices.Min(ns[i-1]), median(ns[i])/median(ns[i-1]), median(allocs[i])-median(allocs[i-1]))
	}
}

// run runs every side rounds times, alternating the order round by round,
// and returns each side's ns/op and allocs/op per round.
func run(b *testing.B, rounds int, sides []Side) (ns, allocs [][]float64) {
	ns = make([][]float64, len(sides))
	allocs = make([][]float64, len(sides))
	for r := range rounds {
		for k := range sides {
			i := k
			if r%2 == 1 {
				i = len(sides) - 1 - k
			}
			s := sides[i]
			b.Run(s.Name, func(b *testing.B) {
				b.ReportAllocs()
				var m0, m1 runtime.MemStats
				runtime.ReadMemStats(&m0)
				for b.Loop() {
					s.Op(b)
				}
				runtime.ReadMemStats(&m1)
				n := float64(b.N)
				ns[i] = append(ns[i], float64(b.Elapsed().Nanoseconds())/n)
				allocs[i] = append(allocs[i], float64(m1.Mallocs-m0.Mallocs)/n)
			})
		}
	}
	return ns, allocs
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
