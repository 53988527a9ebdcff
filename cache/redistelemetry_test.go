package cache

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/goaspire/goaspire/testserver"
	"github.com/redis/go-redis/v9"
)

// TestRedisSpansAcrossOutage runs commands on a real Redis, kills it,
// lets the client redial in the background (MinIdleConns makes it) and
// restarts it. The only spans are the commands' own, under the caller's
// span, with db.system and db.system.name: no "redis.dial" trace, no span
// for the handshake of a new connection (this Redis rejects CLIENT
// SETINFO and CLIENT MAINT_NOTIFICATIONS, which go-redis ignores), none
// for the health check's PING (a root trace per probe otherwise), and no
// root span with status Error.
func TestRedisSpansAcrossOutage(t *testing.T) {
	srv := testserver.NewRedis(t)
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	rdb, err := open(t, map[string]string{
		"ConnectionStrings__cache":                   srv.ConnectionString() + ",connectTimeout=500",
		"Aspire__StackExchange__Redis__MinIdleConns": "2",
	}, func(c *RedisConfig) { c.TracerProvider = tp })
	if err != nil {
		t.Fatal(err)
	}
	ctx, parent := tp.Tracer("test").Start(context.Background(), "request")
	call := func(what string, wantErr bool) {
		t.Helper()
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		err := rdb.Set(cctx, "k", what, 0).Err()
		if (err != nil) != wantErr {
			t.Fatalf("SET %s: err %v, want error %v", what, err, wantErr)
		}
	}
	check := HealthCheck("cache", rdb)
	call("before", false)
	if err := check.Check(context.Background()); err != nil {
		t.Fatalf("health check with Redis up: %v", err)
	}
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	call("during", true)
	if err := check.Check(context.Background()); err == nil {
		t.Fatal("health check passed with Redis down")
	}
	// The pool's background refill redials the dead server; give it a
	// few attempts to make (and, before the fix, trace) them.
	time.Sleep(500 * time.Millisecond)
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	eventuallyOK := false
	for range 50 {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		err := rdb.Set(cctx, "k", "after", 0).Err()
		cancel()
		if err == nil {
			eventuallyOK = true
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !eventuallyOK {
		t.Fatal("no SET succeeded after the restart")
	}
	parent.End()
	_ = tp.ForceFlush(context.Background())

	var setErrors int
	for _, s := range spans.Ended() {
		name := s.Name()
		if s.SpanContext().SpanID() == parent.SpanContext().SpanID() {
			continue
		}
		if !s.Parent().IsValid() {
			t.Errorf("root span %q (status %v): every span should belong to the caller's operation", name, s.Status().Code)
			continue
		}
		if v := s.Attributes(); !hasAttr(v, "db.system", "redis") || !hasAttr(v, "db.system.name", "redis") {
			t.Errorf("span %q lacks db.system or db.system.name = redis: %v", name, v)
		}
		switch name {
		case "set":
			if s.Status().Code == codes.Error {
				setErrors++
			}
		default:
			t.Errorf("span %q (status %v %q): want only the SET commands", name, s.Status().Code, s.Status().Description)
		}
	}
	if setErrors == 0 {
		t.Error("no SET span recorded the outage: the failing command must carry the error")
	}
}

// TestRedisMetrics checks the client's metrics names, units and pool
// name against a real Redis.
func TestRedisMetrics(t *testing.T) {
	srv := testserver.NewRedis(t)
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	rdb, err := open(t, map[string]string{"ConnectionStrings__cache": srv.ConnectionString()}, func(c *RedisConfig) { c.MeterProvider = mp })
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := rdb.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	// Twice each, so that a memoized attribute set is reused.
	for range 2 {
		if _, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.Get(ctx, "k")
			p.Get(ctx, "missing")
			return nil
		}); err != nil && err != redis.Nil {
			t.Fatal(err)
		}
		if _, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.Get(ctx, "k")
			p.Incr(ctx, "n")
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if err := rdb.LPush(ctx, "k", "x").Err(); err == nil {
			t.Fatal("LPUSH on a string succeeded")
		}
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]metricdata.Metrics{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			got[m.Name] = m
		}
	}
	tests := []struct {
		name, unit string
	}{
		{"db.client.operation.duration", "s"},
		{"db.client.connection.create_time", "s"},
		{"db.client.connection.count", "{connection}"},
		{"db.client.connection.max", "{connection}"},
		{"db.client.connection.idle.max", "{connection}"},
		{"db.client.connection.idle.min", "{connection}"},
		{"db.client.connection.timeouts", "{timeout}"},
	}
	for _, tt := range tests {
		m, ok := got[tt.name]
		if !ok {
			t.Errorf("metric %s missing", tt.name)
			continue
		}
		if m.Unit != tt.unit {
			t.Errorf("%s unit %q, want %q", tt.name, m.Unit, tt.unit)
		}
	}
	for name := range got {
		if len(name) > len("db.client.connections.") && name[:len("db.client.connections.")] == "db.client.connections." {
			t.Errorf("old-convention metric %s still reported", name)
		}
	}
	if h, ok := got["db.client.operation.duration"].Data.(metricdata.Histogram[float64]); ok {
		points := map[[2]string]metricdata.HistogramDataPoint[float64]{} // by operation, error type
		for _, dp := range h.DataPoints {
			if pool, _ := dp.Attributes.Value(keyPoolName); pool.AsString() != "cache" {
				t.Errorf("point of pool %q, want cache", pool.AsString())
			}
			op, _ := dp.Attributes.Value(keyOperation)
			et, _ := dp.Attributes.Value(keyErrorType)
			points[[2]string{op.AsString(), et.AsString()}] = dp
		}
		for _, want := range []struct {
			op, errType string
			count       uint64
		}{
			{"SET", "", 1},
			{"PIPELINE GET", "", 2}, // a miss is not an error
			{"PIPELINE", "", 2},
			{"LPUSH", "WRONGTYPE", 2},
		} {
			dp, ok := points[[2]string{want.op, want.errType}]
			switch {
			case !ok:
				t.Errorf("no db.client.operation.duration point for %s, error.type %q: %v", want.op, want.errType, points)
			case dp.Count != want.count:
				t.Errorf("%s: %d measurements, want %d", want.op, dp.Count, want.count)
			case dp.Sum <= 0 || dp.Sum > 10:
				t.Errorf("%s took %v s: not in seconds?", want.op, dp.Sum)
			}
		}
	} else {
		t.Errorf("db.client.operation.duration is %T", got["db.client.operation.duration"].Data)
	}
}

func hasAttr(attrs []attribute.KeyValue, key, value string) bool {
	for _, kv := range attrs {
		if string(kv.Key) == key && kv.Value.AsString() == value {
			return true
		}
	}
	return false
}

// TestScriptNotLoadedIsNotAnError: on a server that does not hold a
// script yet, EVALSHA answers NOSCRIPT and go-redis sends the script
// whole; the EVALSHA span records no error, for the caller's operation
// succeeded. Another error reply still does.
func TestScriptNotLoadedIsNotAnError(t *testing.T) {
	srv := testserver.NewRedis(t)
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	rdb, err := open(t, map[string]string{"ConnectionStrings__cache": srv.ConnectionString()}, func(c *RedisConfig) { c.TracerProvider = tp })
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	script := redis.NewScript(`return redis.call('SET', KEYS[1], ARGV[1])`)
	if err := script.Run(ctx, rdb, []string{"k"}, "v").Err(); err != nil {
		t.Fatal(err)
	}
	if err := redis.NewScript(`return redis.error_reply('BOOM no')`).Run(ctx, rdb, nil).Err(); err == nil {
		t.Fatal("the failing script did not fail")
	}
	_ = tp.ForceFlush(ctx)
	var evalsha, errorsSeen int
	for _, s := range spans.Ended() {
		if s.Name() == "evalsha" {
			evalsha++
		}
		if s.Status().Code == codes.Error {
			errorsSeen++
			if strings.HasPrefix(s.Status().Description, "NOSCRIPT") {
				t.Errorf("span %q has status Error for NOSCRIPT", s.Name())
			}
		}
	}
	if evalsha < 2 {
		t.Fatalf("%d evalsha spans, want one per script run: the test did not exercise NOSCRIPT", evalsha)
	}
	if errorsSeen == 0 {
		t.Error("no span recorded the script's real error reply")
	}
}
