package interop_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/goaspire/goaspire/internal/otlptest"
	"github.com/goaspire/goaspire/internal/poll"
	"github.com/goaspire/goaspire/servicedefaults/servicedefaultstest"
)

// startFastAPI runs testdata/fastapi_service.py under uvicorn on a free
// loopback port and waits until it answers, polling /health.
func startFastAPI(t *testing.T) string {
	t.Helper()
	port := freePort(t)
	svc := startScript(t, nil, "fastapi_service.py", fmt.Sprint(port))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	client := &http.Client{Timeout: 5 * time.Second}
	poll.Until(t, 2*time.Minute, "uvicorn to answer "+base+"/health", func() bool {
		select {
		case <-svc.done:
			t.Fatalf("fastapi_service.py exited (%v); its output:\n%s", svc.err, svc.Output())
		default:
		}
		resp, err := client.Get(base + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return base
}

// TestHTTPGoClientToFastAPI: a Go App calls a FastAPI service through
// App.HTTPClient with service discovery (services__pyapi__http__0, the
// variable an AppHost injects for a reference to the "pyapi" resource),
// and the request carries the W3C traceparent of the Go client span.
func TestHTTPGoClientToFastAPI(t *testing.T) {
	python(t)
	base := startFastAPI(t)
	rcv := otlptest.Start(t)
	app := servicedefaultstest.NewUnstarted(t, nil, map[string]string{
		"services__pyapi__http__0":    base,
		"OTEL_EXPORTER_OTLP_ENDPOINT": rcv.HTTPEndpoint,
		"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
		"OTEL_SERVICE_NAME":           "goclient",
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://pyapi/trace", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := app.HTTPClient("pyapi").Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET http://pyapi/trace = %d %s, %v", resp.StatusCode, body, err)
	}
	var got struct {
		Traceparent string `json:"traceparent"`
	}
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("%s: %v", body, err)
	}
	parts := strings.Split(got.Traceparent, "-")
	if len(parts) != 4 || parts[0] != "00" {
		t.Fatalf("FastAPI received traceparent %q", got.Traceparent)
	}

	if err := app.Shutdown(ctx); err != nil { // flushes the spans
		t.Fatal(err)
	}
	var client *tracepb.Span
	for _, s := range rcv.Spans() {
		if s.Span.Kind == tracepb.Span_SPAN_KIND_CLIENT {
			client = s.Span
		}
	}
	if client == nil {
		t.Fatalf("no client span exported; got %d spans", len(rcv.Spans()))
	}
	if tid, sid := hex.EncodeToString(client.TraceId), hex.EncodeToString(client.SpanId); parts[1] != tid || parts[2] != sid {
		t.Errorf("FastAPI received traceparent %q; the Go client span is trace %s span %s", got.Traceparent, tid, sid)
	}
}
