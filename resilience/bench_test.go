package resilience_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/resilience"
)

// The benchmarks compare the full client stack with a bare http.Client on
// loopback, in the same run: go test -bench Client -benchmem ./resilience

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
	cfg := discovery.FromMap(map[string]string{"services__catalog__http__0": srv.URL})
	rt, err := resilience.NewTransport(base, resilience.WithResolver(discovery.NewResolver(cfg)), resilience.WithName("catalog"))
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

// BenchmarkClient_Ratio alternates a bare request and a resilient one in
// the same loop, so load on the machine affects both alike, and reports
// each one's time and their ratio.
func BenchmarkClient_Ratio(b *testing.B) {
	srv := benchServer(b)
	bareBase, resBase := benchBase(), benchBase()
	defer bareBase.CloseIdleConnections()
	defer resBase.CloseIdleConnections()
	bare := &http.Client{Transport: bareBase}
	res := &http.Client{Transport: resilientTransport(b, srv, resBase)}
	get := func(c *http.Client, url string) time.Duration {
		start := time.Now()
		resp, err := c.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return time.Since(start)
	}
	// Warm both connection pools.
	get(bare, srv.URL)
	get(res, "http://catalog/")
	var tb, tr time.Duration
	for i := 0; b.Loop(); i++ {
		if i%2 == 0 {
			tb += get(bare, srv.URL+"/products/1")
			tr += get(res, "http://catalog/products/1")
		} else {
			tr += get(res, "http://catalog/products/1")
			tb += get(bare, srv.URL+"/products/1")
		}
	}
	n := float64(b.N)
	b.ReportMetric(float64(tb.Nanoseconds())/n, "bare-ns/req")
	b.ReportMetric(float64(tr.Nanoseconds())/n, "resilient-ns/req")
	b.ReportMetric(float64(tr)/float64(tb), "ratio")
}
