package servicedefaults_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/goaspire/goaspire/internal/otlptest"
	"github.com/goaspire/goaspire/testserver"
)

// TestLogScopes logs from user code (slog's default and App.Logger) and
// from two goaspire packages, through an App exporting to an OTLP
// receiver: user records carry the service's name as their scope (the
// dashboard's Category), each package's its import path. A duration
// arrives readably ("5s"), in OTLP and on the JSON console.
func TestLogScopes(t *testing.T) {
	rcv := otlptest.Start(t)
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
	}))
	t.Cleanup(failing.Close)
	app, console := newApp(t, with(slowExport,
		"OTEL_EXPORTER_OTLP_ENDPOINT", rcv.HTTPEndpoint,
		"OTEL_SERVICE_NAME", "orders",
		"Logging__Console__FormatterName", "json",
		// An unreachable database: the pool warns that it retries.
		"ConnectionStrings__db", "Host=127.0.0.1;Port=1;Username=u;Database=d;Timeout=1",
		// A breaker that opens after two failed calls: a warning with
		// its break duration.
		"Aspire__Resilience__Http__Retry__MaxRetryAttempts", "0",
		"Aspire__Resilience__Http__CircuitBreaker__MinimumThroughput", "2",
	), nil)

	app.Logger().Info("from App.Logger")
	ctx := context.Background()
	if _, err := app.Postgres("db"); err != nil {
		t.Fatal(err)
	}
	client := app.HTTPClient("failing")
	for range 3 {
		req, _ := http.NewRequestWithContext(ctx, "GET", failing.URL, nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
		}
	}
	waitFor(t, "the pool's retry warning", func() bool { return strings.Contains(console.String(), "postgres not reachable yet") })
	slog.Info("from slog.Default", "wait", time.Second, slog.Group("nested", slog.Duration("d", 1500*time.Millisecond)))

	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := app.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		body, scope string
	}{
		{"from App.Logger", "orders"},
		{"from slog.Default", "orders"},
		{"cqrs: postgres not reachable yet; retrying in the background", "github.com/goaspire/goaspire/cqrs"},
		{"resilience: circuit breaker opened", "github.com/goaspire/goaspire/resilience"},
	}
	scopes := map[string]string{}
	attrs := map[string]map[string]string{}
	for _, l := range rcv.Logs() {
		body := l.Record.GetBody().GetStringValue()
		scopes[body] = l.Scope.GetName()
		attrs[body] = map[string]string{}
		for _, kv := range l.Record.Attributes {
			v, _ := otlptest.Attr(l.Record.Attributes, kv.Key)
			attrs[body][kv.Key] = v
		}
	}
	for _, tt := range tests {
		got, ok := scopes[tt.body]
		if !ok {
			t.Errorf("no record %q among %v", tt.body, scopes)
			continue
		}
		if got != tt.scope {
			t.Errorf("record %q has scope %q, want %q", tt.body, got, tt.scope)
		}
	}
	if got := attrs["from slog.Default"]["wait"]; got != "1s" {
		t.Errorf("OTLP duration attribute = %q, want \"1s\"", got)
	}
	if got := attrs["resilience: circuit breaker opened"]["break"]; got != "5s" {
		t.Errorf("breaker's break attribute = %q, want \"5s\"", got)
	}
	// The JSON console writes the durations the same way.
	found := false
	for _, line := range strings.Split(console.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil || rec["msg"] != "from slog.Default" {
			continue
		}
		found = true
		if rec["wait"] != "1s" || rec["nested"].(map[string]any)["d"] != "1.5s" {
			t.Errorf("console record %s: durations not readable", line)
		}
	}
	if !found {
		t.Errorf("console lacks the record: %s", console.String())
	}
}

// TestHTTPJSONProtocol: http/json, a valid protocol the Go exporters do
// not speak, neither stops Add nor loses telemetry: it exports
// http/protobuf to the same endpoint, with one warning naming the
// variable.
func TestHTTPJSONProtocol(t *testing.T) {
	for _, key := range []string{"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"} {
		t.Run(key, func(t *testing.T) {
			rcv := otlptest.Start(t)
			app, console := newApp(t, with(slowExport,
				"OTEL_EXPORTER_OTLP_ENDPOINT", rcv.HTTPEndpoint,
				key, "http/json",
			), nil)
			_, span := app.Tracer("test").Start(context.Background(), "work")
			span.End()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := app.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			if _, ok := rcv.SpanNamed("work"); !ok {
				t.Fatal("span not received")
			}
			for _, r := range rcv.Requests() {
				if ct := r.Header.Get("Content-Type"); r.Protocol != "http" || ct != "application/x-protobuf" {
					t.Errorf("%s export over %s with Content-Type %q", r.Signal, r.Protocol, ct)
				}
			}
			if n := strings.Count(console.String(), key); n != 1 {
				t.Errorf("%d log lines name %s, want one warning:\n%s", n, key, console.String())
			}
		})
	}
}

// TestDatabaseSpans serves a request that queries a real Postgres
// through the App's pool, exporting to an OTLP receiver: the request is
// one trace; every database span in it has db.system and db.system.name;
// a statement run for the first time on a connection is one span (its
// prepare an event); nothing else makes a trace (no health-probe trace);
// nothing is in Error. (The Redis half is integrations/aspireredis's
// TestRedisSpans.)
func TestDatabaseSpans(t *testing.T) {
	pg := testserver.NewPostgres(t)
	rcv := otlptest.Start(t)
	mux := http.NewServeMux()
	app, _ := newApp(t, with(slowExport,
		"OTEL_EXPORTER_OTLP_ENDPOINT", rcv.GRPCEndpoint,
		"OTEL_EXPORTER_OTLP_PROTOCOL", "grpc",
		"ConnectionStrings__db", pg.ConnectionString(),
		"Aspire__Npgsql__ConnectRetry__WaitOnOpen", "10s",
	), mux)
	pool, err := app.Postgres("db")
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
	})
	base := serve(t, app)
	if code, body := get(t, nil, base+"/work"); code != 200 {
		t.Fatalf("GET /work = %d %s", code, body)
	}
	if code, _ := get(t, nil, base+"/health"); code != 200 {
		t.Fatalf("GET /health = %d", code)
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
	var selects int
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
		switch {
		case sys == "postgresql" && name == "postgresql":
			selects++
		default:
			t.Errorf("span %q: db.system %q, db.system.name %q", s.Span.Name, sys, name)
		}
	}
	if selects != 2 {
		t.Errorf("%d Postgres spans, want 2: %v", selects, spanNames(rcv))
	}
}
