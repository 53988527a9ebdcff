package aspirepostgres_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/integrations/aspirepostgres"
	"github.com/goaspire/goaspire/internal/otlptest"
	"github.com/goaspire/goaspire/internal/syncbuf"
	"github.com/goaspire/goaspire/servicedefaults"
	"github.com/goaspire/goaspire/testserver"
)

// TestShutdownBoundedByHeldConnection: a handler that holds a pool
// connection past the grace period makes the pool's close hang; Serve
// (and the Shutdown it calls) still returns by the flush deadline with a
// HookTimeoutError naming the pool's close, and the telemetry made before
// arrives at the collector.
//
// The App is made with Add, not servicedefaultstest: its Shutdown fails
// on purpose.
func TestShutdownBoundedByHeldConnection(t *testing.T) {
	pg := testserver.NewPostgres(t)
	rcv := otlptest.Start(t)
	values := exporting(rcv, "grpc",
		"OTEL_SERVICE_NAME", "stuck",
		"ConnectionStrings__db", pg.ConnectionString(),
		"Aspire__ServiceDefaults__ShutdownTimeout", "200ms",
		"Aspire__ServiceDefaults__FlushTimeout", "2s",
	)
	mux := http.NewServeMux()
	logs := &syncbuf.Buffer{}
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
	pool, err := aspirepostgres.Pool(context.Background(), app, "db")
	if err != nil {
		t.Fatal(err)
	}
	held := make(chan struct{})
	mux.HandleFunc("GET /hold", func(w http.ResponseWriter, r *http.Request) {
		conn, err := pool.Acquire(context.Background())
		if err != nil {
			t.Error(err)
			close(held)
			return
		}
		defer conn.Release()
		close(held)
		<-release // ignores the request's cancellation
	})

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- app.Serve(ctx, ln) }()
	resp, err := http.Get(base + "/ok")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /ok = %d", resp.StatusCode)
	}
	_, span := app.Tracer("test").Start(context.Background(), "made before shutdown")
	span.End()
	go func() {
		if resp, err := http.Get(base + "/hold"); err == nil {
			resp.Body.Close()
		}
	}()
	<-held
	cancel()

	var serveErr error
	select {
	case serveErr = <-served:
	case <-time.After(hangGuard):
		t.Fatalf("Serve had not returned %v after shutdown began; logs:\n%s", hangGuard, logs)
	}
	var hte *servicedefaults.HookTimeoutError
	if !errors.As(serveErr, &hte) || hte.Hook != `closing postgres "db"` || !errors.Is(serveErr, context.DeadlineExceeded) {
		t.Fatalf("Serve = %v, want a HookTimeoutError for the pool's close", serveErr)
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
