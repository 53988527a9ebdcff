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
type flight[T any] struct {
	mu    sync.Mutex
	calls map[string]*call[T]
}

type call[T any] struct {
	// Guarded by flight.mu until finished is set; read-only after.
	done     chan struct{} // made when someone has to wait
	finished bool
	value    T
	err      error
}

// join returns the call in progress for key, or starts one; leader reports
// whether the caller started it and so must finish it.
func (f *flight[T]) join(key string) (c *call[T], leader bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c := f.calls[key]; c != nil {
		return c, false
	}
	if f.calls == nil {
		f.calls = make(map[string]*call[T])
	}
	c = &call[T]{}
	f.calls[key] = c
	return c, true
}

// finish publishes the result of c and forgets it, so the next miss starts
// a new call. Only the first finish of a call counts.
func (f *flight[T]) finish(key string, c *call[T], value T, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c.finished {
		return
	}
	if f.calls[key] == c {
		delete(f.calls, key)
	}
	c.value, c.err, c.finished = value, err, true
	if c.done != nil {
		close(c.done)
	}
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
