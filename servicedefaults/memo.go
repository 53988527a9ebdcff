package servicedefaults

import "sync"

// memo caches values computed from a key, up to a bound: past max keys,
// new ones are computed on every use and not kept, so a key space chosen
// by clients (Host headers, status codes) cannot grow it without end. The
// zero value keeps nothing; set max.
type memo[K comparable, V any] struct {
	mu  sync.RWMutex
	m   map[K]V
	max int
}

// get returns the value of k, computing it on the first use.
func (c *memo[K, V]) get(k K, compute func(K) V) V {
	c.mu.RLock()
	v, ok := c.m[k]
	c.mu.RUnlock()
	if ok {
		return v
	}
	v = compute(k)
	c.mu.Lock()
	if len(c.m) < c.max {
		if c.m == nil {
			c.m = map[K]V{}
		}
		c.m[k] = v
	}
	c.mu.Unlock()
	return v
}
