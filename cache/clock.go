package cache

import (
	"sync"
	"sync/atomic"
	"time"
)

// clockTick is the resolution of the coarse clock.
const clockTick = time.Millisecond

// clockIdleTicks is how many ticks without a reader make the clock stop
// ticking until the next read.
const clockIdleTicks = 1000

// Clock states.
const (
	clockParked = iota // not ticking: the next reader refreshes it and wakes the ticker
	clockUsed          // ticking, read since the last idle check
	clockUnused        // ticking, not read since the last idle check
)

// coarseClock is a monotonic clock whose reading is one atomic load. A
// single goroutine advances it every clockTick while at least one cache is
// open and the clock is being read; after clockIdleTicks ticks without a
// reader it stops ticking, and the next reader sets it to the precise time
// and starts it again, so an idle service pays no timer wake-ups. Slow
// paths also advance it, so it never lags by more than a tick where it
// matters. L1 hits read it instead of calling time.Now, which costs more
// than the rest of a hit.
type coarseClock struct {
	nanos atomic.Int64 // nanoseconds since base
	state atomic.Int32

	mu    sync.Mutex
	users int
	wake  chan struct{}
	stop  chan struct{}
	done  chan struct{}
}

var (
	clockBase = time.Now()
	clock     coarseClock
)

// now returns the coarse time in nanoseconds since the process's clock
// base.
func (c *coarseClock) now() int64 {
	if c.state.Load() != clockUsed {
		c.touch()
	}
	return c.nanos.Load()
}

// touch marks the clock as read and, if it was parked, brings it to the
// precise time and wakes the ticker.
func (c *coarseClock) touch() {
	switch c.state.Load() {
	case clockUnused:
		c.state.CompareAndSwap(clockUnused, clockUsed)
	case clockParked:
		c.refresh()
		c.mu.Lock()
		// Without a ticker (no cache open) the clock stays parked and
		// every read refreshes it.
		if c.wake != nil && c.state.CompareAndSwap(clockParked, clockUsed) {
			select {
			case c.wake <- struct{}{}:
			default:
			}
		}
		c.mu.Unlock()
	}
}

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
	c.state.Store(clockUsed)
	c.wake = make(chan struct{}, 1)
	c.stop = make(chan struct{})
	c.done = make(chan struct{})
	go c.run(c.wake, c.stop, c.done)
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
	c.wake = nil
	c.state.Store(clockParked)
}

func (c *coarseClock) run(wake, stop, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(clockTick)
	defer t.Stop()
	ticks := 0
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		c.refresh()
		if ticks++; ticks < clockIdleTicks {
			continue
		}
		ticks = 0
		if c.state.CompareAndSwap(clockUsed, clockUnused) {
			continue
		}
		// Nobody read the clock for clockIdleTicks ticks: park until
		// someone does.
		if !c.state.CompareAndSwap(clockUnused, clockParked) {
			continue
		}
		t.Stop()
		select {
		case <-stop:
			return
		case <-wake:
		}
		c.refresh()
		t.Reset(clockTick)
	}
}

// wallToClock converts a wall-clock time in Unix milliseconds (as stored in
// Redis, shared between instances) to coarse-clock nanoseconds.
func wallToClock(unixMilli int64, now int64, wallNow time.Time) int64 {
	return now + (unixMilli-wallNow.UnixMilli())*int64(time.Millisecond)
}
