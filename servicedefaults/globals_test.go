package servicedefaults_test

import (
	"context"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	otellog "go.opentelemetry.io/otel/log"
	"go.opentelemetry.io/otel/log/global"
	lognoop "go.opentelemetry.io/otel/log/noop"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/internal/otlptest"
	"github.com/goaspire/goaspire/internal/syncbuf"
	"github.com/goaspire/goaspire/servicedefaults"
)

// Sentinels the test installs as the globals, so it can tell whether Add
// replaced them.
type (
	sentinelTP   struct{ tracenoop.TracerProvider }
	sentinelMP   struct{ metricnoop.MeterProvider }
	sentinelLP   struct{ lognoop.LoggerProvider }
	sentinelProp struct{ propagation.TraceContext }
	sentinelEH   struct{}
)

func (*sentinelEH) Handle(error) {}

type globalsSnapshot struct {
	tp   trace.TracerProvider
	mp   metric.MeterProvider
	lp   otellog.LoggerProvider
	prop propagation.TextMapPropagator
	eh   otel.ErrorHandler
	log  *slog.Logger
}

func snapshotGlobals() globalsSnapshot {
	return globalsSnapshot{
		tp: otel.GetTracerProvider(), mp: otel.GetMeterProvider(), lp: global.GetLoggerProvider(),
		prop: otel.GetTextMapPropagator(), eh: otel.GetErrorHandler(), log: slog.Default(),
	}
}

// installSentinels sets every global Add may touch to a value of the
// test's own, and puts the previous ones back when the test ends.
func installSentinels(t *testing.T) globalsSnapshot {
	prev := snapshotGlobals()
	s := globalsSnapshot{
		tp: &sentinelTP{}, mp: &sentinelMP{}, lp: &sentinelLP{}, prop: &sentinelProp{}, eh: &sentinelEH{},
		log: slog.New(slog.DiscardHandler),
	}
	set := func(g globalsSnapshot) {
		otel.SetTracerProvider(g.tp)
		otel.SetMeterProvider(g.mp)
		global.SetLoggerProvider(g.lp)
		otel.SetTextMapPropagator(g.prop)
		otel.SetErrorHandler(g.eh)
		slog.SetDefault(g.log)
	}
	set(s)
	t.Cleanup(func() { set(prev) })
	return s
}

// TestWithoutGlobals runs two Apps in one process, each exporting to its
// own OTLP receiver, and checks that every signal (server and client
// spans, metrics, logs) reaches only its App's receiver while the OTel
// globals and slog's default stay as they were. (The clients of the
// integration packages: their own TestWithoutGlobals.)
func TestWithoutGlobals(t *testing.T) {
	sentinels := installSentinels(t)

	type service struct {
		name string
		rcv  *otlptest.Receiver
		app  *servicedefaults.App
	}
	services := []*service{{name: "alpha"}, {name: "beta"}}
	for _, s := range services {
		s.rcv = otlptest.Start(t)
		mux := http.NewServeMux()
		var err error
		s.app, err = servicedefaults.Add(context.Background(), mux,
			servicedefaults.WithoutGlobals(),
			servicedefaults.WithLogWriter(&syncbuf.Buffer{}),
			servicedefaults.WithConfig(discovery.FromMap(with(slowExport,
				"OTEL_EXPORTER_OTLP_ENDPOINT", s.rcv.GRPCEndpoint,
				"OTEL_EXPORTER_OTLP_PROTOCOL", "grpc",
				"OTEL_SERVICE_NAME", s.name,
			))))
		if err != nil {
			t.Fatalf("Add(%s): %v", s.name, err)
		}
		app := s.app
		hits, err := app.Meter("example/" + s.name).Int64Counter(s.name + ".hits")
		if err != nil {
			t.Fatal(err)
		}
		mux.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) {
			hits.Add(r.Context(), 1)
			app.Logger().InfoContext(r.Context(), "hello from "+s.name)
			// A library reading the globals gets the test's sentinels,
			// not this App's providers.
			if otel.GetTracerProvider() != sentinels.tp || slog.Default() != sentinels.log {
				http.Error(w, "globals changed", http.StatusInternalServerError)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		})
	}
	if got := snapshotGlobals(); got != sentinels {
		t.Fatalf("Add changed the globals: %+v, want %+v", got, sentinels)
	}

	ctx := context.Background()
	for _, s := range services {
		url := serve(t, s.app)
		if code, body := get(t, s.app.HTTPClient("self"), url+"/hello"); code != http.StatusNoContent {
			t.Fatalf("%s: GET /hello = %d %s", s.name, code, body)
		}
	}
	for _, s := range services {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := s.app.Shutdown(sctx); err != nil {
			t.Errorf("Shutdown(%s): %v", s.name, err)
		}
		cancel()
	}
	if got := snapshotGlobals(); got != sentinels {
		t.Fatalf("the Apps changed the globals: %+v, want %+v", got, sentinels)
	}

	for _, s := range services {
		spans := s.rcv.Spans()
		var server, client bool
		for _, sp := range spans {
			if got := otlptest.ResourceAttr(sp.Resource, "service.name"); got != s.name {
				t.Errorf("receiver of %s got a span %q of %s", s.name, sp.Span.Name, got)
			}
			switch {
			case sp.Span.Name == "GET /hello" && sp.Span.Kind == 2: // SERVER
				server = true
			case sp.Span.Kind == 3: // CLIENT
				if v, _ := otlptest.Attr(sp.Span.Attributes, "http.request.method"); v == "GET" {
					client = true
				}
			}
		}
		if !server || !client {
			t.Errorf("%s's receiver: server span %t, HTTP client span %t; want both (got %d spans)",
				s.name, server, client, len(spans))
		}
		logged := false
		for _, l := range s.rcv.Logs() {
			if got := otlptest.ResourceAttr(l.Resource, "service.name"); got != s.name {
				t.Errorf("receiver of %s got a log %q of %s", s.name, l.Record.Body.GetStringValue(), got)
			}
			logged = logged || l.Record.Body.GetStringValue() == "hello from "+s.name
		}
		if !logged {
			t.Errorf("%s's receiver did not get its log record", s.name)
		}
		counted := false
		for _, m := range s.rcv.Metrics() {
			if got := otlptest.ResourceAttr(m.Resource, "service.name"); got != s.name {
				t.Errorf("receiver of %s got metric %q of %s", s.name, m.Metric.Name, got)
			}
			counted = counted || m.Metric.Name == s.name+".hits"
		}
		if !counted {
			t.Errorf("%s's receiver did not get its counter", s.name)
		}
	}
}
