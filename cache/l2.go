package cache

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// errBreakerOpen is returned by L2 helpers while the breaker skips Redis.
var errBreakerOpen = errors.New("cache: redis is failing; skipped")

// tagScript adds a key to a tag set and makes the set live at least as
// long as the key. One key per call, so it works on Redis Cluster.
const tagScript = `redis.call('SADD', KEYS[1], ARGV[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl == -1 or (ttl >= 0 and ttl < tonumber(ARGV[2])) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1`

// Invalidation messages: "1|{instance}|{op}|{argument}".
const (
	msgKey   = 'k' // argument: a key
	msgTag   = 't' // argument: a tag
	msgClear = 'c' // no argument
)

func (c *Cache[T]) message(op byte, arg string) string {
	return "1|" + c.id + "|" + string(op) + "|" + arg
}

func (c *Cache[T]) dataKey(key string) string { return c.prefix + key }
func (c *Cache[T]) tagKey(tag string) string  { return c.tagPfx + tag }

// l2ctx bounds one Redis operation. It does not inherit the caller's
// cancellation: the result may serve other callers, and an operation cut
// short by one caller's impatience would count as a Redis failure.
func (c *Cache[T]) l2ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	if ctx.Done() != nil {
		ctx = context.WithoutCancel(ctx)
	}
	if c.l2Timeout > 0 {
		return context.WithTimeout(ctx, c.l2Timeout)
	}
	return ctx, func() {}
}

// l2result feeds the breaker with the outcome of a Redis operation and
// reports whether it worked.
func (c *Cache[T]) l2result(err error) bool {
	if err == nil || errors.Is(err, redis.Nil) {
		if c.brk.success() {
			c.logger.Info("cache: redis is reachable again")
			c.startRecovery()
		}
		return true
	}
	c.stats.l2Errors.Add(1)
	wasOpen := c.brk.isOpen()
	c.brk.failure(clock.now())
	if !wasOpen {
		c.logger.Warn("cache: redis failed; skipping it for a while", "error", err, "break", time.Duration(c.brk.duration))
	}
	return false
}

// readL2 returns the entry for key in Redis (fresh or not), or nil on a
// miss, an unreadable entry, a failure, or while the breaker is open.
func (c *Cache[T]) readL2(ctx context.Context, key string, now int64, wallNow time.Time) *entry[T] {
	if !c.brk.allow(now) {
		return nil
	}
	lctx, cancel := c.l2ctx(ctx)
	data, err := c.rdb.Get(lctx, c.dataKey(key)).Bytes()
	cancel()
	if !c.l2result(err) || err != nil {
		return nil
	}
	env, err := parseEnvelope(data)
	if err != nil {
		c.stats.codecErrors.Add(1)
		return nil
	}
	e := &entry[T]{
		key:      key,
		tags:     env.tags,
		negative: env.negative,
		cost:     1,
	}
	if !env.negative {
		if err := c.codec.Unmarshal(env.payload, &e.value); err != nil {
			c.stats.codecErrors.Add(1)
			c.logger.Warn("cache: decoding a value from redis failed; reloading it", "error", err)
			return nil
		}
	}
	e.fresh = min(wallToClock(env.fresh, now, wallNow), now+int64(c.l1ttl))
	e.stale = wallToClock(env.stale, now, wallNow)
	if c.bytesBound {
		e.cost = entryOverhead + int64(len(key)+len(data))
	}
	return e
}

// writeL2 stores an envelope with its tags, and with publish tells the
// other instances to drop the key from their L1.
func (c *Cache[T]) writeL2(ctx context.Context, key string, env []byte, ttl time.Duration, tags []string, publish bool) error {
	dk := c.dataKey(key)
	return c.l2write(ctx, func(lctx context.Context) error {
		if len(tags) == 0 && !publish {
			return c.rdb.Set(lctx, dk, env, ttl).Err()
		}
		_, err := c.rdb.Pipelined(lctx, func(p redis.Pipeliner) error {
			p.Set(lctx, dk, env, ttl)
			for _, t := range tags {
				p.Eval(lctx, tagScript, []string{c.tagKey(t)}, dk, ttl.Milliseconds())
			}
			if publish {
				p.Publish(lctx, c.channel, c.message(msgKey, key))
			}
			return nil
		})
		return err
	})
}

// removeL2 deletes key and publishes its invalidation.
func (c *Cache[T]) removeL2(ctx context.Context, key string) error {
	return c.l2write(ctx, func(lctx context.Context) error {
		_, err := c.rdb.Pipelined(lctx, func(p redis.Pipeliner) error {
			p.Del(lctx, c.dataKey(key))
			p.Publish(lctx, c.channel, c.message(msgKey, key))
			return nil
		})
		return err
	})
}

// l2write runs one Redis write unless the breaker is open, bounded by
// l2ctx, and feeds the breaker with its outcome.
func (c *Cache[T]) l2write(ctx context.Context, write func(lctx context.Context) error) error {
	if !c.brk.allow(clock.now()) {
		return errBreakerOpen
	}
	lctx, cancel := c.l2ctx(ctx)
	defer cancel()
	if err := write(lctx); !c.l2result(err) {
		return err
	}
	return nil
}

// removeTagL2 deletes every key in the tag's set, the set, and publishes
// the tag's invalidation. Keys are deleted one command each, so that it
// works across Redis Cluster slots.
func (c *Cache[T]) removeTagL2(ctx context.Context, tag string) error {
	if !c.brk.allow(clock.now()) {
		return errBreakerOpen
	}
	lctx, cancel := c.l2ctx(ctx)
	defer cancel()
	tk := c.tagKey(tag)
	keys, err := c.rdb.SMembers(lctx, tk).Result()
	if !c.l2result(err) {
		return err
	}
	const batch = 512
	for len(keys) > 0 {
		n := min(len(keys), batch)
		_, err := c.rdb.Pipelined(lctx, func(p redis.Pipeliner) error {
			for _, k := range keys[:n] {
				p.Del(lctx, k)
			}
			return nil
		})
		if !c.l2result(err) {
			return err
		}
		keys = keys[n:]
	}
	_, err = c.rdb.Pipelined(lctx, func(p redis.Pipeliner) error {
		p.Del(lctx, tk)
		p.Publish(lctx, c.channel, c.message(msgTag, tag))
		return nil
	})
	if !c.l2result(err) {
		return err
	}
	return nil
}

// publishClear tells every instance to empty its L1.
func (c *Cache[T]) publishClear(ctx context.Context) error {
	lctx, cancel := c.l2ctx(ctx)
	defer cancel()
	err := c.rdb.Publish(lctx, c.channel, c.message(msgClear, "")).Err()
	if !c.l2result(err) {
		return err
	}
	return nil
}

// onMessage handles an invalidation from another instance.
func (c *Cache[T]) onMessage(payload string) {
	rest, ok := strings.CutPrefix(payload, "1|")
	if !ok {
		return // a future format; ignore
	}
	id, rest, ok := strings.Cut(rest, "|")
	if !ok || id == c.id || len(rest) < 2 || rest[1] != '|' {
		return
	}
	op, arg := rest[0], rest[2:]
	c.stats.invalidations.Add(1)
	if c.l1 == nil {
		return
	}
	switch op {
	case msgKey:
		c.l1.remove(arg)
	case msgTag:
		c.l1.removeTag(arg)
	case msgClear:
		c.l1.clear()
	}
}

// onReconnect runs when the invalidation subscription came back after a
// failure: messages may have been missed, so L1 is emptied. Redis is
// reachable again, so the breaker closes and pending writes are replayed.
func (c *Cache[T]) onReconnect() {
	c.stats.reconnects.Add(1)
	if c.l1 != nil {
		c.l1.clear()
	}
	c.brk.success()
	c.startRecovery()
}
