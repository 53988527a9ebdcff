package servicedefaults

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/signal"
	"time"
)

// ErrClosed is returned by Serve and Run on an App that was shut down or
// is already serving.
var ErrClosed = errors.New("servicedefaults: app is shut down or already serving")

// Run listens on the endpoint the configuration names (see
// discovery.Config.ListenEndpoint: Kestrel:Endpoints:{name}:Url, else
// PORT, else the first of HTTP_PORTS, else HTTPS_PORTS, else
// ASPNETCORE_URLS, else ":8080") and serves App.Handler until ctx is
// done, SIGINT or SIGTERM arrives, or Shutdown is called. See Serve for
// what happens then. It returns nil after a clean shutdown.
//
// A worker (Add given a nil handler) listens only on an endpoint the
// configuration names, to serve /health and /alive there; with none, and
// no side server, it listens nowhere (not on ":8080", which two workers
// on one host would both claim): Run runs its workers and waits for the
// same signals, and shuts down the same way.
//
// Serve also runs the servers added by AddSideServer (the gRPC server of
// package integrations/aspiregrpc): beside HTTP, on the HTTP listener or
// their own, stopped within the same grace period as HTTP.
func (a *App) Run(ctx context.Context) error {
	a.mu.Lock()
	sides := len(a.sides)
	a.mu.Unlock()
	if !a.server.listens() && sides == 0 {
		return a.Serve(ctx, newNoListener()) // kestrel.go
	}
	addr := a.server.endpoint.Addr // validated by Add
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("servicedefaults: listening on %s: %w", addr, err)
	}
	return a.Serve(ctx, ln)
}

// Serve serves App.Handler on ln until ctx is done, SIGINT or SIGTERM
// arrives, or Shutdown is called, with the server settings read by Add
// (Kestrel:Limits, the endpoint's Protocols; TLS with the configured
// certificate when the endpoint is https, in which case ln is a plain TCP
// listener Serve wraps). Then:
//
//  1. /health answers 503 from that moment;
//  2. for Aspire:ServiceDefaults:ShutdownDelay (default 0) it keeps
//     accepting and serving, without keep-alive, so a load balancer or
//     Kubernetes takes the instance out of rotation first (a Shutdown
//     call skips or ends the delay);
//  3. it stops accepting connections and lets in-flight requests finish
//     within the shutdown timeout (Aspire:ServiceDefaults:ShutdownTimeout,
//     default 25 s), closing the connections still open past it;
//  4. it calls Shutdown bounded by the flush timeout
//     (Aspire:ServiceDefaults:FlushTimeout, default 5 s) to flush
//     telemetry and close clients.
//
// Serve handles SIGINT and SIGTERM itself until it returns, also when
// main's ctx comes from signal.NotifyContext: a second signal during the
// shutdown logs and exits the process at once with status 128+signal
// (130 for Ctrl-C, 143 for SIGTERM).
//
// Serve closes ln. It returns nil after a clean shutdown, also when
// the telemetry could not be exported (Shutdown logs a warning instead),
// and an error when the listener failed, the grace period ran out, or
// Shutdown failed (a hook failed or was abandoned).
func (a *App) Serve(ctx context.Context, ln net.Listener) error {
	a.mu.Lock()
	if a.serving || a.isStopping() {
		a.mu.Unlock()
		ln.Close()
		return errors.Join(ErrClosed, a.workerFailure())
	}
	a.serving = true
	sides := a.sides
	done := make(chan struct{})
	a.serverDone = done
	a.mu.Unlock()

	srv := a.httpServer() // kestrel.go
	// The servers added by AddSideServer (side.go).
	sides, err := a.startSides(sides, srv, ln.Addr().String())
	if err != nil {
		ln.Close()
		close(done)
		return err
	}
	sigs := notifySignals()
	defer signal.Stop(sigs)

	serveErr := make(chan error, 1)
	go func() {
		if srv.TLSConfig != nil {
			serveErr <- srv.ServeTLS(ln, "", "")
			return
		}
		serveErr <- srv.Serve(ln)
	}()
	if _, none := ln.(*noListener); none {
		a.logger.InfoContext(ctx, "worker without an endpoint: not listening (set PORT to serve /health and /alive)")
	} else {
		a.logger.InfoContext(ctx, "listening", "addr", ln.Addr().String(), "scheme", a.server.schemeName())
	}

	var errs []error
	reason := ""
	delay := a.shutdownDelay
	select {
	case s := <-sigs:
		reason = "signal " + s.String()
	case <-ctx.Done():
		reason = "context done"
		dropTriggerSignal(sigs)
	case <-a.stopping:
		reason = "Shutdown called"
		delay = 0
	case err := <-serveErr:
		serveErr <- err // for the drain below
		reason = "listener failed"
		delay = 0
		errs = append(errs, fmt.Errorf("servicedefaults: serving: %w", err))
	}
	a.beginDraining()
	stopWatching := a.exitOnSignal(sigs)
	defer stopWatching()
	if delay > 0 {
		a.logger.Info("shutting down: still serving with /health unhealthy", "reason", reason, "delay", delay.String())
		srv.SetKeepAlivesEnabled(false)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-a.stopping:
		case err := <-serveErr:
			serveErr <- err
		}
		t.Stop()
		reason += ", delay over"
	}
	a.cancelWorkers() // workers stop while requests drain (workers.go)
	a.logger.Info("shutting down", "reason", reason, "grace", a.shutdownTimeout.String())

	drainCtx, cancel := context.WithTimeout(context.Background(), a.shutdownTimeout)
	httpDone := make(chan struct{})
	waitSides := stopSides(drainCtx, sides, httpDone)
	err = srv.Shutdown(drainCtx)
	if err != nil {
		_ = srv.Close()
		errs = append(errs, fmt.Errorf("servicedefaults: requests still in flight after the %v grace period were cut off: %w", a.shutdownTimeout, err))
	}
	close(httpDone)
	if err := waitSides(); err != nil {
		errs = append(errs, err)
	}
	cancel()
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
