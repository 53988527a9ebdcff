package aspireredis_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/integrations/aspireredis"
	"github.com/goaspire/goaspire/internal/otlptest"
	"github.com/goaspire/goaspire/internal/syncbuf"
	"github.com/goaspire/goaspire/servicedefaults"
	"github.com/goaspire/goaspire/testserver"
)

// TestShutdownBoundedByStuckCacheLoader: a cache's Close waits for its
// loads, and a loader that ignores its ctx holds it: Serve (and the
// Shutdown it calls) still returns by the flush deadline, reports the
// cache's close as the stuck hook, and the telemetry made before arrives
// at the collector.
func TestShutdownBoundedByStuckCacheLoader(t *testing.T) {
	rs := testserver.NewRedis(t)
	rcv := otlptest.Start(t)
	values := exportTo(rcv, "grpc",
		"OTEL_SERVICE_NAME", "stuck",
		"ConnectionStrings__cache", rs.ConnectionString(),
		"Aspire__ServiceDefaults__ShutdownTimeout", "200ms",
		"Aspire__ServiceDefaults__FlushTimeout", "2s",
	)
	mux := http.NewServeMux()
	logs := &syncbuf.Buffer{}
	// Not servicedefaultstest: its cleanup fails the test on Shutdown's
	// error, which this test causes.
	app, err := servicedefaults.Add(context.Background(), mux, servicedefaults.WithoutGlobals(),
		servicedefaults.WithConfig(discovery.FromMap(values)), servicedefaults.WithLogWriter(logs))
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // lets the abandoned goroutines end

	mux.HandleFunc("GET /ok", func(w http.ResponseWriter, r *http.Request) {
		app.Logger().InfoContext(r.Context(), "served before shutdown")
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- app.Serve(ctx, ln) }()
	resp, err := http.Get("http://" + ln.Addr().String() + "/ok")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /ok = %d", resp.StatusCode)
	}
	_, span := app.Tracer("test").Start(context.Background(), "made before shutdown")
	span.End()

	products, err := aspireredis.NewCache[product](context.Background(), app, "cache", "product")
	if err != nil {
		t.Fatal(err)
	}
	loading := make(chan struct{})
	go func() {
		_, _ = products.GetOrLoad(context.Background(), "1", func(context.Context) (product, error) {
			close(loading)
			<-release // ignores its ctx
			return product{Name: "late"}, nil
		})
	}()
	<-loading
	cancel()

	var serveErr error
	select {
	case serveErr = <-served:
	case <-time.After(hangGuard):
		t.Fatalf("Serve had not returned %v after shutdown began; logs:\n%s", hangGuard, logs)
	}
	const hook = `closing cache "cache/product"`
	var hte *servicedefaults.HookTimeoutError
	if !errors.As(serveErr, &hte) || hte.Hook != hook || !errors.Is(serveErr, context.DeadlineExceeded) {
		t.Fatalf("Serve = %v, want a HookTimeoutError for %q", serveErr, hook)
	}
	for _, name := range []string{"made before shutdown", "GET /ok"} {
		if _, ok := rcv.SpanNamed(name); !ok {
			t.Errorf("span %q did not reach the collector; got %v", name, spanNames(rcv))
		}
	}
	var servedLog, abandonedLog bool
	for _, l := range rcv.Logs() {
		switch l.Record.GetBody().GetStringValue() {
		case "served before shutdown":
			servedLog = true
		case "shutdown hook abandoned at the deadline":
			abandonedLog = true
		}
	}
	if !servedLog || !abandonedLog {
		t.Errorf("log records at the collector: served %v, abandoned %v", servedLog, abandonedLog)
	}
	if _, ok := rcv.MetricNamed("http.server.request.duration"); !ok {
		t.Error("metrics were not flushed")
	}
	// Later calls return the first call's result.
	if err := app.Shutdown(context.Background()); !errors.As(err, &hte) {
		t.Errorf("second Shutdown = %v", err)
	}
}
