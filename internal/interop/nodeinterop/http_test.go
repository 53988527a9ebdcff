package nodeinterop

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/goaspire/goaspire/internal/otlptest"
	"github.com/goaspire/goaspire/servicedefaults/servicedefaultstest"
)

// TestHTTPClientToExpress: a Go App calls an express service by name
// through App.HTTPClient, the address coming from the variable an AppHost
// injects for a Node resource (services__{name}__http__0 or the Aspire 13
// {NAME}_HTTP, where node-api and node_api are both NODE_API), and the
// traceparent express receives is the Go client span's: same trace id,
// the client span as parent.
func TestHTTPClientToExpress(t *testing.T) {
	needNode(t)
	express := startNode(t, nil, "http-echo")
	var listening struct{ Port int }
	express.next(&listening)
	base := fmt.Sprintf("http://127.0.0.1:%d", listening.Port)

	for _, tc := range []struct {
		name, key, client, url string
	}{
		{"Aspire 8-13.1 form", "services__node_api__http__0", "node_api", "http://node_api/echo?from=go"},
		{"Aspire 13 form", "NODE_API_HTTP", "node_api", "http://node_api/echo?from=go"},
		{"Aspire 13 form, scheme picked by discovery", "NODE_API_HTTP", "node_api", "https+http://node_api/echo?from=go"},
		{"resource named node-api", "services__node-api__http__0", "node-api", "http://node-api/echo?from=go"},
		{"resource named node-api, Aspire 13 form", "NODE_API_HTTP", "node-api", "http://node-api/echo?from=go"},
		{"base address of the client", "services__node_api__http__0", "node_api", "/echo?from=go"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rcv := otlptest.Start(t)
			app := servicedefaultstest.NewUnstarted(t, http.NewServeMux(), map[string]string{
				tc.key:                        base,
				"OTEL_EXPORTER_OTLP_ENDPOINT": rcv.GRPCEndpoint,
				"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
				"OTEL_SERVICE_NAME":           "go-caller",
			})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, tc.url, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := app.HTTPClient(tc.client).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var echo struct{ Path, Host, Traceparent string }
			err = json.NewDecoder(resp.Body).Decode(&echo)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d, %v", resp.StatusCode, err)
			}
			if echo.Path != "/echo?from=go" {
				t.Errorf("express saw %q, want /echo?from=go", echo.Path)
			}
			if err := app.Shutdown(ctx); err != nil { // flushes the spans
				t.Fatal(err)
			}
			var clients []string
			for _, s := range rcv.Spans() {
				if s.Span.Kind == tracepb.Span_SPAN_KIND_CLIENT {
					clients = append(clients, fmt.Sprintf("00-%s-%s-01", hex.EncodeToString(s.Span.TraceId), hex.EncodeToString(s.Span.SpanId)))
				}
			}
			if len(clients) != 1 || echo.Traceparent != clients[0] {
				t.Errorf("express received traceparent %q; the Go client spans: %v (want exactly one, the same)", echo.Traceparent, clients)
			}
		})
	}
}
