package resilience

import (
	"testing"
	"time"
)

func TestRetryOptionsBackoff(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts RetryOptions
		want []time.Duration // exact, without jitter
	}{
		{"exponential", RetryOptions{BackoffType: BackoffExponential, Delay: 100 * time.Millisecond}, []time.Duration{100, 200, 400, 800}},
		{"capped", RetryOptions{BackoffType: BackoffExponential, Delay: 100 * time.Millisecond, MaxDelay: 300 * time.Millisecond}, []time.Duration{100, 200, 300, 300}},
		{"constant", RetryOptions{BackoffType: BackoffConstant, Delay: 50 * time.Millisecond}, []time.Duration{50, 50, 50}},
		{"zero delay", RetryOptions{}, []time.Duration{0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			next := tc.opts.Backoff()
			for i, w := range tc.want {
				w *= time.Millisecond
				if got := next(i); got != w {
					t.Errorf("attempt %d: %v, want %v", i, got, w)
				}
			}
		})
	}
	// With jitter the delays stay within the cap and never go negative.
	next := RetryOptions{BackoffType: BackoffExponential, Delay: 10 * time.Millisecond, UseJitter: true, MaxDelay: time.Second}.Backoff()
	for i := range 2000 {
		if d := next(i); d < 0 || d > time.Second {
			t.Fatalf("attempt %d: %v outside [0, 1s]", i, d)
		}
	}
}
