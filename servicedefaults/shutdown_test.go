package servicedefaults_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/internal/otlptest"
	"github.com/goaspire/goaspire/servicedefaults"
)

// hangGuard bounds waits for something that must happen on its own; it is
// far above any deadline the tests set, so it only catches hangs.
const hangGuard = 60 * time.Second

// exportedAtShutdown is the configuration of an App exporting to rcv over
// gRPC whose processors never export on their own during a test, so what
// arrives was flushed by Shutdown.
func exportedAtShutdown(rcv *otlptest.Receiver, extra map[string]string) map[string]string {
	m := map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": rcv.GRPCEndpoint,
		"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
		"OTEL_SERVICE_NAME":           "stuck",
		"OTEL_BSP_SCHEDULE_DELAY":     "600000",
		"OTEL_BLRP_SCHEDULE_DELAY":    "600000",
		"OTEL_METRIC_EXPORT_INTERVAL": "600000",
	}
	maps.Copy(m, extra)
	return m
}

// TestShutdownBoundedByStuckHooks: whatever a client's close does, Serve
// (and the Shutdown it calls) returns by the flush deadline, reports the
// stuck close, and the telemetry made before arrives at the collector.
func TestShutdownBoundedByStuckHooks(t *testing.T) {
	tests := []struct {
		name string
		// stick makes one shutdown hook block until release is closed
		// and returns the config it needs (set before Add) through
		// values, then is called again with the App to arrange the hang.
		values func(t *testing.T) map[string]string
		stick  func(t *testing.T, app *servicedefaults.App, mux *http.ServeMux, base string, release <-chan struct{})
		hook   string // the HookTimeoutError's Hook
	}{
		{
			name:   "hook never returns",
			values: func(*testing.T) map[string]string { return nil },
			stick: func(t *testing.T, app *servicedefaults.App, _ *http.ServeMux, _ string, release <-chan struct{}) {
				app.OnShutdown(func(context.Context) error { <-release; return nil }) // ignores its ctx
			},
			hook: "OnShutdown hook 1",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			restoreGlobals(t)
			rcv := otlptest.Start(t)
			values := exportedAtShutdown(rcv, tt.values(t))
			values["Aspire__ServiceDefaults__ShutdownTimeout"] = "200ms"
			values["Aspire__ServiceDefaults__FlushTimeout"] = "2s"
			mux := http.NewServeMux()
			logs := &syncBuffer{}
			app, err := servicedefaults.Add(context.Background(), mux,
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
			base := "http://" + ln.Addr().String()
			ctx, cancel := context.WithCancel(context.Background())
			served := make(chan error, 1)
			go func() { served <- app.Serve(ctx, ln) }()
			if code, _ := get(t, nil, base+"/ok"); code != 200 {
				t.Fatalf("GET /ok = %d", code)
			}
			_, span := app.Tracer("test").Start(context.Background(), "made before shutdown")
			span.End()

			tt.stick(t, app, mux, base, release)
			cancel()

			var serveErr error
			select {
			case serveErr = <-served:
			case <-time.After(hangGuard):
				t.Fatalf("Serve had not returned %v after shutdown began; logs:\n%s", hangGuard, logs)
			}
			var hte *servicedefaults.HookTimeoutError
			if !errors.As(serveErr, &hte) || hte.Hook != tt.hook || !errors.Is(serveErr, context.DeadlineExceeded) {
				t.Fatalf("Serve = %v, want a HookTimeoutError for %q", serveErr, tt.hook)
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
		})
	}
}

// TestShutdownWaitsForOwnContext: a Shutdown called while another is in
// progress returns when its own ctx ends.
func TestShutdownWaitsForOwnContext(t *testing.T) {
	app, _ := newApp(t, nil, nil)
	release, entered := make(chan struct{}), make(chan struct{})
	app.OnShutdown(func(context.Context) error { close(entered); <-release; return nil })
	first := make(chan error, 1)
	go func() { first <- app.Shutdown(context.Background()) }()
	<-entered
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	second := make(chan error, 1)
	go func() { second <- app.Shutdown(ctx) }()
	select {
	case err := <-second:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Shutdown during another = %v, want context.Canceled", err)
		}
	case <-time.After(hangGuard):
		t.Error("Shutdown during another ignored its own context")
	}
	close(release)
	if err := <-first; err != nil {
		t.Errorf("first Shutdown = %v", err)
	}
}

// TestHookPanicIsError: a panicking hook is an error naming it, and the
// hooks before it still run.
func TestHookPanicIsError(t *testing.T) {
	restoreGlobals(t)
	app, err := servicedefaults.Add(context.Background(), nil,
		servicedefaults.WithConfig(discovery.FromMap(nil)), servicedefaults.WithLogWriter(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	ran := false
	app.OnShutdown(func(context.Context) error { ran = true; return nil })
	app.OnShutdown(func(context.Context) error { panic("boom") })
	err = app.Shutdown(context.Background())
	if err == nil || !strings.Contains(err.Error(), "OnShutdown hook 2") || !strings.Contains(err.Error(), "boom") {
		t.Errorf("Shutdown = %v, want the panic of hook 2", err)
	}
	if !ran {
		t.Error("the hook registered before the panicking one did not run")
	}
}

// TestHealthUnhealthyDuringShutdown: from the moment shutdown begins,
// /health answers 503 (with the report when detailed) while /alive and
// the service's routes keep working during Aspire:ServiceDefaults:
// ShutdownDelay; Shutdown ends the delay.
func TestHealthUnhealthyDuringShutdown(t *testing.T) {
	tests := []struct {
		name     string
		detailed string
		body     string
	}{
		{"status word", "false", "Unhealthy"},
		{"detailed", "true", `"shutdown":{"status":"Unhealthy","description":"the service is shutting down"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mux := http.NewServeMux()
			mux.HandleFunc("GET /ok", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })
			app, _ := newApp(t, map[string]string{
				"Aspire__ServiceDefaults__ShutdownDelay":                "1h",
				"Aspire__ServiceDefaults__HealthChecks__DetailedOutput": tt.detailed,
				"Aspire__ServiceDefaults__HealthChecks__CacheDuration":  "1h", // a cached Healthy must not hide the flip
			}, mux)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			base := "http://" + ln.Addr().String()
			ctx, cancel := context.WithCancel(context.Background())
			served := make(chan error, 1)
			go func() { served <- app.Serve(ctx, ln) }()
			if code, _ := get(t, nil, base+"/health"); code != 200 {
				t.Fatalf("GET /health before shutdown = %d", code)
			}

			cancel() // as SIGTERM would
			waitFor(t, "/health to answer 503", func() bool {
				resp, err := http.Get(base + "/health")
				if err != nil {
					return false
				}
				resp.Body.Close()
				return resp.StatusCode == http.StatusServiceUnavailable
			})
			if code, body := get(t, nil, base+"/health"); code != 503 || !strings.Contains(body, tt.body) {
				t.Errorf("GET /health during the delay = %d %q, want 503 with %q", code, body, tt.body)
			}
			if code, body := get(t, nil, base+"/ok"); code != 200 || body != "ok" {
				t.Errorf("GET /ok during the delay = %d %q", code, body)
			}
			if code, _ := get(t, nil, base+"/alive"); code != 200 {
				t.Errorf("GET /alive during the delay = %d", code)
			}

			sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer scancel()
			if err := app.Shutdown(sctx); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-served:
				if err != nil {
					t.Errorf("Serve = %v", err)
				}
			case <-time.After(hangGuard):
				t.Fatal("Shutdown did not end the shutdown delay")
			}
		})
	}
}

// TestHealthUnhealthyAfterShutdownWithoutServe: an App served by the
// user's own server flips too.
func TestHealthUnhealthyAfterShutdownWithoutServe(t *testing.T) {
	app, _ := newApp(t, nil, nil)
	h := app.Handler()
	check := func(want int) {
		t.Helper()
		req, _ := http.NewRequest("GET", "/health", nil)
		rec := &recorder{h: http.Header{}}
		h.ServeHTTP(rec, req)
		if rec.code != want {
			t.Errorf("GET /health = %d, want %d", rec.code, want)
		}
	}
	check(200)
	if err := app.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	check(503)
}

type recorder struct {
	h    http.Header
	code int
}

func (r *recorder) Header() http.Header { return r.h }
func (r *recorder) Write(p []byte) (int, error) {
	if r.code == 0 {
		r.code = 200
	}
	return len(p), nil
}
func (r *recorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
}

func TestNegativeShutdownDurations(t *testing.T) {
	tests := []struct {
		name   string
		values map[string]string
		opts   []servicedefaults.Option
		want   string
	}{
		{"ShutdownTimeout key", map[string]string{"Aspire__ServiceDefaults__ShutdownTimeout": "-00:00:01"}, nil, "Aspire:ServiceDefaults:ShutdownTimeout"},
		{"FlushTimeout key", map[string]string{"Aspire__ServiceDefaults__FlushTimeout": "-1s"}, nil, "Aspire:ServiceDefaults:FlushTimeout"},
		{"ShutdownDelay key", map[string]string{"Aspire__ServiceDefaults__ShutdownDelay": "-1s"}, nil, "Aspire:ServiceDefaults:ShutdownDelay"},
		{"WithShutdownTimeout", nil, []servicedefaults.Option{servicedefaults.WithShutdownTimeout(-time.Second)}, "WithShutdownTimeout"},
		{"WithFlushTimeout", nil, []servicedefaults.Option{servicedefaults.WithFlushTimeout(-time.Second)}, "WithFlushTimeout"},
		{"WithShutdownDelay", nil, []servicedefaults.Option{servicedefaults.WithShutdownDelay(-time.Second)}, "WithShutdownDelay"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			restoreGlobals(t)
			opts := append([]servicedefaults.Option{
				servicedefaults.WithConfig(discovery.FromMap(tt.values)),
				servicedefaults.WithLogWriter(io.Discard),
			}, tt.opts...)
			app, err := servicedefaults.Add(context.Background(), nil, opts...)
			if err == nil {
				_ = app.Shutdown(context.Background())
				t.Fatal("Add accepted a negative duration")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Add = %v, want an error naming %s", err, tt.want)
			}
		})
	}
}

const (
	secondSignalEnv    = "GOASPIRE_SERVICEDEFAULTS_SECOND_SIGNAL_CHILD"
	secondSignalMarker = "sending the second SIGTERM"
)

// TestSecondSignalChild is the service TestSecondSignal runs in a child
// process. With a request stuck in flight and a long grace period, it
// sends itself SIGTERM, waits until the shutdown has begun, and sends
// SIGTERM again: the process must exit at once.
func TestSecondSignalChild(t *testing.T) {
	mode := os.Getenv(secondSignalEnv)
	if mode == "" {
		t.Skip("run by TestSecondSignal in a child process")
	}
	ctx := context.Background()
	if mode == "notifycontext" { // as the README's main does
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
		defer stop()
	}
	began := make(chan struct{})
	var once sync.Once
	logs := lineWatcher{w: os.Stderr, msg: `"msg":"shutting down"`, seen: func() { once.Do(func() { close(began) }) }}
	mux := http.NewServeMux()
	app, err := servicedefaults.Add(ctx, mux, servicedefaults.WithConfig(discovery.FromMap(map[string]string{
		"Aspire__ServiceDefaults__ShutdownTimeout": "10m",
	})), servicedefaults.WithLogWriter(&logs))
	if err != nil {
		t.Fatal(err)
	}
	stuck := make(chan struct{})
	mux.HandleFunc("GET /stuck", func(w http.ResponseWriter, r *http.Request) {
		close(stuck)
		select {} // in flight for the whole grace period
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		if resp, err := http.Get("http://" + ln.Addr().String() + "/stuck"); err == nil {
			resp.Body.Close()
		}
	}()
	go func() {
		<-stuck
		_ = signalSelf(syscall.SIGTERM)
		<-began
		// Still running: the first signal was not taken for a second one.
		time.Sleep(100 * time.Millisecond) // room for a wrong exit to happen
		fmt.Fprintln(os.Stderr, secondSignalMarker)
		_ = signalSelf(syscall.SIGTERM)
	}()
	err = app.Serve(ctx, ln)
	t.Fatalf("Serve returned (%v): the second SIGTERM did not exit the process", err)
}

// signalSelf sends sig to this process.
func signalSelf(sig os.Signal) error {
	p, err := os.FindProcess(os.Getpid())
	if err != nil {
		return err
	}
	return p.Signal(sig)
}

// lineWatcher copies to w and calls seen when a write contains msg.
type lineWatcher struct {
	w    io.Writer
	msg  string
	seen func()
}

func (l *lineWatcher) Write(p []byte) (int, error) {
	if strings.Contains(string(p), l.msg) {
		defer l.seen()
	}
	return l.w.Write(p)
}

// TestSecondSignal: a second SIGTERM during the grace period exits the
// process at once with status 143 after logging, whether main passes a
// plain context or one from signal.NotifyContext (whose handler would
// otherwise swallow the second signal).
func TestSecondSignal(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	for _, mode := range []string{"plain", "notifycontext"} {
		t.Run(mode, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestSecondSignalChild$", "-test.count=1", "-test.v")
			cmd.Env = []string{secondSignalEnv + "=" + mode}
			if dir := os.Getenv("GOCOVERDIR"); dir != "" {
				cmd.Env = append(cmd.Env, "GOCOVERDIR="+dir)
			}
			stderr, err := cmd.StderrPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stdout strings.Builder
			cmd.Stdout = &stdout
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			var all []string
			lines := readLines(bufio.NewScanner(stderr))
			exited := make(chan error, 1)
			go func() {
				for l := range lines {
					all = append(all, l)
				}
				exited <- cmd.Wait()
			}()
			select {
			case err = <-exited:
			case <-time.After(hangGuard):
				_ = cmd.Process.Kill()
				<-exited
				t.Fatalf("child still running %v after its second SIGTERM:\n%s\n%s", hangGuard, stdout.String(), strings.Join(all, "\n"))
			}
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 128+int(syscall.SIGTERM) {
				t.Fatalf("child exited with %v, want status %d:\n%s\n%s", err, 128+int(syscall.SIGTERM), stdout.String(), strings.Join(all, "\n"))
			}
			logged := strings.Join(all, "\n")
			marker := strings.Index(logged, secondSignalMarker)
			exiting := strings.Index(logged, `"msg":"second signal during shutdown: exiting at once"`)
			if marker < 0 || exiting < marker {
				t.Errorf("child did not log the second signal after sending it:\n%s", logged)
			}
			if n := strings.Count(logged, `"msg":"shutting down"`); n != 1 {
				t.Errorf("child logged %d shutdowns, want 1:\n%s", n, logged)
			}
		})
	}
}
