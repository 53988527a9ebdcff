package servicedefaults_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/goaspire/goaspire/internal/otlptest"
	"github.com/goaspire/goaspire/servicedefaults"
)

// getResult is the outcome of a GET started with getAsync.
type getResult struct {
	code int
	body string
	err  error
}

// getAsync sends a GET to url on its own goroutine and delivers the status,
// body and error on the returned channel, so a test can act while the
// request is in flight.
func getAsync(url string) <-chan getResult {
	resc := make(chan getResult, 1)
	go func() {
		resp, err := http.Get(url)
		if err != nil {
			resc <- getResult{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		resc <- getResult{resp.StatusCode, string(b), err}
	}()
	return resc
}

// TestServeDrainsInFlightRequests: when shutdown starts, the listener
// closes at once, the request in flight completes, and only then do the
// OnShutdown hooks run.
func TestServeDrainsInFlightRequests(t *testing.T) {
	mux := http.NewServeMux()
	app, _ := newApp(t, nil, mux, servicedefaults.WithShutdownTimeout(10*time.Second))
	started, release := make(chan struct{}), make(chan struct{})
	var handlerDone, hookRan atomic.Bool
	var hookSawHandlerDone atomic.Bool
	mux.HandleFunc("GET /slow", func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		handlerDone.Store(true)
		fmt.Fprint(w, "finished")
	})
	app.OnShutdown(func(context.Context) error {
		hookSawHandlerDone.Store(handlerDone.Load())
		hookRan.Store(true)
		return nil
	})

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	serveDone := make(chan error, 1)
	go func() { serveDone <- app.Serve(ctx, ln) }()

	resc := getAsync("http://" + addr + "/slow")
	<-started
	cancel() // as SIGTERM would

	// New connections are refused once shutdown has begun...
	waitFor(t, "the listener to close", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	if hookRan.Load() {
		t.Fatal("OnShutdown hooks ran while a request was in flight")
	}
	// ...while the request in flight completes.
	close(release)
	res := <-resc
	if res.err != nil || res.code != 200 || res.body != "finished" {
		t.Fatalf("in-flight request = %+v", res)
	}
	if err := <-serveDone; err != nil {
		t.Fatalf("Serve = %v, want nil after a clean shutdown", err)
	}
	if !hookRan.Load() || !hookSawHandlerDone.Load() {
		t.Fatal("hooks did not run after the drain")
	}
}

func TestServeGracePeriodExpires(t *testing.T) {
	mux := http.NewServeMux()
	app, _ := newApp(t, nil, mux, servicedefaults.WithShutdownTimeout(100*time.Millisecond))
	started := make(chan struct{})
	mux.HandleFunc("GET /stuck", func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done() // ends only when the connection is cut
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	serveDone := make(chan error, 1)
	go func() { serveDone <- app.Serve(ctx, ln) }()
	clientDone := make(chan error, 1)
	go func() {
		resp, err := http.Get("http://" + ln.Addr().String() + "/stuck")
		if err == nil {
			resp.Body.Close()
		}
		clientDone <- err
	}()
	<-started
	cancel()
	err = <-serveDone
	if err == nil || !strings.Contains(err.Error(), "grace period") {
		t.Fatalf("Serve = %v, want a grace period error", err)
	}
	if err := <-clientDone; err == nil {
		t.Fatal("the stuck request got a response")
	}
}

func TestShutdownStopsServe(t *testing.T) {
	app, _ := newApp(t, nil, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveDone := make(chan error, 1)
	go func() { serveDone <- app.Serve(context.Background(), ln) }()
	waitFor(t, "the server", func() bool {
		resp, err := http.Get("http://" + ln.Addr().String() + "/alive")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	if err := app.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-serveDone; err != nil {
		t.Fatalf("Serve = %v", err)
	}
	ln2, _ := net.Listen("tcp", "127.0.0.1:0")
	if err := app.Serve(context.Background(), ln2); !errors.Is(err, servicedefaults.ErrClosed) {
		t.Fatalf("Serve after Shutdown = %v, want ErrClosed", err)
	}
}

func TestRunListensOnPORT(t *testing.T) {
	app, logs := newApp(t, map[string]string{"PORT": "0"}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- app.Run(ctx) }()
	var addr string
	re := regexp.MustCompile(`"msg":"listening","addr":"[^"]*:(\d+)"`)
	waitFor(t, "the listening log line", func() bool {
		m := re.FindStringSubmatch(logs.String())
		if m != nil {
			addr = "127.0.0.1:" + m[1]
		}
		return m != nil
	})
	if code, body := get(t, nil, "http://"+addr+"/alive"); code != 200 || body != "Healthy" {
		t.Fatalf("GET /alive = %d %q", code, body)
	}
	cancel()
	if err := <-runDone; err != nil {
		t.Fatalf("Run = %v", err)
	}
}

func TestRunBadAddress(t *testing.T) {
	app, _ := newApp(t, map[string]string{"ASPNETCORE_URLS": "http://192.0.2.1:1"}, nil)
	if err := app.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "192.0.2.1:1") {
		t.Fatalf("Run = %v, want a listen error naming the address", err)
	}
}

const childEnv = "GOASPIRE_SERVICEDEFAULTS_SIGTERM_CHILD"

// TestSIGTERMChild is the service the SIGTERM test runs in a child
// process: Add with the real environment, one handler, Run.
func TestSIGTERMChild(t *testing.T) {
	if os.Getenv(childEnv) != "1" {
		t.Skip("run by TestSIGTERM in a child process")
	}
	mux := http.NewServeMux()
	app, err := servicedefaults.Add(context.Background(), mux)
	if err != nil {
		t.Fatal(err)
	}
	mux.HandleFunc("GET /slow", func(w http.ResponseWriter, r *http.Request) {
		app.Logger().InfoContext(r.Context(), "slow request started")
		time.Sleep(300 * time.Millisecond)
		fmt.Fprint(w, "done")
	})
	if err := app.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestSIGTERM runs a service in a child process, sends it SIGTERM while a
// request is in flight, and checks that the request completes, the
// process exits cleanly within the grace period, and its telemetry
// (exported only at shutdown, the batch delays being long) reaches the
// collector.
func TestSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	rcv := otlptest.Start(t)
	const grace = 10 * time.Second
	cmd := exec.Command(os.Args[0], "-test.run=^TestSIGTERMChild$", "-test.count=1", "-test.v")
	cmd.Env = []string{
		childEnv + "=1",
		"PORT=0",
		"OTEL_SERVICE_NAME=sigterm-child",
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + rcv.GRPCEndpoint,
		"OTEL_EXPORTER_OTLP_PROTOCOL=grpc",
		"OTEL_EXPORTER_OTLP_HEADERS=x-otlp-api-key=child-key",
		"OTEL_BSP_SCHEDULE_DELAY=600000",
		"OTEL_BLRP_SCHEDULE_DELAY=600000",
		"OTEL_METRIC_EXPORT_INTERVAL=600000",
		"Aspire__ServiceDefaults__ShutdownTimeout=" + grace.String(),
	}
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
	killed := false
	defer func() {
		if !killed {
			_ = cmd.Process.Kill() // the reader goroutine then sees EOF and reaps it
		}
	}()
	lines := readLines(bufio.NewScanner(stderr))
	var all []string
	next := func(msg string) map[string]any {
		t.Helper()
		timeout := time.After(30 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("child exited before logging %q:\n%s", msg, strings.Join(all, "\n"))
				}
				all = append(all, l)
				var rec map[string]any
				if json.Unmarshal([]byte(l), &rec) == nil && rec["msg"] == msg {
					return rec
				}
			case <-timeout:
				t.Fatalf("child did not log %q:\n%s", msg, strings.Join(all, "\n"))
			}
		}
	}
	listening := next("listening")
	_, port, err := net.SplitHostPort(listening["addr"].(string))
	if err != nil {
		t.Fatal(err)
	}

	resc := getAsync("http://127.0.0.1:" + port + "/slow")
	started := next("slow request started")
	if started["trace_id"] == nil {
		t.Errorf("request log without trace_id: %v", started)
	}
	sent := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if rec := next("shutting down"); rec["reason"] != "signal terminated" {
		t.Errorf("shutdown reason = %v", rec["reason"])
	}
	if res := <-resc; res.err != nil || res.code != 200 || res.body != "done" {
		t.Fatalf("in-flight request = %+v", res)
	}
	exited := make(chan error, 1)
	go func() {
		for l := range lines { // until the child closes stderr
			all = append(all, l)
		}
		exited <- cmd.Wait()
	}()
	select {
	case err = <-exited:
		killed = true
	case <-time.After(grace + 10*time.Second):
		t.Fatalf("child still running %v after SIGTERM", grace+10*time.Second)
	}
	if err != nil {
		t.Fatalf("child exited with %v:\n%s\n%s", err, stdout.String(), strings.Join(all, "\n"))
	}
	// Everything reached the collector: nothing counted as dropped.
	if out := strings.Join(all, "\n"); strings.Contains(out, "telemetry could not be exported") {
		t.Errorf("telemetry warning with a working collector:\n%s", out)
	}
	if elapsed := time.Since(sent); elapsed > grace {
		t.Errorf("child took %v to exit after SIGTERM, more than the %v grace period", elapsed, grace)
	}

	span, ok := rcv.SpanNamed("GET /slow")
	if !ok {
		t.Fatalf("the child's span was not flushed at exit; spans: %v", spanNames(rcv))
	}
	if got := otlptest.ResourceAttr(span.Resource, "service.name"); got != "sigterm-child" {
		t.Errorf("service.name = %q", got)
	}
	var logged bool
	for _, l := range rcv.Logs() {
		if l.Record.GetBody().GetStringValue() == "slow request started" {
			logged = string(l.Record.TraceId) == string(span.Span.TraceId)
		}
	}
	if !logged {
		t.Error("the child's log record was not flushed, or not correlated")
	}
	if _, ok := rcv.MetricNamed("http.server.request.duration"); !ok {
		t.Error("the child's metrics were not flushed")
	}
	for _, r := range rcv.Requests() {
		if r.Header.Get("x-otlp-api-key") != "child-key" {
			t.Errorf("%s export without the API key", r.Signal)
		}
	}
}
