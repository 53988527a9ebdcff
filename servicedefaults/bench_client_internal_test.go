package servicedefaults

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/internal/benchratio"
)

// BenchmarkHTTPClient compares App.HTTPClient (resolver, standard
// pipeline, client instrumentation, the App's pool) with its peers over
// loopback, each side its own sub-benchmark, in interleaved rounds:
//
//   - "off": telemetry off (no OTLP endpoint) against a bare http.Client;
//     "app-in-span" (in-memory only) makes the request in the context of
//     a served request that had a traceparent, so the client passes it on;
//
//   - "sdk": recording spans (batch processor, discarding exporter) and
//     metrics (a reader never collected) against otelhttp.NewTransport on
//     the same providers; "ours-alone" is the App's client instrumentation
//     alone over the same pool as otelhttp's, without the resilience
//     pipeline and discovery.
//
//   - "off-mem" and "sdk-mem": the same pairs over an in-memory
//     transport that answers at once instead of the loopback pool, so
//     the client's own work is what is compared.
//
//     go test -run '^$' -bench BenchmarkHTTPClient -benchtime 2000x -v ./servicedefaults
//     go test -run '^$' -bench 'BenchmarkHTTPClient/.*-mem' -benchtime 20000x -v ./servicedefaults
func BenchmarkHTTPClient(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "ok")
	}))
	b.Cleanup(srv.Close)
	newApp := func(b *testing.B) *App {
		app, err := Add(context.Background(), nil, WithConfig(discovery.FromMap(map[string]string{
			"services__catalog__http__0": srv.URL,
		})), WithLogWriter(io.Discard))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = app.Shutdown(context.Background()) })
		return app
	}
	bareBase := func(b *testing.B) *http.Transport {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 64
		b.Cleanup(t.CloseIdleConnections)
		return t
	}
	getIn := func(ctx context.Context, c *http.Client, url string) func(*testing.B) {
		return func(b *testing.B) {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			resp, err := c.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
		}
	}

	get := func(c *http.Client, url string) func(*testing.B) { return getIn(context.Background(), c, url) }
	// The context of a request served with a traceparent header.
	inSpan := trace.ContextWithRemoteSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}, TraceFlags: trace.FlagsSampled}))

	b.Run("off", func(b *testing.B) {
		app := newApp(b)
		benchratio.Compare(b, 5,
			benchratio.Side{Name: "bare", Op: get(&http.Client{Transport: bareBase(b)}, srv.URL+"/products/1")},
			benchratio.Side{Name: "app", Op: get(app.HTTPClient("catalog"), "/products/1")},
		)
	})
	b.Run("off-mem", func(b *testing.B) {
		app := newApp(b)
		app.base = memBase(app)
		benchratio.Compare(b, 5,
			benchratio.Side{Name: "bare", Op: get(&http.Client{Transport: memBase(app)}, srv.URL+"/products/1")},
			benchratio.Side{Name: "app", Op: get(app.HTTPClient("catalog"), "/products/1")},
			benchratio.Side{Name: "app-in-span", Op: getIn(inSpan, app.HTTPClient("catalog"), "/products/1")},
		)
	})
	b.Run("sdk-mem", func(b *testing.B) {
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(discardExporter{}))
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
		b.Cleanup(func() { _ = tp.Shutdown(context.Background()); _ = mp.Shutdown(context.Background()) })
		app := newApp(b)
		app.tel.tp, app.tel.mp, app.tel.tracing, app.tel.metering = tp, mp, true, true
		app.base = memBase(app)
		peer := &http.Client{Transport: otelhttp.NewTransport(memBase(app),
			otelhttp.WithTracerProvider(tp), otelhttp.WithMeterProvider(mp), otelhttp.WithPropagators(app.tel.prop))}
		benchratio.Compare(b, 5,
			benchratio.Side{Name: "otelhttp", Op: get(peer, srv.URL+"/products/1")},
			benchratio.Side{Name: "app", Op: get(app.HTTPClient("catalog"), "/products/1")},
			benchratio.Side{Name: "ours-alone", Op: get(&http.Client{Transport: app.newClientInstrumentation(memBase(app))}, srv.URL+"/products/1")},
		)
	})
	b.Run("sdk", func(b *testing.B) {
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(discardExporter{}))
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
		b.Cleanup(func() { _ = tp.Shutdown(context.Background()); _ = mp.Shutdown(context.Background()) })
		app := newApp(b)
		app.tel.tp, app.tel.mp, app.tel.tracing, app.tel.metering = tp, mp, true, true
		peer := &http.Client{Transport: otelhttp.NewTransport(bareBase(b),
			otelhttp.WithTracerProvider(tp), otelhttp.WithMeterProvider(mp), otelhttp.WithPropagators(app.tel.prop))}
		benchratio.Compare(b, 5,
			benchratio.Side{Name: "otelhttp", Op: get(peer, srv.URL+"/products/1")},
			benchratio.Side{Name: "app", Op: get(app.HTTPClient("catalog"), "/products/1")},
			benchratio.Side{Name: "ours-alone", Op: get(&http.Client{Transport: app.newClientInstrumentation(bareBase(b))}, srv.URL+"/products/1")},
		)
	})
}

// memBase is the App's connection pool with http requests answered by
// memTransport.
func memBase(app *App) *http.Transport {
	t := app.newBaseTransport()
	t.RegisterProtocol("http", memTransport{})
	return t
}

// memTransport answers every request at once with a small 200, as a
// server on loopback would, without the network.
type memTransport struct{}

func (memTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		_ = r.Body.Close()
	}
	return &http.Response{
		Status: "200 OK", StatusCode: http.StatusOK, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Content-Type": {"text/plain"}}, Body: io.NopCloser(strings.NewReader("ok")),
		ContentLength: 2, Request: r,
	}, nil
}
