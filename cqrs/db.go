package cqrs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/internal/deadline"
	"github.com/goaspire/goaspire/internal/fallback"
)

// Keys accepted by DB.Keyed besides connection names, matching Aspire's production patterns'
// [FromKeyedServices("primary")] and [FromKeyedServices("replica")].
const (
	KeyPrimary = "primary"
	KeyReplica = "replica"
)

// DB is a primary and any number of streaming replicas of one PostgreSQL
// database, with reads routed to healthy replicas.
//
// Writes go to the primary: Primary(), or DB.Exec, DB.CopyFrom,
// DB.SendBatch and DB.Begin, which also record the write's WAL position
// for read-your-writes. DB.Query and DB.QueryRow send a statement to a
// replica only when its text shows it is read-only (a SELECT without
// FOR UPDATE, nextval and the like: see Query), and everything else to the
// primary as a write; a read honours read-your-writes and, when a replica
// fails with a connection error, takes it out of rotation and runs again
// elsewhere, so callers see no error. With no replica in rotation, reads
// go to the primary. Replica() picks a replica round-robin among those in
// rotation. Reader and Writer are handles that make the split explicit.
//
// A background checker takes a replica out of rotation when it is down, not
// in recovery, or further behind the primary than Replicas:MaxLag, and puts
// it back when it is well again.
//
// A DB is safe for concurrent use. DB, Reader and Writer each satisfy the
// DBTX interface that sqlc generates for pgx/v5 (Exec, Query, QueryRow,
// and CopyFrom and SendBatch when it uses them), so
// queries.New(db) sends sqlc's writes, INSERT ... RETURNING included, to the
// primary and its reads to replicas.
type DB struct {
	name         string
	settings     dbSettings
	attemptSlots *deadline.Slots // settings.readAttempt's deadline slots
	log          *slog.Logger

	primary  *node
	replicas []*node
	byName   map[string]*node // lower-cased connection name

	rotation atomic.Pointer[[]*node] // replicas in rotation
	rr       atomic.Uint64
	floor    floor // read-your-writes position of the whole DB (ReadYourWrites)

	mu      sync.Mutex // guards rotation changes and samples
	samples []lsnSample
	empty   bool // rotation was empty at the last change (for logging)

	kick   chan struct{}
	cancel context.CancelFunc
	wg     sync.WaitGroup

	stmts stmtCache // read-only or not, per SQL text

	// reads counts reads by kind; an observable counter reports them, so
	// that routing a read costs an atomic add rather than a metric
	// instrument's bookkeeping.
	reads     [readKinds]paddedCounter
	reg       metric.Registration
	closeOnce sync.Once
}

// node is one server of the DB.
type node struct {
	name    string
	pool    *Pool
	replica bool
	bit     uint64 // 1<<index among replicas (0 past 64)

	inRotation atomic.Bool
	gen        atomic.Uint64 // bumped when a read reports the node down
	replay     atomic.Uint64 // last replay LSN seen by a check
	lagNanos   atomic.Int64
	lagBytes   atomic.Int64
	reason     atomic.Pointer[string] // why out of rotation
}

// paddedCounter is an atomic counter on its own cache line, so that the
// counters of different read kinds do not contend.
type paddedCounter struct {
	atomic.Int64
	_ [56]byte
}

type lsnSample struct {
	at  time.Time
	lsn LSN
}

// kinds of read, for the goaspire.cqrs.reads metric.
const (
	readReplica        = iota // served by a replica
	readFallback              // replicas configured, none usable: primary
	readReadYourWrites        // no replica has replayed the session's writes: primary
	readNoReplicas            // no replicas configured: primary
	readRefused               // a replica refused it as a write: primary
	readMinLSN                // no replica has replayed the position the context requires: primary
	readReplicaMinLSN         // served by a replica that has replayed the position the context requires
	readKinds
)

// New opens the DB c describes: a pool for the primary and for each
// replica, and a background checker of the replicas. Make c with
// [LoadConfig], or by hand. The database need not be up unless
// c.WaitOnOpen says to wait for it. Close the DB when done.
func New(ctx context.Context, c *Config) (*DB, error) {
	if c == nil {
		return nil, errors.New("cqrs: New: nil Config")
	}
	name := c.Name
	if strings.TrimSpace(name) == "" {
		name = c.Primary.Name
	}
	if strings.TrimSpace(name) == "" {
		name = "postgres"
	}
	s := dbSettings{
		readYourWrites: c.ReadYourWrites,
		checkInterval:  c.CheckInterval,
		checkTimeout:   c.CheckTimeout,
		readAttempt:    c.ReadAttemptTimeout,
		maxLag:         c.MaxLag,
		maxLagBytes:    c.MaxLagBytes,
		disableMetrics: c.DisableMetrics,
	}
	switch {
	case s.checkInterval == 0:
		s.checkInterval = DefaultCheckInterval
	case s.checkInterval < 0:
		return nil, fmt.Errorf("cqrs: DB %q: Config.CheckInterval must not be negative", name)
	}
	switch {
	case s.maxLag == 0:
		s.maxLag = DefaultMaxLag
	case s.maxLag < 0:
		s.maxLag = 0 // no bound
	}
	if s.maxLagBytes < 0 {
		return nil, fmt.Errorf("cqrs: DB %q: Config.MaxLagBytes must not be negative", name)
	}
	switch {
	case s.readAttempt == 0:
		s.readAttempt = DefaultReadAttemptTimeout
	case s.readAttempt < 0:
		s.readAttempt = 0 // no bound
	}
	if s.checkTimeout <= 0 {
		s.checkTimeout = max(s.checkInterval, time.Second)
	}
	tp, mp, logger := fallback.TracerProvider(c.TracerProvider), fallback.MeterProvider(c.MeterProvider), fallback.Logger(c.Logger)

	db := &DB{
		name:         name,
		settings:     s,
		attemptSlots: newSlots(s.readAttempt),
		log:          logger.With("goaspire.cqrs.db", name),
		byName:       map[string]*node{},
		kick:         make(chan struct{}, 1),
	}
	ok := false
	defer func() {
		if !ok {
			db.closePools()
		}
	}()

	add := func(pc PoolConfig, replica bool) error {
		conn := strings.TrimSpace(pc.Name)
		if conn == "" {
			return fmt.Errorf("cqrs: DB %q: a PoolConfig has no Name", name)
		}
		key := strings.ToLower(conn)
		if _, dup := db.byName[key]; dup || key == KeyPrimary || key == KeyReplica {
			return fmt.Errorf("cqrs: DB %q: connection name %q is used twice or is reserved", name, conn)
		}
		p, err := newPool(ctx, pc, tp, mp, logger, !replica)
		if err != nil {
			return err
		}
		n := &node{name: conn, pool: p, replica: replica}
		if replica {
			if i := len(db.replicas); i < 64 {
				n.bit = 1 << i
			}
			r := "not checked yet"
			n.reason.Store(&r)
			db.replicas = append(db.replicas, n)
		} else {
			db.primary = n
		}
		db.byName[key] = n
		return nil
	}
	primary := c.Primary
	if strings.TrimSpace(primary.Name) == "" {
		primary.Name = name
	}
	if err := add(primary, false); err != nil {
		return nil, err
	}
	for _, r := range c.Replicas {
		if err := add(r, true); err != nil {
			return nil, err
		}
	}
	empty := []*node{}
	db.rotation.Store(&empty)
	db.empty = true

	if s.disableMetrics {
		mp = metricnoop.NewMeterProvider()
	}
	if err := db.initMetrics(mp.Meter(scopeName)); err != nil {
		return nil, err
	}

	loopCtx, cancel := context.WithCancel(context.Background())
	db.cancel = cancel
	if len(db.replicas) > 0 {
		db.wg.Add(1)
		go db.checkLoop(loopCtx)
	}
	if err := db.primary.pool.waitOnOpen(ctx, c.WaitOnOpen); err != nil {
		db.stop()
		return nil, err
	}
	ok = true
	return db, nil
}

// Name returns the DB's name (Config.Name, else the primary's).
func (db *DB) Name() string { return db.name }

// Primary returns the primary's pool, for writes.
func (db *DB) Primary() *pgxpool.Pool { return db.primary.pool.Pool }

// Replica returns a pool to read from: the next replica in rotation,
// round-robin, or the primary when none is in rotation. Call it for each
// read (it is cheap) rather than keeping its result, so that reads follow
// the rotation. It does not know the caller's read-your-writes session; use
// ReplicaFor, or DB.Query and DB.QueryRow, for that.
func (db *DB) Replica() *pgxpool.Pool {
	return db.choose(0, 0).pool.Pool
}

// ReplicaFor is Replica for a read made with ctx: when ctx is a
// read-your-writes session (or ReadYourWrites is on, or ctx requires a
// position: WithMinLSN, a cache's loader) it returns only a replica known
// to have replayed the session's latest write (or that position), else the
// primary.
func (db *DB) ReplicaFor(ctx context.Context) *pgxpool.Pool {
	return db.pick(db.needOf(routeFrom(ctx)), 0).pool.Pool
}

// Keyed returns the pool for key: "primary" (Primary), "replica" (Replica,
// chosen at this call), or the name of one of the DB's connections
// ("db-replica-east"). Keys are case-insensitive. An unknown key is an
// error naming the keys there are.
func (db *DB) Keyed(key string) (*pgxpool.Pool, error) {
	k := strings.ToLower(strings.TrimSpace(key))
	switch k {
	case KeyPrimary:
		return db.Primary(), nil
	case KeyReplica:
		return db.Replica(), nil
	}
	if n, ok := db.byName[k]; ok {
		return n.pool.Pool, nil
	}
	keys := []string{KeyPrimary, KeyReplica, db.primary.name}
	for _, r := range db.replicas {
		keys = append(keys, r.name)
	}
	return nil, fmt.Errorf("cqrs: DB %q has no handle %q: %w (have %s)", db.name, key, discovery.ErrNotFound, strings.Join(keys, ", "))
}

// ReplicaStatus describes one replica as the checker last saw it.
type ReplicaStatus struct {
	// Name is the replica's connection name.
	Name string
	// InRotation reports whether reads go to it.
	InRotation bool
	// Reason says why it is out of rotation ("" when in).
	Reason string
	// ReplayLSN is the last WAL position it was seen to have replayed.
	ReplayLSN LSN
	// Lag is how long ago the primary was where the replica is now, to
	// within one check interval; LagBytes is the WAL distance.
	Lag      time.Duration
	LagBytes int64
}

// Replicas reports the state of each replica, in configuration order.
func (db *DB) Replicas() []ReplicaStatus {
	out := make([]ReplicaStatus, 0, len(db.replicas))
	for _, n := range db.replicas {
		st := ReplicaStatus{
			Name:       n.name,
			InRotation: n.inRotation.Load(),
			ReplayLSN:  LSN(n.replay.Load()),
			Lag:        time.Duration(n.lagNanos.Load()),
			LagBytes:   n.lagBytes.Load(),
		}
		if !st.InRotation {
			if r := n.reason.Load(); r != nil {
				st.Reason = *r
			}
		}
		out = append(out, st)
	}
	return out
}

// HealthChecks returns one check per server, named "postgres:{connection}":
// the primary's reports Unhealthy when it cannot be reached; a replica's
// reports Degraded when it is down, not in recovery, or lagging beyond the
// bound. A server's HealthCheckFailureStatus, when set, replaces that
// status. Servers whose DisableHealthChecks is set are left out.
func (db *DB) HealthChecks() []health.Check {
	var cs []health.Check
	cs = append(cs, db.primary.pool.HealthChecks()...)
	for _, n := range db.replicas {
		if n.pool.settings.DisableHealthChecks {
			continue
		}
		n := n
		cs = append(cs, health.Check{
			Name:          "postgres:" + n.name,
			Tags:          []string{health.TagReady},
			FailureStatus: failureStatus(n.pool.settings.HealthCheckFailureStatus, health.Degraded),
			Check:         func(ctx context.Context) error { return db.checkReplica(ctx, n) },
		})
	}
	return cs
}

// Close stops the replica checker and closes every pool. It is safe to
// call more than once.
func (db *DB) Close() {
	db.closeOnce.Do(db.stop)
}

func (db *DB) stop() {
	if db.cancel != nil {
		db.cancel()
	}
	db.wg.Wait()
	if db.reg != nil {
		_ = db.reg.Unregister()
	}
	db.closePools()
}

func (db *DB) closePools() {
	if db.primary != nil {
		db.primary.pool.Close()
	}
	for _, n := range db.replicas {
		n.pool.Close()
	}
}

// choose picks the server for a read that must see WAL position min for
// read-your-writes, skipping the replicas in tried.
func (db *DB) choose(min LSN, tried uint64) *node { return db.pick(need{lsn: min}, tried) }

// pick picks the server for a read that must see min, skipping the
// replicas in tried.
func (db *DB) pick(min need, tried uint64) *node {
	rs := *db.rotation.Load()
	if n := uint64(len(rs)); n > 0 {
		start := db.rr.Add(1)
		behind := false
		for j := uint64(0); j < n; j++ {
			c := rs[(start+j)%n]
			if tried&c.bit != 0 {
				continue
			}
			if min.lsn != 0 && LSN(c.replay.Load()) < min.lsn {
				behind = true
				continue
			}
			if min.given {
				db.reads[readReplicaMinLSN].Add(1)
			} else {
				db.reads[readReplica].Add(1)
			}
			return c
		}
		if behind {
			// A fresh check may show a replica has caught up.
			db.kickCheck()
			if min.given {
				db.reads[readMinLSN].Add(1)
			} else {
				db.reads[readReadYourWrites].Add(1)
			}
			return db.primary
		}
	}
	kind := readFallback
	if len(db.replicas) == 0 {
		kind = readNoReplicas
	}
	db.reads[kind].Add(1)
	return db.primary
}

func (db *DB) kickCheck() {
	select {
	case db.kick <- struct{}{}:
	default:
	}
}

// checkLoop checks every replica each CheckInterval, and sooner when
// kicked (a read found a replica down or behind), at most every tenth of
// the interval.
func (db *DB) checkLoop(ctx context.Context) {
	defer db.wg.Done()
	minGap := max(db.settings.checkInterval/10, 10*time.Millisecond)
	t := time.NewTicker(db.settings.checkInterval)
	defer t.Stop()
	for {
		last := time.Now()
		db.checkAll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-db.kick:
			if wait := minGap - time.Since(last); wait > 0 {
				w := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					w.Stop()
					return
				case <-w.C:
				}
			}
		}
	}
}

// checkAll samples the primary's WAL position and checks the replicas,
// all concurrently, so that a slow server delays no other. Replica lag is
// measured against the samples taken so far.
func (db *DB) checkAll(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, db.settings.checkTimeout)
	defer cancel()
	sample := func() {
		var text string
		if err := db.primary.pool.QueryRow(cctx, "select pg_current_wal_lsn()::text").Scan(&text); err == nil {
			if l, err := ParseLSN(text); err == nil {
				db.addSample(time.Now(), l)
			}
		}
	}
	db.mu.Lock()
	first := len(db.samples) == 0
	db.mu.Unlock()
	var wg sync.WaitGroup
	if first {
		sample() // lag cannot be judged without a first sample
	} else {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sample()
		}()
	}
	for _, n := range db.replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = db.checkReplica(cctx, n)
		}()
	}
	wg.Wait()
}

// checkReplica checks one replica, updates its state and returns why it
// is unfit for reads (nil when fit).
func (db *DB) checkReplica(ctx context.Context, n *node) error {
	gen := n.gen.Load()
	var inRecovery bool
	var replay *string
	err := n.pool.QueryRow(ctx, "select pg_is_in_recovery(), pg_last_wal_replay_lsn()::text").Scan(&inRecovery, &replay)
	if err != nil && errors.Is(ctx.Err(), context.Canceled) {
		return err // shutting down, or the caller gave up: leave the state alone
	}
	var why error
	switch {
	case err != nil:
		why = fmt.Errorf("down: %w", err)
	case !inRecovery:
		why = errors.New("not in recovery: promoted, or not a replica")
	case replay == nil:
		why = errors.New("has replayed no WAL yet")
	default:
		l, perr := ParseLSN(*replay)
		if perr != nil {
			why = perr
			break
		}
		n.replay.Store(uint64(l))
		lag, bytes := db.lagOf(l, time.Now())
		n.lagNanos.Store(int64(lag))
		n.lagBytes.Store(bytes)
		if m := db.settings.maxLag; m > 0 && lag > m {
			why = fmt.Errorf("lagging %v behind the primary (Replicas:MaxLag is %v)", lag.Round(time.Millisecond), m)
		} else if m := db.settings.maxLagBytes; m > 0 && bytes > m {
			why = fmt.Errorf("lagging %d bytes of WAL behind the primary (Replicas:MaxLagBytes is %d)", bytes, m)
		}
	}
	if db.setState(n, why, gen) {
		// Out of rotation: its connections may be stalled (a
		// partition) or lead to a server that is gone; drop them
		// rather than hand them to the next check or read.
		n.pool.Reset()
	}
	if why != nil {
		return fmt.Errorf("replica %q %w", n.name, why)
	}
	return nil
}

// setState puts n in rotation (why == nil) or takes it out. A check that
// started before a read reported n down (gen changed) cannot put it back.
// It reports whether n left the rotation.
func (db *DB) setState(n *node, why error, gen uint64) (left bool) {
	db.mu.Lock()
	defer db.mu.Unlock()
	if why == nil && n.gen.Load() != gen {
		return false
	}
	was := n.inRotation.Load()
	if why == nil {
		if was {
			return false
		}
		n.inRotation.Store(true)
		db.log.Info("cqrs: replica in rotation", "replica", n.name)
	} else {
		msg := why.Error()
		n.reason.Store(&msg)
		if !was {
			return false
		}
		n.inRotation.Store(false)
		db.log.Warn("cqrs: replica out of rotation", "replica", n.name, "reason", msg)
	}
	rs := make([]*node, 0, len(db.replicas))
	for _, r := range db.replicas {
		if r.inRotation.Load() {
			rs = append(rs, r)
		}
	}
	db.rotation.Store(&rs)
	if len(rs) == 0 && !db.empty {
		db.log.Warn("cqrs: no replica in rotation; reads go to the primary")
	}
	db.empty = len(rs) == 0
	return was && why != nil
}

// markDown takes n out of rotation after a read failed on it with a
// connection error, drops its pooled connections, and asks for a check.
func (db *DB) markDown(n *node, err error) {
	gen := n.gen.Add(1)
	if db.setState(n, fmt.Errorf("read failed: %w", err), gen) {
		n.pool.Reset()
	}
	db.kickCheck()
}

// addSample records the primary's WAL position at t. Samples keep the
// first time each position was seen and go back far enough to measure lag
// up to twice MaxLag.
func (db *DB) addSample(t time.Time, l LSN) {
	db.mu.Lock()
	defer db.mu.Unlock()
	if k := len(db.samples); k > 0 {
		last := db.samples[k-1].lsn
		if l == last {
			return
		}
		if l < last { // the primary went back (restored): start over
			db.samples = db.samples[:0]
		}
	}
	db.samples = append(db.samples, lsnSample{at: t, lsn: l})
	keep := max(2*db.settings.maxLag, 20*db.settings.checkInterval)
	i := 0
	for i < len(db.samples)-1 && t.Sub(db.samples[i].at) > keep {
		i++
	}
	if i > 0 {
		db.samples = append(db.samples[:0], db.samples[i:]...)
	}
}

// lagOf returns how far a replica that has replayed up to l is behind:
// the time since the primary was first seen past l, and the WAL distance
// to the primary's latest position. An idle primary does not make an
// up-to-date replica look stale, as replay timestamps would.
func (db *DB) lagOf(l LSN, now time.Time) (time.Duration, int64) {
	db.mu.Lock()
	defer db.mu.Unlock()
	k := len(db.samples)
	if k == 0 || l >= db.samples[k-1].lsn {
		return 0, 0
	}
	bytes := int64(min(uint64(db.samples[k-1].lsn-l), math.MaxInt64))
	i := sort.Search(k, func(i int) bool { return db.samples[i].lsn > l })
	return max(now.Sub(db.samples[i].at), 0), bytes
}

// initMetrics registers the read counter and the replica gauges.
func (db *DB) initMetrics(m metric.Meter) error {
	reads, err := m.Int64ObservableCounter("goaspire.cqrs.reads",
		metric.WithDescription("Reads routed by a DB, by target (replica or primary); fallback=true when replicas are configured but none was usable."),
		metric.WithUnit("{read}"))
	if err != nil {
		return err
	}
	dbAttr := attribute.String("goaspire.cqrs.db", db.name)
	mk := func(target string, fallback bool, reason string) metric.ObserveOption {
		kv := []attribute.KeyValue{dbAttr, attribute.String("target", target), attribute.Bool("fallback", fallback)}
		if reason != "" {
			kv = append(kv, attribute.String("reason", reason))
		}
		return metric.WithAttributeSet(attribute.NewSet(kv...))
	}
	var readAttrs [readKinds]metric.ObserveOption
	readAttrs[readReplica] = mk("replica", false, "")
	readAttrs[readFallback] = mk("primary", true, "no_replica_in_rotation")
	readAttrs[readReadYourWrites] = mk("primary", false, "read_your_writes")
	readAttrs[readNoReplicas] = mk("primary", false, "no_replicas")
	readAttrs[readRefused] = mk("primary", false, "replica_refused_write")
	readAttrs[readMinLSN] = mk("primary", false, "min_lsn")
	readAttrs[readReplicaMinLSN] = mk("replica", false, "min_lsn")
	instruments := []metric.Observable{reads}

	var healthy, lagBytes metric.Int64ObservableGauge
	var lag metric.Float64ObservableGauge
	sets := make([]metric.ObserveOption, len(db.replicas))
	if len(db.replicas) > 0 {
		var err1, err2, err3 error
		healthy, err1 = m.Int64ObservableGauge("goaspire.cqrs.replica.healthy",
			metric.WithDescription("1 when the replica is in read rotation, else 0."))
		lag, err2 = m.Float64ObservableGauge("goaspire.cqrs.replica.lag",
			metric.WithDescription("How long ago the primary was where the replica is now."), metric.WithUnit("s"))
		lagBytes, err3 = m.Int64ObservableGauge("goaspire.cqrs.replica.lag_bytes",
			metric.WithDescription("WAL the replica has still to replay."), metric.WithUnit("By"))
		if err := errors.Join(err1, err2, err3); err != nil {
			return err
		}
		instruments = append(instruments, healthy, lag, lagBytes)
		for i, n := range db.replicas {
			sets[i] = metric.WithAttributeSet(attribute.NewSet(dbAttr, attribute.String("goaspire.cqrs.replica", n.name)))
		}
	}
	db.reg, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for k := range db.reads {
			if v := db.reads[k].Load(); v > 0 || k == readReplica || k == readFallback {
				o.ObserveInt64(reads, v, readAttrs[k])
			}
		}
		for i, n := range db.replicas {
			var h int64
			if n.inRotation.Load() {
				h = 1
			}
			o.ObserveInt64(healthy, h, sets[i])
			o.ObserveFloat64(lag, time.Duration(n.lagNanos.Load()).Seconds(), sets[i])
			o.ObserveInt64(lagBytes, n.lagBytes.Load(), sets[i])
		}
		return nil
	}, instruments...)
	return err
}

// ReadStats counts the reads the DB has routed since it was opened: the
// same counts the goaspire.cqrs.reads metric reports.
type ReadStats struct {
	// Replica counts reads served by a replica.
	Replica int64 `json:"replica"`
	// Fallback counts reads sent to the primary because replicas are
	// configured but none was in rotation.
	Fallback int64 `json:"fallback"`
	// ReadYourWrites counts reads sent to the primary because no replica
	// had replayed the session's latest write yet.
	ReadYourWrites int64 `json:"readYourWrites"`
	// NoReplicas counts reads sent to the primary because the DB has no
	// replicas.
	NoReplicas int64 `json:"noReplicas"`
	// Refused counts reads that a replica refused as writes (SQLSTATE
	// 25006, read_only_sql_transaction, or 55000, recovery in progress: a
	// SELECT of a function that writes) and that then ran on the primary.
	// Such a read also counts in Replica, for its first routing.
	Refused int64 `json:"refused"`
	// MinLSN counts reads sent to the primary because no replica had
	// replayed the position their context required (WithMinLSN, or a
	// cache load that followed an invalidation carrying a write's
	// position) beyond its read-your-writes session's.
	MinLSN int64 `json:"minLSN"`
	// MinLSNReplica counts the reads with such a position that a replica
	// which had replayed it served; they are also counted in Replica.
	MinLSNReplica int64 `json:"minLSNReplica"`
}

// Primary returns the reads the primary served, for whatever reason.
func (s ReadStats) Primary() int64 {
	return s.Fallback + s.ReadYourWrites + s.NoReplicas + s.Refused + s.MinLSN
}

// ReadStats returns how the DB has routed its reads so far: Replica and
// ReplicaFor count one per call; a read through Query, QueryRow or the
// Reader counts one per routing decision. Statements sent to the primary
// as writes are not reads and are not counted.
func (db *DB) ReadStats() ReadStats {
	return ReadStats{
		Replica:        db.reads[readReplica].Load() + db.reads[readReplicaMinLSN].Load(),
		Fallback:       db.reads[readFallback].Load(),
		ReadYourWrites: db.reads[readReadYourWrites].Load(),
		NoReplicas:     db.reads[readNoReplicas].Load(),
		Refused:        db.reads[readRefused].Load(),
		MinLSN:         db.reads[readMinLSN].Load(),
		MinLSNReplica:  db.reads[readReplicaMinLSN].Load(),
	}
}
