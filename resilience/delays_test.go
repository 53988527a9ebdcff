package resilience_test

import (
	"testing"
	"time"

	"github.com/goaspire/goaspire/resilience"
)

func TestBackoffSequence(t *testing.T) {
	tests := []struct {
		name string
		r    resilience.RetryOptions
		want []time.Duration
	}{
		{"zero", resilience.RetryOptions{}, []time.Duration{0, 0}},
		{"exponential capped", resilience.RetryOptions{BackoffType: resilience.BackoffExponential, Delay: time.Second, MaxDelay: 3 * time.Second},
			[]time.Duration{time.Second, 2 * time.Second, 3 * time.Second, 3 * time.Second}},
		{"linear", resilience.RetryOptions{BackoffType: resilience.BackoffLinear, Delay: time.Second},
			[]time.Duration{time.Second, 2 * time.Second, 3 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := resilience.NewBackoff(tt.r)
			for i, want := range tt.want {
				if got := b.Next(); got != want {
					t.Errorf("delay %d = %v, want %v", i, got, want)
				}
			}
			b.Reset()
			if got := b.Next(); got != tt.want[0] {
				t.Errorf("after Reset delay = %v, want %v", got, tt.want[0])
			}
		})
	}
}

func TestBackoffJitterStaysUnderCap(t *testing.T) {
	b := resilience.NewBackoff(resilience.RetryOptions{BackoffType: resilience.BackoffExponential, UseJitter: true, Delay: time.Second, MaxDelay: 5 * time.Second})
	for i := 0; i < 50; i++ {
		if d := b.Next(); d < 0 || d > 5*time.Second {
			t.Fatalf("delay %d = %v, outside [0, 5s]", i, d)
		}
	}
}
