package servicedefaults_test

import (
	"context"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/goaspire/goaspire/internal/otlptest"
	"github.com/goaspire/goaspire/internal/redact"
)

// TestClientConventions makes the same requests through App.HTTPClient
// and through otelhttp.NewTransport on the App's own providers and
// propagator, against the same server: the client spans have the same
// kind, scope, attributes and status (App.HTTPClient masking a secret
// query value in url.full, which otelhttp shows), both pass their span
// on in traceparent, and every http.client.* point has as many
// measurements from one client as from the other, so their attribute
// sets are the same.
func TestClientConventions(t *testing.T) {
	rcv := otlptest.Start(t)
	var mu sync.Mutex
	received := map[string]bool{} // traceparent values the server saw
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		received[r.Header.Get("Traceparent")] = true
		mu.Unlock()
		_, _ = io.Copy(io.Discard, r.Body)
		if r.Method == http.MethodPost {
			http.NotFound(w, r)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there: the attempt gets no response

	app, _ := newApp(t, with(slowExport,
		"OTEL_EXPORTER_OTLP_ENDPOINT", rcv.HTTPEndpoint,
		"services__api__http__0", srv.URL,
		"services__down__http__0", down,
		"Aspire__Resilience__Http__Retry__MaxRetryAttempts", "0",
	), nil)
	peer := &http.Client{Transport: otelhttp.NewTransport(http.DefaultTransport.(*http.Transport).Clone(),
		otelhttp.WithTracerProvider(app.TracerProvider()), otelhttp.WithMeterProvider(app.MeterProvider()),
		otelhttp.WithPropagators(app.Propagator()),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method }))}

	type call struct {
		name, method, ours, theirs, body string
		wantErr                          bool
	}
	calls := []call{
		{"get", "GET", "http://api/items/7?x=1", srv.URL + "/items/7?x=1", "", false},
		{"post-404", "POST", "http://api/items", srv.URL + "/items", "payload", false},
		{"secret", "GET", "http://api/items/8?api_key=s3cret", srv.URL + "/items/8?api_key=s3cret", "", false},
		{"refused", "GET", "http://down/x", down + "/x", "", true},
	}
	parents := map[string]string{} // parent span ID -> "ours/name" or "otelhttp/name"
	tracer := app.Tracer("conventions-test")
	for _, c := range calls {
		for _, side := range []struct {
			name   string
			client *http.Client
			url    string
		}{{"ours", app.HTTPClient(strings.SplitN(c.ours, "/", 4)[2]), c.ours}, {"otelhttp", peer, c.theirs}} {
			ctx, parent := tracer.Start(context.Background(), side.name+"/"+c.name)
			parents[parent.SpanContext().SpanID().String()] = side.name + "/" + c.name
			var body io.Reader
			if c.body != "" {
				body = strings.NewReader(c.body)
			}
			req, _ := http.NewRequestWithContext(ctx, c.method, side.url, body)
			resp, err := side.client.Do(req)
			if (err != nil) != c.wantErr {
				t.Fatalf("%s %s: error %v", side.name, c.name, err)
			}
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			parent.End()
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := app.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	spans := map[string]otlptest.Span{}
	for _, s := range rcv.Spans() {
		if s.Span.Kind != tracepb.Span_SPAN_KIND_CLIENT {
			continue
		}
		key := parents[spanID(s.Span.ParentSpanId)]
		if key == "" {
			t.Errorf("client span %q has no parent of the test's", s.Span.Name)
			continue
		}
		if _, dup := spans[key]; dup {
			t.Errorf("%s: two client spans", key)
		}
		spans[key] = s
		tp := "00-" + traceID(s.Span.TraceId) + "-" + spanID(s.Span.SpanId) + "-01"
		mu.Lock()
		if !received[tp] && !strings.HasSuffix(key, "/refused") {
			t.Errorf("%s: the server did not get traceparent %s", key, tp)
		}
		mu.Unlock()
	}
	for _, c := range calls {
		ours, ok1 := spans["ours/"+c.name]
		theirs, ok2 := spans["otelhttp/"+c.name]
		if !ok1 || !ok2 {
			t.Errorf("%s: client spans ours %v, otelhttp's %v", c.name, ok1, ok2)
			continue
		}
		if ours.Span.Name != c.method || theirs.Span.Name != c.method {
			t.Errorf("%s: span names %q, %q, want %q", c.name, ours.Span.Name, theirs.Span.Name, c.method)
		}
		if ours.Scope.GetName() != theirs.Scope.GetName() || ours.Scope.GetVersion() != theirs.Scope.GetVersion() {
			t.Errorf("%s: scopes %v, %v", c.name, ours.Scope, theirs.Scope)
		}
		if o, p := ours.Span.GetStatus(), theirs.Span.GetStatus(); o.GetCode() != p.GetCode() || o.GetMessage() != p.GetMessage() {
			t.Errorf("%s: status %v, otelhttp's %v", c.name, o, p)
		}
		a, b := attrMap(ours.Span.Attributes), attrMap(theirs.Span.Attributes)
		differ := []string{}
		if c.name == "secret" {
			if a["url.full"] != srv.URL+"/items/8?api_key="+url.QueryEscape(redact.Mask) {
				t.Errorf("secret: url.full = %q", a["url.full"])
			}
			differ = append(differ, "url.full")
		}
		compareAttrs(t, "span "+c.name, a, b, differ...)
	}
	if t.Failed() {
		return
	}
	if s := spans["ours/post-404"]; s.Span.GetStatus().GetCode() != tracepb.Status_STATUS_CODE_ERROR ||
		attrMap(s.Span.Attributes)["error.type"] != "404" {
		t.Errorf("post-404: status %v, attributes %v", s.Span.GetStatus(), attrMap(s.Span.Attributes))
	}

	// Both clients' measurements go to the same streams (the same scope
	// and instruments): a point holds both only if their attribute sets
	// are equal.
	for _, name := range []string{"http.client.request.duration", "http.client.request.body.size"} {
		m, ok := rcv.MetricNamed(name)
		if !ok {
			t.Errorf("no %s", name)
			continue
		}
		points := m.Metric.GetHistogram().GetDataPoints()
		if len(points) != 3 { // get and secret, post-404, refused
			t.Errorf("%s: %d points, want 3", name, len(points))
		}
		for _, p := range points {
			a := attrMap(p.Attributes)
			if p.Count%2 != 0 {
				t.Errorf("%s: %d measurements with %v: not as many from each client", name, p.Count, a)
			}
			if name == "http.client.request.body.size" && a["http.request.method"] == "POST" && p.GetSum() != 2*7 {
				t.Errorf("%s: POST sum %v, want 14", name, p.GetSum())
			}
		}
	}
}

func spanID(b []byte) string  { return hex.EncodeToString(b) }
func traceID(b []byte) string { return hex.EncodeToString(b) }
