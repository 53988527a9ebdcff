package resilience_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/resilience"
)

// The benchmarks compare the full client stack (Resolver + standard
// pipeline, optionally under otelhttp) with a bare http.Client on loopback,
// in the same run:
//
//	go test -run XXX -bench 'Client|Overhead' -benchmem ./resilience
//
// BenchmarkClient_Ratio is the one to read on a shared machine: it
// interleaves the two and reports wall and CPU time ratios. The no-failure
// path adds 9 allocations (about 1.2 KB) per request: the call's state,
// the attempt's request copy and resolved URL, its cancelable context and
// timer. BenchmarkPipelineOverhead measures the pipeline alone over a stub
// transport (3 of its 9 allocations are the stub's response).

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

// BenchmarkClient_Ratio alternates blocks of bare and resilient requests
// in the same loop, so load on the machine affects both alike, and
// reports each one's wall time and process CPU time (client and server
// together, from getrusage) per request, and their ratios. On a busy
// machine the CPU ratio is the steadier figure.
//
// "background" sends requests with context.Background(), the cheapest
// case for the bare client; "request-context" sends them with a
// cancelable context, as a handler passing r.Context() on does, which is
// how service-to-service calls are made.
func BenchmarkClient_Ratio(b *testing.B) {
	b.Run("background", func(b *testing.B) { benchRatio(b, context.Background()) })
	b.Run("request-context", func(b *testing.B) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		benchRatio(b, ctx)
	})
}

func benchRatio(b *testing.B, ctx context.Context) {
	srv := benchServer(b)
	bareBase, resBase := benchBase(), benchBase()
	defer bareBase.CloseIdleConnections()
	defer resBase.CloseIdleConnections()
	bare := &http.Client{Transport: bareBase}
	res := &http.Client{Transport: resilientTransport(b, srv, resBase)}
	bareURL, resURL := srv.URL+"/products/1", "http://catalog/products/1"
	get := func(c *http.Client, url string) {
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
	block := func(c *http.Client, url string, n int) (wall, cpu time.Duration) {
		w, u := time.Now(), cpuTime()
		for range n {
			get(c, url)
		}
		return time.Since(w), cpuTime() - u
	}
	// Warm both connection pools.
	block(bare, bareURL, 10)
	block(res, resURL, 10)
	var wb, wr, cb, cr time.Duration
	b.ResetTimer()
	for done, k := 0, 0; done < b.N; k++ {
		n := min(100, b.N-done)
		if k%2 == 0 {
			w, c := block(bare, bareURL, n)
			wb, cb = wb+w, cb+c
			w, c = block(res, resURL, n)
			wr, cr = wr+w, cr+c
		} else {
			w, c := block(res, resURL, n)
			wr, cr = wr+w, cr+c
			w, c = block(bare, bareURL, n)
			wb, cb = wb+w, cb+c
		}
		done += n
	}
	n := float64(b.N)
	b.ReportMetric(float64(wb.Nanoseconds())/n, "bare-ns/req")
	b.ReportMetric(float64(wr.Nanoseconds())/n, "resilient-ns/req")
	b.ReportMetric(float64(wr)/float64(wb), "ratio")
	b.ReportMetric(float64(cb.Nanoseconds())/n, "bare-cpu-ns/req")
	b.ReportMetric(float64(cr.Nanoseconds())/n, "resilient-cpu-ns/req")
	b.ReportMetric(float64(cr)/float64(cb), "cpu-ratio")
}

// cpuTime is the process's user and system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
