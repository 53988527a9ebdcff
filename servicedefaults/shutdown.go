package servicedefaults

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/health"
)

// hook is a function run by Shutdown, with a name for its errors.
type hook struct {
	name string
	f    func(context.Context) error
}

// addHook registers f to run during Shutdown. It reports false, leaving
// f unregistered, once Shutdown has taken the hooks.
func (a *App) addHook(name string, f func(context.Context) error) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.shutDown {
		return false
	}
	a.hooks = append(a.hooks, hook{name, f})
	return true
}

// callHook runs h, turning a panic into an error.
func callHook(ctx context.Context, h hook) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v\n%s", p, debug.Stack())
		}
	}()
	return h.f(ctx)
}

// runHooks runs hooks in reverse order of registration, one at a time,
// each given ctx. When ctx ends before a hook returns, that hook is
// abandoned (its goroutine is left running), the hooks not run yet are
// started at once, concurrently, without waiting for them, and the error
// names the abandoned hook. runHooks returns by ctx's deadline.
func (a *App) runHooks(ctx context.Context, hooks []hook) []error {
	var errs []error
	for i := len(hooks) - 1; i >= 0; i-- {
		h := hooks[i]
		res := make(chan error, 1)
		go func() { res <- callHook(ctx, h) }()
		var err error
		select {
		case err = <-res:
		case <-ctx.Done():
			select {
			case err = <-res: // it returned just in time
			default:
				return append(errs, a.abandon(ctx, h, hooks[:i]))
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("servicedefaults: shutdown: %s: %w", h.name, err))
		}
	}
	return errs
}

// abandon leaves the stuck hook h running, starts the hooks rest at once
// without waiting for them, and returns the error reporting h.
func (a *App) abandon(ctx context.Context, h hook, rest []hook) error {
	for j := len(rest) - 1; j >= 0; j-- {
		go func() { _ = callHook(ctx, rest[j]) }()
	}
	a.logger.Error("shutdown hook abandoned at the deadline", "hook", h.name, "not_waited", len(rest))
	return &HookTimeoutError{Hook: h.name, NotWaited: len(rest), Err: ctx.Err()}
}

// HookTimeoutError reports a shutdown hook (an OnShutdown function, or
// the Close of a client the App opened) that had not returned when
// Shutdown's context ended. Shutdown abandons it and returns on time.
type HookTimeoutError struct {
	// Hook names the hook: "closing database \"db\"", "OnShutdown hook 2" ...
	Hook string
	// NotWaited is how many hooks after it in the shutdown order were
	// started at the deadline without being waited for.
	NotWaited int
	// Err is the context's error.
	Err error
}

// Error implements error.
func (e *HookTimeoutError) Error() string {
	msg := fmt.Sprintf("servicedefaults: shutdown: %s had not returned at the deadline and was abandoned", e.Hook)
	if e.NotWaited > 0 {
		msg += fmt.Sprintf(" (%d later hooks started without waiting)", e.NotWaited)
	}
	return msg + ": " + e.Err.Error()
}

// Unwrap returns the context's error.
func (e *HookTimeoutError) Unwrap() error { return e.Err }

// share returns a context ending after the fraction num/den of the time
// left before ctx's deadline, or ctx itself when it has none.
func share(ctx context.Context, num, den int64) (context.Context, context.CancelFunc) {
	deadline, ok := ctx.Deadline()
	if !ok {
		return context.WithCancel(ctx)
	}
	left := time.Until(deadline)
	if left < 0 {
		left = 0
	}
	return context.WithTimeout(ctx, time.Duration(int64(left)/den*num))
}

// flusher is what the SDK providers share for exporting what they buffer.
type flusher interface {
	ForceFlush(context.Context) error
}

// flushTelemetry exports the spans, log records and metrics buffered so
// far, concurrently, without stopping the providers, bounded by ctx.
func (a *App) flushTelemetry(ctx context.Context) error {
	var fs []flusher
	for _, p := range []any{a.tel.tp, a.tel.lp, a.tel.mp} {
		if f, ok := p.(flusher); ok {
			fs = append(fs, f)
		}
	}
	errs := make([]error, len(fs))
	var wg sync.WaitGroup
	for i, f := range fs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f.ForceFlush(ctx)
		}()
	}
	wg.Wait()
	return a.tel.scrubError(errors.Join(errs...))
}

// shutdown is the body of the first Shutdown call. Its budget is ctx:
//
//  1. it waits for Serve to drain;
//  2. it exports the telemetry buffered so far, within half of the time
//     left, so no client close can hold back the spans and logs of the
//     requests served;
//  3. it runs the hooks (closing clients) within three quarters of the
//     time then left, abandoning one stuck past that;
//  4. it closes the resilience pipelines and idle client connections;
//  5. it stops telemetry with what is left, exporting what the closes
//     produced.
func (a *App) shutdown(ctx context.Context) error {
	a.mu.Lock()
	done := a.serverDone
	a.mu.Unlock()
	var errs []error
	if done != nil {
		select {
		case <-done:
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("servicedefaults: waiting for the server to drain: %w", ctx.Err()))
		}
	}

	// Workers (App.Go) were told to stop when the drain began; they stop
	// before the clients they use are closed, within half of what is left.
	wctx, cancel := share(ctx, 1, 2)
	if err := a.stopWorkers(wctx); err != nil {
		errs = append(errs, err)
	}
	cancel()

	fctx, cancel := share(ctx, 1, 2)
	flushErr := a.flushTelemetry(fctx)
	cancel()

	a.mu.Lock()
	a.shutDown = true
	hooks := a.hooks
	a.hooks = nil
	base := a.base
	pipelines := a.pipelines
	a.mu.Unlock()
	a.cancelOpens() // clients still opening give up

	hctx, cancel := share(ctx, 3, 4)
	errs = append(errs, a.runHooks(hctx, hooks)...)
	cancel()
	for _, p := range pipelines {
		if err := p.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if base != nil {
		base.CloseIdleConnections()
	}
	a.resolver.Close() // stops DNS discovery's refreshes
	sctx := ctx
	if flushErr != nil {
		// The collector did not take the flush: it is down, slow or
		// refusing. Waiting for it again would spend the rest of the
		// budget for nothing; the providers get just enough to stop.
		var cancel context.CancelFunc
		sctx, cancel = context.WithTimeout(ctx, stopAfterFailedFlush)
		defer cancel()
	}
	stopErr := a.tel.shutdown(sctx)
	a.warnTelemetryLost(flushErr, stopErr)
	return errors.Join(errs...)
}

// uniqueLines joins the distinct lines of msg (each provider reports the
// same refused connection) with "; ".
func uniqueLines(msg string) string {
	var lines []string
	for _, l := range strings.Split(msg, "\n") {
		if l != "" && !slices.Contains(lines, l) {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "; ")
}

// stopAfterFailedFlush bounds stopping the telemetry providers once the
// flush before the hooks failed.
const stopAfterFailedFlush = 250 * time.Millisecond

// warnTelemetryLost logs, once, on the console only (not through the
// OTel pipeline that failed), that telemetry could not be exported at
// shutdown, with how much was lost over the App's life: the sampled spans
// ended and the log records emitted that were never exported (failed
// exports, full queues, or still queued when the shutdown's time ran
// out), and the metric data points of the failed exports. It logs nothing
// when the flush and the stop succeeded and nothing was lost. A telemetry
// failure is not Shutdown's error: the service itself stopped cleanly.
func (a *App) warnTelemetryLost(flushErr, stopErr error) {
	spans, records, points := a.tel.counts.dropped()
	err := errors.Join(flushErr, stopErr)
	if err == nil && spans == 0 && records == 0 && points == 0 {
		return
	}
	if err == nil {
		err = a.tel.scrubError(a.tel.counts.firstError())
	}
	attrs := []any{"dropped_spans", spans, "dropped_log_records", records, "failed_metric_points", points}
	if err != nil {
		attrs = append(attrs, "error", uniqueLines(err.Error()))
	}
	slog.New(a.logs.console).Warn("telemetry could not be exported at shutdown", attrs...)
}

// readShutdownSettings reads the shutdown durations from the
// configuration, then applies the options, rejecting negative values.
func readShutdownSettings(cfg *discovery.Config, o *options) (shutdown, flush, delay time.Duration, err error) {
	sd := cfg.Section("Aspire:ServiceDefaults")
	var errs []error
	read := func(key string, def time.Duration, opt *time.Duration, optName string) time.Duration {
		d, err := sd.Duration(key, def)
		if err != nil {
			errs = append(errs, err)
			return def
		}
		if d < 0 {
			errs = append(errs, &discovery.KeyError{Key: "Aspire:ServiceDefaults:" + key, Err: fmt.Errorf("%v is negative", d)})
		}
		if opt != nil {
			d = *opt
			if d < 0 {
				errs = append(errs, fmt.Errorf("%s(%v): negative duration", optName, d))
			}
		}
		return d
	}
	shutdown = read("ShutdownTimeout", DefaultShutdownTimeout, o.shutdownTimeout, "WithShutdownTimeout")
	flush = read("FlushTimeout", DefaultFlushTimeout, o.flushTimeout, "WithFlushTimeout")
	delay = read("ShutdownDelay", 0, o.shutdownDelay, "WithShutdownDelay")
	return shutdown, flush, delay, errors.Join(errs...)
}

// WithShutdownDelay sets how long, once SIGTERM (or ctx's end) starts a
// shutdown, Serve keeps accepting and serving requests with /health
// answering 503 before it starts draining, overriding
// Aspire:ServiceDefaults:ShutdownDelay (default 0). It gives a load
// balancer or Kubernetes time to take the instance out of rotation.
func WithShutdownDelay(d time.Duration) Option {
	return func(o *options) { o.shutdownDelay = &d }
}

// beginDraining makes /health answer 503 from now on, and tells the side
// servers (a gRPC server's health service turns NOT_SERVING).
func (a *App) beginDraining() {
	a.draining.Store(true)
	a.drainSides()
}

// readiness wraps the /health handler: once shutdown has begun it answers
// 503 Unhealthy at once, without running the checks or using the cached
// report.
func (a *App) readiness(h http.Handler, detailed bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !a.draining.Load() {
			h.ServeHTTP(w, r)
			return
		}
		hdr := w.Header()
		hdr.Set("Cache-Control", "no-store, no-cache")
		hdr.Set("Pragma", "no-cache")
		hdr.Set("Expires", "Thu, 01 Jan 1970 00:00:00 GMT")
		if !detailed {
			hdr.Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(health.Unhealthy))
			return
		}
		body, _ := json.Marshal(health.Report{Status: health.Unhealthy, Entries: []health.Entry{{
			Name: "shutdown", Status: health.Unhealthy, Error: "the service is shutting down",
		}}})
		hdr.Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write(body)
	})
}

// shutdownSignals are the signals Serve handles.
var shutdownSignals = []os.Signal{os.Interrupt, syscall.SIGTERM}

// notifySignals starts relaying shutdownSignals to a new channel.
func notifySignals() chan os.Signal {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, shutdownSignals...)
	return sigs
}

// dropTriggerSignal discards the signals already delivered to sigs. Serve
// calls it when its context ends: a signal.NotifyContext in main
// cancelled it on a signal that sigs received too, and that signal started
// the shutdown rather than asking to cut it short. Registering sigs again
// waits for a delivery in progress to finish (the signal package delivers
// one signal to every channel under the lock Notify takes), so the signal
// is in sigs by then.
func dropTriggerSignal(sigs chan os.Signal) {
	signal.Notify(sigs, shutdownSignals...)
	for {
		select {
		case <-sigs:
		default:
			return
		}
	}
}

// exitOnSignal watches sigs during the shutdown: a signal there is a
// second one, and the process exits at once with status 128+signal. The
// returned function stops watching.
func (a *App) exitOnSignal(sigs chan os.Signal) (stop func()) {
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case s := <-sigs:
			a.logger.Error("second signal during shutdown: exiting at once", "signal", s.String())
			code := 1
			if n, ok := s.(syscall.Signal); ok {
				code = 128 + int(n)
			}
			os.Exit(code)
		case <-quit:
		}
	}()
	return func() {
		close(quit)
		<-done
	}
}
