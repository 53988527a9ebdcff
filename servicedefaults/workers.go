package servicedefaults

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/resilience"
)

// Default restart delays of a failed worker (see WorkerBackoff).
const (
	DefaultWorkerRestartDelay    = time.Second
	DefaultWorkerMaxRestartDelay = 30 * time.Second
)

// workerScope is the instrumentation scope of worker spans.
const workerScope = "github.com/goaspire/goaspire/servicedefaults"

// WorkerCheckPrefix starts the name of each worker's health check:
// "worker:{name}".
const WorkerCheckPrefix = "worker:"

// WorkerOption configures a worker started by App.Go.
type WorkerOption func(*workerOptions)

type workerOptions struct {
	delay, maxDelay time.Duration
	fatal           bool
	tracing         bool
}

// WorkerBackoff sets the delays before a failed worker is restarted: they
// grow exponentially from delay, with jitter (the decorrelated jitter of
// the resilience package's retries), up to maxDelay. The defaults are
// DefaultWorkerRestartDelay and DefaultWorkerMaxRestartDelay. A run that
// lasted at least maxDelay before failing restarts after about delay
// again. Non-positive values keep the defaults.
func WorkerBackoff(delay, maxDelay time.Duration) WorkerOption {
	return func(o *workerOptions) {
		if delay > 0 {
			o.delay = delay
		}
		if maxDelay > 0 {
			o.maxDelay = maxDelay
		}
	}
}

// WorkerFatal makes a failure of the worker (an error or a panic) end the
// App instead of restarting the worker, as .NET's
// BackgroundServiceExceptionBehavior.StopHost does: shutdown begins, and
// Run (or Serve) returns the worker's error once it has drained.
func WorkerFatal() WorkerOption { return func(o *workerOptions) { o.fatal = true } }

// WorkerTracing records a span "worker {name}" for each run of the worker,
// from its start to its return, with the attributes worker.name and
// worker.run (1 for the first run, 2 for the first restart ...), status
// Error and an exception event when the run failed. The run's context
// carries the span, so what the worker traces joins that one trace.
//
// It is off by default because most workers run for the life of the
// process: their span would be exported only when they stop, and all
// their work would pile into one trace. Turn it on for workers whose runs
// are short, or trace each unit of work yourself with App.Tracer.
func WorkerTracing() WorkerOption { return func(o *workerOptions) { o.tracing = true } }

// workers is the App's set of supervised background workers.
type workers struct {
	mu      sync.Mutex
	ctx     context.Context // ends when shutdown begins
	cancel  context.CancelFunc
	names   map[string]bool // every name given to Go
	running map[string]bool // workers whose goroutine has not returned
	wg      sync.WaitGroup
	failure error // the first failure of a WorkerFatal worker
}

// init sets up the zero workers; the caller holds w.mu.
func (w *workers) init() {
	if w.ctx == nil {
		w.ctx, w.cancel = context.WithCancel(context.Background())
		w.names = map[string]bool{}
		w.running = map[string]bool{}
	}
}

// Go starts a supervised background worker called name, as a .NET
// BackgroundService: run is called in its own goroutine with a context
// that ends when the App's shutdown begins (a signal, Run's context done,
// Shutdown called, or a WorkerFatal worker failing). Shutdown waits, within
// its bound, for every worker to return before it closes the clients the
// App opened (through the integration packages), so workers may use them
// until their context ends.
//
// When run returns nil the worker has finished and is not restarted. When
// it returns an error or panics (the panic is recovered), the failure is
// logged with the worker's name (and the panic's stack) and run is called
// again after a backoff (WorkerBackoff), unless WorkerFatal is given.
// Once shutdown has begun, a run that returns is not restarted, and an
// error that is not the context's is logged as a warning.
//
// Each worker has a health check "worker:{name}" tagged health.TagLive
// (so /alive and /health report it). It is Unhealthy while the worker is
// down after a failure, waiting for its restart (so a crash-looping worker
// is Unhealthy most of the time, and one failure is a blip), and after a
// WorkerFatal worker failed; it is Healthy while the worker runs, after it
// finished, and once it stopped for shutdown.
//
// name must be non-empty and unique among the App's workers and health
// checks, and run non-nil: Go panics otherwise, as http.ServeMux does on a
// conflicting pattern, since that is a programming error. A worker started
// after shutdown has begun is not run (this is logged).
func (a *App) Go(name string, run func(ctx context.Context) error, opts ...WorkerOption) {
	if name == "" {
		panic("servicedefaults: Go: empty worker name")
	}
	if run == nil {
		panic(fmt.Sprintf("servicedefaults: Go: worker %q has a nil function", name))
	}
	o := workerOptions{delay: DefaultWorkerRestartDelay, maxDelay: DefaultWorkerMaxRestartDelay}
	for _, opt := range opts {
		opt(&o)
	}
	if o.maxDelay < o.delay {
		o.maxDelay = o.delay
	}
	wk := &worker{app: a, name: name, run: run, opts: o}

	ws := &a.workers
	ws.mu.Lock()
	defer ws.mu.Unlock()
	ws.init()
	if ws.names[name] {
		panic(fmt.Sprintf("servicedefaults: Go: worker %q already started", name))
	}
	if ws.ctx.Err() != nil || a.isStopping() {
		a.logger.Warn("worker not started: shutdown has begun", "worker", name)
		return
	}
	if err := a.health.Register(health.Check{
		Name:  WorkerCheckPrefix + name,
		Tags:  []string{health.TagLive},
		Check: wk.check,
	}); err != nil {
		panic(fmt.Sprintf("servicedefaults: Go: worker %q: %v", name, err))
	}
	ws.names[name] = true
	ws.running[name] = true
	ws.wg.Add(1)
	go wk.loop(ws.ctx)
}

// cancelWorkers ends the workers' context: shutdown has begun.
func (a *App) cancelWorkers() {
	ws := &a.workers
	ws.mu.Lock()
	ws.init()
	ws.cancel()
	ws.mu.Unlock()
}

// stopWorkers cancels the workers and waits, within ctx, for them to
// return. Shutdown calls it before closing the App's clients.
func (a *App) stopWorkers(ctx context.Context) error {
	a.cancelWorkers()
	done := make(chan struct{})
	go func() {
		a.workers.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		ws := &a.workers
		ws.mu.Lock()
		var names []string
		for n := range ws.running {
			names = append(names, n)
		}
		ws.mu.Unlock()
		slices.Sort(names)
		return fmt.Errorf("servicedefaults: workers %q still running when the shutdown bound ran out: %w", names, ctx.Err())
	}
}

// workerFailure returns the failure of a WorkerFatal worker, if any, for
// Serve to return.
func (a *App) workerFailure() error {
	a.workers.mu.Lock()
	defer a.workers.mu.Unlock()
	return a.workers.failure
}

// failApp records the failure of a WorkerFatal worker and begins shutdown.
func (a *App) failApp(err error) {
	ws := &a.workers
	ws.mu.Lock()
	if ws.failure == nil {
		ws.failure = err
	}
	ws.cancel()
	ws.mu.Unlock()
	a.stopOnce.Do(func() { close(a.stopping) })
}

// worker is one supervised worker.
type worker struct {
	app  *App
	name string
	run  func(context.Context) error
	opts workerOptions

	mu       sync.Mutex
	down     error // set while the worker is down after a failure
	failures int   // consecutive failures
}

func (w *worker) check(context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.down
}

func (w *worker) setDown(err error) {
	w.mu.Lock()
	w.down = err
	w.mu.Unlock()
}

// loop runs the worker until it finishes, fails fatally or shutdown
// begins.
func (w *worker) loop(ctx context.Context) {
	a := w.app
	defer func() {
		a.workers.mu.Lock()
		delete(a.workers.running, w.name)
		a.workers.mu.Unlock()
		a.workers.wg.Done()
	}()
	bo := resilience.NewBackoff(resilience.RetryOptions{
		BackoffType: resilience.BackoffExponential,
		UseJitter:   true,
		Delay:       w.opts.delay,
		MaxDelay:    w.opts.maxDelay,
	})
	log := a.logger.With("worker", w.name)
	for run := 1; ; run++ {
		start := time.Now()
		err := w.runOnce(ctx, run)
		if ctx.Err() != nil {
			if err != nil && !errors.Is(err, context.Canceled) {
				log.Warn("worker stopped with an error during shutdown", "error", err)
			}
			w.setDown(nil)
			return
		}
		if err == nil {
			log.Info("worker finished", "runs", run)
			w.setDown(nil)
			return
		}
		if time.Since(start) >= w.opts.maxDelay {
			bo.Reset()
			w.failures = 0
		}
		w.failures++
		attrs := []any{"error", err, "run", run, "consecutive_failures", w.failures}
		var pe *panicError
		if errors.As(err, &pe) {
			attrs = append(attrs, "stack", string(pe.stack))
		}
		if w.opts.fatal {
			log.Error("worker failed; stopping the app", attrs...)
			err = fmt.Errorf("servicedefaults: worker %q: %w", w.name, err)
			a.failApp(err)
			w.setDown(fmt.Errorf("failed and stopped the app: %w", err))
			return
		}
		d := bo.Next()
		log.Error("worker failed; restarting", append(attrs, "restart_in", d.String())...)
		w.setDown(fmt.Errorf("down after %d consecutive failures, restarting in %v: %w", w.failures, d, err))
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			w.setDown(nil)
			return
		}
		w.setDown(nil)
	}
}

// runOnce calls the worker's function once, turning a panic into a
// panicError, inside a span when tracing is on.
func (w *worker) runOnce(ctx context.Context, run int) (err error) {
	var span trace.Span
	if w.opts.tracing {
		ctx, span = w.app.tel.tp.Tracer(workerScope).Start(ctx, "worker "+w.name,
			trace.WithNewRoot(),
			trace.WithSpanKind(trace.SpanKindInternal),
			trace.WithAttributes(attribute.String("worker.name", w.name), attribute.Int("worker.run", run)))
		defer func() {
			if err != nil && ctx.Err() == nil {
				opts := []trace.EventOption{}
				var pe *panicError
				if errors.As(err, &pe) {
					opts = append(opts, trace.WithAttributes(attribute.String("exception.stacktrace", string(pe.stack))))
				}
				span.RecordError(err, opts...)
				span.SetStatus(codes.Error, err.Error())
			}
			span.End()
		}()
	}
	defer func() {
		if p := recover(); p != nil {
			err = &panicError{value: p, stack: debug.Stack()}
		}
	}()
	return w.run(ctx)
}

// panicError is a recovered panic of a worker.
type panicError struct {
	value any
	stack []byte
}

func (e *panicError) Error() string { return fmt.Sprintf("panic: %v", e.value) }

// Unwrap returns the panic value when it is an error.
func (e *panicError) Unwrap() error {
	err, _ := e.value.(error)
	return err
}
