package servicedefaults_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/internal/poll"
	"github.com/goaspire/goaspire/internal/syncbuf"
	"github.com/goaspire/goaspire/servicedefaults"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer = syncbuf.Buffer

// restoreGlobals puts slog's default logger back when the test ends,
// since Add replaces it. (The otel globals are left pointing at the last
// App's providers, which are no-ops once shut down.)
func restoreGlobals(t testing.TB) {
	logger := slog.Default()
	t.Cleanup(func() { slog.SetDefault(logger) })
}

// newApp calls Add with exactly values as configuration, logging to the
// returned buffer, and shuts the App down when the test ends.
func newApp(t testing.TB, values map[string]string, mux http.Handler, opts ...servicedefaults.Option) (*servicedefaults.App, *syncBuffer) {
	t.Helper()
	restoreGlobals(t)
	logs := &syncBuffer{}
	opts = append([]servicedefaults.Option{
		servicedefaults.WithConfig(discovery.FromMap(values)),
		servicedefaults.WithLogWriter(logs),
	}, opts...)
	app, err := servicedefaults.Add(context.Background(), mux, opts...)
	if err != nil {
		t.Fatalf("Add: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := app.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return app, logs
}

// serve runs app.Serve on a loopback listener and returns the base URL.
// The server stops when the test ends; Serve's result is checked then.
func serve(t testing.TB, app *servicedefaults.App) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- app.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

func get(t testing.TB, client *http.Client, url string) (int, string) {
	t.Helper()
	return do(t, client, "GET", url)
}

func do(t testing.TB, client *http.Client, method, url string) (int, string) {
	t.Helper()
	if client == nil {
		client = http.DefaultClient
	}
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, 10*time.Second, what, cond)
}
