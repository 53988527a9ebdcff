package resilience

import (
	"math"
	"math/rand/v2"
	"time"
)

// maxDelay bounds computed delays so the arithmetic cannot overflow.
const maxDelay = time.Duration(math.MaxInt64 / 2)

// backoff computes the delay before retry number attempt (0 for the first
// retry), with Polly v8's formulas:
//
//   - Constant: Delay; Linear: Delay×(attempt+1); Exponential:
//     Delay×2^attempt;
//   - with jitter, Constant and Linear add a uniform ±25 % offset, and
//     Exponential uses the decorrelated jitter of Polly's
//     DecorrelatedJitterBackoffV2 (by George Polevoy, with Polly's scaling):
//     t = attempt + U[0,1), f(t) = 2^t × tanh(√(4t)), and the delay is
//     (f(t) − f(previous t)) / 1.4 × Delay, so delays are random, never
//     negative, with medians of about 0.9, 1.1, 2, 4, 8, ... × Delay;
//   - MaxDelay, when set, caps the result.
//
// prev carries the previous f(t) between the retries of one call. rnd
// returns a float in [0, 1).
func backoff(r RetryOptions, attempt int, prev *float64, rnd func() float64) time.Duration {
	if r.Delay <= 0 {
		return 0
	}
	var d time.Duration
	switch r.BackoffType {
	case BackoffLinear:
		d = mulDuration(r.Delay, float64(attempt+1))
	case BackoffExponential:
		if r.UseJitter {
			d = decorrelatedJitter(attempt, r.Delay, prev, rnd)
		} else {
			d = mulDuration(r.Delay, math.Pow(2, float64(attempt)))
		}
	default:
		d = r.Delay
	}
	if r.UseJitter && r.BackoffType != BackoffExponential {
		// Polly: offset = d × 0.5 / 2; d += d × 0.5 × U − offset.
		d = mulDuration(d, 1+0.5*rnd()-0.25)
	}
	if r.MaxDelay > 0 && d > r.MaxDelay {
		d = r.MaxDelay
	}
	return d
}

func decorrelatedJitter(attempt int, base time.Duration, prev *float64, rnd func() float64) time.Duration {
	const (
		pFactor       = 4.0
		scalingFactor = 1 / 1.4
	)
	t := float64(attempt) + rnd()
	next := math.Pow(2, t) * math.Tanh(math.Sqrt(pFactor*t))
	if math.IsInf(next, 0) || math.IsNaN(next) {
		*prev = next
		return maxDelay
	}
	v := (next - *prev) * scalingFactor
	*prev = next
	return mulDuration(base, v)
}

func mulDuration(d time.Duration, f float64) time.Duration {
	v := float64(d) * f
	if v >= float64(maxDelay) {
		return maxDelay
	}
	if v <= 0 {
		return 0
	}
	return time.Duration(v)
}

func randFloat() float64 { return rand.Float64() }
