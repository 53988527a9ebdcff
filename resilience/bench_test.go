package resilience_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/internal/benchratio"
	"github.com/goaspire/goaspire/resilience"
)

// The benchmarks compare the full client stack (Resolver + standard
// pipeline, optionally under otelhttp) with a bare http.Client on loopback,
// in the same run:
//
//	go test -run XXX -bench 'Client|Overhead' -benchmem ./resilience
//
// BenchmarkClient_Ratio is the one to read on a shared machine: it
// interleaves the two, each side on its own lines. With the caller's
// context not cancelable, the no-failure path adds 3 allocations per
// request: the call's state (which holds the first attempt's URL, request
// and context, and a host-less URL put at the BaseAddress), the attempt context's Done channel, and net/http's
// goroutine watching that context (its child context cannot register
// with a context type of another package). With a cancelable caller it
// adds 6: the call, context.WithCancel's context and CancelFunc, its Done
// channel, and the children map net/http's child registers in. Each is
// needed while the attempt context must end when the body is closed, end
// with the caller's, and be cut by the attempt timeout: a cheaper context
// would break context.Cause or keep base transports' watchers alive past
// the response. BenchmarkPipelineOverhead measures the pipeline alone over
// a stub transport (3 of its 4 allocations are the stub's response).

func benchServer(b *testing.B) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "ok")
	}))
	b.Cleanup(srv.Close)
	return srv
}

func benchBase() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 64
	return t
}

func runClient(b *testing.B, c *http.Client, url string) {
	b.ReportAllocs()
	for b.Loop() {
		resp, err := c.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
	}
}

func BenchmarkClient_Bare(b *testing.B) {
	srv := benchServer(b)
	base := benchBase()
	defer base.CloseIdleConnections()
	runClient(b, &http.Client{Transport: base}, srv.URL+"/products/1")
}

func resilientTransport(b *testing.B, srv *httptest.Server, base http.RoundTripper) http.RoundTripper {
	return resilientTransportWith(b, srv, base, nil)
}

func resilientTransportWith(b *testing.B, srv *httptest.Server, base http.RoundTripper, modify func(*resilience.Options)) http.RoundTripper {
	return resilientTransportAt(b, srv, base, modify, nil)
}

// resilientTransportAt is resilientTransportWith with a BaseAddress.
func resilientTransportAt(b *testing.B, srv *httptest.Server, base http.RoundTripper, modify func(*resilience.Options), baseAddr *url.URL) http.RoundTripper {
	cfg := discovery.FromMap(map[string]string{"services__catalog__http__0": srv.URL})
	o := resilience.DefaultOptions()
	if modify != nil {
		modify(&o)
	}
	rt, err := resilience.NewTransport(base, &resilience.TransportConfig{Options: o, Resolver: discovery.NewResolver(cfg), Name: "catalog", BaseAddress: baseAddr})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = rt.Close() })
	return rt
}

func BenchmarkClient_Resilient(b *testing.B) {
	srv := benchServer(b)
	base := benchBase()
	defer base.CloseIdleConnections()
	runClient(b, &http.Client{Transport: resilientTransport(b, srv, base)}, "http://catalog/products/1")
}

func BenchmarkClient_BareOtel(b *testing.B) {
	srv := benchServer(b)
	base := benchBase()
	defer base.CloseIdleConnections()
	runClient(b, &http.Client{Transport: otelhttp.NewTransport(base)}, srv.URL+"/products/1")
}

func BenchmarkClient_ResilientOtel(b *testing.B) {
	srv := benchServer(b)
	base := benchBase()
	defer base.CloseIdleConnections()
	runClient(b, &http.Client{Transport: otelhttp.NewTransport(resilientTransport(b, srv, base))}, "http://catalog/products/1")
}

// BenchmarkClient_Ratio runs a bare http.Client and the resilient one
// (Resolver + standard pipeline, same kind of base transport) as
// sub-benchmarks side by side, in interleaved rounds, each reported with
// its own ns/op and allocs/op; the log line gives the median ratio.
//
// "background" sends requests with context.Background(), the cheapest
// case for the bare client; "request-context" sends them with a
// cancelable context, as a handler passing r.Context() on does, which is
// how service-to-service calls are made. "deadline" sends them with a
// deadline sooner than the attempt timeout. "base-address" is the
// resilient client sending host-less URLs ("/products/1") to its
// BaseAddress http://catalog: no allocation of its own, and one fewer
// than "resilient" (a request with no Host spares http.Client the copy
// of its URL for the cookie jar).
//
//	go test -run '^$' -bench Client_Ratio -benchtime 2000x ./resilience
func BenchmarkClient_Ratio(b *testing.B) {
	b.Run("background", func(b *testing.B) { benchRatio(b, context.Background()) })
	b.Run("request-context", func(b *testing.B) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		benchRatio(b, ctx)
	})
	// A deadline sooner than the attempt timeout bounds the attempt
	// itself: the pipeline then sends on the caller's context, with no
	// context or timer of its own.
	b.Run("deadline", func(b *testing.B) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
		defer cancel()
		benchRatioWith(b, ctx, func(o *resilience.Options) {
			o.AttemptTimeout, o.TotalRequestTimeout = 2*time.Hour, 2*time.Hour
			o.CircuitBreaker.SamplingDuration = 4 * time.Hour
		})
	})
}

func benchRatio(b *testing.B, ctx context.Context) { benchRatioWith(b, ctx, nil) }

func benchRatioWith(b *testing.B, ctx context.Context, modify func(*resilience.Options)) {
	srv := benchServer(b)
	bareBase, resBase := benchBase(), benchBase()
	defer bareBase.CloseIdleConnections()
	defer resBase.CloseIdleConnections()
	bare := &http.Client{Transport: bareBase}
	res := &http.Client{Transport: resilientTransportWith(b, srv, resBase, modify)}
	atBase := &http.Client{Transport: resilientTransportAt(b, srv, resBase, modify, &url.URL{Scheme: "http", Host: "catalog"})}
	get := func(c *http.Client, url string) func(*testing.B) {
		return func(b *testing.B) {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				b.Fatal(err)
			}
			resp, err := c.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
		}
	}
	benchratio.Compare(b, 3,
		benchratio.Side{Name: "bare", Op: get(bare, srv.URL+"/products/1")},
		benchratio.Side{Name: "resilient", Op: get(res, "http://catalog/products/1")},
		benchratio.Side{Name: "base-address", Op: get(atBase, "/products/1")},
	)
}
