package servicedefaults

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/internal/benchratio"
)

// The server benchmarks measure App.Handler on the handler path alone
// (no network) against its peers on the same request, GET /items/42
// with a traceparent header, through a ResponseWriter that has the
// optional interfaces of the server's (so httpsnoop in otelhttp wraps it
// as it wraps a real one):
//
//   - off: telemetry off (no OTLP endpoint) against a bare ServeMux;
//   - sdk: recording SDK (spans into a batch processor with a discarding
//     exporter, metrics into a reader never collected) against
//     otelhttp.NewHandler on the same providers.
//
// BenchmarkServerRatio runs both sides interleaved in one run (also through
// real servers on loopback, "-loopback", and "off" without a traceparent,
// "off-untraced") and reports
// each side's ns/op and allocs/op on its own, and their ratio (its
// standard ns/op column mixes both sides); BenchmarkServer runs each side
// alone, for profiles:
//
//	go test -run '^$' -bench 'BenchmarkServerRatio' -benchtime 20000x -count 3 ./servicedefaults
//	go test -run '^$' -bench 'BenchmarkServer$/sdk/app' -cpuprofile cpu.out ./servicedefaults
func BenchmarkServer(b *testing.B) {
	for _, pair := range serverPairs(b) {
		for _, side := range pair.sides {
			b.Run(pair.name+"/"+side.name, func(b *testing.B) {
				w, req := benchRequest(true)
				b.ReportAllocs()
				for b.Loop() {
					clear(w.h)
					side.h.ServeHTTP(w, req)
				}
			})
		}
	}
}

// BenchmarkServerRatio: see BenchmarkServer.
func BenchmarkServerRatio(b *testing.B) {
	for _, pair := range serverPairs(b) {
		b.Run(pair.name, func(b *testing.B) {
			w, req := benchRequest(true)
			interleave(b, pair.sides[0], pair.sides[1], func(_ int, h http.Handler) {
				clear(w.h)
				h.ServeHTTP(w, req)
			})
		})
	}
	// The same pairs through real servers on loopback (one keep-alive
	// client for both sides): the share of a whole request.
	for _, pair := range serverPairs(b) {
		b.Run(pair.name+"-loopback", func(b *testing.B) {
			var urls [2]string
			for i, side := range pair.sides {
				srv := httptest.NewServer(side.h)
				b.Cleanup(srv.Close)
				urls[i] = srv.URL + "/items/42"
			}
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
			b.Cleanup(client.CloseIdleConnections)
			interleave(b, pair.sides[0], pair.sides[1], func(i int, _ http.Handler) {
				req, _ := http.NewRequest("GET", urls[i], nil)
				req.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			})
		})
	}
	b.Run("off-untraced", func(b *testing.B) {
		pair := serverPairs(b)[0]
		w, req := benchRequest(false)
		interleave(b, pair.sides[0], pair.sides[1], func(_ int, h http.Handler) {
			clear(w.h)
			h.ServeHTTP(w, req)
		})
	})
}

type benchSide struct {
	name string
	h    http.Handler
}

type benchPair struct {
	name  string
	sides [2]benchSide // baseline, ours
}

func benchMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, r.PathValue("id"))
	})
	return mux
}

func benchRequest(traced bool) (*serverLikeWriter, *http.Request) {
	req := httptest.NewRequest("GET", "/items/42", nil)
	req.Header.Set("User-Agent", "bench")
	if traced {
		req.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	}
	return &serverLikeWriter{discardWriter{h: http.Header{}}}, req
}

func serverPairs(b *testing.B) []benchPair {
	newApp := func(mux http.Handler) *App {
		app, err := Add(context.Background(), mux, WithConfig(discovery.FromMap(nil)), WithLogWriter(io.Discard))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = app.Shutdown(context.Background()) })
		return app
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(discardExporter{}))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	b.Cleanup(func() { _ = tp.Shutdown(context.Background()); _ = mp.Shutdown(context.Background()) })
	sdkApp := newApp(benchMux())
	return []benchPair{
		{"off", [2]benchSide{{"bare", benchMux()}, {"app", newApp(benchMux()).Handler()}}},
		{"sdk", [2]benchSide{
			{"otelhttp", otelhttp.NewHandler(benchMux(), "", otelhttp.WithTracerProvider(tp), otelhttp.WithMeterProvider(mp),
				otelhttp.WithPropagators(sdkApp.tel.prop))},
			{"app", recording(sdkApp, tp, mp, nil)},
		}},
	}
}

// recording returns app's handler rebuilt over the SDK providers tp and mp.
func recording(app *App, tp trace.TracerProvider, mp metric.MeterProvider, routeFunc func(*http.Request) string) http.Handler {
	app.tel.tp, app.tel.mp, app.tel.tracing, app.tel.metering = tp, mp, true, true
	s := app.handler.(*server)
	return app.newServer(app.next, s.health, s.alive, routeFunc)
}

// interleave runs ours and base in alternating rounds until each has
// served b.N requests (benchratio.Interleave, after warming both up) and
// reports each side's ns/op and allocs/op, and ours against base as
// {ours}/{base} and {ours}/{base}-median.
func interleave(b *testing.B, base, ours benchSide, serve func(side int, h http.Handler)) {
	const round = 500
	benchratio.Interleave(b, round, 2*round,
		benchratio.Step{Name: ours.name, Op: func(*testing.B, int) { serve(1, ours.h) }},
		benchratio.Step{Name: base.name, Op: func(*testing.B, int) { serve(0, base.h) }},
	)
}

type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(int)             {}

// serverLikeWriter discards like discardWriter but has the optional
// interfaces of net/http's own ResponseWriter.
type serverLikeWriter struct{ discardWriter }

func (w *serverLikeWriter) Flush()                                       {}
func (w *serverLikeWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) { return nil, nil, nil }
func (w *serverLikeWriter) ReadFrom(r io.Reader) (int64, error)          { return io.Copy(io.Discard, r) }
func (w *serverLikeWriter) WriteString(s string) (int, error)            { return len(s), nil }
func (w *serverLikeWriter) CloseNotify() <-chan bool                     { return nil }

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
