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

	"github.com/goaspire/goaspire/internal/otlptest"
)

// TestLogScopes logs from user code (slog's default and App.Logger) and
// from a goaspire package (resilience), through an App exporting to an OTLP
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
		// A breaker that opens after two failed calls: a warning with
		// its break duration.
		"Aspire__Resilience__Http__Retry__MaxRetryAttempts", "0",
		"Aspire__Resilience__Http__CircuitBreaker__MinimumThroughput", "2",
	), nil)

	app.Logger().Info("from App.Logger")
	ctx := context.Background()
	client := app.HTTPClient("failing")
	for range 3 {
		req, _ := http.NewRequestWithContext(ctx, "GET", failing.URL, nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
		}
	}
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
