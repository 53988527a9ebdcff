package cache

import (
	"context"
	"sync"
)

// flight deduplicates concurrent misses for one key in one process: the
// first caller (the leader) does the work, the others wait for its result.
// Unlike golang.org/x/sync/singleflight it is generic (no interface boxing)
// and a waiter can leave when its own context ends without disturbing the
// others.
type flight[T any] struct {
	mu    sync.Mutex
	calls map[string]*call[T]
}

type call[T any] struct {
	done  chan struct{}
	value T
	err   error
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
	c = &call[T]{done: make(chan struct{})}
	f.calls[key] = c
	return c, true
}

// finish publishes the result of c and forgets it, so the next miss starts
// a new call. Only the first finish of a call counts.
func (f *flight[T]) finish(key string, c *call[T], value T, err error) {
	f.mu.Lock()
	if f.calls[key] != c {
		f.mu.Unlock()
		return
	}
	delete(f.calls, key)
	f.mu.Unlock()
	c.value, c.err = value, err
	close(c.done)
}

// wait blocks until c is finished or ctx ends.
func (c *call[T]) wait(ctx context.Context) (T, error) {
	select {
	case <-c.done:
		return c.value, c.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}
