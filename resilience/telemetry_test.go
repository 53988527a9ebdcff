package resilience_test

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/goaspire/goaspire/resilience"
)

// logRecorder is a slog handler keeping the messages it receives.
type logRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool { b.WriteString(" " + a.String()); return true })
	l.msgs = append(l.msgs, b.String())
	return nil
}
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }

func (l *logRecorder) count(prefix string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.msgs {
		if strings.HasPrefix(m, prefix) {
			n++
		}
	}
	return n
}

// points returns the data points of an int64 metric by "destination/outcome".
func points(t *testing.T, reader *sdkmetric.ManualReader, name string) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != "github.com/goaspire/goaspire/resilience" {
			continue
		}
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			var dps []metricdata.DataPoint[int64]
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				dps = d.DataPoints
			case metricdata.Gauge[int64]:
				dps = d.DataPoints
			}
			for _, dp := range dps {
				dest, _ := dp.Attributes.Value(attribute.Key("destination"))
				outcome, _ := dp.Attributes.Value(attribute.Key("outcome"))
				if p, ok := dp.Attributes.Value(attribute.Key("pipeline")); !ok || p.AsString() != "catalog" {
					t.Errorf("%s point without the pipeline attribute: %v", name, dp.Attributes)
				}
				out[dest.AsString()+"/"+outcome.AsString()] += dp.Value
			}
		}
	}
	return out
}

func TestTelemetry(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer tp.Shutdown(context.Background())
	logs := &logRecorder{}

	bad := newServer(t, status(503))
	slow := newServer(t, hang)
	o := testOptions()
	o.Retry.MaxRetryAttempts = 1
	o.CircuitBreaker.MinimumThroughput = 2
	o.CircuitBreaker.FailureRatio = 0.5
	o.CircuitBreaker.BreakDuration = time.Minute
	common := resilience.TransportConfig{Name: "catalog", MeterProvider: mp, Logger: slog.New(logs), Options: o}
	c, _ := newClient(t, &common)
	common.Options.AttemptTimeout = 50 * time.Millisecond
	cSlow, _ := newClient(t, &common)

	ctx, span := tp.Tracer("test").Start(context.Background(), "call")
	do := func(c *http.Client, url string) error {
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	// 503, retried, 503 again: two failures open the bad breaker.
	if err := do(c, bad.URL); err != nil {
		t.Fatal(err)
	}
	// Refused while open.
	if err := do(c, bad.URL); err == nil {
		t.Fatal("want a circuit-open error")
	}
	// Two attempt timeouts.
	if err := do(cSlow, slow.URL); err == nil {
		t.Fatal("want a timeout")
	}
	span.End()

	badA, slowA := bad.authority(), slow.authority()
	if got := points(t, reader, "goaspire.resilience.retries"); got[badA+"/503"] != 1 || got[slowA+"/attempt_timeout"] != 1 {
		t.Errorf("retries = %v", got)
	}
	if got := points(t, reader, "goaspire.resilience.breaker.state_changes"); got[badA+"/open"] != 1 {
		t.Errorf("state changes = %v", got)
	}
	if got := points(t, reader, "goaspire.resilience.breaker.state"); got[badA+"/"] != int64(resilience.CircuitOpen) || got[slowA+"/"] != int64(resilience.CircuitOpen) {
		// The two timeouts also opened the slow instance's breaker.
		t.Errorf("breaker states = %v", got)
	}
	if got := points(t, reader, "goaspire.resilience.rejections"); got[badA+"/circuit_open"] != 1 {
		t.Errorf("rejections = %v", got)
	}
	if got := points(t, reader, "goaspire.resilience.timeouts"); got[slowA+"/attempt"] != 2 {
		t.Errorf("timeouts = %v", got)
	}
	if n := logs.count("resilience: circuit breaker opened"); n != 2 {
		t.Errorf("logged %d breaker openings, want one per breaker: %q", n, logs.msgs)
	}

	ended := spans.Ended()
	if len(ended) != 1 {
		t.Fatalf("%d spans", len(ended))
	}
	events := map[string]int{}
	for _, e := range ended[0].Events() {
		events[e.Name]++
		if e.Name == "goaspire.resilience.retry" && !hasAttr(e.Attributes, attribute.Key("delay_ms")) {
			t.Errorf("retry event without delay: %v", e.Attributes)
		}
	}
	want := map[string]int{"goaspire.resilience.retry": 2, "goaspire.resilience.breaker.state_change": 2, "goaspire.resilience.rejected": 1, "goaspire.resilience.timeout": 2}
	for name, n := range want {
		if events[name] != n {
			t.Errorf("span has %d %s events, want %d (all: %v)", events[name], name, n, events)
		}
	}
}

func hasAttr(attrs []attribute.KeyValue, key attribute.Key) bool {
	for _, a := range attrs {
		if a.Key == key {
			return true
		}
	}
	return false
}

func TestTotalTimeoutTelemetry(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	srv := newServer(t, hang)
	o := testOptions()
	o.TotalRequestTimeout = 100 * time.Millisecond
	o.AttemptTimeout = 100 * time.Millisecond
	o.CircuitBreaker.SamplingDuration = time.Second
	c, _ := newClient(t, &resilience.TransportConfig{Options: o, Name: "catalog", MeterProvider: mp})
	if _, _, err := get(t, c, srv.URL); err == nil {
		t.Fatal("want a timeout")
	}
	if got := points(t, reader, "goaspire.resilience.timeouts"); got[srv.authority()+"/total"] != 1 {
		t.Errorf("timeouts = %v", got)
	}
}
