// Package memo caches values computed from a key, up to a bound.
package memo

import "sync"

// Bounded caches values computed from a key, up to Max keys: past them,
// new keys are computed on every use and not kept, so a key space chosen
// by clients (Host headers, status codes, command names) cannot grow it
// without end. The zero value keeps nothing; set Max. It is safe for
// concurrent use and must not be copied after first use.
type Bounded[K comparable, V any] struct {
	// Max is the number of keys kept.
	Max int

	mu sync.RWMutex
	m  map[K]V
}

// Get returns the value of k, computing it on the first use.
func (c *Bounded[K, V]) Get(k K, compute func(K) V) V {
	c.mu.RLock()
	v, ok := c.m[k]
	c.mu.RUnlock()
	if ok {
		return v
	}
	v = compute(k)
	c.mu.Lock()
	if len(c.m) < c.Max {
		if c.m == nil {
			c.m = map[K]V{}
		}
		c.m[k] = v
	}
	c.mu.Unlock()
	return v
}
