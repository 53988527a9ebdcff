package aspirepostgres_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/goaspire/goaspire/integrations/aspirepostgres"
	"github.com/goaspire/goaspire/internal/otlptest"
	"github.com/goaspire/goaspire/servicedefaults/servicedefaultstest"
	"github.com/goaspire/goaspire/testserver"
)

// exporting is the configuration of an App exporting to rcv over
// protocol ("grpc" or "http/protobuf") whose batch processors and metric
// reader never export on their own during a test, so what arrives was
// flushed by Shutdown; kv adds keys and values.
func exporting(rcv *otlptest.Receiver, protocol string, kv ...string) map[string]string {
	endpoint := rcv.HTTPEndpoint
	if protocol == "grpc" {
		endpoint = rcv.GRPCEndpoint
	}
	m := map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
		"OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
		"OTEL_BSP_SCHEDULE_DELAY":     "600000",
		"OTEL_BLRP_SCHEDULE_DELAY":    "600000",
		"OTEL_METRIC_EXPORT_INTERVAL": "600000",
	}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func shutdown(t *testing.T, app *servicedefaultstest.App) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := app.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

func spanNames(rcv *otlptest.Receiver) []string {
	var out []string
	for _, s := range rcv.Spans() {
		out = append(out, s.Span.Name)
	}
	return out
}

// TestLogScope: the records of a Pool and of a DB (here: that an
// unreachable database is retried) reach the App's console and its OTLP
// log pipeline under the cqrs package's instrumentation scope, naming
// their pool.
func TestLogScope(t *testing.T) {
	rcv := otlptest.Start(t)
	app := servicedefaultstest.NewUnstarted(t, nil, exporting(rcv, "http/protobuf",
		"OTEL_SERVICE_NAME", "orders",
		"ConnectionStrings__db", "Host=127.0.0.1;Port="+refusedPort(t)+";Username=u;Database=d;Timeout=1",
		"ConnectionStrings__other", "Host=127.0.0.1;Port="+refusedPort(t)+";Username=u;Database=d;Timeout=1",
	))
	ctx := context.Background()
	if _, err := aspirepostgres.Pool(ctx, app, "db"); err != nil {
		t.Fatal(err)
	}
	if _, err := aspirepostgres.DB(ctx, app, "other"); err != nil {
		t.Fatal(err)
	}
	const retrying = "cqrs: postgres not reachable yet; retrying in the background"
	waitFor(t, "both pools' retry warnings", func() bool { return strings.Count(app.Logs.String(), retrying) >= 2 })
	shutdown(t, app)

	pools := map[string]bool{}
	for _, l := range rcv.Logs() {
		if l.Record.GetBody().GetStringValue() != retrying {
			continue
		}
		if got := l.Scope.GetName(); got != "github.com/goaspire/goaspire/cqrs" {
			t.Errorf("record %q has scope %q, want github.com/goaspire/goaspire/cqrs", retrying, got)
		}
		pool, _ := otlptest.Attr(l.Record.Attributes, "db.client.connection.pool.name")
		pools[pool] = true
	}
	if !pools["db"] || !pools["other"] {
		t.Errorf("retry records at the collector for pools %v, want db and other", pools)
	}
}

// TestDatabaseSpans serves a request that queries a real Postgres through
// a Pool and a DB of the App, exporting to an OTLP receiver: the request
// is one trace; every database span in it has db.system and
// db.system.name; a statement run for the first time on a connection is
// one span (its prepare an event); nothing else makes a trace (no health
// probe trace); nothing is in Error; and the pool's metrics carry its
// name.
func TestDatabaseSpans(t *testing.T) {
	pg := testserver.NewPostgres(t)
	rcv := otlptest.Start(t)
	mux := http.NewServeMux()
	app := servicedefaultstest.NewUnstarted(t, mux, exporting(rcv, "grpc",
		"ConnectionStrings__db", pg.ConnectionString(),
		"Aspire__Npgsql__ConnectRetry__WaitOnOpen", "10s",
	))
	ctx := context.Background()
	pool, err := aspirepostgres.Pool(ctx, app, "db")
	if err != nil {
		t.Fatal(err)
	}
	db, err := aspirepostgres.DB(ctx, app, "db")
	if err != nil {
		t.Fatal(err)
	}
	mux.HandleFunc("GET /work", func(w http.ResponseWriter, r *http.Request) {
		var n int
		for range 2 {
			if err := pool.QueryRow(r.Context(), "select 40 + $1::int", 2).Scan(&n); err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
		}
		if _, err := db.Exec(r.Context(), "select $1::int", n); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
	})
	app.Start()
	for _, path := range []string{"/work", "/health"} {
		resp, err := http.Get(app.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s = %d %s", path, resp.StatusCode, body)
		}
	}
	shutdown(t, app)

	server, ok := rcv.SpanNamed("GET /work")
	if !ok {
		t.Fatalf("no server span: %v", spanNames(rcv))
	}
	statements := 0
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
		if sys != "postgresql" || name != "postgresql" {
			t.Errorf("span %q: db.system %q, db.system.name %q", s.Span.Name, sys, name)
			continue
		}
		statements++
	}
	if statements != 3 {
		t.Errorf("%d Postgres spans, want 3: %v", statements, spanNames(rcv))
	}
	found := false
	for _, m := range rcv.Metrics() {
		if m.Metric.Name != "db.client.connection.count" {
			continue
		}
		for _, dp := range m.Metric.GetSum().GetDataPoints() {
			pool, _ := otlptest.Attr(dp.Attributes, "db.client.connection.pool.name")
			found = found || pool == "db"
		}
	}
	if !found {
		t.Error("no db.client.connection.count point for pool db")
	}
}

// TestTelemetryOfItsApp runs two Apps without globals in one process,
// each exporting to its own receiver: the spans and pool metrics of each
// App's DB reach only its App's receiver, and the OTel globals stay as
// they were.
func TestTelemetryOfItsApp(t *testing.T) {
	pg := testserver.NewPostgres(t)
	globalTP, globalMP := otel.GetTracerProvider(), otel.GetMeterProvider()
	type service struct {
		name string
		rcv  *otlptest.Receiver
		app  *servicedefaultstest.App
	}
	services := []*service{{name: "alpha"}, {name: "beta"}}
	ctx := context.Background()
	for _, s := range services {
		s.rcv = otlptest.Start(t)
		s.app = servicedefaultstest.NewUnstarted(t, nil, exporting(s.rcv, "grpc",
			"OTEL_SERVICE_NAME", s.name,
			"ConnectionStrings__db", pg.ConnectionString(),
		))
		db, err := aspirepostgres.DB(ctx, s.app, "db")
		if err != nil {
			t.Fatal(err)
		}
		wctx, span := s.app.Tracer("example/"+s.name).Start(ctx, "work")
		_, err = db.Exec(wctx, "SELECT 1")
		span.End()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range services {
		shutdown(t, s.app)
	}
	if otel.GetTracerProvider() != globalTP || otel.GetMeterProvider() != globalMP {
		t.Error("opening a DB changed the OTel globals")
	}
	for _, s := range services {
		postgres := false
		for _, sp := range s.rcv.Spans() {
			if got := otlptest.ResourceAttr(sp.Resource, "service.name"); got != s.name {
				t.Errorf("receiver of %s got a span %q of %s", s.name, sp.Span.Name, got)
			}
			if v, _ := otlptest.Attr(sp.Span.Attributes, "db.system"); v == "postgresql" && sp.Span.Kind == tracepb.Span_SPAN_KIND_CLIENT {
				postgres = true
			}
		}
		if !postgres {
			t.Errorf("%s's receiver got no Postgres span: %v", s.name, spanNames(s.rcv))
		}
		pooled := false
		for _, m := range s.rcv.Metrics() {
			if got := otlptest.ResourceAttr(m.Resource, "service.name"); got != s.name {
				t.Errorf("receiver of %s got metric %q of %s", s.name, m.Metric.Name, got)
			}
			pooled = pooled || m.Metric.Name == "db.client.connection.count"
		}
		if !pooled {
			t.Errorf("%s's receiver got no pool metrics", s.name)
		}
	}
}
