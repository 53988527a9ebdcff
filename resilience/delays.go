package resilience

import "time"

// Backoff returns the delay schedule of r for a retry loop of one's own
// (a reconnect loop, say): the returned function gives the delay before
// retry number attempt, 0 for the first, with r's BackoffType, Delay,
// UseJitter and MaxDelay and the formulas the HTTP pipeline uses. A zero
// Delay gives no delay. MaxRetryAttempts and the HTTP-only fields are
// ignored: the caller decides when to stop.
//
// The function keeps the decorrelated-jitter state between calls, so make
// one per retry loop; it is not safe for concurrent use.
func (r RetryOptions) Backoff() func(attempt int) time.Duration {
	var prev float64
	return func(attempt int) time.Duration {
		return backoff(r, max(attempt, 0), &prev, randFloat)
	}
}
