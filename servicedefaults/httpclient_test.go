package servicedefaults_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/internal/otlptest"
	"github.com/goaspire/goaspire/servicedefaults"
)

// flaky answers 503 to the first fail requests, then 200.
func flaky(t *testing.T, fail int32) (*httptest.Server, *atomic.Int32) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) <= fail {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok"))
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func TestHTTPClientResilience(t *testing.T) {
	tests := []struct {
		name      string
		values    map[string]string
		opts      []servicedefaults.Option
		wantCode  int
		wantCalls int32
	}{
		{"standard retries", nil, nil, http.StatusOK, 2},
		{"per-client retry count", map[string]string{
			"Aspire__Resilience__Http__Clients__flaky__Retry__MaxRetryAttempts": "0"}, nil, http.StatusServiceUnavailable, 1},
		{"none", map[string]string{
			"Aspire__ServiceDefaults__HttpClients__flaky__Resilience": "None"}, nil, http.StatusServiceUnavailable, 1},
		{"hedging", nil, []servicedefaults.Option{servicedefaults.WithHedging("flaky")}, http.StatusOK, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, calls := flaky(t, 1)
			values := map[string]string{
				"services__flaky__http__0":               srv.URL,
				"Aspire__Resilience__Http__Retry__Delay": "1ms",
			}
			for k, v := range tt.values {
				values[k] = v
			}
			app, _ := newApp(t, values, nil, tt.opts...)
			code, body := get(t, app.HTTPClient("flaky"), "https+http://flaky/x")
			if code != tt.wantCode || calls.Load() != tt.wantCalls {
				t.Errorf("status %d (%q) after %d calls; want %d after %d", code, body, calls.Load(), tt.wantCode, tt.wantCalls)
			}
		})
	}
}

func TestHTTPClientBadConfiguration(t *testing.T) {
	tests := []struct {
		key, value string
	}{
		{"Aspire__Resilience__Http__Clients__catalog__AttemptTimeout__Timeout", "00:01:00"},
		{"Aspire__Resilience__Http__Retry__MaxRetryAttempts", "many"},
		{"Aspire__ServiceDefaults__HttpClients__catalog__Resilience", "Polly"},
	}
	for _, tt := range tests {
		restoreGlobals(t)
		_, err := servicedefaults.Add(t.Context(), nil, servicedefaults.WithConfig(discovery.FromMap(map[string]string{tt.key: tt.value})))
		if err == nil {
			t.Errorf("%s=%s: Add succeeded", tt.key, tt.value)
			continue
		}
		last := tt.key[strings.LastIndex(tt.key, "__")+2:]
		if !strings.Contains(err.Error(), last) {
			t.Errorf("%s=%s: error %q does not name the key", tt.key, tt.value, err)
		}
	}
}

// TestHTTPClientSpans: each attempt's client span is named after the
// method, as .NET's HttpClient and the semantic conventions name it, and
// a retried attempt records http.request.resend_count.
func TestHTTPClientSpans(t *testing.T) {
	rcv := otlptest.Start(t)
	srv, _ := flaky(t, 1)
	app, _ := newApp(t, with(slowExport,
		"OTEL_EXPORTER_OTLP_ENDPOINT", rcv.GRPCEndpoint, "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc",
		"services__flaky__http__0", srv.URL,
		"Aspire__Resilience__Http__Retry__Delay", "1ms",
	), nil)
	if code, _ := get(t, app.HTTPClient("flaky"), "http://flaky/x"); code != http.StatusOK {
		t.Fatalf("status %d, want 200 after a retry", code)
	}
	if err := app.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	var resends []int64
	for _, s := range rcv.Spans() {
		if s.Span.Kind != tracepb.Span_SPAN_KIND_CLIENT {
			continue
		}
		if s.Span.Name != "GET" {
			t.Errorf("client span named %q, want %q", s.Span.Name, "GET")
		}
		n := int64(-1)
		for _, kv := range s.Span.Attributes {
			if kv.Key == "http.request.resend_count" {
				n = kv.Value.GetIntValue()
			}
		}
		resends = append(resends, n)
	}
	slices.Sort(resends)
	if !slices.Equal(resends, []int64{-1, 1}) {
		t.Fatalf("client spans' http.request.resend_count = %v (-1: absent), want the first attempt without it and the retry with 1", resends)
	}
}
