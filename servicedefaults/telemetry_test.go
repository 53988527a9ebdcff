package servicedefaults_test

import (
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	metricpb "go.opentelemetry.io/proto/otlp/metrics/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/internal/otlptest"
	"github.com/goaspire/goaspire/servicedefaults"
)

// slowExport keeps every batch processor and the metric reader from
// exporting on their own during a test, so what arrives was flushed by
// Shutdown.
var slowExport = map[string]string{
	"OTEL_BSP_SCHEDULE_DELAY":     "600000",
	"OTEL_BLRP_SCHEDULE_DELAY":    "600000",
	"OTEL_METRIC_EXPORT_INTERVAL": "600000",
}

func with(base map[string]string, kv ...string) map[string]string {
	out := map[string]string{}
	for k, v := range base {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

func TestTelemetryReachesOTLPReceiver(t *testing.T) {
	for _, proto := range []string{"grpc", "http/protobuf"} {
		t.Run(proto, func(t *testing.T) {
			rcv := otlptest.Start(t)
			endpoint := rcv.HTTPEndpoint
			if proto == "grpc" {
				endpoint = rcv.GRPCEndpoint
			}
			mux := http.NewServeMux()
			app, logs := newApp(t, with(slowExport,
				"OTEL_EXPORTER_OTLP_ENDPOINT", endpoint,
				"OTEL_EXPORTER_OTLP_PROTOCOL", proto,
				"OTEL_EXPORTER_OTLP_HEADERS", "x-otlp-api-key=s3cret-api-key",
				"OTEL_SERVICE_NAME", "orders",
				"OTEL_RESOURCE_ATTRIBUTES", "service.instance.id=orders-1,deployment.environment=test%20env",
			), mux)

			meter := app.Meter("example/orders")
			created, err := meter.Int64Counter("orders.created", metric.WithDescription("Orders created"))
			if err != nil {
				t.Fatal(err)
			}
			value, err := meter.Float64Histogram("orders.value", metric.WithUnit("{currency}"))
			if err != nil {
				t.Fatal(err)
			}
			tracer := app.Tracer("example/orders")
			mux.HandleFunc("POST /orders/{id}", func(w http.ResponseWriter, r *http.Request) {
				ctx, span := tracer.Start(r.Context(), "save order")
				defer span.End()
				created.Add(ctx, 1)
				value.Record(ctx, 42.5)
				slog.InfoContext(ctx, "order created", "id", r.PathValue("id"))
				w.WriteHeader(http.StatusCreated)
			})
			base := serve(t, app)

			if code, _ := do(t, nil, "POST", base+"/orders/7"); code != http.StatusCreated {
				t.Fatalf("POST /orders/7 = %d", code)
			}
			for _, p := range []string{"/health", "/alive"} {
				if code, body := get(t, nil, base+p); code != 200 || body != "Healthy" {
					t.Fatalf("GET %s = %d %q", p, code, body)
				}
			}
			if n := len(rcv.Requests()); n != 0 {
				t.Fatalf("%d exports before Shutdown; the test relies on Shutdown flushing", n)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := app.Shutdown(ctx); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}

			// Traces: the server span named after the route, the user's
			// child span, the resource, and no span for the probes.
			server, ok := rcv.SpanNamed("POST /orders/{id}")
			if !ok {
				t.Fatalf("no server span; got %v", spanNames(rcv))
			}
			if server.Span.Kind != tracepb.Span_SPAN_KIND_SERVER {
				t.Errorf("server span kind = %v", server.Span.Kind)
			}
			if r, _ := otlptest.Attr(server.Span.Attributes, "http.route"); r != "/orders/{id}" {
				t.Errorf("http.route = %q", r)
			}
			for key, want := range map[string]string{
				"service.name":           "orders",
				"service.instance.id":    "orders-1",
				"deployment.environment": "test env",
				"telemetry.sdk.language": "go",
			} {
				if got := otlptest.ResourceAttr(server.Resource, key); got != want {
					t.Errorf("resource %s = %q, want %q", key, got, want)
				}
			}
			child, ok := rcv.SpanNamed("save order")
			if !ok {
				t.Fatal("no user span")
			}
			if string(child.Span.TraceId) != string(server.Span.TraceId) || string(child.Span.ParentSpanId) != string(server.Span.SpanId) {
				t.Errorf("user span is not the server span's child")
			}
			for _, s := range rcv.Spans() {
				if strings.Contains(s.Span.Name, "health") || strings.Contains(s.Span.Name, "alive") {
					t.Errorf("probe traced: %q", s.Span.Name)
				}
			}

			// Logs: the record carries the ids of the span it was made in.
			var found bool
			for _, l := range rcv.Logs() {
				if l.Record.GetBody().GetStringValue() != "order created" {
					continue
				}
				found = true
				if hex.EncodeToString(l.Record.TraceId) != hex.EncodeToString(child.Span.TraceId) ||
					hex.EncodeToString(l.Record.SpanId) != hex.EncodeToString(child.Span.SpanId) {
					t.Errorf("log record not correlated with its span")
				}
				if id, _ := otlptest.Attr(l.Record.Attributes, "id"); id != "7" {
					t.Errorf("log attribute id = %q", id)
				}
				if got := otlptest.ResourceAttr(l.Resource, "service.name"); got != "orders" {
					t.Errorf("log resource service.name = %q", got)
				}
			}
			if !found {
				t.Fatalf("log record not received (%d records)", len(rcv.Logs()))
			}

			// Metrics: the user's instruments (with an exemplar from the
			// span, trace_based being the default filter), the server's,
			// and Go runtime metrics.
			m, ok := rcv.MetricNamed("orders.created")
			if !ok {
				t.Fatal("orders.created not received")
			}
			dp := m.Metric.GetSum().GetDataPoints()
			if len(dp) != 1 || dp[0].GetAsInt() != 1 {
				t.Fatalf("orders.created = %v", dp)
			}
			if ex := dp[0].GetExemplars(); len(ex) == 0 || string(ex[0].TraceId) != string(child.Span.TraceId) {
				t.Errorf("orders.created has no exemplar from the span: %v", ex)
			}
			if m, ok := rcv.MetricNamed("orders.value"); !ok || m.Metric.GetHistogram().GetDataPoints()[0].GetSum() != 42.5 {
				t.Errorf("orders.value = %v", m.Metric)
			}
			if got := otlptest.ResourceAttr(m.Resource, "service.instance.id"); got != "orders-1" {
				t.Errorf("metric resource service.instance.id = %q", got)
			}
			dur, ok := rcv.MetricNamed("http.server.request.duration")
			if !ok {
				t.Fatal("http.server.request.duration not received")
			}
			routes := map[string]bool{}
			for _, p := range dur.Metric.GetHistogram().GetDataPoints() {
				r, _ := otlptest.Attr(p.Attributes, "http.route")
				routes[r] = true
			}
			if !routes["/orders/{id}"] || routes["/health"] || routes["/alive"] {
				t.Errorf("http.server.request.duration routes = %v", routes)
			}
			for _, name := range []string{"go.goroutine.count", "go.schedule.duration"} {
				if _, ok := rcv.MetricNamed(name); !ok {
					t.Errorf("Go runtime metric %s not received", name)
				}
			}

			// Every export carried the API key; no signal missing.
			signals := map[string]bool{}
			for _, r := range rcv.Requests() {
				signals[r.Signal] = true
				if got := r.Header.Get("x-otlp-api-key"); got != "s3cret-api-key" {
					t.Errorf("%s export over %s: x-otlp-api-key = %q", r.Signal, r.Protocol, got)
				}
			}
			if !signals[otlptest.Traces] || !signals[otlptest.Metrics] || !signals[otlptest.Logs] {
				t.Errorf("signals exported: %v", signals)
			}
			if strings.Contains(logs.String(), "s3cret-api-key") {
				t.Error("API key in the logs")
			}
		})
	}
}

func spanNames(rcv *otlptest.Receiver) []string {
	var out []string
	for _, s := range rcv.Spans() {
		out = append(out, s.Span.Name)
	}
	return out
}

// TestOneTraceAcrossApps calls one App's server from another App's HTTP
// client, through service discovery, and checks that both sides land in
// one trace: orders server -> orders client -> inventory server.
func TestOneTraceAcrossApps(t *testing.T) {
	rcv := otlptest.Start(t)
	common := with(slowExport, "OTEL_EXPORTER_OTLP_ENDPOINT", rcv.GRPCEndpoint, "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")

	invMux := http.NewServeMux()
	inventory, _ := newApp(t, with(common, "OTEL_SERVICE_NAME", "inventory"), invMux)
	invMux.HandleFunc("GET /stock/{sku}", func(w http.ResponseWriter, r *http.Request) {
		slog.InfoContext(r.Context(), "stock lookup", "sku", r.PathValue("sku"))
		fmt.Fprint(w, "12")
	})
	invURL := serve(t, inventory)

	ordMux := http.NewServeMux()
	orders, _ := newApp(t, with(common,
		"OTEL_SERVICE_NAME", "orders",
		"services__inventory__http__0", invURL,
	), ordMux)
	client := orders.HTTPClient("inventory")
	ordMux.HandleFunc("GET /orders/{id}", func(w http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequestWithContext(r.Context(), "GET", "http://inventory/stock/42", nil)
		resp, err := client.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		fmt.Fprint(w, "ok")
	})
	ordURL := serve(t, orders)

	if code, body := get(t, nil, ordURL+"/orders/1"); code != 200 || body != "ok" {
		t.Fatalf("GET /orders/1 = %d %q", code, body)
	}
	for _, app := range []*servicedefaults.App{orders, inventory} {
		if err := app.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
	}

	ordServer, ok1 := rcv.SpanNamed("GET /orders/{id}")
	invServer, ok2 := rcv.SpanNamed("GET /stock/{sku}")
	var client1 otlptest.Span
	ok3 := false
	for _, s := range rcv.Spans() {
		if s.Span.Kind == tracepb.Span_SPAN_KIND_CLIENT {
			client1, ok3 = s, true
		}
	}
	if !ok1 || !ok2 || !ok3 {
		t.Fatalf("spans = %v", spanNames(rcv))
	}
	if otlptest.ResourceAttr(ordServer.Resource, "service.name") != "orders" ||
		otlptest.ResourceAttr(client1.Resource, "service.name") != "orders" ||
		otlptest.ResourceAttr(invServer.Resource, "service.name") != "inventory" {
		t.Fatal("spans attributed to the wrong services")
	}
	trace := string(ordServer.Span.TraceId)
	if string(client1.Span.TraceId) != trace || string(invServer.Span.TraceId) != trace {
		t.Fatal("the two services' spans are in different traces")
	}
	if string(client1.Span.ParentSpanId) != string(ordServer.Span.SpanId) {
		t.Error("client span's parent is not the orders server span")
	}
	if string(invServer.Span.ParentSpanId) != string(client1.Span.SpanId) {
		t.Error("inventory server span's parent is not the client span")
	}
	if addr, _ := otlptest.Attr(client1.Span.Attributes, "server.address"); addr != "127.0.0.1" {
		t.Errorf("client span server.address = %q, want the resolved address", addr)
	}
	for _, l := range rcv.Logs() {
		if l.Record.GetBody().GetStringValue() == "stock lookup" && string(l.Record.TraceId) != trace {
			t.Error("inventory's log is not in the trace")
		}
	}
}

func TestTLSEndpoint(t *testing.T) {
	cert, certPEM := otlptest.NewCertificate(t)
	dir := t.TempDir()
	certFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	rcv := otlptest.Start(t, otlptest.WithTLS(cert))
	tests := []struct {
		name     string
		protocol string
		trust    []string
	}{
		{"grpc SSL_CERT_FILE", "grpc", []string{"SSL_CERT_FILE", certFile}},
		{"grpc SSL_CERT_DIR", "grpc", []string{"SSL_CERT_DIR", filepath.Join(dir, "missing") + ":" + dir}},
		{"http OTEL_EXPORTER_OTLP_CERTIFICATE", "http/protobuf", []string{"OTEL_EXPORTER_OTLP_CERTIFICATE", certFile}},
		{"http per-signal certificate", "http/protobuf", []string{"OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", certFile}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			endpoint := rcv.HTTPEndpoint
			if tt.protocol == "grpc" {
				endpoint = rcv.GRPCEndpoint
			}
			name := strings.ReplaceAll(tt.name, " ", "-")
			app, logs := newApp(t, with(slowExport, append([]string{
				"OTEL_TRACES_EXPORTER", "otlp",
				"OTEL_METRICS_EXPORTER", "none",
				"OTEL_LOGS_EXPORTER", "none",
				"OTEL_EXPORTER_OTLP_ENDPOINT", endpoint,
				"OTEL_EXPORTER_OTLP_PROTOCOL", tt.protocol,
				"OTEL_SERVICE_NAME", name,
			}, tt.trust...)...), nil)
			_, span := app.Tracer("test").Start(context.Background(), "over tls")
			span.End()
			if err := app.Shutdown(context.Background()); err != nil {
				t.Fatalf("Shutdown: %v (logs: %s)", err, logs)
			}
			found := false
			for _, s := range rcv.Spans() {
				found = found || otlptest.ResourceAttr(s.Resource, "service.name") == name
			}
			if !found {
				t.Fatalf("span not received over TLS; logs: %s", logs)
			}
		})
	}
}

func TestExportersOff(t *testing.T) {
	rcv := otlptest.Start(t)
	tests := []struct {
		name                  string
		values                map[string]string
		tracesOff, metricsOff bool
	}{
		{"no endpoint", map[string]string{}, true, true},
		{"sdk disabled", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": rcv.HTTPEndpoint, "OTEL_SDK_DISABLED": "true"}, true, true},
		{"traces exporter none", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": rcv.HTTPEndpoint, "OTEL_TRACES_EXPORTER": "none"}, true, false},
		{"only a metrics endpoint", map[string]string{"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": rcv.HTTPEndpoint + "/v1/metrics"}, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app, _ := newApp(t, tt.values, nil)
			_, tpNoop := app.TracerProvider().(tracenoop.TracerProvider)
			_, mpNoop := app.MeterProvider().(metricnoop.MeterProvider)
			if tpNoop != tt.tracesOff || mpNoop != tt.metricsOff {
				t.Fatalf("tracer provider no-op = %v, meter provider no-op = %v; want %v, %v",
					tpNoop, mpNoop, tt.tracesOff, tt.metricsOff)
			}
		})
	}
}

// TestShutdownBoundedByContext: an unreachable collector cannot hold
// Shutdown past its context, and is a warning, not Shutdown's error.
func TestShutdownBoundedByContext(t *testing.T) {
	restoreGlobals(t)
	logs := &syncBuffer{}
	app, err := servicedefaults.Add(context.Background(), nil,
		servicedefaults.WithConfig(discovery.FromMap(with(slowExport,
			"OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1",
			"OTEL_EXPORTER_OTLP_PROTOCOL", "grpc",
			// The export outlives Shutdown's context (the SDK does not
			// cancel it) until this timeout; keep it short for goleak.
			"OTEL_EXPORTER_OTLP_TIMEOUT", "500",
		))),
		servicedefaults.WithLogWriter(logs))
	if err != nil {
		t.Fatal(err)
	}
	_, span := app.Tracer("t").Start(context.Background(), "s")
	span.End()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := app.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown = %v, want nil: an unreachable collector is logged, not returned", err)
	}
	if out := logs.String(); !strings.Contains(out, `"msg":"telemetry could not be exported at shutdown"`) || !strings.Contains(out, `"dropped_spans":1`) {
		t.Fatalf("no warning with the dropped span for an unreachable collector:\n%s", out)
	}
}

// TestGenericEndpointPaths checks the OTLP/HTTP URL rules: the generic
// endpoint gets /v1/{signal} appended, a per-signal one is used as is.
func TestGenericEndpointPaths(t *testing.T) {
	rcv := otlptest.Start(t)
	app, _ := newApp(t, with(slowExport,
		"OTEL_EXPORTER_OTLP_ENDPOINT", rcv.HTTPEndpoint+"/",
		"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", rcv.HTTPEndpoint+"/v1/metrics",
		"OTEL_EXPORTER_OTLP_COMPRESSION", "gzip",
	), nil)
	_, span := app.Tracer("t").Start(context.Background(), "s")
	span.End()
	c, _ := app.Meter("t").Int64Counter("c")
	c.Add(context.Background(), 1)
	app.Logger().Info("hello")
	if err := app.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(rcv.Spans()) == 0 || len(rcv.Logs()) == 0 {
		t.Fatalf("spans %d, logs %d", len(rcv.Spans()), len(rcv.Logs()))
	}
	if _, ok := rcv.MetricNamed("c"); !ok {
		t.Fatal("metric not received")
	}
	for _, r := range rcv.Requests() {
		if r.Header.Get("Content-Encoding") != "gzip" {
			t.Errorf("%s export not gzip-compressed", r.Signal)
		}
	}
}

func TestSamplerAndTemporality(t *testing.T) {
	rcv := otlptest.Start(t)
	app, _ := newApp(t, with(slowExport,
		"OTEL_EXPORTER_OTLP_ENDPOINT", rcv.GRPCEndpoint,
		"OTEL_EXPORTER_OTLP_PROTOCOL", "grpc",
		"OTEL_TRACES_SAMPLER", "always_off",
		"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "delta",
		"OTEL_METRICS_EXEMPLAR_FILTER", "always_off",
	), nil)
	_, span := app.Tracer("t").Start(context.Background(), "dropped")
	span.End()
	c, _ := app.Meter("t").Int64Counter("deltas")
	c.Add(context.Background(), 3)
	if err := app.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(rcv.Spans()); n != 0 {
		t.Errorf("always_off sampler exported %d spans", n)
	}
	m, ok := rcv.MetricNamed("deltas")
	if !ok {
		t.Fatal("metric not received")
	}
	if got := m.Metric.GetSum().GetAggregationTemporality(); got != metricpb.AggregationTemporality_AGGREGATION_TEMPORALITY_DELTA {
		t.Errorf("temporality = %v, want delta", got)
	}
}
