package cache

import (
	"context"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/goaspire/goaspire/internal/fallback"
)

const instrumentationName = "github.com/goaspire/goaspire/cache"

// attrResult is the "cache.load" span attribute saying how the callers
// were answered: loaded, stale, not_found or error.
var attrResult = attribute.Key("cache.result")

// Reasons a stale value was served.
const (
	staleError   = iota // the loader failed
	staleTimeout        // the loader outlasted SoftTimeout
	staleReasons
)

// counters are plain atomics: the hot paths pay an atomic add, and the
// OpenTelemetry instruments read them in a callback. L1 hits are counted
// per L1 shard.
type counters struct {
	l1Misses       atomic.Int64
	l2Hits         atomic.Int64
	l2Misses       atomic.Int64
	loads          atomic.Int64
	loadErrors     atomic.Int64
	loadNotFound   atomic.Int64
	staleServed    [staleReasons]atomic.Int64
	invalidations  atomic.Int64
	reconnects     atomic.Int64
	l2Errors       atomic.Int64
	codecErrors    atomic.Int64
	replayed       atomic.Int64
	l1Hits         atomic.Int64 // hits found by the slow path only
	lockWaits      atomic.Int64
	eagerRefreshes atomic.Int64
	positionLoads  atomic.Int64
}

// Stats is a snapshot of a cache's counters since it was made.
type Stats struct {
	// L1Hits and L1Misses count lookups in the in-process tier, L2Hits
	// and L2Misses those that went on to Redis.
	L1Hits, L1Misses int64
	L2Hits, L2Misses int64
	// Loads counts loader calls; LoadErrors those that failed (not
	// counting ErrNotFound, which is LoadNotFound).
	Loads, LoadErrors, LoadNotFound int64
	// EagerRefreshes counts background reloads started by hits past
	// Options.EagerRefreshThreshold.
	EagerRefreshes int64
	// LockWaits counts misses that found another instance holding the
	// distributed lock and waited for its value.
	LockWaits int64
	// PositionLoads counts the loads (of Loads) that followed an
	// invalidation carrying a database write's WAL position, whose
	// loader context required it (see the package doc).
	PositionLoads int64
	// StaleServed counts stale values served by fail-safe, because the
	// loader failed or outlasted SoftTimeout.
	StaleServed int64
	// InvalidationsReceived counts messages from other instances.
	InvalidationsReceived int64
	// Reconnects counts L1 flushes after the invalidation subscription
	// was lost and restored.
	Reconnects int64
	// L2Errors counts failed Redis operations; BreakerTrips how often
	// the breaker of the Redis client (shared by every cache on it) made
	// the caches skip Redis; BreakerOpen says it does now.
	L2Errors     int64
	BreakerTrips int64
	BreakerOpen  bool
	// CodecErrors counts values that could not be encoded or decoded.
	CodecErrors int64
	// Replayed counts writes replayed to Redis after an outage;
	// PendingReplay those still waiting, holding PendingReplayBytes.
	Replayed           int64
	PendingReplay      int
	PendingReplayBytes int64
	// L1Entries is the number of entries in L1 now; L1Evictions how many
	// were evicted to respect its bound.
	L1Entries   int
	L1Evictions int64
}

// Stats returns a snapshot of the cache's counters.
func (c *Cache[T]) Stats() Stats {
	s := Stats{
		L1Hits:                c.stats.l1Hits.Load(),
		L1Misses:              c.stats.l1Misses.Load(),
		L2Hits:                c.stats.l2Hits.Load(),
		L2Misses:              c.stats.l2Misses.Load(),
		Loads:                 c.stats.loads.Load(),
		LoadErrors:            c.stats.loadErrors.Load(),
		LoadNotFound:          c.stats.loadNotFound.Load(),
		InvalidationsReceived: c.stats.invalidations.Load(),
		Reconnects:            c.stats.reconnects.Load(),
		L2Errors:              c.stats.l2Errors.Load(),
		EagerRefreshes:        c.stats.eagerRefreshes.Load(),
		LockWaits:             c.stats.lockWaits.Load(),
		PositionLoads:         c.stats.positionLoads.Load(),
		BreakerTrips:          c.brk.Trips(),
		BreakerOpen:           c.brk.Open(),
		CodecErrors:           c.stats.codecErrors.Load(),
		Replayed:              c.stats.replayed.Load(),
		PendingReplay:         c.recovery.len(),
		PendingReplayBytes:    c.recovery.size(),
	}
	for i := range c.stats.staleServed {
		s.StaleServed += c.stats.staleServed[i].Load()
	}
	if c.l1 != nil {
		hits, evicted := c.l1.counts()
		s.L1Hits += hits
		s.L1Evictions = evicted
		s.L1Entries = c.l1.len()
	}
	return s
}

// registerMetrics creates the cache's instruments, all observed from the
// counters:
//
//	goaspire.cache.hits                    {cache.name, cache.tier=l1|l2}
//	goaspire.cache.misses                  {cache.name, cache.tier=l1|l2}
//	goaspire.cache.loads                   {cache.name, cache.outcome=success|error|not_found}
//	goaspire.cache.position_loads          {cache.name}
//	goaspire.cache.stale_served            {cache.name, cache.reason=error|timeout}
//	goaspire.cache.invalidations_received  {cache.name}
//	goaspire.cache.reconnects              {cache.name}
//	goaspire.cache.errors                  {cache.name, cache.tier=l2|codec}
//	goaspire.cache.l1.entries              {cache.name}  (gauge)
//	goaspire.cache.l1.evictions            {cache.name}
func (c *Cache[T]) registerMetrics(mp metric.MeterProvider) error {
	mp = fallback.MeterProvider(mp)
	m := mp.Meter(instrumentationName)
	name := attribute.String("cache.name", c.name)
	set := func(kv ...attribute.KeyValue) metric.ObserveOption {
		return metric.WithAttributeSet(attribute.NewSet(append([]attribute.KeyValue{name}, kv...)...))
	}
	var (
		l1      = set(attribute.String("cache.tier", "l1"))
		l2      = set(attribute.String("cache.tier", "l2"))
		codec   = set(attribute.String("cache.tier", "codec"))
		plain   = set()
		success = set(attribute.String("cache.outcome", "success"))
		failed  = set(attribute.String("cache.outcome", "error"))
		missing = set(attribute.String("cache.outcome", "not_found"))
		reasons = [staleReasons]metric.ObserveOption{
			staleError:   set(attribute.String("cache.reason", "error")),
			staleTimeout: set(attribute.String("cache.reason", "timeout")),
		}
	)
	var hits, misses, loads, posLoads, stale, inval, reconn, errs, evictions metric.Int64ObservableCounter
	for _, in := range []struct {
		dst        *metric.Int64ObservableCounter
		name, desc string
	}{
		{&hits, "goaspire.cache.hits", "Reads answered by a cache tier."},
		{&misses, "goaspire.cache.misses", "Reads a cache tier could not answer."},
		{&loads, "goaspire.cache.loads", "Loader calls."},
		{&posLoads, "goaspire.cache.position_loads", "Loader calls that followed an invalidation carrying a database write's position, which their reads had to see."},
		{&stale, "goaspire.cache.stale_served", "Stale values served by fail-safe."},
		{&inval, "goaspire.cache.invalidations_received", "Invalidation messages received from other instances."},
		{&reconn, "goaspire.cache.reconnects", "L1 flushes after the invalidation subscription was restored."},
		{&errs, "goaspire.cache.errors", "Failed Redis operations and codec failures."},
		{&evictions, "goaspire.cache.l1.evictions", "L1 entries evicted to respect its bound."},
	} {
		var err error
		*in.dst, err = m.Int64ObservableCounter(in.name, metric.WithDescription(in.desc), metric.WithUnit("{operation}"))
		if err != nil {
			return err
		}
	}
	entries, err := m.Int64ObservableGauge("goaspire.cache.l1.entries", metric.WithDescription("Entries in L1."), metric.WithUnit("{entry}"))
	if err != nil {
		return err
	}
	c.metricsReg, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		s := c.Stats()
		o.ObserveInt64(hits, s.L1Hits, l1)
		o.ObserveInt64(hits, s.L2Hits, l2)
		o.ObserveInt64(misses, s.L1Misses, l1)
		o.ObserveInt64(misses, s.L2Misses, l2)
		o.ObserveInt64(loads, s.Loads-s.LoadErrors-s.LoadNotFound, success)
		o.ObserveInt64(loads, s.LoadErrors, failed)
		o.ObserveInt64(loads, s.LoadNotFound, missing)
		o.ObserveInt64(posLoads, s.PositionLoads, plain)
		for i := range reasons {
			o.ObserveInt64(stale, c.stats.staleServed[i].Load(), reasons[i])
		}
		o.ObserveInt64(inval, s.InvalidationsReceived, plain)
		o.ObserveInt64(reconn, s.Reconnects, plain)
		o.ObserveInt64(errs, s.L2Errors, l2)
		o.ObserveInt64(errs, s.CodecErrors, codec)
		o.ObserveInt64(evictions, s.L1Evictions, plain)
		o.ObserveInt64(entries, int64(s.L1Entries), plain)
		return nil
	}, hits, misses, loads, posLoads, stale, inval, reconn, errs, evictions, entries)
	return err
}
