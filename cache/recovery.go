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
	opClear
)

// pendingOp is a write that could not reach Redis.
type pendingOp struct {
	seq     uint64
	kind    int
	id      string // the key, or the tag for opRemoveTag
	env     []byte
	at      int64     // Unix ms: when the write was made (the entry's created time)
	expires time.Time // when Redis should drop the value (opSet)
	pos     uint64    // WAL position of the database write it follows (0: none)
}

// pendingOverhead is the fixed cost, in bytes, counted per queued
// operation besides its key and value.
const pendingOverhead = 64

func (op pendingOp) cost() int64 { return int64(len(op.id) + len(op.env) + pendingOverhead) }

// recoveryQueue keeps the writes that failed while Redis was unreachable,
// to replay them in order when it returns. The last operation per key (and
// per tag) replaces earlier ones. It is bounded by count and by bytes: a
// Set that does not fit the byte budget is kept as a Remove of its key, so
// the replay drops the older value from Redis; an operation that does not
// fit the count is dropped, and the replay then ends with a Clear as of
// the first dropped write, so that no value older than it is served.
type recoveryQueue struct {
	mu          sync.Mutex
	max         int
	maxBytes    int64 // 0: no bound
	bytes       int64
	seq         uint64
	ops         map[string]pendingOp // "k"+key, "t"+tag or "c"
	overflowAt  int64                // Unix ms of the first dropped write; 0: none
	overflowPos uint64               // the highest WAL position of the dropped writes
	inflight    int                  // taken by the replay in progress
	warned      bool
}

func opID(op pendingOp) string {
	switch op.kind {
	case opRemoveTag:
		return "t" + op.id
	case opClear:
		return "c"
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
	old, replace := q.ops[id]
	if replace {
		q.bytes -= old.cost()
		// The replay carries the position of every write it stands for.
		op.pos = max(op.pos, old.pos)
	}
	if op.kind == opSet && q.maxBytes > 0 && q.bytes+op.cost() > q.maxBytes {
		if !q.warned {
			logger.Warn("cache: recovery queue over its byte bound; further Sets are replayed as Removes", "max_bytes", q.maxBytes)
			q.warned = true
		}
		op = pendingOp{kind: opRemove, id: op.id, at: op.at, pos: op.pos}
	}
	if !replace && len(q.ops) >= q.max {
		if q.overflowAt == 0 {
			logger.Warn("cache: recovery queue full; the replay will clear the cache as of now", "max", q.max)
			q.overflowAt = op.at
		}
		q.overflowPos = max(q.overflowPos, op.pos)
		return
	}
	q.seq++
	op.seq = q.seq
	q.ops[id] = op
	q.bytes += op.cost()
}

// take returns the pending operations in order and empties the queue;
// with them the Clear that stands for the operations dropped, if any (its
// kind is 0 when there is none).
func (q *recoveryQueue) take() ([]pendingOp, pendingOp) {
	q.mu.Lock()
	defer q.mu.Unlock()
	ops := make([]pendingOp, 0, len(q.ops))
	for _, op := range q.ops {
		ops = append(ops, op)
	}
	clear(q.ops)
	q.bytes = 0
	var overflow pendingOp
	if q.overflowAt != 0 {
		overflow = pendingOp{kind: opClear, at: q.overflowAt, pos: q.overflowPos}
	}
	q.overflowAt, q.overflowPos = 0, 0
	q.inflight = len(ops)
	if overflow.kind != 0 {
		q.inflight++
	}
	slices.SortFunc(ops, func(a, b pendingOp) int { return cmp.Compare(a.seq, b.seq) })
	return ops, overflow
}

// putBack re-queues operations that could not be replayed, unless a newer
// operation for the same key arrived meanwhile, and the Clear of dropped
// ones (overflow, when its kind is not 0).
func (q *recoveryQueue) putBack(ops []pendingOp, overflow pendingOp) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.inflight = 0
	if q.ops == nil {
		q.ops = map[string]pendingOp{}
	}
	for _, op := range ops {
		if _, newer := q.ops[opID(op)]; !newer {
			q.ops[opID(op)] = op
			q.bytes += op.cost()
		}
	}
	if overflow.kind != 0 {
		if q.overflowAt == 0 || overflow.at < q.overflowAt {
			q.overflowAt = overflow.at
		}
		q.overflowPos = max(q.overflowPos, overflow.pos)
	}
}

// replayed records the end of a replay that went through.
func (q *recoveryQueue) replayed() {
	q.mu.Lock()
	q.inflight = 0
	q.mu.Unlock()
}

// len counts the operations pending, including those being replayed.
func (q *recoveryQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := len(q.ops) + q.inflight
	if q.overflowAt != 0 {
		n++
	}
	return n
}

// pending counts the operations waiting for a replay.
func (q *recoveryQueue) pending() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := len(q.ops)
	if q.overflowAt != 0 {
		n++
	}
	return n
}

func (q *recoveryQueue) size() int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.bytes
}

// queue keeps a write that failed for replay, and makes sure a replay is
// running: it retries by itself until Redis takes the writes.
func (c *Cache[T]) queue(op pendingOp) {
	c.recovery.add(op, c.logger)
	c.startRecovery()
}

// startRecovery starts the replay loop unless it runs already.
func (c *Cache[T]) startRecovery() {
	if c.rdb == nil || c.recovery.pending() == 0 || c.closed.Load() {
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
		c.replayLoop()
	}()
}

// replayLoop replays the queue until it is empty, with a jittered
// exponential backoff between failed attempts (the breaker also paces
// them), so a write queued during an outage reaches Redis without waiting
// for later traffic.
func (c *Cache[T]) replayLoop() {
	backoff := dialBackoff(2 * time.Second)
	for attempt := 0; ; {
		if c.recovery.pending() == 0 {
			c.replaying.Store(false)
			// An operation queued after the check above found the loop
			// still running: start again for it.
			if c.recovery.pending() > 0 && !c.closed.Load() && c.replaying.CompareAndSwap(false, true) {
				continue
			}
			return
		}
		if c.replay() {
			attempt = 0
			continue
		}
		if !sleepCtx(c.closeCtx, backoff(attempt)) {
			c.replaying.Store(false)
			return
		}
		attempt++
	}
}

// replay sends the queued operations once; it reports whether all went
// through.
func (c *Cache[T]) replay() bool {
	ops, overflow := c.recovery.take()
	ctx := c.closeCtx
	for i, op := range ops {
		var err error
		switch op.kind {
		case opSet:
			if ttl := time.Until(op.expires); ttl > time.Millisecond {
				err = c.replaySet(ctx, op, ttl)
			} else {
				// Expired while Redis was away: make sure no older value
				// survives instead.
				err = c.removeL2(ctx, op.id, op.at, true, op.pos)
			}
		case opRemove:
			err = c.removeL2(ctx, op.id, op.at, true, op.pos)
		case opRemoveTag, opClear:
			err = c.invalidateL2(ctx, op.kind, op.id, op.at, op.pos)
		}
		if err != nil {
			c.recovery.putBack(ops[i:], overflow)
			return false
		}
		c.stats.replayed.Add(1)
	}
	if overflow.kind != 0 {
		if err := c.invalidateL2(ctx, opClear, "", overflow.at, overflow.pos); err != nil {
			c.recovery.putBack(nil, overflow)
			return false
		}
		c.logger.Warn("cache: some Redis writes were lost while Redis was down; cleared the cache as of the first one")
	}
	c.recovery.replayed()
	if len(ops) > 0 {
		c.logger.Info("cache: replayed writes made while Redis was down", "count", len(ops))
	}
	return true
}
