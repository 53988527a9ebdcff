package servicedefaults

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// ErrClosed is returned by Serve and Run on an App that was shut down or
// is already serving.
var ErrClosed = errors.New("servicedefaults: app is shut down or already serving")

// Server timeouts, as Kestrel's defaults: RequestHeadersTimeout 30 s,
// KeepAliveTimeout 130 s.
const (
	readHeaderTimeout = 30 * time.Second
	idleTimeout       = 130 * time.Second
)

// Run listens on the address the configuration names (PORT, else the
// first of HTTP_PORTS, else the first http URL of ASPNETCORE_URLS, else
// ":8080") and serves App.Handler until ctx is done, SIGINT or SIGTERM
// arrives, or Shutdown is called. See Serve for what happens then. It
// returns nil after a clean shutdown.
func (a *App) Run(ctx context.Context) error {
	addr, err := a.cfg.ListenAddress()
	if err != nil {
		return fmt.Errorf("servicedefaults: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("servicedefaults: listening on %s: %w", addr, err)
	}
	return a.Serve(ctx, ln)
}

// Serve serves App.Handler on ln until ctx is done, SIGINT or SIGTERM
// arrives, or Shutdown is called. Then it stops accepting connections,
// lets in-flight requests finish within the shutdown timeout
// (Aspire:ServiceDefaults:ShutdownTimeout, default 25 s), closes the
// connections still open past it, and calls Shutdown bounded by the flush
// timeout (Aspire:ServiceDefaults:FlushTimeout, default 5 s) to close
// clients and flush telemetry. Once shutdown has begun, the signals get
// their default behaviour back, so a second Ctrl-C kills the process.
//
// Serve closes ln. It returns nil after a clean shutdown, and an error
// when the listener failed, the grace period ran out, or Shutdown failed.
func (a *App) Serve(ctx context.Context, ln net.Listener) error {
	a.mu.Lock()
	if a.serving || a.isStopping() {
		a.mu.Unlock()
		ln.Close()
		return errors.Join(ErrClosed, a.workerFailure())
	}
	a.serving = true
	done := make(chan struct{})
	a.serverDone = done
	a.mu.Unlock()

	srv := &http.Server{
		Handler:           a.handler,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          slog.NewLogLogger(a.logger.Handler(), slog.LevelWarn),
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	a.logger.InfoContext(ctx, "listening", "addr", ln.Addr().String())

	var errs []error
	reason := ""
	select {
	case s := <-sigs:
		reason = "signal " + s.String()
	case <-ctx.Done():
		reason = "context done"
	case <-a.stopping:
		reason = "Shutdown called"
	case err := <-serveErr:
		serveErr <- err // for the drain below
		reason = "listener failed"
		errs = append(errs, fmt.Errorf("servicedefaults: serving: %w", err))
	}
	signal.Stop(sigs)
	a.cancelWorkers() // workers stop while requests drain (workers.go)
	a.logger.Info("shutting down", "reason", reason, "grace", a.shutdownTimeout.String())

	drainCtx, cancel := context.WithTimeout(context.Background(), a.shutdownTimeout)
	err := srv.Shutdown(drainCtx)
	cancel()
	if err != nil {
		_ = srv.Close()
		errs = append(errs, fmt.Errorf("servicedefaults: requests still in flight after the %v grace period were cut off: %w", a.shutdownTimeout, err))
	}
	if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) && len(errs) == 0 {
		errs = append(errs, fmt.Errorf("servicedefaults: serving: %w", err))
	}
	close(done)

	flushCtx, cancel := context.WithTimeout(context.Background(), a.flushTimeout)
	defer cancel()
	if err := a.Shutdown(flushCtx); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, a.workerFailure()) // a WorkerFatal worker's error (workers.go)
	return errors.Join(errs...)
}

func (a *App) isStopping() bool {
	select {
	case <-a.stopping:
		return true
	default:
		return false
	}
}
