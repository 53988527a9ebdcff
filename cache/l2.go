package cache

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/redis/go-redis/v9"

	"github.com/goaspire/goaspire/internal/deadline"
)

// errBreakerOpen is returned by L2 helpers while the breaker skips Redis.
var errBreakerOpen = errors.New("cache: redis is failing; skipped")

// Scripts. Each touches one key, so they work on Redis Cluster.
var (
	// setIfNotNewer stores an envelope unless the stored one was created
	// at or after it (bytes 19-26 of a version-2 envelope, big endian):
	// a replayed write never replaces one made later. Only replays use
	// it, and it compares the clocks of the instances that wrote: the one
	// clock assumption left (see the package doc).
	// KEYS[1] data key; ARGV[1] envelope, ARGV[2] TTL ms, ARGV[3] created ms.
	setIfNotNewer = redis.NewScript(`local cur = redis.call('GET', KEYS[1])
if cur and string.byte(cur, 1) == 2 and #cur >= 26 then
  local t = 0
  for i = 19, 26 do t = t * 256 + string.byte(cur, i) end
  if t >= tonumber(ARGV[3]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1`)
	// unlock deletes a lock if it still holds our token.
	unlock = redis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)
	// renew extends a lock if it still holds our token.
	renew = redis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`)
	// setMax records a removal time unless a later one is recorded, and
	// makes it live at least ARGV[2] ms.
	// KEYS[1] tag or clear key; ARGV[1] time ms, ARGV[2] TTL ms.
	setMax = redis.NewScript(`local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl >= 0 and ttl < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
end
return 1`)
	// The scripts that store a loaded value. A load stores its value only
	// where Redis still holds what it was loaded over: its own lock
	// envelope, or the value (or nothing) the load saw when it started,
	// known by its SHA-1 ('' for nothing). A Set or Remove made meanwhile
	// changed that, so Redis, not a clock, says the load is older. Each
	// returns 1 when the value is stored (or was already, by an earlier
	// attempt whose reply was lost: they are safe to retry), 0 otherwise.
	//
	// storeLocked ends a load under the lock envelope: KEYS[1] data key;
	// ARGV[1] the value's envelope, ARGV[2] TTL ms, ARGV[3] the lock
	// envelope, ARGV[4] channel, ARGV[5] the "loaded" message prefix,
	// ARGV[6] the length of the data key's prefix (the rest is the cache
	// key). A waiter marked the envelope: publish "loaded".
	storeLocked = redis.NewScript(`local cur = redis.call('GET', KEYS[1])
local marked = false
if cur and cur ~= ARGV[3] then
  if cur == ARGV[1] then return 1 end
  if cur ~= ARGV[3] .. 'w' then return 0 end
  marked = true
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if marked then redis.call('PUBLISH', ARGV[4], ARGV[5] .. string.sub(KEYS[1], tonumber(ARGV[6]) + 1)) end
return 1`)
	// storeIfSeen stores a value loaded without the lock envelope.
	// KEYS[1] data key; ARGV[1] envelope, ARGV[2] TTL ms, ARGV[3] the
	// SHA-1 of what the load saw, '' for nothing.
	storeIfSeen = redis.NewScript(`local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then return 1 end
if cur and (ARGV[3] == '' or redis.sha1hex(cur) ~= ARGV[3]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1`)
	// storeSeenUnlock is storeIfSeen, then the release of the lock key if
	// it still holds our token, then a publish if another instance said
	// it waits (the marker it left is deleted): the end of a load under
	// the lock key in one command. It touches three keys, so it runs on
	// single-node clients only.
	// KEYS[1] data key, KEYS[2] lock key, KEYS[3] waiters' marker;
	// ARGV[1] envelope, ARGV[2] TTL ms, ARGV[3] SHA-1 seen, ARGV[4] token,
	// ARGV[5] channel, ARGV[6] ARGV[7] the message (prefix and key).
	storeSeenUnlock = redis.NewScript(`local cur = redis.call('GET', KEYS[1])
local stored = 1
if cur ~= ARGV[1] then
  if cur and (ARGV[3] == '' or redis.sha1hex(cur) ~= ARGV[3]) then
    stored = 0
  else
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  end
end
if redis.call('GET', KEYS[2]) == ARGV[4] then redis.call('DEL', KEYS[2]) end
if redis.call('DEL', KEYS[3]) == 1 then redis.call('PUBLISH', ARGV[5], ARGV[6] .. ARGV[7]) end
return stored`)
	// digest returns the SHA-1 of what KEYS[1] holds, '' for nothing: what
	// a load that did not read the key (an eager refresh) is loaded over.
	digest = redis.NewScript(`local cur = redis.call('GET', KEYS[1])
if cur then return redis.sha1hex(cur) end
return ''`)
	// The scripts of the lock envelope (see appendLock). A waiting
	// instance appends "w" to the holder's envelope (markWaiting), so
	// that the holder, whose write returns what it replaced, knows it has
	// to publish; renewEnvelope and releaseEnvelope accept the envelope
	// with or without that mark. Each touches one key.
	//
	// KEYS[1] data key; ARGV[1] the envelope (without the mark).
	markWaiting = redis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[1] .. 'w', 'KEEPTTL') end
return 1`)
	// ARGV[2] lease ms.
	renewEnvelope = redis.NewScript(`local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] or cur == ARGV[1] .. 'w' then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`)
	// ARGV[2] channel, ARGV[3] ARGV[4] the "loaded" message.
	releaseEnvelope = redis.NewScript(`local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] or cur == ARGV[1] .. 'w' then redis.call('DEL', KEYS[1]) end
if cur == ARGV[1] .. 'w' then redis.call('PUBLISH', ARGV[2], ARGV[3] .. ARGV[4]) end
return 1`)
	// release deletes a lock if it still holds our token, and publishes
	// if another instance said it waits (deleting its marker).
	// Single-node clients only.
	// KEYS[1] lock key, KEYS[2] waiters' marker; ARGV[1] token,
	// ARGV[2] channel, ARGV[3] ARGV[4] the message (prefix and key).
	release = redis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
if redis.call('DEL', KEYS[2]) == 1 then redis.call('PUBLISH', ARGV[2], ARGV[3] .. ARGV[4]) end
return 1`)
	scripts = []*redis.Script{setIfNotNewer, unlock, renew, setMax, storeLocked, storeIfSeen, storeSeenUnlock, digest, release, markWaiting, renewEnvelope, releaseEnvelope}
)

// tombstoneTTL is how long a Remove leaves a marker in Redis, so that a
// load that started before it does not store the removed value again.
const tombstoneTTL = time.Minute

// Invalidation messages: "2|{instance}|{op}|{argument}", where a message
// that follows a database write has "{instance}@{position}" (see
// parseSender).
const (
	msgKey    = 'k' // argument: a key written or removed
	msgLoaded = 'l' // argument: a key loaded under the lock (or its lock released)
	msgTag    = 't' // argument: "{ms}|{tag}"
	msgClear  = 'c' // argument: "{ms}"
)

func (c *Cache[T]) message(op byte, arg string) string {
	return "2|" + c.id + "|" + string(op) + "|" + arg
}

// messageAt is message for an invalidation that carries the WAL position
// pos of the write it follows (none when 0).
func (c *Cache[T]) messageAt(op byte, arg string, pos uint64) string {
	if pos == 0 {
		return c.message(op, arg)
	}
	return "2|" + c.id + string(posSep) + formatPos(pos) + "|" + string(op) + "|" + arg
}

// scriptArgs are command and script arguments that do not change, boxed
// once.
type scriptArgs struct {
	token   any // the lock token: the instance id
	channel any
	loaded  any // the prefix of a msgLoaded message
	lockEnv any // the lock envelope (appendLock with the token), a string
	lease   any // the lock lease in milliseconds, an int64
	ttl     any // the Redis TTL of an entry with the default TTL, ms

	storeSha  any // the SHA-1 of storeLocked, a string
	prefixLen any // the length of the data keys' prefix, an int64
}

func (c *Cache[T]) dataKey(key string) string { return c.prefix + key }
func (c *Cache[T]) tagKey(tag string) string  { return c.tagPfx + tag }
func (c *Cache[T]) lockKey(key string) string { return c.lockPfx + key }
func (c *Cache[T]) waitKey(key string) string { return c.waitPfx + key }

// l2ctx bounds one Redis operation by L2Timeout. It does not inherit the
// caller's cancellation: the result may serve other callers, and an
// operation cut short by one caller's impatience would count as a Redis
// failure.
//
// The bound is a deadline.Context: its deadline is what a client with
// ContextTimeoutEnabled puts on the dial handshake and the socket reads
// and writes, and its Done channel, closed at most a slot after the
// deadline, is what go-redis waits on everywhere else: for a pool turn,
// for a connection being dialed (go-redis dials in the background, on a
// context of its own, and returns when the caller's is done), and between
// its retries. A context whose Done is nil would let each of those wait
// for the client's own timeouts (DialTimeout times DialerRetries, times
// MaxRetries), which is how a silent Redis froze callers for tens of
// seconds. One deadline covers the retries, so they never multiply it.
func (c *Cache[T]) l2ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	if c.l2Timeout <= 0 {
		if ctx.Done() != nil {
			ctx = context.WithoutCancel(ctx)
		}
		return ctx, noCancel
	}
	return c.slots.New(ctx, time.Now().Add(c.l2Timeout)), noCancel
}

// l2deadline makes dc the bound of one Redis operation started at now,
// carrying the values of ctx (see l2ctx). It does not allocate, so a
// deadline.Context kept in a call's scratch memory costs nothing.
func (c *Cache[T]) l2deadline(dc *deadline.Context, ctx context.Context, now time.Time) {
	c.slots.Init(dc, ctx, now.Add(c.l2Timeout))
}

func noCancel() {}

// appliesContextDeadlines reports whether rdb sets its socket deadlines
// from the context of each command.
func appliesContextDeadlines(rdb redis.UniversalClient) bool {
	switch r := rdb.(type) {
	case *redis.Client:
		return r.Options().ContextTimeoutEnabled
	case *redis.ClusterClient:
		return r.Options().ContextTimeoutEnabled
	}
	return false
}

// l2result feeds the breaker with the outcome of a Redis operation and
// reports whether it worked.
func (c *Cache[T]) l2result(err error) bool {
	if err == nil || errors.Is(err, redis.Nil) {
		if c.brk.success() {
			c.logger.Info("cache: redis is reachable again")
		}
		return true
	}
	c.stats.l2Errors.Add(1)
	if c.brk.failure(clock.now(), c.breakDuration) {
		c.logger.Warn("cache: redis failed; skipping it for a while", "error", err, "break", time.Duration(c.breakDuration))
	}
	return false
}

// readL2 returns the entry for key in Redis (fresh or not), or nil on a
// miss, an unreadable entry, a failure, or while the breaker is open. With
// sc, the Redis context, the command's arguments and (without L1, where
// the entry is not kept) the entry live in sc rather than in allocations
// of their own.
//
// With lock (and sc), the read also takes the distributed lock for the
// key when Redis has nothing under it, in the same command: SET NX GET
// stores this instance's lock envelope there (see appendLock) and returns
// what was there before. sc then says whether the lock was taken, or is
// held by another instance.
func (c *Cache[T]) readL2(ctx context.Context, key string, now int64, wallNow time.Time, sc *readScratch[T], lock bool) *entry[T] {
	if !c.brk.allow(now) {
		return nil
	}
	var lctx context.Context
	cancel := noCancel
	if sc != nil && c.l2Timeout > 0 {
		c.l2deadline(&sc.ctx, ctx, wallNow)
		lctx = &sc.ctx
	} else {
		lctx, cancel = c.l2ctx(ctx)
	}
	dk := c.dataKey(key)
	var cmd *redis.StringCmd
	switch {
	case sc == nil:
		cmd = c.rdb.Get(lctx, dk)
	case lock && !c.noSetGet.Load():
		sc.args = [11]any{"set", dk, c.args.lockEnv, "nx", "px", c.args.lease, "get"}
		sc.cmd = *redis.NewStringCmd(lctx, sc.args[:7]...)
		cmd = &sc.cmd
		_ = c.rdb.Process(lctx, cmd)
		if err := cmd.Err(); err != nil && isReplyError(err) {
			// The server refused SET NX GET: before Redis 7.0, for a
			// user without write access or on a replica (for good), or
			// out of memory (this time): read without the lock.
			lasting := redis.HasErrorPrefix(err, "ERR") || redis.HasErrorPrefix(err, "NOPERM") || redis.HasErrorPrefix(err, "READONLY")
			if lasting && c.noSetGet.CompareAndSwap(false, true) {
				c.logger.Warn("cache: redis does not take SET NX GET; the distributed lock costs one more round trip", "error", err)
			}
			sc.args, sc.cmd = [11]any{}, redis.StringCmd{}
			cancel()
			return c.readL2(ctx, key, now, wallNow, sc, false)
		}
	default:
		sc.args[0], sc.args[1] = "get", dk
		sc.cmd = *redis.NewStringCmd(lctx, sc.args[:2]...)
		cmd = &sc.cmd
		_ = c.rdb.Process(lctx, cmd)
	}
	s, err := cmd.Result()
	cancel()
	if sc != nil {
		// Do not keep the key, the reply and the caller's context alive
		// in a pooled call.
		sc.args, sc.cmd, sc.ctx = [11]any{}, redis.StringCmd{}, deadline.Context{}
		sc.absent = err == redis.Nil
		sc.read = err == nil || err == redis.Nil
		if lock && sc.absent {
			// The lock envelope is there now: the key is ours to load.
			sc.absent, sc.locked = false, true
		}
	}
	if !c.l2result(err) || err != nil {
		return nil
	}
	if sc != nil && isLockEnvelope(s) {
		sc.lockedElsewhere, sc.holder, sc.seen = true, s, sha1hex(s)
		return nil
	}
	var into *entry[T]
	if sc != nil && c.l1 == nil {
		into = &sc.e
	}
	// A view of the reply, not a copy: the envelope parser copies what it
	// keeps, and a Codec neither keeps nor modifies its input.
	e := c.decodeL2(ctx, key, unsafe.Slice(unsafe.StringData(s), len(s)), now, wallNow, into)
	if sc != nil && (e == nil || now >= e.fresh) {
		// A load follows: it is stored only over what this read found,
		// and reads what a removal's tombstone says it must see.
		sc.seen = sha1hex(s)
		if e == nil {
			sc.notePos(tombstonePos(s))
		}
	}
	return e
}

// isReplyError reports whether err is an error reply of the server (not
// redis.Nil, not a network failure).
func isReplyError(err error) bool {
	var re redis.Error
	return err != redis.Nil && errors.As(err, &re)
}

// isLockEnvelope reports whether s is the lock envelope of an instance
// loading the key.
func isLockEnvelope(s string) bool {
	return len(s) > envelopeHeader && s[0] == envelopeVersion && s[1]&flagLock != 0
}

// readScratch is the memory of one L2 read made for a flight call.
type readScratch[T any] struct {
	ctx deadline.Context
	e   entry[T]
	// args and cmd are the command of the read (and of the write at the
	// end of a load under the lock), cleared once done.
	args [11]any
	cmd  redis.StringCmd
	// absent: Redis had nothing under the key (not even a tombstone).
	absent bool
	// locked: the read took the distributed lock (its envelope is under
	// the key); lockedElsewhere: it found another instance's.
	locked, lockedElsewhere bool
	holder                  string // the lock envelope found, with lockedElsewhere
	// read: the read reached Redis. seen: the SHA-1 (hex) of what it
	// found unless that was a fresh value, "" for nothing: what a load
	// without the lock envelope may store its value over (storeIfSeen).
	read bool
	seen string
	// pos is the WAL position of the write that removed the key, from a
	// tombstone a read found (0: none): the load must see it.
	pos uint64
}

func (sc *readScratch[T]) notePos(pos uint64) { sc.pos = max(sc.pos, pos) }

// sha1hex is the SHA-1 of s in hex, as Redis's redis.sha1hex gives it.
func sha1hex(s string) string {
	h := sha1.Sum(unsafe.Slice(unsafe.StringData(s), len(s)))
	return hex.EncodeToString(h[:])
}

// decodeL2 turns a stored envelope into an entry, expired (stale only)
// when a tag removal or a clear came at or after it was created. A
// tombstone or an unreadable envelope gives nil.
//
// The entry is written to into when not nil.
func (c *Cache[T]) decodeL2(ctx context.Context, key string, data []byte, now int64, wallNow time.Time, into *entry[T]) *entry[T] {
	env, err := parseEnvelope(data)
	if err != nil {
		c.stats.codecErrors.Add(1)
		return nil
	}
	if env.tombstone || env.lock {
		return nil
	}
	e := into
	if e == nil {
		e = new(entry[T])
	}
	e.key, e.tags, e.negative, e.created, e.cost = key, env.tags, env.negative, env.created, 1
	if !env.negative {
		if err := c.codec.Unmarshal(env.payload, &e.value); err != nil {
			c.stats.codecErrors.Add(1)
			c.logger.Warn("cache: decoding a value from redis failed; reloading it", "error", err)
			return nil
		}
	}
	e.fresh = min(wallToClock(env.fresh, now, wallNow), now+int64(c.l1ttl))
	e.stale = wallToClock(env.stale, now, wallNow)
	if c.tagsInvalidate(ctx, env.created, env.tags, now) {
		e.fresh = 0
	} else if c.eager > 0 && !env.negative {
		e.refreshAt = wallToClock(env.created+int64(float64(env.fresh-env.created)*c.eager), now, wallNow)
	}
	if c.bytesBound {
		e.cost = entryOverhead + int64(len(key)+len(data))
	}
	return e
}

// writeL2 stores an envelope written by Set and tells the other instances
// to drop the key from their L1 (and, pos not 0, that it follows a write
// at that WAL position).
func (c *Cache[T]) writeL2(ctx context.Context, key string, env []byte, ttl time.Duration, pos uint64) error {
	c.notePhysicalTTL(ttl)
	dk := c.dataKey(key)
	return c.l2write(ctx, func(lctx context.Context) error {
		_, err := c.rdb.Pipelined(lctx, func(p redis.Pipeliner) error {
			p.Set(lctx, dk, env, ttl)
			p.Publish(lctx, c.channel, c.messageAt(msgKey, key, pos))
			return nil
		})
		return err
	})
}

// writeLoaded stores a loaded envelope where Redis still holds what the
// load was loaded over, releases lk, and when lk was held tells the other
// instances (which may be waiting for it). It reports whether the value
// may go to L1: it was stored, or Redis could not be asked.
//
// What the load was loaded over is decided by Redis, never by comparing
// clocks: under the lock envelope (lk.inData), that envelope
// (storeLockedL2); otherwise what the read before the load found
// (sc.seen, its SHA-1, or nothing). A Set or Remove made during the load
// changed it, so the load's value is not stored. Every store is
// conditional, so one whose reply is lost replaced nothing newer.
func (c *Cache[T]) writeLoaded(ctx context.Context, key string, env []byte, ttl time.Duration, lk *heldLock, sc *readScratch[T]) bool {
	c.notePhysicalTTL(ttl)
	lk.stop()
	dk := c.dataKey(key)
	if lk != nil && lk.inData {
		return c.storeLockedL2(ctx, key, dk, env, ttl, sc)
	}
	seen := sc.seen
	if lk == nil && seen == "" {
		// Nothing there when the load started (or not known): SET NX
		// leaves in place whatever was written meanwhile, without a
		// script.
		var stored bool
		err := c.l2write(ctx, func(lctx context.Context) error {
			var err error
			stored, err = c.rdb.SetNX(lctx, dk, env, ttl).Result()
			return err
		})
		return err != nil || stored
	}
	var set *redis.Cmd
	var err error
	switch {
	case lk == nil:
		// One command: no pipeline to build.
		err = c.l2write(ctx, func(lctx context.Context) error {
			set = storeIfSeen.Run(lctx, c.rdb, []string{dk}, env, ttl.Milliseconds(), seen)
			return set.Err()
		})
	case c.oneNode:
		// Every key is on the one node: one script stores, unlocks and
		// publishes.
		err = c.l2write(ctx, func(lctx context.Context) error {
			set = storeSeenUnlock.Run(lctx, c.rdb, []string{dk, lk.key, c.waitKey(key)}, env, ttl.Milliseconds(), seen, c.args.token, c.args.channel, c.args.loaded, key)
			return set.Err()
		})
	default:
		err = c.l2write(ctx, func(lctx context.Context) error {
			return c.pipelineScripts(lctx, func(p redis.Pipeliner) {
				set = storeIfSeen.EvalSha(lctx, p, []string{dk}, env, ttl.Milliseconds(), seen)
				unlock.EvalSha(lctx, p, []string{lk.key}, lk.token)
				p.Publish(lctx, c.channel, c.message(msgLoaded, key))
			})
		})
	}
	if err != nil {
		return true // Redis could not be asked: L1 is all there is
	}
	n, _ := set.Int64()
	return n == 1
}

// storeLockedL2 ends a load under the lock envelope in one command,
// storeLocked: the value replaces the envelope, releasing the lock, only
// while the envelope is there (or nothing is: the lease ran out and
// nobody wrote). A Set or Remove made during the load replaced the
// envelope, so it stays, whatever the clocks of the instances say. An
// envelope marked by a waiting instance makes the script publish
// "loaded". The command is built in sc (EVALSHA, then EVAL if Redis
// lost the script). It reports whether the value may go to L1.
//
// The script is safe to run twice, so a reply lost to a timeout loses
// nothing: the store either happened, over the envelope, or did not, and
// then the envelope expires with its lease.
func (c *Cache[T]) storeLockedL2(ctx context.Context, key, dk string, env []byte, ttl time.Duration, sc *readScratch[T]) bool {
	wallNow := time.Now()
	if !c.brk.allow(clock.advance(wallNow)) {
		return true
	}
	var lctx context.Context
	cancel := noCancel
	if c.l2Timeout > 0 {
		c.l2deadline(&sc.ctx, ctx, wallNow)
		lctx = &sc.ctx
	} else {
		lctx, cancel = c.l2ctx(ctx)
	}
	defer cancel()
	ttlArg := c.args.ttl
	if ttl != c.physicalTTL(entryOptions{}) {
		ttlArg = ttl.Milliseconds()
	}
	sc.args = [11]any{"evalsha", c.args.storeSha, 1, dk, env, ttlArg, c.args.lockEnv, c.args.channel, c.args.loaded, c.args.prefixLen}
	sc.cmd = *redis.NewStringCmd(lctx, sc.args[:10]...)
	err := c.rdb.Process(lctx, &sc.cmd)
	stored := sc.cmd.Val() == "1"
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		// Redis restarted or failed over since the scripts were loaded:
		// EVAL loads it again.
		var n int64
		n, err = storeLocked.Run(lctx, c.rdb, []string{dk}, env, ttlArg, c.args.lockEnv, c.args.channel, c.args.loaded, c.args.prefixLen).Int64()
		stored = n == 1
	}
	sc.args, sc.cmd, sc.ctx = [11]any{}, redis.StringCmd{}, deadline.Context{}
	if !c.l2result(err) {
		return true // Redis could not be asked: L1 is all there is
	}
	return stored
}

// removeL2 replaces key by a tombstone created at (Unix ms), carrying the
// WAL position pos of the write the removal follows (none when 0), and
// publishes its invalidation. With ifNotNewer (a replay) it leaves a value
// created later in place.
func (c *Cache[T]) removeL2(ctx context.Context, key string, at int64, ifNotNewer bool, pos uint64) error {
	tomb := appendTombstone(make([]byte, 0, envelopeHeader+1+8), at, pos)
	dk := c.dataKey(key)
	return c.l2write(ctx, func(lctx context.Context) error {
		return c.pipelineScripts(lctx, func(p redis.Pipeliner) {
			if ifNotNewer {
				setIfNotNewer.EvalSha(lctx, p, []string{dk}, tomb, tombstoneTTL.Milliseconds(), at)
			} else {
				p.Set(lctx, dk, tomb, tombstoneTTL)
			}
			p.Publish(lctx, c.channel, c.messageAt(msgKey, key, pos))
		})
	})
}

// invalidateL2 records a tag removal or a clear made at (Unix ms) and
// tells the other instances (with the WAL position pos of the write it
// follows, if not 0): two commands, whatever the number of entries.
func (c *Cache[T]) invalidateL2(ctx context.Context, kind int, tag string, at int64, pos uint64) error {
	key, msg := c.clearKey, c.messageAt(msgClear, strconv.FormatInt(at, 10), pos)
	if kind == opRemoveTag {
		key, msg = c.tagKey(tag), c.messageAt(msgTag, strconv.FormatInt(at, 10)+"|"+tag, pos)
	}
	// A removal time must outlive every entry written before it.
	ttl := max(time.Duration(c.maxPhys.Load()), c.physicalTTL(entryOptions{}))
	return c.l2write(ctx, func(lctx context.Context) error {
		return c.pipelineScripts(lctx, func(p redis.Pipeliner) {
			setMax.EvalSha(lctx, p, []string{key}, at, ttl.Milliseconds())
			p.Publish(lctx, c.channel, msg)
		})
	})
}

func (c *Cache[T]) notePhysicalTTL(ttl time.Duration) {
	for {
		cur := c.maxPhys.Load()
		if int64(ttl) <= cur || c.maxPhys.CompareAndSwap(cur, int64(ttl)) {
			return
		}
	}
}

// pipelineScripts runs a pipeline that calls scripts by SHA; when Redis
// does not know one (after a restart or a failover) it loads them all and
// runs the pipeline once more.
func (c *Cache[T]) pipelineScripts(ctx context.Context, fill func(p redis.Pipeliner)) error {
	run := func() error {
		_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			fill(p)
			return nil
		})
		return err
	}
	err := run()
	if err == nil || !redis.HasErrorPrefix(err, "NOSCRIPT") {
		return err
	}
	for _, s := range scripts {
		if err := s.Load(ctx, c.rdb).Err(); err != nil {
			return err
		}
	}
	return run()
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

// onMessage handles an invalidation from another instance.
func (c *Cache[T]) onMessage(payload string) {
	rest, ok := strings.CutPrefix(payload, "2|")
	if !ok {
		return // another format; ignore
	}
	sender, rest, ok := strings.Cut(rest, "|")
	if !ok || len(rest) < 2 || rest[1] != '|' {
		return
	}
	id, pos := parseSender(sender)
	if id == c.id {
		return
	}
	op, arg := rest[0], rest[2:]
	if op != msgLoaded {
		c.stats.invalidations.Add(1)
	}
	if pos != 0 {
		// Before the key is dropped from L1, so that no load of it
		// misses the position.
		switch op {
		case msgKey:
			c.positions.note(arg, pos, clock.now())
		case msgTag, msgClear:
			c.positions.noteAll(pos, clock.now())
		}
	}
	switch op {
	case msgKey:
		c.flight.supersede(arg)
		c.removals.Add(1)
		if c.l1 != nil {
			c.l1.remove(arg)
		}
		c.waiters.wake(arg)
	case msgLoaded:
		if c.l1 != nil {
			c.l1.remove(arg)
		}
		c.waiters.wake(arg)
	case msgTag:
		ms, tag, ok := strings.Cut(arg, "|")
		at, err := strconv.ParseInt(ms, 10, 64)
		if ok && err == nil {
			c.applyInvalidation(opRemoveTag, tag, at)
		}
	case msgClear:
		if at, err := strconv.ParseInt(arg, 10, 64); err == nil {
			c.applyInvalidation(opClear, "", at)
		}
	}
}

// onReconnect runs when the invalidation subscription came back after a
// failure: messages may have been missed, so L1 and the known tag times
// are dropped. Redis is reachable again, so the breaker closes and pending
// writes are replayed.
func (c *Cache[T]) onReconnect() {
	c.stats.reconnects.Add(1)
	c.tags.reset()
	c.flight.supersedeAll()
	c.removals.Add(1)
	if c.l1 != nil {
		c.l1.clear()
	}
	c.brk.success()
	c.startRecovery()
}

// tagClear is the tagTimes id of the Clear time; tag ids are the tag with
// a "t" in front.
const tagClear = "c"

func tagID(tag string) string { return "t" + tag }

// tagTimes caches, per instance, when each tag was last removed and when
// the cache was last cleared (Unix ms), as read from Redis or received on
// the bus. An entry is trusted for ttl (L1TTL), then read again.
type tagTimes struct {
	ttl int64
	mu  sync.RWMutex
	m   map[string]tagTime // by tag id
}

type tagTime struct {
	at    int64 // Unix ms; 0: never
	until int64 // coarse clock
}

// maxTagTimes bounds the tag times kept; past it they are all dropped and
// read again as needed.
const maxTagTimes = 10_000

// note records a removal time (Unix ms) for a tag id.
func (t *tagTimes) note(id string, at, now int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil || len(t.m) >= maxTagTimes {
		t.m = map[string]tagTime{}
	}
	cur := t.m[id]
	t.m[id] = tagTime{at: max(cur.at, at), until: now + t.ttl}
}

func (t *tagTimes) reset() {
	t.mu.Lock()
	t.m = nil
	t.mu.Unlock()
}

// lookup returns the known removal time of a tag id and whether it is
// current.
func (t *tagTimes) lookup(id string, now int64) (int64, bool) {
	t.mu.RLock()
	tt, ok := t.m[id]
	t.mu.RUnlock()
	return tt.at, ok && now < tt.until
}

// invalidLocally reports whether a removal known here, current or not,
// came at or after created. It does no I/O: L1 stores use it so that a
// load racing a RemoveByTag does not put an expired entry back.
func (t *tagTimes) invalidLocally(created int64, tags []string) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if len(t.m) == 0 {
		return false
	}
	if tt, ok := t.m[tagClear]; ok && tt.at >= created {
		return true
	}
	for _, tag := range tags {
		if tt, ok := t.m[tagID(tag)]; ok && tt.at >= created {
			return true
		}
	}
	return false
}

// tagsInvalidate reports whether the Clear time or the removal time of one
// of tags is at or after created, reading from Redis the times not known
// here. When Redis cannot answer, the entry is taken as valid.
func (c *Cache[T]) tagsInvalidate(ctx context.Context, created int64, tags []string, now int64) bool {
	var missing []string // tag ids
	check := func(id string) bool {
		at, ok := c.tags.lookup(id, now)
		if !ok {
			missing = append(missing, id)
		}
		return at != 0 && at >= created
	}
	if check(tagClear) {
		return true
	}
	for _, t := range tags {
		if check(tagID(t)) {
			return true
		}
	}
	if len(missing) == 0 {
		return false
	}
	lctx, cancel := c.l2ctx(ctx)
	defer cancel()
	cmds := make([]*redis.StringCmd, len(missing))
	_, err := c.rdb.Pipelined(lctx, func(p redis.Pipeliner) error {
		for i, id := range missing {
			k := c.clearKey
			if id != tagClear {
				k = c.tagKey(id[1:])
			}
			cmds[i] = p.Get(lctx, k)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		c.l2result(err)
		return false
	}
	invalid := false
	for i, id := range missing {
		at, _ := cmds[i].Int64() // redis.Nil: never removed
		c.tags.note(id, at, now)
		if at != 0 && at >= created {
			invalid = true
		}
	}
	return invalid
}

// lockWaiters wakes the instance's waiter for a key when another instance
// says it loaded it.
type lockWaiters struct {
	mu sync.Mutex
	m  map[string]chan struct{}
}

func (w *lockWaiters) add(key string) chan struct{} {
	ch := make(chan struct{}, 1)
	w.mu.Lock()
	if w.m == nil {
		w.m = map[string]chan struct{}{}
	}
	w.m[key] = ch
	w.mu.Unlock()
	return ch
}

func (w *lockWaiters) remove(key string, ch chan struct{}) {
	w.mu.Lock()
	if w.m[key] == ch {
		delete(w.m, key)
	}
	w.mu.Unlock()
}

func (w *lockWaiters) wake(key string) {
	w.mu.Lock()
	ch := w.m[key]
	w.mu.Unlock()
	if ch != nil {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// heldLock is a distributed lock this instance holds for a load. Its lease
// is renewed while the load runs. The lock is either the key's own data
// key holding the lock envelope (taken by the read that missed), or, when
// Redis had a stale value or a tombstone there, a lock key of its own.
type heldLock struct {
	name       string // the cache key
	key, token string // the Redis key holding token
	inData     bool   // key is the data key, token the lock envelope
	r          *lockRenewer
}

// stop ends the renewals. A renewal already sent may still reach Redis:
// it extends the lease only while the lock holds this instance's token, so
// it never touches a value stored in its place. A nil lock is fine.
func (l *heldLock) stop() {
	if l == nil || l.r == nil {
		return
	}
	l.r.mu.Lock()
	delete(l.r.held, l)
	l.r.mu.Unlock()
}

// lockRenewer renews the leases of the distributed locks an instance
// holds, from one goroutine ticking every third of a lease while locks
// are held (and one tick more), so that a load does not pay for a timer
// of its own.
type lockRenewer struct {
	mu      sync.Mutex
	held    map[*heldLock]struct{}
	running bool
}

// lockLease is the lifetime of a distributed lock between renewals.
func (c *Cache[T]) lockLease() time.Duration { return max(c.lockTimeout/4, 20*time.Millisecond) }

// The lock token is the instance id: one instance loads a key once at a
// time (its flight), so the id tells its lock from another instance's.
func (c *Cache[T]) newLockToken() string { return c.id }

// heldData is the lock on key held by its lock envelope under the data
// key, without renewals.
func (c *Cache[T]) heldData(key string) *heldLock {
	return &heldLock{name: key, key: c.dataKey(key), token: c.lockEnv, inData: true}
}

// hold starts renewing a lock just acquired.
func (c *Cache[T]) hold(l *heldLock) *heldLock {
	r := &c.renewer
	l.r = r
	r.mu.Lock()
	if r.held == nil {
		r.held = map[*heldLock]struct{}{}
	}
	r.held[l] = struct{}{}
	start := !r.running
	r.running = true
	r.mu.Unlock()
	if start {
		// The load holding l is tracked, so Close waits for this too.
		c.wg.Add(1)
		go c.renewLoop()
	}
	return l
}

// renewLoop renews the locks held every third of a lease, until none was
// held for a whole tick or the cache is closed.
func (c *Cache[T]) renewLoop() {
	defer c.wg.Done()
	r := &c.renewer
	lease := c.lockLease()
	t := time.NewTicker(lease / 3)
	defer t.Stop()
	var locks []*heldLock
	idle := false
	for {
		select {
		case <-c.closeCtx.Done():
			r.mu.Lock()
			r.running = false
			r.mu.Unlock()
			return
		case <-t.C:
		}
		r.mu.Lock()
		if len(r.held) == 0 {
			if idle {
				r.running = false
				r.mu.Unlock()
				return
			}
			idle = true
			r.mu.Unlock()
			continue
		}
		idle = false
		locks = locks[:0]
		for l := range r.held {
			locks = append(locks, l)
		}
		r.mu.Unlock()
		c.renew(locks, lease)
		clear(locks)
	}
}

// renew extends the leases of locks in one pipeline: one round trip per
// node, whatever their number, bounded by L2Timeout. A lock is dropped
// only when Redis says it no longer holds it (another instance may then
// load too, which is allowed); one that could not be renewed (a timeout,
// an error) is tried again next tick, within the lease that is left.
//
// Renewals feed the breaker but do not wait for it to close: a lease
// skipped for a break would expire mid-load, and nobody waits for a
// renewal (a load ending does not), so one held by a silent Redis costs
// only this goroutine's time.
func (c *Cache[T]) renew(locks []*heldLock, lease time.Duration) {
	cmds := make([]*redis.Cmd, len(locks))
	ms := lease.Milliseconds()
	lctx, cancel := c.l2ctx(c.closeCtx)
	err := c.pipelineScripts(lctx, func(p redis.Pipeliner) {
		for i, l := range locks {
			script := renew
			if l.inData {
				script = renewEnvelope
			}
			cmds[i] = script.EvalSha(lctx, p, []string{l.key}, l.token, ms)
		}
	})
	cancel()
	c.l2result(err)
	r := &c.renewer
	r.mu.Lock()
	for i, l := range locks {
		if cmds[i] == nil {
			continue
		}
		if n, err := cmds[i].Int64(); err == nil && n == 0 {
			delete(r.held, l)
		}
	}
	r.mu.Unlock()
}

// unlock releases lk (if any) and tells waiting instances.
func (c *Cache[T]) unlock(lk *heldLock) {
	if lk == nil {
		return
	}
	lk.stop()
	if lk.inData {
		// One key: the same script on a cluster.
		_ = c.l2write(c.closeCtx, func(lctx context.Context) error {
			return releaseEnvelope.Run(lctx, c.rdb, []string{lk.key}, lk.token, c.args.channel, c.args.loaded, lk.name).Err()
		})
		return
	}
	if c.oneNode {
		_ = c.l2write(c.closeCtx, func(lctx context.Context) error {
			return release.Run(lctx, c.rdb, []string{lk.key, c.waitKey(lk.name)}, lk.token, c.args.channel, c.args.loaded, lk.name).Err()
		})
		return
	}
	_ = c.l2write(c.closeCtx, func(lctx context.Context) error {
		return c.pipelineScripts(lctx, func(p redis.Pipeliner) {
			unlock.EvalSha(lctx, p, []string{lk.key}, lk.token)
			p.Publish(lctx, c.channel, c.message(msgLoaded, lk.name))
		})
	})
}

// lockOrWait takes the distributed lock for key, or waits for the instance
// holding it to store the value. It returns the lock when this instance
// is to load; the entry when another instance stored it meanwhile; skip
// when background (an eager refresh) and another instance holds the lock;
// and none of them when this instance should load without the lock (Redis
// failing, or LockTimeout passed).
//
// sc is the read that missed: when it took the lock (Redis had nothing
// under the key) or found another instance's, no command is needed to
// know.
func (c *Cache[T]) lockOrWait(ctx context.Context, key string, background bool, sc *readScratch[T]) (lk *heldLock, e *entry[T], skip bool) {
	switch {
	case sc.locked:
		return c.hold(c.heldData(key)), nil, false
	case sc.lockedElsewhere:
		if background {
			return nil, nil, true
		}
		return c.waitLock(ctx, key, sc.holder, sc)
	}
	if !c.brk.allow(clock.now()) {
		return nil, nil, false
	}
	lkey := c.lockKey(key)
	lctx, cancel := c.l2ctx(ctx)
	ok, err := c.rdb.SetNX(lctx, lkey, c.args.token, c.lockLease()).Result()
	cancel()
	if !c.l2result(err) {
		return nil, nil, false
	}
	if ok {
		return c.hold(&heldLock{name: key, key: lkey, token: c.newLockToken()}), nil, false
	}
	if background {
		return nil, nil, true
	}
	return c.waitLock(ctx, key, "", sc)
}

// observe sets sc.seen to what Redis holds under key, for a load whose
// read did not reach Redis (an eager refresh reads nothing first): its
// value is stored only over that.
func (c *Cache[T]) observe(ctx context.Context, key string, sc *readScratch[T]) {
	var s string
	err := c.l2write(ctx, func(lctx context.Context) error {
		var err error
		s, err = digest.Run(lctx, c.rdb, []string{c.dataKey(key)}).Text()
		return err
	})
	if err == nil {
		sc.read, sc.seen = true, s
	}
}

// waitLock waits for the instance holding the lock for key to store its
// value, polling (and woken by its "loaded" message), and takes the lock
// when it is free. holder is the lock envelope found under the data key,
// or "" when the lock is the lock key. What it reads of the data key
// becomes sc.seen, what a load without the lock envelope is stored over.
func (c *Cache[T]) waitLock(ctx context.Context, key string, holder string, sc *readScratch[T]) (lk *heldLock, e *entry[T], skip bool) {
	inData := holder != ""
	if inData {
		// Mark the holder's envelope: its write, which returns what it
		// replaced, then tells it to publish.
		lctx, cancel := c.l2ctx(ctx)
		err := markWaiting.Run(lctx, c.rdb, []string{c.dataKey(key)}, strings.TrimSuffix(holder, "w")).Err()
		cancel()
		c.l2result(err)
	} else if c.oneNode {
		// Ask the holder to tell us when it is done: on a single node it
		// publishes only when this marker is there. Should it finish
		// before the marker is set, the poll below finds the value.
		lctx, cancel := c.l2ctx(ctx)
		err := c.rdb.Set(lctx, c.waitKey(key), "1", c.lockTimeout).Err()
		cancel()
		c.l2result(err)
	}
	c.stats.lockWaits.Add(1)
	wake := c.waiters.add(key)
	defer c.waiters.remove(key, wake)
	deadline := time.Now().Add(c.lockTimeout)
	delay := 5 * time.Millisecond
	t := time.NewTimer(delay)
	defer t.Stop()
	dk, lkey := c.dataKey(key), c.lockKey(key)
	lease := c.lockLease()
	for {
		select {
		case <-wake:
		case <-t.C:
		case <-c.closeCtx.Done():
			return nil, nil, false
		}
		wallNow := time.Now()
		if wallNow.After(deadline) {
			return nil, nil, false
		}
		now := clock.advance(wallNow)
		if !c.brk.allow(now) {
			return nil, nil, false
		}
		lctx, cancel := c.l2ctx(ctx)
		if inData {
			// One command reads the value and takes the lock if the
			// holder released it (or died and its lease expired).
			s, err := c.rdb.SetArgs(lctx, dk, c.lockEnv, redis.SetArgs{Mode: "NX", TTL: lease, Get: true}).Result()
			cancel()
			if !c.l2result(err) {
				return nil, nil, false
			}
			switch {
			case err == redis.Nil:
				return c.hold(c.heldData(key)), nil, false
			case isLockEnvelope(s):
				sc.seen = sha1hex(s)
			default:
				sc.seen = sha1hex(s)
				e := c.decodeL2(ctx, key, unsafe.Slice(unsafe.StringData(s), len(s)), now, wallNow, nil)
				if e != nil && now < e.fresh {
					return nil, e, false
				}
				sc.notePos(tombstonePos(s))
				// Removed, or expired by a tag meanwhile: load without
				// the lock.
				return nil, nil, false
			}
		} else {
			var get *redis.StringCmd
			var set *redis.BoolCmd
			_, err := c.rdb.Pipelined(lctx, func(p redis.Pipeliner) error {
				get = p.Get(lctx, dk)
				set = p.SetNX(lctx, lkey, c.args.token, lease)
				return nil
			})
			cancel()
			if err != nil && !errors.Is(err, redis.Nil) {
				c.l2result(err)
				return nil, nil, false
			}
			c.l2result(nil)
			locked := set.Val()
			if s, err := get.Result(); err == nil {
				sc.seen = sha1hex(s)
				sc.notePos(tombstonePos(s))
			} else {
				sc.seen = ""
			}
			if data, err := get.Bytes(); err == nil {
				if e := c.decodeL2(ctx, key, data, now, wallNow, nil); e != nil && now < e.fresh {
					if locked {
						c.unlock(&heldLock{name: key, key: lkey, token: c.newLockToken()})
					}
					return nil, e, false
				}
			}
			if locked {
				return c.hold(&heldLock{name: key, key: lkey, token: c.newLockToken()}), nil, false
			}
		}
		delay = min(delay*2, 100*time.Millisecond)
		t.Reset(delay)
	}
}

// replaySet writes a queued Set unless a value created later is in Redis,
// and publishes its invalidation.
func (c *Cache[T]) replaySet(ctx context.Context, op pendingOp, ttl time.Duration) error {
	dk := c.dataKey(op.id)
	return c.l2write(ctx, func(lctx context.Context) error {
		return c.pipelineScripts(lctx, func(p redis.Pipeliner) {
			setIfNotNewer.EvalSha(lctx, p, []string{dk}, op.env, ttl.Milliseconds(), op.at)
			p.Publish(lctx, c.channel, c.messageAt(msgKey, op.id, op.pos))
		})
	})
}
