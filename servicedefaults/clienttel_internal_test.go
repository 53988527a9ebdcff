package servicedefaults

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/goaspire/goaspire/discovery"
)

// rewindingTransport reads part of the request body, sends it again from
// GetBody (as net/http does on a reused connection that failed) and
// answers 200 once it has read the second body whole.
type rewindingTransport struct{ got string }

func (t *rewindingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	_, _ = io.ReadFull(r.Body, make([]byte, 3))
	_ = r.Body.Close()
	body, err := r.GetBody()
	if err != nil {
		return nil, err
	}
	b, _ := io.ReadAll(body)
	t.got = string(b) + "|" + r.Header.Get("Traceparent")
	return memTransport{}.RoundTrip(r)
}

// TestClientInstrumentationRequest: the caller's request is left as it
// was (no traceparent in its header, its body and GetBody its own), the
// base transport gets the trace context, and a body sent again through
// GetBody is measured once, whole.
func TestClientInstrumentationRequest(t *testing.T) {
	app, err := Add(context.Background(), nil, WithConfig(discovery.FromMap(nil)), WithLogWriter(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = app.Shutdown(context.Background()) })
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	app.tel.tp, app.tel.mp, app.tel.tracing, app.tel.metering = tp, mp, true, true
	base := &rewindingTransport{}
	client := &http.Client{Transport: app.newClientInstrumentation(base)}

	req, _ := http.NewRequest("PUT", "http://example.test:8080/items/1", strings.NewReader("payload"))
	body, getBody := req.Body, req.GetBody
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()

	if len(req.Header) != 0 || req.Body != body || req.GetBody == nil || getBody == nil {
		t.Errorf("the caller's request changed: header %v", req.Header)
	}
	ended := spans.Ended()
	if len(ended) != 1 {
		t.Fatalf("%d spans ended, want 1", len(ended))
	}
	sc := ended[0].SpanContext()
	want := "payload|00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-01"
	if base.got != want {
		t.Errorf("base transport got %q, want %q", base.got, want)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "http.client.request.body.size" {
				continue
			}
			for _, p := range m.Data.(metricdata.Histogram[int64]).DataPoints {
				found = true
				if p.Count != 1 || p.Sum != int64(len("payload")) {
					t.Errorf("body size: %d measurements summing %d, want one of %d", p.Count, p.Sum, len("payload"))
				}
			}
		}
	}
	if !found {
		t.Error("no http.client.request.body.size point")
	}
}
