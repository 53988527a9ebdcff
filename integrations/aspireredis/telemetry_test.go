package aspireredis_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/goaspire/goaspire/integrations/aspireredis"
	"github.com/goaspire/goaspire/internal/otlptest"
	"github.com/goaspire/goaspire/servicedefaults/servicedefaultstest"
	"github.com/goaspire/goaspire/testserver"
)

const cacheScope = "github.com/goaspire/goaspire/cache"

// TestWithoutGlobals runs two Apps without globals in one process, each
// exporting to its own OTLP receiver: the Redis command spans and the
// cache spans of each reach only its App's receiver.
func TestWithoutGlobals(t *testing.T) {
	rd := testserver.NewRedis(t)
	type service struct {
		name string
		rcv  *otlptest.Receiver
		app  *servicedefaultstest.App
	}
	services := []*service{{name: "alpha"}, {name: "beta"}}
	for _, s := range services {
		s.rcv = otlptest.Start(t)
		s.app = servicedefaultstest.NewUnstarted(t, nil, exportTo(s.rcv, "grpc",
			"OTEL_SERVICE_NAME", s.name,
			"ConnectionStrings:cache", rd.ConnectionString(),
		))
	}
	ctx := context.Background()
	for _, s := range services {
		rdb, err := aspireredis.Client(ctx, s.app, "cache")
		if err != nil {
			t.Fatal(err)
		}
		if err := rdb.Set(ctx, "key-"+s.name, s.name, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		c, err := aspireredis.NewCache[string](ctx, s.app, "cache", "c-"+s.name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.GetOrLoad(ctx, "k", func(context.Context) (string, error) { return "v", nil }); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range services {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := s.app.Shutdown(sctx); err != nil {
			t.Errorf("Shutdown(%s): %v", s.name, err)
		}
		cancel()
	}
	for _, s := range services {
		spans := s.rcv.Spans()
		var redisSpan, cacheSpan bool
		for _, sp := range spans {
			if got := otlptest.ResourceAttr(sp.Resource, "service.name"); got != s.name {
				t.Errorf("receiver of %s got a span %q of %s", s.name, sp.Span.Name, got)
			}
			if v, _ := otlptest.Attr(sp.Span.Attributes, "db.system"); v == "redis" && sp.Span.Kind == tracepb.Span_SPAN_KIND_CLIENT {
				redisSpan = true
			}
			if sp.Scope.GetName() == cacheScope && sp.Span.Name == "cache.load" {
				cacheSpan = true
			}
		}
		if !redisSpan || !cacheSpan {
			t.Errorf("%s's receiver: Redis span %t, cache span %t; want both (got %v)", s.name, redisSpan, cacheSpan, spanNames(s.rcv))
		}
	}
}

// TestLogScope: the Redis client's own records reach the App's OTLP log
// pipeline under package cache's import path as their scope (the
// dashboard's Category).
func TestLogScope(t *testing.T) {
	rcv := otlptest.Start(t)
	app := servicedefaultstest.NewUnstarted(t, nil, exportTo(rcv, "http/protobuf",
		"OTEL_SERVICE_NAME", "orders",
		// A Redis option go-redis cannot honour exactly: a warning.
		"ConnectionStrings:cache", "127.0.0.1:1,proxy=twemproxy",
	))
	if _, err := aspireredis.Client(context.Background(), app, "cache"); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := app.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	const body = "redis option has no exact go-redis equivalent"
	var scopes []string
	for _, l := range rcv.Logs() {
		if l.Record.GetBody().GetStringValue() == body {
			scopes = append(scopes, l.Scope.GetName())
		}
	}
	if len(scopes) != 1 || scopes[0] != cacheScope {
		t.Errorf("record %q exported with scopes %q, want once with %q", body, scopes, cacheScope)
	}
}

// TestRedisSpans serves a request that writes to a real Redis through the
// App's client, exporting to an OTLP receiver: the request is one trace;
// its Redis span has db.system and db.system.name; nothing else makes a
// trace (no Redis dial, handshake or health-probe trace); nothing is in
// Error; and the Redis metrics are in seconds with the pool name.
func TestRedisSpans(t *testing.T) {
	rd := testserver.NewRedis(t)
	rcv := otlptest.Start(t)
	mux := http.NewServeMux()
	app := servicedefaultstest.NewUnstarted(t, mux, exportTo(rcv, "grpc",
		"ConnectionStrings:cache", rd.ConnectionString(),
	))
	rdb, err := aspireredis.Client(context.Background(), app, "cache")
	if err != nil {
		t.Fatal(err)
	}
	mux.HandleFunc("GET /work", func(w http.ResponseWriter, r *http.Request) {
		if err := rdb.Set(r.Context(), "answer", 42, 0).Err(); err != nil {
			http.Error(w, err.Error(), 500)
		}
	})
	app.Start()
	for _, path := range []string{"/work", "/health"} {
		resp, err := http.Get(app.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s = %d", path, resp.StatusCode)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := app.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	server, ok := rcv.SpanNamed("GET /work")
	if !ok {
		t.Fatalf("no server span: %v", spanNames(rcv))
	}
	var sets int
	for _, s := range rcv.Spans() {
		if string(s.Span.TraceId) != string(server.Span.TraceId) {
			t.Errorf("span %q is a trace of its own", s.Span.Name)
			continue
		}
		if s.Span.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR {
			t.Errorf("span %q in Error: %s", s.Span.Name, s.Span.GetStatus().GetMessage())
		}
		if string(s.Span.SpanId) == string(server.Span.SpanId) {
			continue
		}
		sys, _ := otlptest.Attr(s.Span.Attributes, "db.system")
		name, _ := otlptest.Attr(s.Span.Attributes, "db.system.name")
		if sys == "redis" && name == "redis" {
			sets++
		} else {
			t.Errorf("span %q: db.system %q, db.system.name %q", s.Span.Name, sys, name)
		}
	}
	if sets != 1 {
		t.Errorf("%d Redis spans, want 1: %v", sets, spanNames(rcv))
	}
	found := false
	for _, m := range rcv.Metrics() {
		if m.Scope.GetName() != cacheScope || m.Metric.Name != "db.client.operation.duration" {
			continue
		}
		if m.Metric.Unit != "s" {
			t.Errorf("Redis db.client.operation.duration unit %q", m.Metric.Unit)
		}
		for _, dp := range m.Metric.GetHistogram().GetDataPoints() {
			pool, _ := otlptest.Attr(dp.Attributes, "db.client.connection.pool.name")
			found = found || pool == "cache"
		}
	}
	if !found {
		t.Error("no Redis db.client.operation.duration point for pool cache")
	}
}
