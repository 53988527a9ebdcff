package cache

import (
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"weak"

	"github.com/redis/go-redis/v9"
)

// Breaker is the circuit breaker that every cache on one Redis client
// shares: a failure seen by one cache makes all of them skip Redis for a
// break, and one successful call closes it for all. Code using the client
// directly (integrations/aspireredis's Client, for one) can read its state
// with ClientBreaker and feed it with Report.
//
// One L2 failure opens it for a break (the BreakDuration of the cache that
// saw it). While open, the caches skip L2: reads count as misses, writes
// are queued for replay. When the break is over, one call probes L2; its
// success closes the breaker, its failure starts another break. A Pub/Sub
// reconnection also closes it.
type Breaker struct {
	openUntil atomic.Int64 // coarse-clock time; 0 means closed
	probing   atomic.Bool
	trips     atomic.Int64

	mu        sync.Mutex
	listeners map[*breakerListener]struct{}
}

// breakerListener is told when the breaker closes.
type breakerListener struct{ onClose func() }

var breakers = struct {
	mu sync.Mutex
	m  map[any]*Breaker
}{m: map[any]*Breaker{}}

// ClientBreaker returns the Breaker that the caches on rdb share, making
// it on first use. It is the same value for as long as rdb lives, whether
// or not a cache is open on it, and it holds no reference to rdb.
func ClientBreaker(rdb redis.UniversalClient) *Breaker {
	key, cleanup := clientKey(rdb)
	breakers.mu.Lock()
	defer breakers.mu.Unlock()
	if b := breakers.m[key]; b != nil {
		return b
	}
	b := &Breaker{}
	breakers.m[key] = b
	cleanup()
	return b
}

// clientKey is a map key for rdb that does not keep it alive, and a
// function arranging for its entry to be dropped when rdb is collected.
// A client type this package does not know is used as its own key.
func clientKey(rdb redis.UniversalClient) (any, func()) {
	forget := func(key any) {
		breakers.mu.Lock()
		delete(breakers.m, key)
		breakers.mu.Unlock()
	}
	switch c := rdb.(type) {
	case *redis.Client:
		k := weak.Make(c)
		return k, func() { runtime.AddCleanup(c, forget, any(k)) }
	case *redis.ClusterClient:
		k := weak.Make(c)
		return k, func() { runtime.AddCleanup(c, forget, any(k)) }
	case *redis.Ring:
		k := weak.Make(c)
		return k, func() { runtime.AddCleanup(c, forget, any(k)) }
	}
	return rdb, func() {}
}

// Open reports whether callers should skip Redis now.
func (b *Breaker) Open() bool { return b.openUntil.Load() != 0 }

// Trips returns how many times the breaker has opened.
func (b *Breaker) Trips() int64 { return b.trips.Load() }

// Report feeds the breaker with the outcome of a Redis call: nil (or
// redis.Nil) is a success, anything else a failure that opens the breaker
// for breakDuration. It reports whether the call changed the state.
func (b *Breaker) Report(err error, breakDuration time.Duration) bool {
	if err == nil || errors.Is(err, redis.Nil) {
		return b.success()
	}
	return b.failure(clock.now(), int64(breakDuration))
}

// allow reports whether a call may use L2 now. While open it lets exactly
// one call through after the break, as a probe.
func (b *Breaker) allow(now int64) bool {
	u := b.openUntil.Load()
	if u == 0 {
		return true
	}
	if now < u {
		return false
	}
	return b.probing.CompareAndSwap(false, true)
}

// success records a working L2 call; it reports whether that closed the
// breaker, in which case the listeners are told.
func (b *Breaker) success() bool {
	if b.openUntil.Load() == 0 {
		return false
	}
	if b.openUntil.Swap(0) == 0 {
		return false
	}
	b.probing.Store(false)
	b.mu.Lock()
	fns := make([]func(), 0, len(b.listeners))
	for l := range b.listeners {
		fns = append(fns, l.onClose)
	}
	b.mu.Unlock()
	for _, f := range fns {
		f()
	}
	return true
}

// failure records a failed L2 call and starts a break; it reports whether
// that opened the breaker.
func (b *Breaker) failure(now, duration int64) bool {
	opened := b.openUntil.Swap(now+duration) == 0
	if opened {
		b.trips.Add(1)
	}
	b.probing.Store(false)
	return opened
}

// listen calls onClose each time the breaker closes, until the returned
// function is called.
func (b *Breaker) listen(onClose func()) (stop func()) {
	l := &breakerListener{onClose: onClose}
	b.mu.Lock()
	if b.listeners == nil {
		b.listeners = map[*breakerListener]struct{}{}
	}
	b.listeners[l] = struct{}{}
	b.mu.Unlock()
	return func() {
		b.mu.Lock()
		delete(b.listeners, l)
		b.mu.Unlock()
	}
}
