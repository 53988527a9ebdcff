package servicedefaults_test

import (
	"context"
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
// the export errors are logged and returned by Shutdown, without the key.
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
					// the export error is Shutdown's to return.
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
			err = app.Shutdown(ctx)
			if err == nil {
				// Without the failed export there is nothing to check.
				t.Fatal("Shutdown reported no export error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Shutdown error %q does not report the failed export (%q)", err, tt.want)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("Shutdown error leaks the key: %v", err)
			}
			if strings.Contains(logs.String(), secret) {
				t.Errorf("logs leak the key:\n%s", logs)
			}
		})
	}
}
