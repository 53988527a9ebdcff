package cqrs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/exaring/otelpgx"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/internal/deadline"
	"github.com/goaspire/goaspire/internal/fallback"
)

// ErrNotReady is wrapped by the error of an open that waited for the
// database (ConnectRetry:WaitOnOpen) and gave up.
var ErrNotReady = errors.New("database not reachable")

// instrumentation names.
const (
	scopeName = "github.com/goaspire/goaspire/cqrs"
	// poolNameKey is the OpenTelemetry attribute naming a pool.
	poolNameKey = attribute.Key("db.client.connection.pool.name")
)

// Pool is a pgx connection pool opened from configuration, with its
// tracing, pool metrics, first-connect retry and health check (see
// NewPool). It embeds
// *pgxpool.Pool, so it runs queries directly; pass p.Pool where a
// *pgxpool.Pool is wanted. Close it with Close (not p.Pool.Close, which
// would leave its background work running).
type Pool struct {
	*pgxpool.Pool

	name     string
	source   string
	settings PoolConfig // with defaults applied
	log      *slog.Logger

	commandTimeout time.Duration   // of a DB's statements without a deadline; 0: none
	cmdSlots       *deadline.Slots // commandTimeout's deadline slots

	ready     chan struct{} // closed at the first successful ping
	readyOnce sync.Once

	cancel    context.CancelFunc
	wg        sync.WaitGroup
	reg       metric.Registration
	closeOnce sync.Once
}

// NewPool opens the pool c describes, with tracing, pool metrics, a
// first-connect retry and a health check. Make c with [LoadPoolConfig], or
// by hand.
//
// The database need not be up: the pool connects lazily, and a background
// loop retries the first connection with exponential backoff and logs
// when it succeeds. Set c.WaitOnOpen to make NewPool wait for it instead.
func NewPool(ctx context.Context, c *PoolConfig) (*Pool, error) {
	if c == nil {
		return nil, errors.New("cqrs: NewPool: nil PoolConfig")
	}
	p, err := newPool(ctx, *c, nil, nil, nil, true)
	if err != nil {
		return nil, err
	}
	if err := p.waitOnOpen(ctx, c.WaitOnOpen); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// newPool builds one pool; the providers and logger given stand in for
// c's nil ones, and the globals for those still nil. retry starts the
// first-connect loop.
func newPool(ctx context.Context, c PoolConfig, tp trace.TracerProvider, mp metric.MeterProvider, logger *slog.Logger, retry bool) (*Pool, error) {
	name := c.Name
	if strings.TrimSpace(name) == "" {
		name = "postgres"
	}
	if c.Config == nil {
		return nil, &ConnectionError{Name: name, Source: c.Source, Err: errors.New("PoolConfig.Config is nil: make it with ParseConnectionString or pgxpool.ParseConfig")}
	}
	auth, err := ParseAuthentication(c.Authentication)
	if err != nil {
		return nil, &ConnectionError{Name: name, Source: c.Source, Err: fmt.Errorf("PoolConfig.Authentication: %w", err)}
	}
	switch {
	case auth == AuthenticationPassword:
		c.Credentials = nil
	case auth != "" && c.Credentials == nil:
		pkg := "aspireaws.RDSIAMAuth"
		if auth == AuthenticationEntraID {
			pkg = "aspireazure.PostgresAuth"
		}
		return nil, &ConnectionError{Name: name, Source: c.Source, Err: fmt.Errorf(
			"the Authentication setting is %s but no credentials hook is installed: pass %s(app) to aspirepostgres.DB or Pool, or set PoolConfig.Credentials", auth, pkg)}
	}
	pc := c.Config.Copy()
	c.Config = pc
	if c.Credentials != nil {
		pc.BeforeConnect = withCredentials(name, c.Credentials, c.userDefault, pc.BeforeConnect)
	}
	if c.TracerProvider != nil {
		tp = c.TracerProvider
	}
	if c.MeterProvider != nil {
		mp = c.MeterProvider
	}
	if c.Logger != nil {
		logger = c.Logger
	}
	tp = fallback.TracerProvider(tp)
	mp = fallback.MeterProvider(mp)
	logger = fallback.Logger(logger)
	r := &c.ConnectRetry
	if r.InitialInterval <= 0 {
		r.InitialInterval = DefaultRetryInitial
	}
	if r.MaxInterval <= 0 {
		r.MaxInterval = DefaultRetryMax
	}
	if r.MaxInterval < r.InitialInterval {
		r.MaxInterval = r.InitialInterval
	}
	source := c.Source

	attrs := []attribute.KeyValue{poolNameKey.String(name)}
	if !c.DisableTracing || !c.DisableMetrics {
		tp, mp := tp, mp
		if c.DisableTracing {
			tp = tracenoop.NewTracerProvider()
		}
		if c.DisableMetrics {
			mp = metricnoop.NewMeterProvider()
		}
		// otelpgx never records query arguments unless asked to
		// (WithIncludeQueryParameters), and we do not ask.
		spanAttrs := append([]attribute.KeyValue{dbSystemKey.String("postgresql")}, attrs...)
		pc.ConnConfig.Tracer = newPGXTracer(tp, otelpgx.NewTracer(
			otelpgx.WithTracerProvider(tp),
			otelpgx.WithMeterProvider(mp),
			otelpgx.WithTracerAttributes(spanAttrs...),
			otelpgx.WithMeterAttributes(attrs...),
			otelpgx.WithDisableAcquireTracer(),
		), spanAttrs)
	}

	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, &ConnectionError{Name: name, Source: source, Err: err}
	}
	cmd := commandTimeout(c.CommandTimeout, pc)
	p := &Pool{
		Pool:           pool,
		name:           name,
		source:         source,
		settings:       c,
		log:            logger.With("db.client.connection.pool.name", name),
		ready:          make(chan struct{}),
		commandTimeout: cmd,
		cmdSlots:       newSlots(cmd),
	}
	if !c.DisableMetrics {
		reg, err := registerPoolMetrics(mp.Meter(scopeName), pool, attribute.NewSet(attrs...))
		if err != nil {
			pool.Close()
			return nil, &ConnectionError{Name: name, Source: source, Err: err}
		}
		p.reg = reg
	}
	loopCtx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	if retry {
		p.wg.Add(1)
		go p.connectLoop(loopCtx)
	}
	return p, nil
}

// commandTimeout resolves PoolConfig.CommandTimeout (see there) for pc.
func commandTimeout(d time.Duration, pc *pgxpool.Config) time.Duration {
	switch {
	case d < 0:
		return 0
	case d > 0:
		return d
	}
	if v, ok := pc.ConnConfig.RuntimeParams["statement_timeout"]; ok {
		if ms, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil && ms > 0 {
			return time.Duration(ms) * time.Millisecond
		}
	}
	return DefaultCommandTimeout
}

// Name returns the connection name the pool was opened for.
func (p *Pool) Name() string { return p.name }

// Ready returns a channel that is closed once the pool has connected to the
// database for the first time.
func (p *Pool) Ready() <-chan struct{} { return p.ready }

func (p *Pool) markReady() { p.readyOnce.Do(func() { close(p.ready) }) }

// waitOnOpen waits for the first connection when configured to.
func (p *Pool) waitOnOpen(ctx context.Context, wait time.Duration) error {
	if wait <= 0 {
		return nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-p.ready:
		return nil
	case <-ctx.Done():
		return &ConnectionError{Name: p.name, Source: p.source, Err: ctx.Err()}
	case <-t.C:
		return &ConnectionError{Name: p.name, Source: p.source, Err: fmt.Errorf("%w within %v (ConnectRetry:WaitOnOpen)", ErrNotReady, wait)}
	}
}

// connectLoop pings until the first success, with exponential backoff (each
// wait drawn from [interval/2, 3·interval/2)), giving up after ConnectRetry:MaxElapsed when that is set.
// A server that refuses the connection (see refusalCode) is logged once at
// Error and retried at ConnectRetry:MaxInterval: a wrong password is not
// an outage, and hammering the server would not fix it.

func (p *Pool) connectLoop(ctx context.Context) {
	defer p.wg.Done()
	start := time.Now()
	interval := p.settings.ConnectRetry.InitialInterval
	timeout := p.Config().ConnConfig.ConnectTimeout
	if timeout <= 0 {
		timeout = defaultConnectTimeout
	}
	refused := false // a refusal was logged
	for attempt := 1; ; attempt++ {
		pctx, cancel := context.WithTimeout(ctx, timeout)
		err := p.Ping(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			if attempt > 1 {
				p.log.Info("cqrs: connected to postgres", "attempts", attempt, "after", time.Since(start).Round(time.Millisecond))
			}
			p.markReady()
			return
		}
		if code := refusalCode(err); code != "" {
			// The server answered and refused: retrying soon cannot help
			// until someone fixes the configuration or the server's roles.
			if !refused {
				refused = true
				p.log.Error("cqrs: postgres refused the connection: check its user, password and database; retrying every "+p.settings.ConnectRetry.MaxInterval.String(),
					"source", p.source, "sqlstate", code, "error", err)
			}
			interval = p.settings.ConnectRetry.MaxInterval
		} else if attempt == 1 {
			var ce *CredentialsError
			if errors.As(err, &ce) {
				p.log.Warn("cqrs: no postgres credentials yet; retrying in the background", "source", p.source, "error", err)
			} else {
				p.log.Warn("cqrs: postgres not reachable yet; retrying in the background", "error", err)
			}
		}
		if max := p.settings.ConnectRetry.MaxElapsed; max > 0 && time.Since(start) >= max {
			p.log.Error("cqrs: postgres still not reachable; giving up the startup retry (queries keep trying)", "attempts", attempt, "error", err)
			return
		}
		sleep := time.Duration(rand.Int64N(int64(interval))) + interval/2
		t := time.NewTimer(sleep)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		interval *= 2
		if interval > p.settings.ConnectRetry.MaxInterval {
			interval = p.settings.ConnectRetry.MaxInterval
		}
	}
}

// refusalCode returns the SQLSTATE of err when the server refused the
// connection for a reason of configuration that waiting will not fix: a
// wrong password or an unknown user (28P01, 28000), an unknown database
// (3D000), no CONNECT privilege (42501). Else it returns "".
func refusalCode(err error) string {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return ""
	}
	switch pgErr.Code {
	case "28P01", "28000", "3D000", "42501":
		return pgErr.Code
	}
	return ""
}

// sourceOrName names where the connection came from, for a hint.
func (p *Pool) sourceOrName() string {
	s := "the connection string of " + strconv.Quote(p.name)
	if p.source != "" {
		s = p.source
	}
	if p.settings.Credentials != nil {
		s += " and the identity its credentials are issued for"
	}
	return s
}

// HealthCheck returns the pool's health check, "postgres:{name}": it pings
// the database through the pool and reports its HealthCheckFailureStatus
// (Unhealthy unless set) when that fails.
func (p *Pool) HealthCheck() health.Check {
	return health.Check{
		Name:          "postgres:" + p.name,
		Tags:          []string{health.TagReady},
		FailureStatus: failureStatus(p.settings.HealthCheckFailureStatus, health.Unhealthy),
		Check:         p.healthCheck,
	}
}

// failureStatus returns s, or def when s is empty.
func failureStatus(s, def health.Status) health.Status {
	if s == "" {
		return def
	}
	return s
}

// HealthChecks returns the pool's health check, or none when
// DisableHealthChecks is set.
func (p *Pool) HealthChecks() []health.Check {
	if p.settings.DisableHealthChecks {
		return nil
	}
	return []health.Check{p.HealthCheck()}
}

func (p *Pool) healthCheck(ctx context.Context) error {
	if err := p.Ping(ctx); err != nil {
		var pgErr *pgconn.PgError
		if refusalCode(err) != "" && errors.As(err, &pgErr) {
			// The server's reason first, not buried in pgx's dial text.
			return fmt.Errorf("postgres %q: refused by the server: %s (SQLSTATE %s); check %s: %w", p.name, pgErr.Message, pgErr.Code, p.sourceOrName(), err)
		}
		if errors.As(err, new(*CredentialsError)) {
			return err // names the connection already
		}
		return fmt.Errorf("postgres %q: %w", p.name, err)
	}
	p.markReady()
	return nil
}

// Close stops the pool's background work, unregisters its metrics and
// closes its connections. It is safe to call more than once.
func (p *Pool) Close() {
	p.closeOnce.Do(func() {
		p.cancel()
		p.wg.Wait()
		if p.reg != nil {
			_ = p.reg.Unregister()
		}
		p.Pool.Close()
	})
}

// registerPoolMetrics reports the pool's statistics. otelpgx.RecordStats
// does the same but cannot be unregistered, so a closed pool would stay
// registered (and referenced) for the life of the process; these are
// unregistered by Close.
func registerPoolMetrics(m metric.Meter, pool *pgxpool.Pool, set attribute.Set) (metric.Registration, error) {
	count, err1 := m.Int64ObservableUpDownCounter("db.client.connection.count",
		metric.WithDescription("Connections in the pool, by state (idle or used)."), metric.WithUnit("{connection}"))
	max, err2 := m.Int64ObservableUpDownCounter("db.client.connection.max",
		metric.WithDescription("The most connections the pool may open."), metric.WithUnit("{connection}"))
	idleMin, err3 := m.Int64ObservableUpDownCounter("db.client.connection.idle.min",
		metric.WithDescription("The fewest idle connections the pool keeps."), metric.WithUnit("{connection}"))
	acquires, err4 := m.Int64ObservableCounter("pgxpool.acquires",
		metric.WithDescription("Successful acquires from the pool."))
	acquireDur, err5 := m.Float64ObservableCounter("pgxpool.acquire_duration",
		metric.WithDescription("Total time spent in successful acquires."), metric.WithUnit("s"))
	empty, err6 := m.Int64ObservableCounter("pgxpool.empty_acquires",
		metric.WithDescription("Acquires that had to wait for a connection to be released or made."))
	canceled, err7 := m.Int64ObservableCounter("pgxpool.canceled_acquires",
		metric.WithDescription("Acquires canceled by their context."))
	created, err8 := m.Int64ObservableCounter("pgxpool.new_connections",
		metric.WithDescription("Connections opened."))
	if err := errors.Join(err1, err2, err3, err4, err5, err6, err7, err8); err != nil {
		return nil, err
	}
	base := metric.WithAttributeSet(set)
	minIdle := int64(pool.Config().MinIdleConns)
	idleSet := metric.WithAttributeSet(attribute.NewSet(append(set.ToSlice(), attribute.String("db.client.connection.state", "idle"))...))
	usedSet := metric.WithAttributeSet(attribute.NewSet(append(set.ToSlice(), attribute.String("db.client.connection.state", "used"))...))
	return m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		st := pool.Stat()
		o.ObserveInt64(count, int64(st.IdleConns()), idleSet)
		o.ObserveInt64(count, int64(st.AcquiredConns()+st.ConstructingConns()), usedSet)
		o.ObserveInt64(max, int64(st.MaxConns()), base)
		o.ObserveInt64(idleMin, minIdle, base)
		o.ObserveInt64(acquires, st.AcquireCount(), base)
		o.ObserveFloat64(acquireDur, st.AcquireDuration().Seconds(), base)
		o.ObserveInt64(empty, st.EmptyAcquireCount(), base)
		o.ObserveInt64(canceled, st.CanceledAcquireCount(), base)
		o.ObserveInt64(created, st.NewConnsCount(), base)
		return nil
	}, count, max, idleMin, acquires, acquireDur, empty, canceled, created)
}
