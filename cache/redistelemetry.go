package cache

import (
	"context"
	"errors"
	"net"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/extra/redisotel/v9"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/goaspire/goaspire/internal/memo"
)

// instrumentTracing adds command spans to rdb through redisotel, with
// db.system and db.system.name, minus the noise: no span for a dial (a command that had to dial carries the
// dial's failure in its own span; a background reconnect is no one's
// operation), and none for the connection handshake (HELLO, AUTH, CLIENT
// SETINFO, CLIENT MAINT_NOTIFICATIONS ...), whose error replies from an
// older server are expected and ignored by go-redis, nor for the health
// check's PING.
func instrumentTracing(rdb redis.UniversalClient, tp trace.TracerProvider) error {
	return redisotel.InstrumentTracing(rdb,
		redisotel.WithTracerProvider(noScriptErrors{tp}),
		// redisotel sets the older db.system only; the conventions now
		// name the system db.system.name. Spans carry both.
		redisotel.WithAttributes(keyDBSystem.String("redis")),
		// Command arguments may hold secrets or personal data (AUTH,
		// ACL SETUSER, cached values): record command names only, as
		// Aspire's StackExchange.Redis instrumentation does by default.
		redisotel.WithDBStatement(false),
		redisotel.WithCallerEnabled(false),
		redisotel.WithDialFilter(true),
		redisotel.WithCommandFilter(func(cmd redis.Cmder) bool {
			return redisotel.DefaultCommandFilter(cmd) || isHandshake(cmd) || isHealthProbe(cmd)
		}),
		redisotel.WithCommandsFilter(skipPipeline),
	)
}

// noScriptErrors is a TracerProvider whose spans do not take a NOSCRIPT
// reply for an error. EVALSHA answers NOSCRIPT when the server does not
// hold the script yet (after a restart, or on a new node), and the caller
// then sends it whole (go-redis's Script.Run does; so does the cache for
// its pipelines): an expected step of running a script, which the Aspire
// dashboard would otherwise show as a failed operation.
type noScriptErrors struct{ trace.TracerProvider }

func (p noScriptErrors) Tracer(name string, opts ...trace.TracerOption) trace.Tracer {
	return noScriptTracer{p.TracerProvider.Tracer(name, opts...)}
}

type noScriptTracer struct{ trace.Tracer }

func (t noScriptTracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	ctx, span := t.Tracer.Start(ctx, name, opts...)
	if !span.IsRecording() {
		return ctx, span
	}
	return ctx, noScriptSpan{span}
}

type noScriptSpan struct{ trace.Span }

func (s noScriptSpan) RecordError(err error, opts ...trace.EventOption) {
	if !redis.HasErrorPrefix(err, "NOSCRIPT") {
		s.Span.RecordError(err, opts...)
	}
}

func (s noScriptSpan) SetStatus(code codes.Code, description string) {
	if code == codes.Error && strings.HasPrefix(description, "NOSCRIPT") {
		return
	}
	s.Span.SetStatus(code, description)
}

// skipPipeline reports whether a pipeline goes untraced: it holds AUTH
// (as redisotel's default) or is made of handshake commands only (the
// SELECT / CLIENT SETNAME / CLIENT SETINFO pipelines of a new connection).
func skipPipeline(cmds []redis.Cmder) bool {
	handshake := len(cmds) > 0
	for _, cmd := range cmds {
		if redisotel.DefaultCommandFilter(cmd) {
			return true
		}
		handshake = handshake && (isHandshake(cmd) || isSetup(cmd))
	}
	return handshake
}

// isHandshake reports whether cmd is one go-redis sends while setting up a
// connection and never on a caller's behalf.
func isHandshake(cmd redis.Cmder) bool {
	switch cmd.Name() {
	case "hello", "auth":
		return true
	case "client":
		args := cmd.Args()
		if len(args) < 2 {
			return false
		}
		sub, _ := args[1].(string)
		switch strings.ToLower(sub) {
		case "setinfo", "setname", "maint_notifications", "tracking":
			return true
		}
	}
	return false
}

// healthPing is the message of HealthCheck's PING, which marks the probe's
// command as one the instrumentation skips.
const healthPing = "goaspire:health"

// isHealthProbe reports whether cmd is HealthCheck's PING.
func isHealthProbe(cmd redis.Cmder) bool {
	if cmd.Name() != "ping" {
		return false
	}
	args := cmd.Args()
	return len(args) == 2 && args[1] == healthPing
}

// isSetup reports whether cmd may appear in a new connection's setup
// pipeline besides the handshake commands.
func isSetup(cmd redis.Cmder) bool {
	switch cmd.Name() {
	case "select", "readonly":
		return true
	}
	return false
}

// Attribute keys of the database client conventions.
const (
	keyPoolName  = attribute.Key("db.client.connection.pool.name")
	keyConnState = attribute.Key("db.client.connection.state")
	keyDBSystem  = attribute.Key("db.system.name")
	keyOperation = attribute.Key("db.operation.name")
	keyErrorType = attribute.Key("error.type")
	keyAddress   = attribute.Key("server.address")
	keyPort      = attribute.Key("server.port")
)

// durationBuckets are the semantic conventions' advised boundaries for
// database client durations, in seconds.
var durationBuckets = []float64{0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10}

// instrumentMetrics reports rdb's metrics under the current database
// client conventions, in seconds, labelled with the connection name as
// db.client.connection.pool.name:
//
//   - db.client.operation.duration: each command or pipeline, with
//     db.operation.name and error.type;
//   - db.client.connection.create_time: each dial, with error.type;
//   - db.client.connection.count (state idle/used),
//     db.client.connection.max, db.client.connection.idle.max,
//     db.client.connection.idle.min and db.client.connection.timeouts from
//     the pool's statistics.
//
// redisotel's metrics use the older db.client.connections.* names in
// milliseconds, which is why these are ours. The returned registration
// stops the pool statistics.
func instrumentMetrics(rdb redis.UniversalClient, uo *redis.UniversalOptions, name string, mp metric.MeterProvider) (metric.Registration, error) {
	m := mp.Meter(instrumentationName)
	opDur, err1 := m.Float64Histogram("db.client.operation.duration",
		metric.WithDescription("Duration of database client operations."), metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	createTime, err2 := m.Float64Histogram("db.client.connection.create_time",
		metric.WithDescription("The time it took to create a new connection."), metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	count, err3 := m.Int64ObservableUpDownCounter("db.client.connection.count",
		metric.WithDescription("Connections in the pool, by state (idle or used)."), metric.WithUnit("{connection}"))
	maxConns, err4 := m.Int64ObservableUpDownCounter("db.client.connection.max",
		metric.WithDescription("The most connections the pool may open."), metric.WithUnit("{connection}"))
	idleMax, err5 := m.Int64ObservableUpDownCounter("db.client.connection.idle.max",
		metric.WithDescription("The most idle connections the pool keeps."), metric.WithUnit("{connection}"))
	idleMin, err6 := m.Int64ObservableUpDownCounter("db.client.connection.idle.min",
		metric.WithDescription("The fewest idle connections the pool keeps."), metric.WithUnit("{connection}"))
	timeouts, err7 := m.Int64ObservableCounter("db.client.connection.timeouts",
		metric.WithDescription("Times a connection could not be obtained from the pool in time."), metric.WithUnit("{timeout}"))
	if err := errors.Join(err1, err2, err3, err4, err5, err6, err7); err != nil {
		return nil, err
	}

	base := []attribute.KeyValue{keyDBSystem.String("redis"), keyPoolName.String(name)}
	if len(uo.Addrs) == 1 {
		if host, port, err := net.SplitHostPort(uo.Addrs[0]); err == nil {
			base = append(base, keyAddress.String(host))
			if p, err := strconv.Atoi(port); err == nil {
				base = append(base, keyPort.Int(p))
			}
		}
	}
	rdb.AddHook(newMetricsHook(opDur, createTime, base))

	pool := attribute.NewSet(keyPoolName.String(name))
	idle := metric.WithAttributeSet(attribute.NewSet(keyPoolName.String(name), keyConnState.String("idle")))
	used := metric.WithAttributeSet(attribute.NewSet(keyPoolName.String(name), keyConnState.String("used")))
	poolSize := uo.PoolSize
	if poolSize <= 0 {
		poolSize = 10 * runtime.GOMAXPROCS(0) // go-redis's default
	}
	return m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		st := rdb.PoolStats()
		all := metric.WithAttributeSet(pool)
		o.ObserveInt64(count, int64(st.IdleConns), idle)
		o.ObserveInt64(count, int64(st.TotalConns)-int64(st.IdleConns), used)
		o.ObserveInt64(maxConns, int64(poolSize), all)
		o.ObserveInt64(idleMax, int64(uo.MaxIdleConns), all)
		o.ObserveInt64(idleMin, int64(uo.MinIdleConns), all)
		o.ObserveInt64(timeouts, int64(st.Timeouts), all)
		return nil
	}, count, maxConns, idleMax, idleMin, timeouts)
}

// metricsHook measures commands, pipelines and dials.
type metricsHook struct {
	opDur, createTime metric.Float64Histogram
	base              []attribute.KeyValue
	// sets holds the attribute set of each operation and error type, so
	// that a measurement allocates none.
	sets memo.Bounded[measureKey, metric.MeasurementOption]
}

// maxMeasureSets bounds metricsHook.sets: commands are chosen by the
// program, not its clients, but Do takes any name.
const maxMeasureSets = 512

// measureKey names the attributes of a measurement: a dial, or a command
// or a pipeline of commands by go-redis's (lower-case) name, "" for a
// pipeline of different commands; and the error type.
type measureKey struct {
	kind    measureKind
	name    string
	errType string
}

type measureKind uint8

const (
	measureDial measureKind = iota
	measureCommand
	measurePipeline
)

func newMetricsHook(opDur, createTime metric.Float64Histogram, base []attribute.KeyValue) *metricsHook {
	return &metricsHook{opDur: opDur, createTime: createTime, base: base, sets: memo.Bounded[measureKey, metric.MeasurementOption]{Max: maxMeasureSets}}
}

func (h *metricsHook) record(ctx context.Context, hist metric.Float64Histogram, start time.Time, k measureKey, err error) {
	k.errType = errorType(err)
	hist.Record(ctx, time.Since(start).Seconds(), h.sets.Get(k, h.attributes))
}

// attributes builds the attribute set of a measurement.
func (h *metricsHook) attributes(k measureKey) metric.MeasurementOption {
	attrs := make([]attribute.KeyValue, 0, len(h.base)+2)
	attrs = append(attrs, h.base...)
	switch {
	case k.kind == measureCommand:
		attrs = append(attrs, keyOperation.String(strings.ToUpper(k.name)))
	case k.kind == measurePipeline && k.name == "":
		attrs = append(attrs, keyOperation.String("PIPELINE"))
	case k.kind == measurePipeline:
		attrs = append(attrs, keyOperation.String("PIPELINE "+strings.ToUpper(k.name)))
	}
	if k.errType != "" {
		attrs = append(attrs, keyErrorType.String(k.errType))
	}
	return metric.WithAttributeSet(attribute.NewSet(attrs...))
}

func (h *metricsHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		start := time.Now()
		conn, err := next(ctx, network, addr)
		h.record(ctx, h.createTime, start, measureKey{kind: measureDial}, err)
		return conn, err
	}
}

func (h *metricsHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if isHandshake(cmd) || isHealthProbe(cmd) {
			return next(ctx, cmd)
		}
		start := time.Now()
		err := next(ctx, cmd)
		h.record(ctx, h.opDur, start, measureKey{kind: measureCommand, name: cmd.Name()}, err)
		return err
	}
}

func (h *metricsHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if skipPipeline(cmds) {
			return next(ctx, cmds)
		}
		start := time.Now()
		err := next(ctx, cmds)
		h.record(ctx, h.opDur, start, measureKey{kind: measurePipeline, name: pipelineOp(cmds)}, err)
		return err
	}
}

// pipelineOp is the command every command of a batch is, or "" when they
// differ: the semantic conventions' operation name of the batch is
// "PIPELINE {op}", or "PIPELINE".
func pipelineOp(cmds []redis.Cmder) string {
	if len(cmds) == 0 {
		return ""
	}
	op := cmds[0].Name()
	for _, c := range cmds[1:] {
		if c.Name() != op {
			return ""
		}
	}
	return op
}

// errorType is the low-cardinality error.type of a command's error: ""
// for success and for redis.Nil (a miss is not an error), the reply's
// error prefix ("WRONGTYPE", "NOAUTH") for a Redis error reply, "timeout"
// for a deadline, else "_OTHER".
func errorType(err error) string {
	switch {
	case err == nil, errors.Is(err, redis.Nil):
		return ""
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	var nerr net.Error
	if errors.As(err, &nerr) && nerr.Timeout() {
		return "timeout"
	}
	var rerr redis.Error
	if errors.As(err, &rerr) {
		msg := rerr.Error()
		if i := strings.IndexByte(msg, ' '); i > 0 {
			msg = msg[:i]
		}
		if msg != "" && msg == strings.ToUpper(msg) && len(msg) <= 32 {
			return msg
		}
	}
	return "_OTHER"
}
