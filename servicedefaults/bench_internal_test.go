package servicedefaults

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/goaspire/goaspire/discovery"
)

// BenchmarkServer measures the per-request cost of the server
// instrumentation against a bare ServeMux, on the handler path alone (no
// network): "bare" is the mux, "noop" is App.Handler with exporters off
// (the default without OTEL_EXPORTER_OTLP_ENDPOINT: trace-context
// extraction only; "noop-untraced" without a traceparent header),
// "otelhttp-noop" is otelhttp over no-op providers (what
// "noop" would cost without that shortcut), "sdk" is App.Handler
// recording spans into a batch processor with a discarding exporter and
// metrics into a reader that is never collected.
//
//	go test -run '^$' -bench BenchmarkServer -benchmem ./servicedefaults
func BenchmarkServer(b *testing.B) {
	newMux := func() *http.ServeMux {
		mux := http.NewServeMux()
		mux.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, r.PathValue("id"))
		})
		return mux
	}
	run := func(b *testing.B, h http.Handler, traced bool) {
		req := httptest.NewRequest("GET", "/items/42", nil)
		if traced {
			req.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
		}
		w := &discardWriter{h: http.Header{}}
		b.ReportAllocs()
		for b.Loop() {
			clear(w.h)
			h.ServeHTTP(w, req)
		}
	}
	newApp := func(b *testing.B, mux *http.ServeMux) *App {
		app, err := Add(context.Background(), mux, WithConfig(discovery.FromMap(nil)), WithLogWriter(io.Discard))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = app.Shutdown(context.Background()) })
		return app
	}

	b.Run("bare", func(b *testing.B) { run(b, newMux(), true) })
	b.Run("noop", func(b *testing.B) { run(b, newApp(b, newMux()).Handler(), true) })
	b.Run("noop-untraced", func(b *testing.B) { run(b, newApp(b, newMux()).Handler(), false) })
	b.Run("otelhttp-noop", func(b *testing.B) {
		app := newApp(b, newMux())
		app.tel.tracing, app.tel.metering = true, true // force otelhttp over the no-op providers
		run(b, app.instrument(app.mux), true)
	})
	b.Run("sdk", func(b *testing.B) {
		app := newApp(b, newMux())
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(discardExporter{}))
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
		b.Cleanup(func() { _ = tp.Shutdown(context.Background()); _ = mp.Shutdown(context.Background()) })
		app.tel.tp, app.tel.mp, app.tel.tracing, app.tel.metering = tp, mp, true, true
		run(b, app.instrument(app.mux), true)
	})
}

type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(int)             {}

type discardExporter struct{}

func (discardExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discardExporter) Shutdown(context.Context) error                             { return nil }

func TestRoute(t *testing.T) {
	for pattern, want := range map[string]string{
		"/items/{id}":                  "/items/{id}",
		"GET /items/{id}":              "/items/{id}",
		"GET  example.com/items/{id}":  "/items/{id}",
		"example.com/":                 "/",
		"POST /orders/{id}/lines/{n}/": "/orders/{id}/lines/{n}/",
	} {
		if got := route(pattern); got != want {
			t.Errorf("route(%q) = %q, want %q", pattern, got, want)
		}
	}
}

func TestParsePairs(t *testing.T) {
	got, err := parsePairs(" a = 1 ,b=x%20y,, c=%2C ")
	if err != nil {
		t.Fatal(err)
	}
	want := [][2]string{{"a", "1"}, {"b", "x y"}, {"c", ","}}
	if len(got) != len(want) {
		t.Fatalf("got %q", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("pair %d = %q, want %q", i, got[i], want[i])
		}
	}
	for _, bad := range []string{"novalue", "=v", "k=%zz"} {
		if _, err := parsePairs(bad); err == nil {
			t.Errorf("parsePairs(%q) succeeded", bad)
		}
	}
}

func TestReadOTelDefaults(t *testing.T) {
	s, err := readOTelSettings(discovery.FromMap(map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/base",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if s.traces.protocol != protoHTTP || s.traces.endpoint.String() != "http://collector:4318/base/v1/traces" ||
		s.logs.endpoint.String() != "http://collector:4318/base/v1/logs" {
		t.Errorf("endpoints: %v %v", s.traces.endpoint, s.logs.endpoint)
	}
	if s.bsp.delay.Milliseconds() != 5000 || s.blrp.delay.Milliseconds() != 1000 ||
		s.metricInterval.Milliseconds() != 60000 || s.traces.timeout.Milliseconds() != 10000 {
		t.Errorf("delays: bsp %v blrp %v metric %v timeout %v", s.bsp.delay, s.blrp.delay, s.metricInterval, s.traces.timeout)
	}
	if s.bsp.maxQueue != 2048 || s.bsp.maxBatch != 512 || s.exemplarFilter != "trace_based" || s.temporality != "cumulative" {
		t.Errorf("settings: %+v", s)
	}
	if got := s.sampler.Description(); got != "ParentBased{root:AlwaysOnSampler,remoteParentSampled:AlwaysOnSampler,remoteParentNotSampled:AlwaysOffSampler,localParentSampled:AlwaysOnSampler,localParentNotSampled:AlwaysOffSampler}" {
		t.Errorf("sampler = %s", got)
	}
	if len(s.propagators) != 2 {
		t.Errorf("propagators = %v", s.propagators)
	}
}
