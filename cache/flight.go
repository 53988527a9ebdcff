package cache

import (
	"context"
	"sync"
)

// flight deduplicates concurrent misses for one key in one process: the
// first caller (the leader) does the work, the others wait for its result.
// Unlike golang.org/x/sync/singleflight it is generic (no interface boxing),
// a waiter can leave when its own context ends without disturbing the
// others, and a call nobody waits for allocates no channel.
//
// A call stays registered until its load is over, even when its callers
// were answered earlier (a stale value served at the soft timeout): Set and
// Remove mark it superseded, and a superseded load does not store its
// result, so a load never overwrites a newer write.
type flight[T any] struct {
	mu    sync.Mutex
	calls map[string]*call[T]
	// free holds calls whose leader was their only user, for reuse.
	free sync.Pool
}

type call[T any] struct {
	// Guarded by flight.mu until finished is set; read-only after.
	done     chan struct{} // made when someone has to wait
	finished bool
	value    T
	err      error
	// superseded is set, under flight.mu, by a write to the key made
	// while the call was registered.
	superseded bool
	// joined is set, under flight.mu, when a caller other than the leader
	// got the call; async by the leader when the load goes on after it
	// returns. Either keeps the call from being reused.
	joined bool
	async  bool
	// scratch is the memory of the leader's L2 read.
	scratch readScratch[T]
}

// join returns the call in progress for key, or starts one; leader reports
// whether the caller started it and so must finish it.
func (f *flight[T]) join(key string) (c *call[T], leader bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c := f.calls[key]; c != nil {
		c.joined = true
		return c, false
	}
	if f.calls == nil {
		f.calls = make(map[string]*call[T])
	}
	c, _ = f.free.Get().(*call[T])
	if c == nil {
		c = &call[T]{}
	}
	f.calls[key] = c
	return c, true
}

// release lets a leader's call be reused when nobody else got it and its
// load is over: the leader has read its result. A call used by others, or
// by a load still running, is left to the garbage collector.
func (f *flight[T]) release(c *call[T]) {
	f.mu.Lock()
	reuse := c.finished && !c.joined && !c.async
	f.mu.Unlock()
	if reuse {
		// Finished means forgotten: no other reference is left.
		*c = call[T]{}
		f.free.Put(c)
	}
}

// finish publishes the result of c and forgets it, so the next miss starts
// a new call. Only the first finish of a call counts.
func (f *flight[T]) finish(key string, c *call[T], value T, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.forgetLocked(key, c)
	f.publishLocked(c, value, err)
}

// answer publishes the result of c but keeps it registered: its load goes
// on in the background and ends with forget.
func (f *flight[T]) answer(c *call[T], value T, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.publishLocked(c, value, err)
}

// forget unregisters c.
func (f *flight[T]) forget(key string, c *call[T]) {
	f.mu.Lock()
	f.forgetLocked(key, c)
	f.mu.Unlock()
}

func (f *flight[T]) forgetLocked(key string, c *call[T]) {
	if f.calls[key] == c {
		delete(f.calls, key)
	}
}

func (f *flight[T]) publishLocked(c *call[T], value T, err error) {
	if c.finished {
		return
	}
	c.value, c.err, c.finished = value, err, true
	if c.done != nil {
		close(c.done)
	}
}

// supersede marks the call in progress for key, if any: a write to key
// happened, so its load must not store what it loaded.
func (f *flight[T]) supersede(key string) {
	f.mu.Lock()
	if c := f.calls[key]; c != nil {
		c.superseded = true
	}
	f.mu.Unlock()
}

// supersedeAll marks every call in progress (a tag removal or a clear).
func (f *flight[T]) supersedeAll() {
	f.mu.Lock()
	for _, c := range f.calls {
		c.superseded = true
	}
	f.mu.Unlock()
}

// unlessSuperseded runs store unless c was superseded, and reports whether
// it ran. Writes mark calls under the same lock, so a write either marks c
// before store is considered or comes after it.
func (f *flight[T]) unlessSuperseded(c *call[T], store func()) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c.superseded {
		return false
	}
	store()
	return true
}

// wait blocks until c is finished or ctx ends.
func (f *flight[T]) wait(ctx context.Context, c *call[T]) (T, error) {
	f.mu.Lock()
	if c.finished {
		f.mu.Unlock()
		return c.value, c.err
	}
	if c.done == nil {
		c.done = make(chan struct{})
	}
	done := c.done
	f.mu.Unlock()
	select {
	case <-done:
		return c.value, c.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}
