package servicedefaults_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/internal/otlptest"
	"github.com/goaspire/goaspire/servicedefaults"
)

// logRecords parses the App's JSON console log.
func logRecords(t *testing.T, logs *syncBuffer) []map[string]any {
	t.Helper()
	var recs []map[string]any
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		recs = append(recs, m)
	}
	return recs
}

func recordsWithMsg(recs []map[string]any, msg string) []map[string]any {
	var out []map[string]any
	for _, r := range recs {
		if r["msg"] == msg {
			out = append(out, r)
		}
	}
	return out
}

// workerEntry runs the App's live checks and returns the worker's entry.
func workerEntry(t *testing.T, app *servicedefaults.App, name string) health.Entry {
	t.Helper()
	rep := app.Health().Run(context.Background(), health.Tagged(health.TagLive))
	for _, e := range rep.Entries {
		if e.Name == servicedefaults.WorkerCheckPrefix+name {
			return e
		}
	}
	t.Fatalf("no live health entry for worker %q in %+v", name, rep.Entries)
	return health.Entry{}
}

func TestWorkerRestartsAfterFailure(t *testing.T) {
	tests := []struct {
		name      string
		fail      func() error
		wantError string
		wantStack bool
	}{
		{"error", func() error { return errors.New("boom") }, "boom", false},
		{"panic", func() error { panic("kaboom") }, "panic: kaboom", true},
		{"panic with error", func() error { panic(errors.New("bad state")) }, "panic: bad state", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app, logs := newApp(t, nil, nil)
			var runs atomic.Int32
			third := make(chan struct{})
			app.Go("poller", func(ctx context.Context) error {
				if runs.Add(1) <= 2 {
					return tt.fail()
				}
				close(third)
				<-ctx.Done()
				return ctx.Err()
			}, servicedefaults.WorkerBackoff(time.Millisecond, 4*time.Millisecond))
			<-third
			if e := workerEntry(t, app, "poller"); e.Status != health.Healthy {
				t.Errorf("running again: health %s (%s), want Healthy", e.Status, e.Error)
			}
			if err := app.Shutdown(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got := runs.Load(); got != 3 {
				t.Errorf("runs = %d, want 3 (two failures, then restarted)", got)
			}
			failed := recordsWithMsg(logRecords(t, logs), "worker failed; restarting")
			if len(failed) != 2 {
				t.Fatalf("%d failure records, want 2; log:\n%s", len(failed), logs)
			}
			for i, r := range failed {
				if r["worker"] != "poller" || r["level"] != "ERROR" {
					t.Errorf("record %d: worker=%v level=%v", i, r["worker"], r["level"])
				}
				if r["error"] != tt.wantError {
					t.Errorf("record %d: error = %v, want %q", i, r["error"], tt.wantError)
				}
				if r["consecutive_failures"] != float64(i+1) {
					t.Errorf("record %d: consecutive_failures = %v, want %d", i, r["consecutive_failures"], i+1)
				}
				d, err := time.ParseDuration(r["restart_in"].(string))
				if err != nil || d <= 0 || d > 4*time.Millisecond {
					t.Errorf("record %d: restart_in = %v, want a backoff in (0, 4ms]", i, r["restart_in"])
				}
				stack, _ := r["stack"].(string)
				if hasStack := strings.Contains(stack, "workers_test.go"); hasStack != tt.wantStack {
					t.Errorf("record %d: stack logged = %v, want %v: %q", i, hasStack, tt.wantStack, stack)
				}
			}
		})
	}
}

func TestWorkerFinishedIsNotRestarted(t *testing.T) {
	app, logs := newApp(t, nil, nil)
	var runs atomic.Int32
	app.Go("once", func(context.Context) error { runs.Add(1); return nil }, servicedefaults.WorkerBackoff(time.Millisecond, time.Millisecond))
	waitFor(t, "the worker to finish", func() bool { return strings.Contains(logs.String(), "worker finished") })
	if e := workerEntry(t, app, "once"); e.Status != health.Healthy {
		t.Errorf("finished worker: health %s, want Healthy", e.Status)
	}
	if err := app.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := runs.Load(); got != 1 {
		t.Errorf("runs = %d, want 1", got)
	}
}

func TestWorkerHealth(t *testing.T) {
	app, _ := newApp(t, nil, nil)
	started := make(chan struct{})
	app.Go("steady", func(ctx context.Context) error {
		close(started)
		<-ctx.Done()
		return nil
	})
	var runs atomic.Int32
	app.Go("crashing", func(context.Context) error {
		runs.Add(1)
		return errors.New("cannot reach the queue")
	}, servicedefaults.WorkerBackoff(time.Hour, time.Hour))
	<-started

	if e := workerEntry(t, app, "steady"); e.Status != health.Healthy || !containsTag(e.Tags, health.TagLive) {
		t.Errorf("running worker: %+v, want Healthy and tagged live", e)
	}
	waitFor(t, "the crashing worker to be Unhealthy", func() bool {
		return workerEntry(t, app, "crashing").Status == health.Unhealthy
	})
	e := workerEntry(t, app, "crashing")
	if !strings.Contains(e.Error, "cannot reach the queue") || !strings.Contains(e.Error, "1 consecutive failures") {
		t.Errorf("crashing worker's health error = %q", e.Error)
	}
	rep := app.Health().Run(context.Background(), health.Tagged(health.TagLive))
	if rep.Status != health.Unhealthy {
		t.Errorf("live report %s, want Unhealthy", rep.Status)
	}
	// Shutdown interrupts the backoff wait: no restart, and healthy again.
	if err := app.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := runs.Load(); got != 1 {
		t.Errorf("runs = %d, want 1", got)
	}
	if e := workerEntry(t, app, "crashing"); e.Status != health.Healthy {
		t.Errorf("after shutdown: %s, want Healthy", e.Status)
	}
}

func containsTag(tags []string, tag string) bool {
	for _, t := range tags {
		if t == tag {
			return true
		}
	}
	return false
}

func TestShutdownWaitsForWorkersBeforeClosingClients(t *testing.T) {
	app, _ := newApp(t, nil, nil)
	hookRan := make(chan struct{})
	var workerReturned atomic.Bool
	// Stands for a client's Close, registered as an integration's client is.
	app.OnShutdown(func(context.Context) error {
		if !workerReturned.Load() {
			t.Error("a client was closed while the worker still ran")
		}
		close(hookRan)
		return nil
	})
	cancelled := make(chan struct{})
	app.Go("writer", func(ctx context.Context) error {
		<-ctx.Done()
		close(cancelled)
		// Still flushing: a Shutdown that does not wait closes the
		// clients now, and the hook above reports it.
		select {
		case <-hookRan:
		case <-time.After(100 * time.Millisecond):
		}
		workerReturned.Store(true)
		return ctx.Err()
	})
	if err := app.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-cancelled:
	default:
		t.Fatal("the worker's context was not cancelled")
	}
	if !workerReturned.Load() {
		t.Error("Shutdown returned before the worker")
	}
}

func TestShutdownBoundsAStuckWorker(t *testing.T) {
	restoreGlobals(t)
	// Not newApp: its cleanup would see Shutdown's error again.
	app, err := servicedefaults.Add(context.Background(), nil,
		servicedefaults.WithConfig(discovery.FromMap(nil)), servicedefaults.WithLogWriter(&syncBuffer{}))
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	defer close(release)
	hookRan := false
	app.OnShutdown(func(context.Context) error { hookRan = true; return nil })
	app.Go("stuck", func(context.Context) error { <-release; return nil })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err = app.Shutdown(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), `"stuck"`) {
		t.Errorf("Shutdown = %v, want a deadline error naming the worker", err)
	}
	if !hookRan {
		t.Error("the clients were not closed after the bound ran out")
	}
}

func TestFatalWorkerEndsRun(t *testing.T) {
	tests := []struct {
		name string
		fail func() error
		want string
	}{
		{"error", func() error { return errors.New("lost the lease") }, `servicedefaults: worker "leader": lost the lease`},
		{"panic", func() error { panic("nil map") }, `servicedefaults: worker "leader": panic: nil map`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app, logs := newApp(t, nil, nil)
			otherStopped := make(chan struct{})
			app.Go("other", func(ctx context.Context) error {
				<-ctx.Done()
				close(otherStopped)
				return nil
			})
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ready := make(chan struct{})
			var runs atomic.Int32
			app.Go("leader", func(context.Context) error {
				runs.Add(1)
				<-ready
				return tt.fail()
			}, servicedefaults.WorkerFatal(), servicedefaults.WorkerBackoff(time.Millisecond, time.Millisecond))
			done := make(chan error, 1)
			go func() { done <- app.Serve(context.Background(), ln) }()
			get(t, nil, "http://"+ln.Addr().String()+"/alive") // serving
			close(ready)
			err = <-done
			if err == nil || err.Error() != tt.want {
				t.Fatalf("Serve = %v, want %q", err, tt.want)
			}
			<-otherStopped
			if runs.Load() != 1 {
				t.Errorf("runs = %d, want 1: a fatal worker is not restarted", runs.Load())
			}
			if e := workerEntry(t, app, "leader"); e.Status != health.Unhealthy {
				t.Errorf("health %s, want Unhealthy", e.Status)
			}
			if n := len(recordsWithMsg(logRecords(t, logs), "worker failed; stopping the app")); n != 1 {
				t.Errorf("%d fatal records logged, want 1", n)
			}
		})
	}
}

func TestFatalWorkerBeforeRun(t *testing.T) {
	app, _ := newApp(t, nil, nil)
	app.Go("init", func(context.Context) error { return errors.New("no config") }, servicedefaults.WorkerFatal())
	waitFor(t, "the worker to fail", func() bool { return workerEntry(t, app, "init").Status == health.Unhealthy })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	err = app.Serve(context.Background(), ln)
	if !errors.Is(err, servicedefaults.ErrClosed) || !strings.Contains(err.Error(), "no config") {
		t.Errorf("Serve = %v, want ErrClosed with the worker's error", err)
	}
}

func TestWorkerRunSpans(t *testing.T) {
	rcv := otlptest.Start(t)
	app, _ := newApp(t, with(slowExport, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", rcv.HTTPEndpoint+"/v1/traces"), nil)
	var runs atomic.Int32
	second := make(chan struct{})
	app.Go("sync", func(ctx context.Context) error {
		_, child := app.Tracer("t").Start(ctx, "step")
		child.End()
		if runs.Add(1) == 1 {
			return errors.New("first run fails")
		}
		close(second)
		<-ctx.Done()
		return nil
	}, servicedefaults.WorkerTracing(), servicedefaults.WorkerBackoff(time.Millisecond, time.Millisecond))
	app.Go("untraced", func(ctx context.Context) error { <-ctx.Done(); return nil })
	<-second
	if err := app.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	var runSpans, steps []otlptest.Span
	for _, s := range rcv.Spans() {
		switch s.Span.Name {
		case "worker sync":
			runSpans = append(runSpans, s)
		case "step":
			steps = append(steps, s)
		case "worker untraced":
			t.Error("a worker without WorkerTracing was traced")
		}
	}
	if len(runSpans) != 2 || len(steps) != 2 {
		t.Fatalf("%d run spans and %d steps, want 2 and 2", len(runSpans), len(steps))
	}
	for _, s := range runSpans {
		run, _ := otlptest.Attr(s.Span.Attributes, "worker.run")
		name, _ := otlptest.Attr(s.Span.Attributes, "worker.name")
		if name != "sync" {
			t.Errorf("worker.name = %q", name)
		}
		failed := s.Span.Status.GetCode() == 2 // STATUS_CODE_ERROR
		if (run == "1") != failed {
			t.Errorf("run %s: error status %v", run, failed)
		}
		var child *otlptest.Span
		for i := range steps {
			if string(steps[i].Span.ParentSpanId) == string(s.Span.SpanId) {
				child = &steps[i]
			}
		}
		if child == nil {
			t.Errorf("run %s: the worker's own span is not its child", run)
		}
	}
	if string(runSpans[0].Span.TraceId) == string(runSpans[1].Span.TraceId) {
		t.Error("two runs share one trace")
	}
}

func TestWorkerNoGoroutineLeak(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	app, _ := newApp(t, nil, nil)
	app.Go("running", func(ctx context.Context) error { <-ctx.Done(); return nil })
	app.Go("backing-off", func(context.Context) error { return errors.New("down") }, servicedefaults.WorkerBackoff(time.Hour, time.Hour))
	app.Go("done", func(context.Context) error { return nil })
	waitFor(t, "the failing worker to back off", func() bool {
		return workerEntry(t, app, "backing-off").Status == health.Unhealthy
	})
	if err := app.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	goleak.VerifyNone(t, opt)
}

func TestGoMisuse(t *testing.T) {
	tests := []struct {
		name string
		do   func(app *servicedefaults.App)
		want string
	}{
		{"empty name", func(app *servicedefaults.App) { app.Go("", func(context.Context) error { return nil }) }, "empty worker name"},
		{"nil func", func(app *servicedefaults.App) { app.Go("x", nil) }, `worker "x" has a nil function`},
		{"duplicate", func(app *servicedefaults.App) {
			app.Go("x", func(context.Context) error { return nil })
			app.Go("x", func(context.Context) error { return nil })
		}, `worker "x" already started`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app, _ := newApp(t, nil, nil)
			defer func() {
				p := recover()
				if s, _ := p.(string); !strings.Contains(s, tt.want) {
					t.Errorf("panic %v, want %q", p, tt.want)
				}
			}()
			tt.do(app)
		})
	}
}

func TestGoAfterShutdownDoesNotRun(t *testing.T) {
	app, logs := newApp(t, nil, nil)
	if err := app.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	ran := make(chan struct{}, 1)
	app.Go("late", func(context.Context) error { ran <- struct{}{}; return nil })
	if !strings.Contains(logs.String(), "worker not started: shutdown has begun") {
		t.Error("the late worker was not reported")
	}
	select {
	case <-ran:
		t.Error("a worker started after Shutdown ran")
	default:
	}
}

// Workers stop when shutdown begins, while requests are still draining,
// not after: a request that waits for a worker to stop completes within
// the grace period.
func TestWorkersStopWhenDrainBegins(t *testing.T) {
	mux := http.NewServeMux()
	workerStopped := make(chan struct{})
	inFlight := make(chan struct{})
	mux.HandleFunc("GET /wait", func(w http.ResponseWriter, r *http.Request) {
		close(inFlight)
		<-workerStopped
		w.WriteHeader(http.StatusNoContent)
	})
	app, _ := newApp(t, nil, mux, servicedefaults.WithShutdownTimeout(3*time.Second))
	app.Go("listener", func(ctx context.Context) error {
		<-ctx.Done()
		close(workerStopped)
		return nil
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- app.Serve(ctx, ln) }()
	status := make(chan int, 1)
	go func() {
		resp, err := http.Get("http://" + ln.Addr().String() + "/wait")
		if err != nil {
			status <- 0
			return
		}
		resp.Body.Close()
		status <- resp.StatusCode
	}()
	<-inFlight
	cancel() // as SIGTERM would
	if err := <-served; err != nil {
		t.Errorf("Serve = %v: the in-flight request was cut off waiting for the worker", err)
	}
	if got := <-status; got != http.StatusNoContent {
		t.Errorf("in-flight request got %d, want 204", got)
	}
}
