package servicedefaults

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/goaspire/goaspire/discovery"
)

// serverLikeWriter discards like discardWriter but has the optional
// interfaces of net/http's own ResponseWriter, so httpsnoop (in otelhttp)
// wraps it as it wraps a real server's.
type serverLikeWriter struct{ discardWriter }

func (w *serverLikeWriter) Flush()                                       {}
func (w *serverLikeWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) { return nil, nil, nil }
func (w *serverLikeWriter) ReadFrom(r io.Reader) (int64, error)          { return io.Copy(io.Discard, r) }
func (w *serverLikeWriter) WriteString(s string) (int, error)            { return len(s), nil }
func (w *serverLikeWriter) CloseNotify() <-chan bool                     { return nil }

// BenchmarkServerWriter is BenchmarkServer with a ResponseWriter that
// has the optional interfaces of the server's (Flusher, Hijacker,
// ReaderFrom, ...): the cost a real request pays, the panic-recovery
// writer included.
//
//	go test -run '^$' -bench BenchmarkServerWriter -benchmem ./servicedefaults
func BenchmarkServerWriter(b *testing.B) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, r.PathValue("id"))
	})
	run := func(b *testing.B, h http.Handler) {
		req := httptest.NewRequest("GET", "/items/42", nil)
		req.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
		w := &serverLikeWriter{discardWriter{h: http.Header{}}}
		b.ReportAllocs()
		for b.Loop() {
			clear(w.h)
			h.ServeHTTP(w, req)
		}
	}
	app, _ := Add(context.Background(), mux, WithConfig(discovery.FromMap(nil)), WithLogWriter(io.Discard))
	b.Cleanup(func() { _ = app.Shutdown(context.Background()) })
	b.Run("bare", func(b *testing.B) { run(b, mux) })
	b.Run("noop", func(b *testing.B) { run(b, app.Handler()) })
	b.Run("sdk", func(b *testing.B) {
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(discardExporter{}))
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
		b.Cleanup(func() { _ = tp.Shutdown(context.Background()); _ = mp.Shutdown(context.Background()) })
		app.tel.tp, app.tel.mp, app.tel.tracing, app.tel.metering = tp, mp, true, true
		run(b, app.instrument(app.mux))
	})
}
