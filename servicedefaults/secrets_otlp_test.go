package servicedefaults_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/servicedefaults"
)

// TestSecretsOTLPHeaders exports to an endpoint that refuses, then to one
// that rejects the request, with an API key in OTEL_EXPORTER_OTLP_HEADERS:
// Shutdown succeeds and logs the export errors once, as a warning with
// what was dropped, without the key.
func TestSecretsOTLPHeaders(t *testing.T) {
	const secret = "OtlpApiKeyLeak"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + ln.Addr().String()
	ln.Close()
	rejecting := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "bad key "+r.Header.Get("x-otlp-api-key"), http.StatusUnauthorized)
	}))
	defer rejecting.Close()
	for _, tt := range []struct{ name, endpoint, proto, want string }{
		{"refused http", refused, "http/protobuf", "refused"},
		{"refused grpc", refused, "grpc", "refused"},
		{"rejected http", rejecting.URL, "http/protobuf", "401"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			restoreGlobals(t)
			logs := &syncBuffer{}
			app, err := servicedefaults.Add(context.Background(), nil,
				servicedefaults.WithLogWriter(logs),
				servicedefaults.WithConfig(discovery.FromMap(map[string]string{
					"OTEL_EXPORTER_OTLP_ENDPOINT": tt.endpoint,
					"OTEL_EXPORTER_OTLP_PROTOCOL": tt.proto,
					"OTEL_EXPORTER_OTLP_HEADERS":  "x-otlp-api-key=" + secret + ",authorization=Bearer%20" + secret,
					"OTEL_EXPORTER_OTLP_TIMEOUT":  "500",
					// Nothing is exported before Shutdown flushes, so
					// the export error is Shutdown's to report.
					"OTEL_BSP_SCHEDULE_DELAY":  "600000",
					"OTEL_BLRP_SCHEDULE_DELAY": "600000",
				})))
			if err != nil {
				t.Fatal(err)
			}
			_, span := app.Tracer("test").Start(context.Background(), "work")
			span.End()
			app.Logger().Warn("something")
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := app.Shutdown(ctx); err != nil {
				t.Errorf("Shutdown = %v, want nil: a failed export is logged, not returned", err)
			}
			var warnings []map[string]any
			for _, l := range strings.Split(logs.String(), "\n") {
				var rec map[string]any
				if json.Unmarshal([]byte(l), &rec) == nil && rec["msg"] == "telemetry could not be exported at shutdown" {
					warnings = append(warnings, rec)
				}
			}
			if len(warnings) != 1 {
				// Without the failed export there is nothing to check.
				t.Fatalf("%d shutdown warnings about telemetry, want 1:\n%s", len(warnings), logs)
			}
			w := warnings[0]
			if w["level"] != "WARN" {
				t.Errorf("warning level = %v", w["level"])
			}
			if msg, _ := w["error"].(string); !strings.Contains(msg, tt.want) {
				t.Errorf("warning error %q does not report the failed export (%q)", msg, tt.want)
			}
			// The span and the log record never reached the collector.
			if w["dropped_spans"] != 1.0 || w["dropped_log_records"] != 1.0 {
				t.Errorf("warning counts dropped_spans=%v dropped_log_records=%v, want 1 and 1", w["dropped_spans"], w["dropped_log_records"])
			}
			if strings.Contains(logs.String(), secret) {
				t.Errorf("logs leak the key:\n%s", logs)
			}
		})
	}
}
