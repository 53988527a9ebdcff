package cqrs

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/internal/syncbuf"
	"github.com/goaspire/goaspire/testserver"
)

// syncBuffer is a goroutine-safe log sink.
type syncBuffer = syncbuf.Buffer

func TestOpenPool(t *testing.T) {
	t.Parallel()
	srv := testserver.NewPostgres(t)
	ctx := t.Context()
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	for _, form := range []string{"keyword", "url"} {
		t.Run(form, func(t *testing.T) {
			cs := srv.ConnectionString()
			if form == "url" {
				cs = srv.URL()
			}
			cfg := discovery.FromMap(map[string]string{"ConnectionStrings__pg": cs, "Aspire__Npgsql__pg__MaxConnections": "3"})
			p, err := openPool(ctx, cfg, "pg", func(c *PoolConfig) {
				c.TracerProvider, c.MeterProvider, c.WaitOnOpen = tp, mp, 10*time.Second
			})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			if p.Name() != "pg" || p.Config().MaxConns != 3 {
				t.Errorf("name %q max %d", p.Name(), p.Config().MaxConns)
			}
			select {
			case <-p.Ready():
			default:
				t.Error("WaitOnOpen returned before the pool was ready")
			}
			// otelpgx traces queries made under a recording span, as in a
			// request handler.
			sctx, parent := tp.Tracer("test").Start(ctx, "request")
			var got string
			err = p.QueryRow(sctx, "select $1::text", "arg-secret-value").Scan(&got)
			parent.End()
			if err != nil || got != "arg-secret-value" {
				t.Fatalf("query: %q %v", got, err)
			}
			if err := p.HealthCheck().Check(ctx); err != nil {
				t.Error(err)
			}
			if names := metricNames(t, reader); !names["db.client.connection.count"] || !names["pgxpool.acquires"] {
				t.Errorf("pool metrics missing: %v", names)
			}
			if n := sumCounter(t, reader, "pgxpool.acquires", poolNameKey.String("pg")); n < 1 {
				t.Errorf("pgxpool.acquires = %d", n)
			}
		})
	}

	// Queries are spans; arguments are not recorded.
	var found bool
	for _, s := range spans.Ended() {
		for _, kv := range s.Attributes() {
			if strings.Contains(kv.Value.String(), "arg-secret-value") {
				t.Errorf("span %q records an argument: %s", s.Name(), kv.Key)
			}
			if kv.Key == "db.query.text" && strings.Contains(kv.Value.AsString(), "select $1::text") {
				found = true
			}
		}
	}
	if !found {
		t.Errorf("no query span with its statement among %d spans", len(spans.Ended()))
	}
	// Closed pools unregister their metrics.
	if names := metricNames(t, reader); names["db.client.connection.count"] {
		t.Error("pool metrics still reported after Close")
	}

	t.Run("telemetry and health checks disabled", func(t *testing.T) {
		spans := tracetest.NewSpanRecorder()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
		reader := sdkmetric.NewManualReader()
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
		cfg := discovery.FromMap(map[string]string{
			"ConnectionStrings__pg":                   srv.ConnectionString(),
			"Aspire__Npgsql__DisableTracing":          "true",
			"Aspire__Npgsql__DisableMetrics":          "true",
			"Aspire__Npgsql__pg__DisableHealthChecks": "true",
		})
		p, err := openPool(t.Context(), cfg, "pg", func(c *PoolConfig) { c.TracerProvider, c.MeterProvider = tp, mp })
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		sctx, parent := tp.Tracer("test").Start(t.Context(), "request")
		_, err = p.Exec(sctx, "select 1")
		parent.End()
		if err != nil {
			t.Fatal(err)
		}
		if len(spans.Ended()) != 1 || len(metricNames(t, reader)) != 0 || len(p.HealthChecks()) != 0 {
			t.Errorf("spans %d (want only the parent) metrics %v checks %d", len(spans.Ended()), metricNames(t, reader), len(p.HealthChecks()))
		}
	})
}

// TestOpenPoolRetry opens a pool (NewPool) while the database is down: the open
// succeeds, the background loop retries, and the pool becomes ready when
// the database starts.
func TestOpenPoolRetry(t *testing.T) {
	t.Parallel()
	srv := testserver.NewPostgres(t)
	ctx := t.Context()
	if err := srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	cfg := discovery.FromMap(map[string]string{
		"ConnectionStrings__pg":                         srv.ConnectionString(),
		"Aspire__Npgsql__ConnectRetry__InitialInterval": "50ms",
		"Aspire__Npgsql__ConnectRetry__MaxInterval":     "200ms",
	})

	_, err := openPool(ctx, cfg, "pg", func(c *PoolConfig) { c.Logger, c.WaitOnOpen = logger, 300*time.Millisecond })
	if !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), `"pg"`) {
		t.Errorf("WaitOnOpen with the database down: %v", err)
	}

	p, err := openPool(ctx, cfg, "pg", func(c *PoolConfig) { c.Logger = logger })
	if err != nil {
		t.Fatalf("open with the database down: %v", err)
	}
	defer p.Close()
	check := p.HealthCheck()
	if err := check.Check(ctx); err == nil {
		t.Error("health check passes with the database down")
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Ready():
	case <-time.After(15 * time.Second):
		t.Fatal("the pool did not become ready after the database started")
	}
	if err := check.Check(ctx); err != nil {
		t.Errorf("health check after start: %v", err)
	}
	out := logs.String()
	if !strings.Contains(out, "retrying in the background") || !strings.Contains(out, "connected to postgres") {
		t.Errorf("logs:\n%s", out)
	}
	if strings.Contains(out, srv.Password()) {
		t.Error("a log holds the password")
	}

	// Killing the server makes the check fail with Unhealthy.
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := check.Check(ctx); err == nil || check.FailureStatus != health.Unhealthy {
		t.Errorf("killed server: %v (%s)", err, check.FailureStatus)
	} else if strings.Contains(err.Error(), srv.Password()) {
		t.Error("the check's error holds the password")
	}
}

// TestPoolConfigAdjusted checks that what code changes in a loaded
// PoolConfig's pgx configuration reaches the pool, and that NewPool leaves
// the caller's PoolConfig as it was.
func TestPoolConfigAdjusted(t *testing.T) {
	cfg := discovery.FromMap(map[string]string{"ConnectionStrings__pg": "Host=127.0.0.1;Port=1"})
	c, err := LoadPoolConfig(cfg, "pg")
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "pg" || c.Source != "ConnectionStrings:pg" || c.Config.MaxConns != 100 {
		t.Errorf("loaded %q %q %d", c.Name, c.Source, c.Config.MaxConns)
	}
	c.Config.MaxConns = 7
	c.Logger = quietLogger
	p, err := NewPool(t.Context(), c)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.Config().MaxConns != 7 {
		t.Errorf("pool MaxConns %d, want 7", p.Config().MaxConns)
	}
	if c.Config.ConnConfig.Tracer != nil {
		t.Error("NewPool set a tracer on the caller's pgx configuration")
	}
}
