package cache

import (
	"cmp"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// Kinds of operations replayed to Redis after an outage.
const (
	opSet = iota + 1
	opRemove
	opRemoveTag
)

// pendingOp is a write that could not reach Redis.
type pendingOp struct {
	seq     uint64
	kind    int
	id      string // the key, or the tag for opRemoveTag
	env     []byte
	expires time.Time // when Redis should drop the value (opSet)
	tags    []string
}

// recoveryQueue keeps the writes that failed while Redis was unreachable,
// to replay them in order when it returns. The last operation per key (and
// per tag) replaces earlier ones. When full, new operations are dropped and
// the replay ends by telling every instance to empty its L1, since Redis
// may then hold values this instance meant to replace.
type recoveryQueue struct {
	mu       sync.Mutex
	max      int
	seq      uint64
	ops      map[string]pendingOp // "k"+key or "t"+tag
	overflow bool
}

func opID(op pendingOp) string {
	if op.kind == opRemoveTag {
		return "t" + op.id
	}
	return "k" + op.id
}

func (q *recoveryQueue) add(op pendingOp, logger *slog.Logger) {
	if q.max <= 0 {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.ops == nil {
		q.ops = map[string]pendingOp{}
	}
	id := opID(op)
	if _, replace := q.ops[id]; !replace && len(q.ops) >= q.max {
		if !q.overflow {
			logger.Warn("cache: recovery queue full; further Redis writes are dropped until Redis returns", "max", q.max)
		}
		q.overflow = true
		return
	}
	q.seq++
	op.seq = q.seq
	q.ops[id] = op
}

// take returns the pending operations in order and empties the queue.
func (q *recoveryQueue) take() ([]pendingOp, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	ops := make([]pendingOp, 0, len(q.ops))
	for _, op := range q.ops {
		ops = append(ops, op)
	}
	clear(q.ops)
	overflow := q.overflow
	q.overflow = false
	slices.SortFunc(ops, func(a, b pendingOp) int { return cmp.Compare(a.seq, b.seq) })
	return ops, overflow
}

// putBack re-queues operations that could not be replayed, unless a newer
// operation for the same key arrived meanwhile.
func (q *recoveryQueue) putBack(ops []pendingOp, overflow bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.ops == nil {
		q.ops = map[string]pendingOp{}
	}
	for _, op := range ops {
		if _, newer := q.ops[opID(op)]; !newer {
			q.ops[opID(op)] = op
		}
	}
	q.overflow = q.overflow || overflow
}

func (q *recoveryQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := len(q.ops)
	if q.overflow {
		n++
	}
	return n
}

// startRecovery replays pending writes in the background, once at a time.
func (c *Cache[T]) startRecovery() {
	if c.rdb == nil || c.recovery.len() == 0 || c.closed.Load() {
		return
	}
	if !c.replaying.CompareAndSwap(false, true) {
		return
	}
	if !c.track() {
		c.replaying.Store(false)
		return
	}
	go func() {
		defer c.wg.Done()
		defer c.replaying.Store(false)
		c.replay()
	}()
}

func (c *Cache[T]) replay() {
	ops, overflow := c.recovery.take()
	ctx := c.closeCtx
	for i, op := range ops {
		var err error
		switch op.kind {
		case opSet:
			if ttl := time.Until(op.expires); ttl > time.Millisecond {
				err = c.writeL2(ctx, op.id, op.env, ttl, op.tags, true)
			} else {
				// Expired while Redis was away: make sure no older value
				// survives instead.
				err = c.removeL2(ctx, op.id)
			}
		case opRemove:
			err = c.removeL2(ctx, op.id)
		case opRemoveTag:
			err = c.removeTagL2(ctx, op.id)
		}
		if err != nil {
			c.recovery.putBack(ops[i:], overflow)
			return
		}
		c.stats.replayed.Add(1)
	}
	if overflow {
		if err := c.publishClear(ctx); err != nil {
			c.recovery.putBack(nil, true)
			return
		}
		c.logger.Warn("cache: some Redis writes were lost while Redis was down; told every instance to empty its L1")
	}
	if len(ops) > 0 {
		c.logger.Info("cache: replayed writes made while Redis was down", "count", len(ops))
	}
}
