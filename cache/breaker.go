package cache

import (
	"sync/atomic"
)

// breaker keeps the cache from waiting on Redis on every call while Redis
// is failing. One L2 failure opens it for a break; while open, L2 is
// skipped (reads count as misses, writes are queued for recovery). When
// the break is over, one call probes L2; its success closes the breaker,
// its failure starts another break. A Pub/Sub reconnection also closes it.
type breaker struct {
	openUntil atomic.Int64 // coarse-clock time; 0 means closed
	probing   atomic.Bool
	trips     atomic.Int64
	duration  int64
}

// allow reports whether a call may use L2 now. While open it lets exactly
// one call through after the break, as a probe.
func (b *breaker) allow(now int64) bool {
	u := b.openUntil.Load()
	if u == 0 {
		return true
	}
	if now < u {
		return false
	}
	return b.probing.CompareAndSwap(false, true)
}

// isOpen reports whether L2 is being skipped.
func (b *breaker) isOpen() bool { return b.openUntil.Load() != 0 }

// success records a working L2 call; it reports whether that closed the
// breaker, so the caller can start recovery.
func (b *breaker) success() bool {
	if b.openUntil.Load() == 0 {
		return false
	}
	b.openUntil.Store(0)
	b.probing.Store(false)
	return true
}

// failure records a failed L2 call and starts a break.
func (b *breaker) failure(now int64) {
	if b.openUntil.Swap(now+b.duration) == 0 {
		b.trips.Add(1)
	}
	b.probing.Store(false)
}
