// Package servicedefaultstest makes Apps for tests: configuration from a
// map instead of the process environment, no process-wide state (no
// OpenTelemetry globals, slog's default logger left alone), logs kept in
// memory, the HTTP server on an ephemeral loopback port, and everything
// shut down by t.Cleanup.
//
// With package testserver, which starts throwaway Postgres, Redis,
// RabbitMQ and NATS servers as processes, a test exercises a handler
// against the same clients the service opens in production (the whole
// test, with its handler, is this package's handler_test.go):
//
//	func TestGetProduct(t *testing.T) {
//		pg := testserver.NewPostgres(t)
//		rd := testserver.NewRedis(t)
//		ctx := context.Background()
//		if err := pg.Exec(ctx, "CREATE TABLE products (id text PRIMARY KEY, name text NOT NULL)"); err != nil {
//			t.Fatal(err)
//		}
//
//		mux := http.NewServeMux()
//		app := servicedefaultstest.NewUnstarted(t, mux, map[string]string{
//			"ConnectionStrings:db":    pg.ConnectionString(),
//			"ConnectionStrings:cache": rd.ConnectionString(),
//		})
//		db, err := aspirepostgres.DB(ctx, app, "db")
//		if err != nil {
//			t.Fatal(err)
//		}
//		products, err := aspireredis.NewCache[Product](ctx, app, "cache", "product")
//		if err != nil {
//			t.Fatal(err)
//		}
//		mux.Handle("/", newHandler(db, products))
//		app.Start()
//
//		resp, err := http.Get(app.URL + "/products/1")
//		// ...
//	}
//
// The package imports testing: use it from _test.go files only.
package servicedefaultstest

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/internal/syncbuf"
	"github.com/goaspire/goaspire/servicedefaults"
)

// ShutdownTimeout bounds the Shutdown that t.Cleanup runs.
const ShutdownTimeout = 10 * time.Second

// App is a servicedefaults.App made for a test.
type App struct {
	*servicedefaults.App

	// URL is the base URL of the App's HTTP server ("http://127.0.0.1:port"),
	// set by Start; empty before.
	URL string

	// Logs holds what the App logged (text records, as in Development).
	Logs *LogBuffer

	tb      testing.TB
	started bool
}

// New is NewUnstarted followed by Start: the App already serves at app.URL.
func New(tb testing.TB, h http.Handler, values map[string]string, opts ...servicedefaults.Option) *App {
	tb.Helper()
	a := NewUnstarted(tb, h, values, opts...)
	a.Start()
	return a
}

// NewUnstarted makes an App serving h with exactly values as its
// configuration (keys with ':' or "__"; see discovery.FromMap), without
// globals (servicedefaults.WithoutGlobals), logging to app.Logs, and not
// yet serving, so that a test can open clients or register workers first.
// opts come after the package's own and may override them (a WithConfig
// of your own replaces values). The App is shut down when the test ends,
// within ShutdownTimeout, and a failed Shutdown fails the test; when the
// test has failed, the App's logs are written to its log.
//
// A bad configuration fails the test at once, with Add's error.
func NewUnstarted(tb testing.TB, h http.Handler, values map[string]string, opts ...servicedefaults.Option) *App {
	tb.Helper()
	logs := &LogBuffer{}
	opts = append([]servicedefaults.Option{
		servicedefaults.WithConfig(discovery.FromMap(values)),
		servicedefaults.WithLogWriter(logs),
		servicedefaults.WithoutGlobals(),
	}, opts...)
	app, err := servicedefaults.Add(context.Background(), h, opts...)
	if err != nil {
		tb.Fatalf("servicedefaultstest: Add: %v", err)
	}
	a := &App{App: app, Logs: logs, tb: tb}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
		defer cancel()
		if err := app.Shutdown(ctx); err != nil {
			tb.Errorf("servicedefaultstest: Shutdown: %v", err)
		}
		if tb.Failed() {
			tb.Logf("servicedefaultstest: the App's logs:\n%s", logs.String())
		}
	})
	return a
}

// Start serves the App on a free port of 127.0.0.1 and sets URL. Serving
// stops when the test ends, before the App shuts down; an error from Serve
// fails the test then. Start panics if called twice.
func (a *App) Start() {
	a.tb.Helper()
	if a.started {
		panic("servicedefaultstest: App.Start called twice")
	}
	a.started = true
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		a.tb.Fatalf("servicedefaultstest: listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx, ln) }()
	a.URL = "http://" + ln.Addr().String()
	a.tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			a.tb.Errorf("servicedefaultstest: Serve: %v", err)
		}
	})
}

// LogBuffer collects what an App logs: Write appends, String returns what
// was logged so far. It is safe for concurrent use.
type LogBuffer struct{ syncbuf.Buffer }
