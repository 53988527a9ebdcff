package cache

import (
	"sync"
	"sync/atomic"
	"time"
)

// clockTick is the resolution of the coarse clock.
const clockTick = time.Millisecond

// coarseClock is a monotonic clock whose reading is one atomic load. A
// single goroutine advances it every clockTick while at least one cache is
// open; slow paths also advance it, so it never lags by more than a tick
// where it matters. L1 hits read it instead of calling time.Now, which
// costs more than the rest of a hit.
type coarseClock struct {
	nanos atomic.Int64 // nanoseconds since base

	mu    sync.Mutex
	users int
	stop  chan struct{}
	done  chan struct{}
}

var (
	clockBase = time.Now()
	clock     coarseClock
)

// now returns the coarse time in nanoseconds since the process's clock
// base.
func (c *coarseClock) now() int64 { return c.nanos.Load() }

// refresh advances the clock to the precise time and returns it.
func (c *coarseClock) refresh() int64 { return c.advance(time.Now()) }

// advance moves the clock forward to t (never back) and returns it.
func (c *coarseClock) advance(t time.Time) int64 {
	n := int64(t.Sub(clockBase))
	for {
		cur := c.nanos.Load()
		if cur >= n {
			return cur
		}
		if c.nanos.CompareAndSwap(cur, n) {
			return n
		}
	}
}

// acquire starts the ticking goroutine for the first user.
func (c *coarseClock) acquire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.users++
	if c.users > 1 {
		return
	}
	c.refresh()
	c.stop = make(chan struct{})
	c.done = make(chan struct{})
	go c.run(c.stop, c.done)
}

// release stops the ticking goroutine when the last user leaves.
func (c *coarseClock) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.users--
	if c.users > 0 {
		return
	}
	close(c.stop)
	<-c.done
}

func (c *coarseClock) run(stop, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(clockTick)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			c.refresh()
		}
	}
}

// wallToClock converts a wall-clock time in Unix milliseconds (as stored in
// Redis, shared between instances) to coarse-clock nanoseconds.
func wallToClock(unixMilli int64, now int64, wallNow time.Time) int64 {
	return now + (unixMilli-wallNow.UnixMilli())*int64(time.Millisecond)
}
