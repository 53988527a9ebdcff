package cache

import (
	"hash/maphash"
	"math/bits"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
)

// entry is one value in L1. It is immutable once stored, except for its
// CLOCK reference bit and ring slot: an update stores a new entry.
type entry[T any] struct {
	value T
	// fresh is the coarse-clock time until which the entry is served
	// without asking L2 or the loader.
	fresh int64
	// stale is the time until which it may still be served when reloading
	// fails (fail-safe); after it the entry is dead.
	stale int64
	// refreshAt, when not 0, is the coarse-clock time after which a hit
	// starts a background reload (eager refresh); refreshing is set by the
	// hit that started it.
	refreshAt  int64
	refreshing atomic.Bool
	// created is when the value was written or its load started, Unix
	// milliseconds: a fill never replaces an entry created later.
	created  int64
	key      string
	tags     []string
	cost     int64
	negative bool

	slot int          // index in the shard's ring, under the shard lock
	ref  atomic.Bool  // CLOCK reference bit
	hits atomic.Int64 // L1 hits, added to the shard's count on removal
}

// l1 is a bounded, sharded in-process store with CLOCK (second-chance)
// eviction. A hit is one lock-free lookup in a concurrent map (sync.Map)
// and does not allocate; writes take the lock of the key's shard, which
// keeps the CLOCK ring and the cost. Its bound is a total cost: 1 per
// entry for an entry-count bound, or the estimated size in bytes.
//
// Why not a library (otter, ristretto): the cache needs things their APIs
// make awkward or costly: entries with two expiries (fresh, and stale for
// fail-safe) read on the hit path against a coarse clock, removal by tag
// (a scan), emptying on reconnection, and an entry-count or byte bound
// chosen per cache. A concurrent map with sharded CLOCK rings does all of
// it in ~250 lines with no dependency, and meets the hit target (tens of
// ns, no allocation). Its hit ratio is that of CLOCK (close to LRU), below
// a TinyLFU's on scan-heavy loads; L2 absorbs the difference.
type l1[T any] struct {
	m      sync.Map // string -> *entry[T]; written under the key's shard lock
	seed   maphash.Seed
	mask   uint64
	shards []l1shard[T]
}

type l1shard[T any] struct {
	mu      sync.Mutex
	n       int // entries
	ring    []*entry[T]
	hand    int
	cost    int64
	maxCost int64
	hits    atomic.Int64 // of entries removed
	evicted atomic.Int64
	_       [64]byte // keep one shard's hot words off the next one's cache line
}

// newL1 makes a store bounded by maxCost in total. perEntryMin is the
// smallest budget a shard should get, so small stores are not split into
// shards too small to be fair.
func newL1[T any](maxCost, perEntryMin int64) *l1[T] {
	n := 4 * runtime.GOMAXPROCS(0)
	n = min(n, 64)
	for n > 1 && maxCost/int64(n) < perEntryMin {
		n /= 2
	}
	// Round down to a power of two.
	n = 1 << (bits.Len(uint(n)) - 1)
	c := &l1[T]{seed: maphash.MakeSeed(), mask: uint64(n - 1), shards: make([]l1shard[T], n)}
	for i := range c.shards {
		c.shards[i].maxCost = max(maxCost/int64(n), 1)
	}
	return c
}

func (c *l1[T]) shard(key string) *l1shard[T] {
	return &c.shards[maphash.String(c.seed, key)&c.mask]
}

// getFresh returns the entry for key if it is fresh at now, and counts the
// hit. It is the L1 hit path: keep it small.
func (c *l1[T]) getFresh(key string, now int64) *entry[T] {
	v, _ := c.m.Load(key)
	e, _ := v.(*entry[T])
	if e == nil || now >= e.fresh {
		return nil
	}
	if !e.ref.Load() {
		e.ref.Store(true)
	}
	e.hits.Add(1)
	return e
}

// get returns the entry for key whatever its age, or nil.
func (c *l1[T]) get(key string) *entry[T] {
	v, _ := c.m.Load(key)
	e, _ := v.(*entry[T])
	return e
}

// current returns the entry stored for key; the caller holds its shard's
// lock.
func (c *l1[T]) current(key string) *entry[T] {
	return c.get(key)
}

// set stores e, replacing any entry for the same key, and evicts until the
// shard is within its budget. An entry larger than a shard's budget is not
// stored (and any older entry for its key is dropped). With fill (a value
// read from Redis or loaded, not written by Set), an entry created later
// than e is kept instead.
func (c *l1[T]) set(e *entry[T], now int64, fill bool) {
	s := c.shard(e.key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := c.current(e.key); old != nil {
		if fill && old.created > e.created {
			return
		}
		c.removeLocked(s, old)
	}
	if e.cost > s.maxCost {
		return
	}
	e.slot = len(s.ring)
	s.ring = append(s.ring, e)
	c.m.Store(e.key, e)
	s.n++
	s.cost += e.cost
	c.evictLocked(s, e, now)
}

// evictLocked sweeps the CLOCK hand until the shard fits its budget. Dead
// entries go first whatever their reference bit; keep is never evicted.
func (c *l1[T]) evictLocked(s *l1shard[T], keep *entry[T], now int64) {
	for s.cost > s.maxCost && len(s.ring) > 1 {
		if s.hand >= len(s.ring) {
			s.hand = 0
		}
		victim := s.ring[s.hand]
		if victim == keep {
			s.hand++
			continue
		}
		if victim.ref.Load() && now < victim.stale {
			victim.ref.Store(false)
			s.hand++
			continue
		}
		c.removeLocked(s, victim)
		s.evicted.Add(1)
	}
}

// removeLocked takes e out of the map and the ring of its shard s, whose
// lock the caller holds; the last ring entry moves into its slot.
func (c *l1[T]) removeLocked(s *l1shard[T], e *entry[T]) {
	if !c.m.CompareAndDelete(e.key, e) {
		return
	}
	last := len(s.ring) - 1
	moved := s.ring[last]
	s.ring[e.slot] = moved
	moved.slot = e.slot
	s.ring[last] = nil
	s.ring = s.ring[:last]
	s.n--
	s.cost -= e.cost
	s.hits.Add(e.hits.Load())
}

// remove drops key; it reports whether there was an entry.
func (c *l1[T]) remove(key string) bool {
	s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := c.current(key)
	if e == nil {
		return false
	}
	c.removeLocked(s, e)
	return true
}

// removeIf drops e if it is still the entry for its key.
func (c *l1[T]) removeIf(e *entry[T]) {
	s := c.shard(e.key)
	s.mu.Lock()
	c.removeLocked(s, e)
	s.mu.Unlock()
}

// removeTag drops every entry carrying tag and returns how many. It scans
// the whole store: tag invalidations are rare and the store is bounded.
func (c *l1[T]) removeTag(tag string) int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		for j := 0; j < len(s.ring); {
			e := s.ring[j]
			if slices.Contains(e.tags, tag) {
				c.removeLocked(s, e) // moves another entry into slot j
				n++
				continue
			}
			j++
		}
		s.mu.Unlock()
	}
	return n
}

// clear drops everything.
func (c *l1[T]) clear() {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		for _, e := range s.ring {
			c.m.CompareAndDelete(e.key, e)
			s.hits.Add(e.hits.Load())
		}
		clear(s.ring)
		s.ring = s.ring[:0]
		s.cost, s.hand, s.n = 0, 0, 0
		s.mu.Unlock()
	}
}

// len returns the number of entries.
func (c *l1[T]) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += s.n
		s.mu.Unlock()
	}
	return n
}

// counts returns the hits and evictions so far.
func (c *l1[T]) counts() (hits, evicted int64) {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		hits += s.hits.Load()
		for _, e := range s.ring {
			hits += e.hits.Load()
		}
		s.mu.Unlock()
		evicted += s.evicted.Load()
	}
	return hits, evicted
}
