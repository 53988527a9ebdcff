package cache

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/goaspire/goaspire/internal/deadline"
	"github.com/goaspire/goaspire/internal/fallback"
	"github.com/goaspire/goaspire/internal/walpos"
)

// ErrNotFound says a key has no value. A loader returns it (possibly
// wrapped) to say so; GetOrLoad then returns the loader's error, and with
// Options.NegativeTTL set, remembers the answer (later hits return
// ErrNotFound itself). It never triggers fail-safe: a value that is gone
// is not served stale.
var ErrNotFound = errors.New("cache: not found")

// ErrClosed is returned by a Cache's methods after Close.
var ErrClosed = errors.New("cache: closed")

// Defaults for Options.
const (
	DefaultTTL                = 5 * time.Minute
	DefaultL1TTL              = time.Minute
	DefaultL1MaxEntries       = 10_000
	DefaultFailSafeMaxAge     = time.Hour
	DefaultFailSafeThrottle   = 30 * time.Second
	DefaultL2Timeout          = 500 * time.Millisecond
	DefaultBreakDuration      = 2 * time.Second
	DefaultRecoveryQueue      = 10_000
	DefaultRecoveryQueueBytes = 64 << 20
	DefaultLockTimeout        = 5 * time.Second
)

// Options configure a Cache. The zero value is a good start: every zero
// field takes the default named in its comment.
type Options struct {
	// TTL is how long a value stays fresh (DefaultTTL, 5 min). A fresh
	// value is served without calling the loader.
	TTL time.Duration
	// L1TTL is how long an instance serves a value from its own memory
	// before asking Redis again (DefaultL1TTL, 1 min, and never more than
	// TTL). Invalidation messages normally clear L1 entries long before;
	// L1TTL bounds the damage of a lost message.
	L1TTL time.Duration
	// L1MaxEntries bounds L1 by number of entries (DefaultL1MaxEntries).
	// Negative disables L1: every read goes to Redis.
	L1MaxEntries int
	// L1MaxBytes, when positive, bounds L1 by estimated size instead: the
	// encoded size of each value plus its key and a fixed overhead. A value
	// bigger than the budget of one L1 shard is not kept in L1.
	L1MaxBytes int64

	// FailSafeMaxAge is how long after it stops being fresh a value may
	// still be served when reloading fails or is too slow
	// (DefaultFailSafeMaxAge, 1 h). Values stay in Redis that much longer.
	// Negative disables fail-safe.
	FailSafeMaxAge time.Duration
	// FailSafeThrottle is how long a stale value served after a failure is
	// served again before the loader is retried (DefaultFailSafeThrottle,
	// 30 s), so a failing database is not hit by every request.
	FailSafeThrottle time.Duration
	// SoftTimeout, when positive, bounds how long a caller waits for the
	// loader when a stale value exists: past it the caller gets the stale
	// value and the load goes on in the background to refresh the cache.
	SoftTimeout time.Duration
	// HardTimeout, when positive, bounds every load (its context ends).
	HardTimeout time.Duration
	// NegativeTTL, when positive, caches "not found" (a loader returning
	// ErrNotFound) for that long.
	NegativeTTL time.Duration
	// EagerRefreshThreshold, when in (0, 1), makes a hit on a value older
	// than that fraction of its TTL start one background reload (once per
	// cluster, under the distributed lock) while the hit returns the
	// current value at once, so hot keys do not expire under load. Zero
	// disables it.
	EagerRefreshThreshold float64

	// LockTimeout bounds how long an instance waits for another instance
	// that holds the distributed lock for a key to load it, before
	// loading it itself (DefaultLockTimeout, 5 s). The lock is a lease of
	// a quarter of LockTimeout, renewed while its holder loads, so a
	// holder that dies releases it by expiry. Negative disables the
	// distributed lock: concurrent misses then load once per process.
	LockTimeout time.Duration

	// L2Timeout bounds each Redis operation of the cache
	// (DefaultL2Timeout, 500 ms), go-redis's retries, dials and waits
	// for a pool connection included; a slower Redis counts as failing.
	// Negative means no bound other than the client's own timeouts, which
	// for a silent Redis is ReadTimeout, then for each of MaxRetries
	// retries DialerRetries dials of DialTimeout each. On a client that
	// does not apply context deadlines to its connections
	// (ContextTimeoutEnabled off; LoadRedisConfig sets it) a socket read
	// or write is bounded by the client's ReadTimeout or WriteTimeout
	// instead.
	L2Timeout time.Duration
	// BreakDuration is how long L2 is skipped after a Redis failure this
	// cache sees, before it is tried again (DefaultBreakDuration, 2 s).
	// The breaker is shared by every cache on the client (see Breaker).
	BreakDuration time.Duration
	// RecoveryQueue bounds how many Set, Remove, RemoveByTag and Clear
	// operations that could not reach Redis are kept to be replayed when
	// it returns (DefaultRecoveryQueue). The last operation per key wins.
	// Negative disables replay.
	RecoveryQueue int
	// RecoveryQueueBytes bounds the encoded values those operations hold
	// (DefaultRecoveryQueueBytes, 64 MiB); a Set that does not fit is
	// replayed as a Remove of its key, so Redis drops the older value.
	// Negative means no byte bound.
	RecoveryQueueBytes int64

	// KeyPrefix is put in front of every Redis key of this cache
	// (default "goaspire:cache:{name}:"). Values are stored under
	// KeyPrefix+"v:"+key (and, while an absent key is loaded, the
	// loader's lock there), locks over stale values under
	// KeyPrefix+"l:"+key (and markers
	// of instances waiting for one under KeyPrefix+"w:"+key), tag
	// removal times under KeyPrefix+"t:"+tag, the Clear time under
	// KeyPrefix+"clear", and invalidations go to the channel
	// KeyPrefix+"invalidate". Instances share values and invalidations
	// when their name and KeyPrefix agree.
	KeyPrefix string
	// Codec encodes values for Redis (default JSONCodec). L1 keeps values
	// decoded, so an L1 hit does no decoding.
	Codec Codec

	// TracerProvider, MeterProvider and Logger default to the
	// OpenTelemetry globals and slog.Default().
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	Logger         *slog.Logger
}

// Loader loads the value for a key on a miss. Its context carries the
// caller's values (trace, deadline-free) but is not canceled when the
// caller gives up, since other callers may be waiting for the same load; it
// ends at Options.HardTimeout or when the cache is closed. After an
// invalidation that carried a database write's position, it also requires
// that position of cqrs reads made with it (see the package doc, Over read
// replicas).
type Loader[T any] func(ctx context.Context) (T, error)

// EntryOption adjusts one Set or GetOrLoad.
type EntryOption func(*entryOptions)

type entryOptions struct {
	ttl    time.Duration
	tags   []string
	noLock bool
}

// WithTTL gives this entry its own freshness duration instead of
// Options.TTL.
func WithTTL(d time.Duration) EntryOption { return func(o *entryOptions) { o.ttl = d } }

// WithTags attaches tags to the entry, so RemoveByTag can remove it.
func WithTags(tags ...string) EntryOption {
	return func(o *entryOptions) { o.tags = append(o.tags, tags...) }
}

// WithoutDistributedLock makes a GetOrLoad miss skip the distributed lock:
// concurrent misses for the key still load once per process, but each
// instance loads on its own, saving one Redis round trip per miss.
func WithoutDistributedLock() EntryOption { return func(o *entryOptions) { o.noLock = true } }

// Cache is a two-tier cache of T values: a bounded in-process L1 in front
// of Redis (L2), in front of the loader. See the package documentation.
// A Cache is safe for concurrent use. Values are shared between callers
// as they are: treat them as immutable (use pointer or value types
// accordingly).
type Cache[T any] struct {
	name     string
	id       string // instance id, to ignore our own messages
	channel  string
	prefix   string // data keys
	tagPfx   string // tag removal times
	lockPfx  string // distributed locks
	waitPfx  string // "someone waits for this lock" markers
	clearKey string

	ttl, l1ttl    time.Duration
	failSafe      time.Duration // 0: disabled
	throttle      time.Duration
	softTimeout   time.Duration
	hardTimeout   time.Duration
	negativeTTL   time.Duration
	l2Timeout     time.Duration
	lockTimeout   time.Duration // 0: no distributed lock
	eager         float64
	breakDuration int64
	bytesBound    bool
	oneNode       bool            // rdb is not a cluster: a script may touch several keys
	slots         *deadline.Slots // the Done channels of L2 operations
	codec         Codec
	l1            *l1[T] // nil when disabled
	rdb           redis.UniversalClient
	bus           *bus
	brk           *Breaker
	stopListen    func()
	recovery      recoveryQueue
	replaying     atomic.Bool
	flight        flight[T]
	tags          tagTimes
	positions     positions // WAL positions of the writes behind recent invalidations
	waiters       lockWaiters
	renewer       lockRenewer
	args          scriptArgs
	lockEnv       string        // the lock envelope put under an absent key while loading it
	noSetGet      atomic.Bool   // Redis refused SET NX GET: lock with a command of its own
	removals      atomic.Uint64 // bumped by every removal, for Get's fills
	maxPhys       atomic.Int64  // longest Redis TTL written, for tag times
	stats         counters
	tracer        trace.Tracer
	spanOpts      []trace.SpanStartOption
	logger        *slog.Logger
	metricsReg    metric.Registration
	closeCtx      context.Context
	closeCancel   context.CancelFunc
	closeMu       sync.RWMutex // orders track against Close
	closed        atomic.Bool
	wg            sync.WaitGroup

	// skew shifts the wall clock that stamps writes and loads (created):
	// tests play an instance whose clock is off with it.
	skew time.Duration
}

// entryOverhead is the fixed per-entry cost, in bytes, assumed when L1 is
// bounded by size: the entry struct, map and ring slots.
const entryOverhead = 160

// New makes a cache named name over the Redis client rdb. A nil rdb gives
// an L1-only cache (no L2, no cross-instance invalidation). The name
// appears in Redis keys and the invalidation channel (see
// Options.KeyPrefix), metrics and spans.
//
// New returns an error naming the Options field at fault. It does not
// contact Redis, so it succeeds while Redis is down. Close the cache when
// done: it holds a share of a Pub/Sub connection and a clock goroutine.
func New[T any](rdb redis.UniversalClient, name string, opts Options) (*Cache[T], error) {
	if strings.TrimSpace(name) == "" {
		return nil, errors.New("cache: New: empty cache name")
	}
	c := &Cache[T]{name: name, rdb: rdb, id: newInstanceID()}
	_, c.oneNode = rdb.(*redis.Client)
	if err := c.configure(opts); err != nil {
		return nil, fmt.Errorf("cache %q: %w", name, err)
	}
	if rdb != nil && c.l2Timeout > 0 && !appliesContextDeadlines(rdb) {
		c.logger.Warn("cache: the Redis client does not take deadlines from contexts (ContextTimeoutEnabled is off): a silent Redis holds each cache operation for the client's ReadTimeout instead of L2Timeout",
			"l2_timeout", c.l2Timeout)
	}
	if err := c.registerMetrics(opts.MeterProvider); err != nil {
		return nil, fmt.Errorf("cache %q: metrics: %w", name, err)
	}
	c.lockEnv = string(appendLock(nil, c.newLockToken()))
	c.args = scriptArgs{token: c.newLockToken(), channel: c.channel, loaded: c.message(msgLoaded, ""),
		lockEnv: c.lockEnv, lease: c.lockLease().Milliseconds(), ttl: c.physicalTTL(entryOptions{}).Milliseconds(),
		storeSha: storeLocked.Hash(), prefixLen: int64(len(c.prefix))}
	c.closeCtx, c.closeCancel = context.WithCancel(context.Background())
	clock.acquire()
	if rdb != nil {
		c.brk = ClientBreaker(rdb)
		c.stopListen = c.brk.listen(c.startRecovery)
		c.bus = joinBus(rdb, c.channel, c, c.logger)
	} else {
		c.brk = &Breaker{}
	}
	return c, nil
}

func (c *Cache[T]) configure(o Options) error {
	neg := func(field string, d time.Duration) error {
		if d < 0 {
			return fmt.Errorf("invalid Options.%s: negative", field)
		}
		return nil
	}
	for _, f := range []struct {
		name string
		d    time.Duration
	}{{"TTL", o.TTL}, {"L1TTL", o.L1TTL}, {"FailSafeThrottle", o.FailSafeThrottle},
		{"SoftTimeout", o.SoftTimeout}, {"HardTimeout", o.HardTimeout}, {"NegativeTTL", o.NegativeTTL},
		{"BreakDuration", o.BreakDuration}} {
		if err := neg(f.name, f.d); err != nil {
			return err
		}
	}
	if o.L1MaxBytes < 0 {
		return errors.New("invalid Options.L1MaxBytes: negative")
	}
	if o.EagerRefreshThreshold < 0 || o.EagerRefreshThreshold >= 1 || o.EagerRefreshThreshold != o.EagerRefreshThreshold {
		return errors.New("invalid Options.EagerRefreshThreshold: want 0 (off) or a fraction in (0, 1)")
	}
	c.eager = o.EagerRefreshThreshold
	c.ttl = cmp0(o.TTL, DefaultTTL)
	c.l1ttl = min(cmp0(o.L1TTL, DefaultL1TTL), c.ttl)
	switch {
	case o.FailSafeMaxAge == 0:
		c.failSafe = DefaultFailSafeMaxAge
	case o.FailSafeMaxAge > 0:
		c.failSafe = o.FailSafeMaxAge
	}
	c.throttle = cmp0(o.FailSafeThrottle, DefaultFailSafeThrottle)
	c.softTimeout, c.hardTimeout, c.negativeTTL = o.SoftTimeout, o.HardTimeout, o.NegativeTTL
	switch {
	case o.L2Timeout == 0:
		c.l2Timeout = DefaultL2Timeout
	case o.L2Timeout > 0:
		c.l2Timeout = o.L2Timeout
	}
	c.slots = deadline.NewSlots(deadline.WidthFor(c.l2Timeout))
	switch {
	case o.LockTimeout == 0:
		c.lockTimeout = DefaultLockTimeout
	case o.LockTimeout > 0:
		c.lockTimeout = o.LockTimeout
	}
	c.breakDuration = int64(cmp0(o.BreakDuration, DefaultBreakDuration))
	switch {
	case o.RecoveryQueue == 0:
		c.recovery.max = DefaultRecoveryQueue
	case o.RecoveryQueue > 0:
		c.recovery.max = o.RecoveryQueue
	}
	switch {
	case o.RecoveryQueueBytes == 0:
		c.recovery.maxBytes = DefaultRecoveryQueueBytes
	case o.RecoveryQueueBytes > 0:
		c.recovery.maxBytes = o.RecoveryQueueBytes
	}
	pfx := o.KeyPrefix
	if pfx == "" {
		pfx = "goaspire:cache:" + c.name + ":"
	}
	c.tagPfx = pfx + "t:"
	c.lockPfx = pfx + "l:"
	c.waitPfx = pfx + "w:"
	c.clearKey = pfx + "clear"
	c.channel = pfx + "invalidate"
	c.prefix = pfx + "v:"
	c.codec = o.Codec
	if c.codec == nil {
		c.codec = JSONCodec{}
	}
	switch {
	case o.L1MaxBytes > 0:
		c.bytesBound = true
		c.l1 = newL1[T](o.L1MaxBytes, 64<<10)
	case o.L1MaxEntries >= 0:
		c.l1 = newL1[T](int64(cmp0(o.L1MaxEntries, DefaultL1MaxEntries)), 32)
	}
	c.tags.ttl = int64(c.l1ttl)
	tp := fallback.TracerProvider(o.TracerProvider)
	c.tracer = tp.Tracer(instrumentationName)
	c.spanOpts = []trace.SpanStartOption{
		trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(attribute.String("cache.name", c.name)),
	}
	c.logger = fallback.Logger(o.Logger)
	c.logger = c.logger.With("cache", c.name)
	return nil
}

func cmp0[N int | int64 | time.Duration](v, def N) N {
	if v == 0 {
		return def
	}
	return v
}

func newInstanceID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Name returns the cache's name.
func (c *Cache[T]) Name() string { return c.name }

// GetOrLoad returns the value for key: from L1 if fresh there, else from
// Redis if fresh there, else from load, whose result then fills both
// tiers. Concurrent misses for one key share one load: in this process,
// and across the instances on one Redis through a short distributed lock
// (see Options.LockTimeout and WithoutDistributedLock).
//
// The caller that starts a load runs it on its own goroutine and waits for
// it even when ctx ends (the load's context does not inherit ctx's
// cancellation, see Loader; bound it with Options.HardTimeout); callers
// joining a load in progress leave when their ctx ends.
//
// When the load fails (or outlasts Options.SoftTimeout) and a stale value
// younger than Options.FailSafeMaxAge exists in either tier, that value is
// returned instead of the error. When Redis is down the cache works on L1
// and the loader; Redis errors are never returned. A loader returning
// ErrNotFound makes GetOrLoad return that error (cached with NegativeTTL).
func (c *Cache[T]) GetOrLoad(ctx context.Context, key string, load Loader[T], opts ...EntryOption) (T, error) {
	if c.l1 != nil {
		now := clock.now()
		if e := c.l1.getFresh(key, now); e != nil {
			if e.negative {
				var zero T
				return zero, ErrNotFound
			}
			if e.refreshAt != 0 && now >= e.refreshAt && load != nil {
				c.eagerRefresh(ctx, key, load, opts, e)
			}
			return e.value, nil
		}
	}
	return c.getOrLoadSlow(ctx, key, load, opts)
}

func (c *Cache[T]) getOrLoadSlow(ctx context.Context, key string, load Loader[T], opts []EntryOption) (T, error) {
	var zero T
	if c.closed.Load() {
		return zero, ErrClosed
	}
	if load == nil {
		return zero, errors.New("cache: GetOrLoad: nil loader")
	}
	cl, leader := c.flight.join(key)
	if !leader {
		return c.flight.wait(ctx, cl)
	}
	c.lead(ctx, key, load, resolve(opts), cl)
	v, err := c.flight.wait(ctx, cl)
	c.flight.release(cl)
	return v, err
}

func resolve(opts []EntryOption) entryOptions {
	if len(opts) == 0 {
		return entryOptions{}
	}
	eo := new(entryOptions)
	for _, o := range opts {
		if o != nil {
			o(eo)
		}
	}
	return *eo
}

// lead does the work of a miss for everyone waiting on cl: L1 again, then
// L2, then the loader.
func (c *Cache[T]) lead(ctx context.Context, key string, load Loader[T], eo entryOptions, cl *call[T]) {
	wallNow := time.Now()
	now := clock.advance(wallNow)
	var stale *entry[T]
	if c.l1 != nil {
		if e := c.l1.get(key); e != nil {
			if now < e.fresh {
				// Filled by a call that finished after our first look.
				c.stats.l1Hits.Add(1)
				c.finishWith(key, cl, e)
				return
			}
			if now < e.stale && !e.negative && c.failSafe > 0 {
				stale = e
			} else {
				c.l1.removeIf(e)
			}
		}
		c.stats.l1Misses.Add(1)
	}
	if c.rdb != nil {
		// A hit is a GET. With the distributed lock, a SET NX GET: a
		// hit costs the same, and a miss takes the lock in the same round
		// trip (see load).
		e := c.readL2(ctx, key, now, wallNow, &cl.scratch, c.lockTimeout > 0 && !eo.noLock)
		switch {
		case e != nil && now < e.fresh:
			c.stats.l2Hits.Add(1)
			c.fill(cl, e, now)
			c.finishWith(key, cl, e)
			return
		case e != nil && now < e.stale && !e.negative && c.failSafe > 0 && (stale == nil || e.fresh > stale.fresh):
			stale = e
		}
		c.stats.l2Misses.Add(1)
	}
	if !c.track() {
		if cl.scratch.locked {
			c.unlock(c.heldData(key))
		}
		var zero T
		c.flight.finish(key, cl, zero, ErrClosed)
		return
	}
	if stale != nil && c.softTimeout > 0 {
		// The caller is to get the stale value at the soft timeout while
		// the load goes on: run it on its own goroutine.
		cl.async = true
		go c.load(ctx, key, load, eo, cl, stale, false)
		return
	}
	// The common path: the loader runs on this goroutine, saving a
	// hand-off and a wake-up per miss. The caller waits for it even if
	// its context ends (the load's does not inherit that); callers that
	// joined may leave.
	c.load(ctx, key, load, eo, cl, stale, false)
}

// fill stores an entry read from Redis into L1 unless a write to its key
// happened meanwhile.
func (c *Cache[T]) fill(cl *call[T], e *entry[T], now int64) {
	if c.l1 == nil {
		return
	}
	c.flight.unlessSuperseded(cl, func() { c.storeL1(e, now, true) })
}

// track reserves a slot for work Close must wait for; it fails once the
// cache is closed.
func (c *Cache[T]) track() bool {
	c.closeMu.RLock()
	defer c.closeMu.RUnlock()
	if c.closed.Load() {
		return false
	}
	c.wg.Add(1)
	return true
}

func (c *Cache[T]) finishWith(key string, cl *call[T], e *entry[T]) {
	if e.negative {
		var zero T
		c.flight.finish(key, cl, zero, ErrNotFound)
		return
	}
	c.flight.finish(key, cl, e.value, nil)
}

// eagerRefresh starts one background reload of key, whose L1 entry e is
// past the eager-refresh threshold, unless a load of key is in progress.
func (c *Cache[T]) eagerRefresh(ctx context.Context, key string, load Loader[T], opts []EntryOption, e *entry[T]) {
	if !e.refreshing.CompareAndSwap(false, true) || c.closed.Load() {
		return
	}
	cl, leader := c.flight.join(key)
	if !leader {
		return
	}
	if !c.track() {
		c.flight.forget(key, cl)
		return
	}
	c.stats.eagerRefreshes.Add(1)
	go c.load(context.WithoutCancel(ctx), key, load, resolve(opts), cl, e, true)
}

// load runs the loader for a miss (or, with background, an eager refresh
// whose current entry is stale) and fills the tiers with its result, in a
// "cache.load" span whose cache.result attribute says how the callers were
// answered.
func (c *Cache[T]) load(ctx context.Context, key string, load Loader[T], eo entryOptions, cl *call[T], stale *entry[T], background bool) {
	defer c.wg.Done()
	ctx, span := c.tracer.Start(ctx, "cache.load", c.spanOpts...)
	defer span.End()

	var lk *heldLock
	if c.rdb != nil && c.lockTimeout > 0 && !eo.noLock {
		var e *entry[T]
		var skip bool
		lk, e, skip = c.lockOrWait(ctx, key, background, &cl.scratch)
		switch {
		case e != nil:
			// Another instance loaded it while we waited.
			span.SetAttributes(attrResult.String("loaded_elsewhere"))
			c.fill(cl, e, clock.now())
			c.finishWith(key, cl, e)
			return
		case skip:
			// Another instance is refreshing it.
			c.flight.forget(key, cl)
			return
		}
	}

	if c.rdb != nil && !cl.scratch.read && (lk == nil || !lk.inData) {
		// No read before the load (an eager refresh): note what the
		// value is loaded over, before the loader runs.
		c.observe(ctx, key, &cl.scratch)
	}

	lc := &loadContext{values: ctx, closing: c.closeCtx}
	if pos := max(cl.scratch.pos, c.positions.lookup(key, clock.now())); pos != 0 {
		// The key was invalidated after a database write: the loader's
		// reads through cqrs go only to a server that has replayed it.
		c.stats.positionLoads.Add(1)
		lc.floor = walpos.Floor{Inner: ctx.Value(walpos.Key{}), Position: pos}
	}
	var lctx context.Context = lc
	if c.hardTimeout > 0 {
		var cancelHard context.CancelFunc
		lctx, cancelHard = context.WithTimeout(lctx, c.hardTimeout)
		defer cancelHard()
	}
	c.stats.loads.Add(1)
	created := c.stamp(time.Now())

	if background || stale == nil || c.softTimeout <= 0 {
		v, err := c.runLoader(lctx, load)
		c.loaded(ctx, span, key, eo, cl, stale, lk, created, background, v, err)
		return
	}
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		v, err := c.runLoader(lctx, load)
		ch <- result{v, err}
	}()
	t := time.NewTimer(c.softTimeout)
	defer t.Stop()
	select {
	case r := <-ch:
		c.loaded(ctx, span, key, eo, cl, stale, lk, created, false, r.v, r.err)
	case <-t.C:
		c.serveStale(cl, stale, staleTimeout)
		span.SetAttributes(attrResult.String("stale"))
		r := <-ch
		// The callers have their answer; only refresh the tiers.
		c.loaded(ctx, span, key, eo, cl, nil, lk, created, true, r.v, r.err)
	}
}

// loadContext is the context of a load: the values of the caller's
// context, ended only by the cache's Close. It costs one allocation, where
// deriving it (WithoutCancel, WithCancel, AfterFunc) costs several on every
// miss. A load that must see a write's WAL position holds it in floor
// (Position not 0), which cqrs reads under walpos.Key: in the same
// allocation.
type loadContext struct {
	values  context.Context
	closing context.Context
	floor   walpos.Floor
}

func (c *loadContext) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c *loadContext) Done() <-chan struct{}       { return c.closing.Done() }
func (c *loadContext) Err() error                  { return c.closing.Err() }
func (c *loadContext) Value(key any) any {
	if c.floor.Position != 0 {
		if _, ok := key.(walpos.Key); ok {
			return &c.floor
		}
	}
	return c.values.Value(key)
}

// runLoader calls load, turning a panic into an error: the loader may run
// on a goroutine of the cache, where a panic would take the process down
// without the caller's stack.
func (c *Cache[T]) runLoader(ctx context.Context, load Loader[T]) (v T, err error) {
	defer func() {
		if r := recover(); r != nil {
			c.logger.Error("cache: loader panicked", "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("cache %q: loader panicked: %v", c.name, r)
		}
	}()
	return load(ctx)
}

// loaded handles a loader's result and finishes cl. With background the
// callers were already answered (soft timeout) or nobody asked (eager
// refresh): only the tiers are refreshed. lk is the distributed lock
// held for the load, if any; it is released here.
func (c *Cache[T]) loaded(ctx context.Context, span trace.Span, key string, eo entryOptions, cl *call[T], stale *entry[T], lk *heldLock, created int64, background bool, v T, err error) {
	wallNow := time.Now()
	now := clock.advance(wallNow)
	var zero T
	switch {
	case err == nil:
		e, env := c.newEntry(key, v, false, eo, now, wallNow, created)
		won := true
		if env != nil {
			won = c.writeLoaded(ctx, key, env, c.physicalTTL(eo), lk, &cl.scratch)
		} else {
			c.unlock(lk)
		}
		if won {
			c.flight.unlessSuperseded(cl, func() { c.storeL1(e, now, true) })
		}
		span.SetAttributes(attrResult.String("loaded"))
		c.flight.finish(key, cl, v, nil)
	case errors.Is(err, ErrNotFound):
		c.stats.loadNotFound.Add(1)
		if c.negativeTTL > 0 {
			neo := entryOptions{ttl: c.negativeTTL, tags: eo.tags}
			e, env := c.newEntry(key, zero, true, neo, now, wallNow, created)
			won := true
			if env != nil {
				won = c.writeLoaded(ctx, key, env, c.negativeTTL, lk, &cl.scratch)
			} else {
				c.unlock(lk)
			}
			if won {
				c.flight.unlessSuperseded(cl, func() { c.storeL1(e, now, true) })
			}
		} else {
			c.unlock(lk)
			if c.l1 != nil {
				c.flight.unlessSuperseded(cl, func() { c.l1.remove(key) })
			}
		}
		span.SetAttributes(attrResult.String("not_found"))
		c.flight.finish(key, cl, zero, err)
	default:
		c.unlock(lk)
		c.stats.loadErrors.Add(1)
		span.RecordError(err)
		span.SetStatus(codes.Error, "load failed")
		switch {
		case background && stale != nil && now < stale.stale:
			// An eager refresh failed: the current value stays; callers
			// that joined meanwhile get it.
			c.logger.Debug("cache: background refresh failed", "error", err)
			c.flight.answer(cl, stale.value, nil)
		case background:
			c.logger.Debug("cache: background refresh failed", "error", err)
		case stale != nil && now < stale.stale:
			span.SetAttributes(attrResult.String("stale"))
			c.serveStale(cl, stale, staleError)
		default:
			span.SetAttributes(attrResult.String("error"))
		}
		c.flight.finish(key, cl, zero, err)
	}
}

// serveStale answers the callers with a stale value, and keeps it in L1
// for FailSafeThrottle so the next requests do not retry at once. The call
// stays registered until its load ends.
func (c *Cache[T]) serveStale(cl *call[T], stale *entry[T], reason int) {
	now := clock.now()
	e := &entry[T]{
		value:   stale.value,
		key:     stale.key,
		tags:    stale.tags,
		cost:    stale.cost,
		created: stale.created,
		fresh:   min(now+int64(c.throttle), stale.stale),
		stale:   stale.stale,
	}
	c.flight.unlessSuperseded(cl, func() { c.storeL1(e, now, true) })
	c.stats.staleServed[reason].Add(1)
	c.flight.answer(cl, e.value, nil)
}

// storeL1 stores e unless a tag or Clear known here invalidated it after
// it was created. fill says e was read or loaded rather than written.
func (c *Cache[T]) storeL1(e *entry[T], now int64, fill bool) {
	if c.l1 == nil {
		return
	}
	if fill && c.tags.invalidLocally(e.created, e.tags) {
		return
	}
	c.l1.set(e, now, fill)
}

func (c *Cache[T]) ttlOf(eo entryOptions) time.Duration {
	if eo.ttl > 0 {
		return eo.ttl
	}
	return c.ttl
}

// physicalTTL is how long Redis keeps an entry: its freshness plus the
// fail-safe window.
func (c *Cache[T]) physicalTTL(eo entryOptions) time.Duration {
	return c.ttlOf(eo) + c.failSafe
}

// newEntry builds the L1 entry for v and, when there is an L2 (or L1 is
// bounded by size), its encoded envelope. created is in Unix milliseconds.
// An encoding failure is logged and the value is kept in L1 only.
func (c *Cache[T]) newEntry(key string, v T, negative bool, eo entryOptions, now int64, wall time.Time, created int64) (*entry[T], []byte) {
	ttl := c.ttlOf(eo)
	phys := ttl
	if !negative {
		phys += c.failSafe
	}
	wallNow := wall.UnixMilli()
	e := &entry[T]{
		value:    v,
		key:      key,
		tags:     eo.tags,
		negative: negative,
		created:  created,
		fresh:    now + int64(min(ttl, c.l1ttl)),
		stale:    now + int64(phys),
		cost:     1,
	}
	if c.eager > 0 && !negative {
		e.refreshAt = now + int64(float64(ttl)*c.eager)
	}
	if c.rdb == nil && !c.bytesBound {
		return e, nil
	}
	var payload []byte
	if !negative {
		var err error
		payload, err = c.codec.Marshal(v)
		if err != nil {
			c.stats.codecErrors.Add(1)
			c.logger.Error("cache: encoding a value failed; kept in L1 only", "error", err)
			if c.bytesBound {
				e.cost = entryOverhead + int64(len(key))
			}
			return e, nil
		}
	}
	env := appendEnvelope(make([]byte, 0, envelopeSize(eo.tags, len(payload))), negative, wallNow+ttl.Milliseconds(), wallNow+phys.Milliseconds(), created, eo.tags, payload)
	if c.bytesBound {
		e.cost = entryOverhead + int64(len(key)+len(env))
	}
	if c.rdb == nil {
		return e, nil
	}
	return e, env
}

// Get returns the fresh value for key from L1 or Redis, without loading.
// It reports false on a miss, for a cached "not found", and when Redis is
// unreachable.
func (c *Cache[T]) Get(ctx context.Context, key string) (T, bool) {
	var zero T
	now := clock.now()
	if c.l1 != nil {
		if e := c.l1.getFresh(key, now); e != nil {
			if e.negative {
				return zero, false
			}
			return e.value, true
		}
		c.stats.l1Misses.Add(1)
	}
	if c.rdb == nil || c.closed.Load() {
		return zero, false
	}
	removals := c.removals.Load()
	wallNow := time.Now()
	now = clock.advance(wallNow)
	e := c.readL2(ctx, key, now, wallNow, nil, false)
	if e == nil || now >= e.fresh {
		c.stats.l2Misses.Add(1)
		return zero, false
	}
	c.stats.l2Hits.Add(1)
	if c.removals.Load() == removals {
		c.storeL1(e, now, true)
	}
	if e.negative {
		return zero, false
	}
	return e.value, true
}

// Set stores v under key in both tiers and tells the other instances to
// drop their L1 copy. Once it has reached Redis, a load of key that
// started before, on any instance, does not overwrite it, whatever the
// instances' clocks say (see the package doc). When Redis is unreachable the value is kept in L1 and the
// Redis write is replayed when Redis returns; Set returns an error only
// when v cannot be encoded or the cache is closed. When ctx records a
// database write's position (a cqrs read-your-writes session that has
// written), the invalidation carries it, so that later loads of key on
// any instance read a server that has the write (see the package doc).
func (c *Cache[T]) Set(ctx context.Context, key string, v T, opts ...EntryOption) error {
	if c.closed.Load() {
		return ErrClosed
	}
	eo := resolve(opts)
	wallNow := time.Now()
	now := clock.advance(wallNow)
	e, env := c.newEntry(key, v, false, eo, now, wallNow, c.stamp(wallNow))
	if c.rdb != nil && env == nil {
		return fmt.Errorf("cache %q: encoding the value for key failed", c.name)
	}
	pos := writePosition(ctx)
	if pos != 0 {
		c.positions.note(key, pos, now)
	}
	c.flight.supersede(key)
	c.storeL1(e, now, false)
	if c.rdb == nil {
		return nil
	}
	ttl := c.physicalTTL(eo)
	if err := c.writeL2(ctx, key, env, ttl, pos); err != nil {
		c.queue(pendingOp{kind: opSet, id: key, env: env, at: e.created, expires: wallNow.Add(ttl), pos: pos})
	}
	return nil
}

// Remove deletes key from both tiers here and from the L1 of every other
// instance. Once it has reached Redis, a load of key that started before,
// on any instance, does not bring the old value back, whatever the
// instances' clocks say. When Redis is unreachable the removal is replayed when it
// returns. When ctx records a database write's position (a cqrs
// read-your-writes session that has written), the removal carries it, in
// Redis and to every instance, so that the next load of key, on any
// instance, reads a server that has the write, never a lagging replica's
// older row (see the package doc, Over read replicas).
func (c *Cache[T]) Remove(ctx context.Context, key string) error {
	if c.closed.Load() {
		return ErrClosed
	}
	at := c.stamp(time.Now())
	pos := writePosition(ctx)
	if pos != 0 {
		c.positions.note(key, pos, clock.now())
	}
	c.flight.supersede(key)
	c.removals.Add(1)
	if c.l1 != nil {
		c.l1.remove(key)
	}
	if c.rdb == nil {
		return nil
	}
	if err := c.removeL2(ctx, key, at, false, pos); err != nil {
		c.queue(pendingOp{kind: opRemove, id: key, at: at, pos: pos})
	}
	return nil
}

// RemoveByTag expires every entry tagged tag, in every instance. It does
// O(1) Redis work whatever the number of entries: it records the time of
// the removal under the tag and tells the other instances, which drop
// matching L1 entries; an entry read from Redis is treated as expired when
// one of its tags was removed at or after it was written (it may still be
// served by fail-safe while its loader fails). A database write's position
// recorded in ctx is carried as by Remove, for every key of the cache.
func (c *Cache[T]) RemoveByTag(ctx context.Context, tag string) error {
	return c.invalidate(ctx, opRemoveTag, tag)
}

// Clear expires every entry of the cache, in every instance, as
// RemoveByTag does for one tag: Redis records the time of the clear, and
// every instance empties its L1.
func (c *Cache[T]) Clear(ctx context.Context) error {
	return c.invalidate(ctx, opClear, "")
}

func (c *Cache[T]) invalidate(ctx context.Context, kind int, tag string) error {
	if c.closed.Load() {
		return ErrClosed
	}
	at := time.Now().UnixMilli()
	pos := writePosition(ctx)
	if pos != 0 {
		c.positions.noteAll(pos, clock.now())
	}
	c.applyInvalidation(kind, tag, at)
	if c.rdb == nil {
		return nil
	}
	if err := c.invalidateL2(ctx, kind, tag, at, pos); err != nil {
		c.queue(pendingOp{kind: kind, id: tag, at: at, pos: pos})
	}
	return nil
}

// applyInvalidation applies a tag removal or a clear made at (Unix ms) to
// this instance.
func (c *Cache[T]) applyInvalidation(kind int, tag string, at int64) {
	now := clock.now()
	if kind == opClear {
		c.tags.note(tagClear, at, now)
	} else {
		c.tags.note(tagID(tag), at, now)
	}
	c.flight.supersedeAll()
	c.removals.Add(1)
	if c.l1 == nil {
		return
	}
	if kind == opClear {
		c.l1.clear()
	} else {
		c.l1.removeTag(tag)
	}
}

// Close stops the cache: it leaves the invalidation channel, cancels loads
// still running in the background and waits for them, and empties L1.
// Operations waiting to be replayed to Redis are dropped (and logged).
func (c *Cache[T]) Close() error {
	c.closeMu.Lock()
	if !c.closed.CompareAndSwap(false, true) {
		c.closeMu.Unlock()
		return nil
	}
	c.closeMu.Unlock()
	c.closeCancel()
	if c.stopListen != nil {
		c.stopListen()
	}
	if c.bus != nil {
		c.bus.leave(c.channel, c)
	}
	c.wg.Wait()
	if n := c.recovery.len(); n > 0 {
		c.logger.Warn("cache: closed with Redis operations not replayed", "pending", n)
	}
	if c.metricsReg != nil {
		_ = c.metricsReg.Unregister()
	}
	if c.l1 != nil {
		c.l1.clear()
	}
	clock.release()
	return nil
}

// stamp is the creation time (Unix ms) of a value written or loaded at t.
func (c *Cache[T]) stamp(t time.Time) int64 { return t.UnixMilli() + c.skew.Milliseconds() }
