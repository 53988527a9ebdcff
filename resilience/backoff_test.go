package resilience

import (
	"math/rand/v2"
	"sort"
	"testing"
	"time"
)

func TestBackoffWithoutJitter(t *testing.T) {
	tests := []struct {
		typ  BackoffType
		max  time.Duration
		want []time.Duration
	}{
		{BackoffConstant, 0, []time.Duration{2 * time.Second, 2 * time.Second, 2 * time.Second}},
		{BackoffLinear, 0, []time.Duration{2 * time.Second, 4 * time.Second, 6 * time.Second}},
		{BackoffExponential, 0, []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second}},
		{BackoffExponential, 5 * time.Second, []time.Duration{2 * time.Second, 4 * time.Second, 5 * time.Second}},
	}
	for _, tt := range tests {
		r := RetryOptions{BackoffType: tt.typ, Delay: 2 * time.Second, MaxDelay: tt.max}
		var prev float64
		for i, want := range tt.want {
			if got := backoff(r, i, &prev, rand.Float64); got != want {
				t.Errorf("%v max %v: attempt %d delay = %v, want %v", tt.typ, tt.max, i, got, want)
			}
		}
	}
	if got := backoff(RetryOptions{BackoffType: BackoffExponential, UseJitter: true}, 0, new(float64), rand.Float64); got != 0 {
		t.Errorf("zero Delay gives %v, want 0", got)
	}
	if got := backoff(RetryOptions{BackoffType: BackoffExponential, Delay: time.Second}, 200, new(float64), rand.Float64); got != maxDelay {
		t.Errorf("huge attempt gives %v, want the cap %v", got, maxDelay)
	}
}

func TestBackoffJitterBounds(t *testing.T) {
	for _, typ := range []BackoffType{BackoffConstant, BackoffLinear} {
		r := RetryOptions{BackoffType: typ, Delay: time.Second, UseJitter: true}
		for i := 0; i < 1000; i++ {
			base := time.Second
			if typ == BackoffLinear {
				base = 2 * time.Second
			}
			d := backoff(r, 1, new(float64), rand.Float64)
			if d < base*3/4 || d > base*5/4 {
				t.Fatalf("%v jittered delay %v outside ±25%% of %v", typ, d, base)
			}
		}
	}
}

// TestDecorrelatedJitter checks Polly's DecorrelatedJitterBackoffV2: with
// the random source at its extremes the formula gives known values, and
// the medians of many samples are those of the formula: about 0.9, 1.1,
// 2.0 and 4.0 × Delay (then doubling).
func TestDecorrelatedJitter(t *testing.T) {
	r := RetryOptions{BackoffType: BackoffExponential, Delay: time.Second, UseJitter: true}
	// rnd() = 0 at attempt 0: t = 0, f(0) = 0, so the first delay is 0.
	var prev float64
	if d := backoff(r, 0, &prev, func() float64 { return 0 }); d != 0 {
		t.Fatalf("first delay with U=0 = %v, want 0", d)
	}
	// rnd() = 0 at attempt 1: f(1) = 2×tanh(2) ≈ 1.92805; delay ≈ 1.92805/1.4 s.
	if d := backoff(r, 1, &prev, func() float64 { return 0 }); d < 1377*time.Millisecond || d > 1378*time.Millisecond {
		t.Fatalf("second delay with U=0 = %v, want ≈1.3772s", d)
	}
	// Medians over many calls.
	const n = 4001
	samples := make([][]time.Duration, 4)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < n; i++ {
		var prev float64
		for a := range samples {
			samples[a] = append(samples[a], backoff(r, a, &prev, rng.Float64))
		}
	}
	medians := []time.Duration{900 * time.Millisecond, 1090 * time.Millisecond, 2040 * time.Millisecond, 4040 * time.Millisecond}
	for a, s := range samples {
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		median := s[n/2]
		want := medians[a]
		if median < want*85/100 || median > want*115/100 {
			t.Errorf("attempt %d: median delay %v, want near %v", a, median, want)
		}
		for _, d := range s {
			if d < 0 {
				t.Fatalf("negative delay %v", d)
			}
		}
	}
}
