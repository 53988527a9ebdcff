package resilience

import "time"

// Backoff yields successive delays with the formulas of the retry
// strategy (see RetryOptions: BackoffType, UseJitter, Delay and MaxDelay
// apply; the other fields are ignored), for loops of one's own that
// reconnect or restart something. The zero value yields zero delays. A
// Backoff is not safe for concurrent use.
type Backoff struct {
	retry   RetryOptions
	attempt int
	prev    float64
}

// NewBackoff returns a Backoff for r.
func NewBackoff(r RetryOptions) *Backoff { return &Backoff{retry: r} }

// Next returns the delay before the next attempt and counts it.
func (b *Backoff) Next() time.Duration {
	d := backoff(b.retry, b.attempt, &b.prev, randFloat)
	b.attempt++
	return d
}

// Reset makes the next delay the first one again, as after a success.
func (b *Backoff) Reset() { b.attempt, b.prev = 0, 0 }
