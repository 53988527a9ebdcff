package servicedefaults

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// SideServer is a server that Serve runs beside the App's HTTP server,
// drains with it and stops within the same grace period: the gRPC
// integration (package integrations/aspiregrpc) plugs its gRPC server in
// through it, as Kestrel serves gRPC next to HTTP in .NET. Register one
// with App.AddSideServer before Serve.
type SideServer interface {
	// Start is called by Serve before the HTTP server serves. The side
	// server either shares the HTTP listener, by wrapping
	// s.Server.Handler to take its requests (calling s.ShareHTTP2 first
	// when it needs HTTP/2), or listens on its own and serves in a
	// goroutine of its own. Start must not block. An error makes Serve
	// return it without serving.
	Start(s *SideStart) error
	// Drain is called when shutdown begins (SIGTERM, Serve's context
	// done, or Shutdown), whether or not Start was: from then on the
	// server reports itself as not serving, as /health answers 503,
	// while it still serves. It may be called more than once.
	Drain()
	// Stop is called once after each successful Start, when the HTTP
	// server stops accepting connections, concurrently with the HTTP
	// server's graceful shutdown. It lets the calls in flight finish until
	// ctx (the grace period) ends, then cuts them off and returns an error
	// saying so. httpDone is closed once the HTTP server has drained: a
	// side server sharing the HTTP listener stops after that. Serve waits
	// for Stop and returns its error.
	Stop(ctx context.Context, httpDone <-chan struct{}) error
}

// SideStart is what Serve tells a SideServer's Start.
type SideStart struct {
	// Server is the HTTP server Serve is about to run. Start may replace
	// its Handler with one taking some requests and passing the others
	// on.
	Server *http.Server
	// Addr is the address of the HTTP listener ("127.0.0.1:8080").
	Addr string
	// Scheme is "https" when the HTTP server uses TLS, else "http".
	Scheme string
	// Grace is the shutdown timeout: how long calls in flight get to
	// finish once the drain begins.
	Grace time.Duration

	settings *serverSettings
}

// ShareHTTP2 makes the HTTP server speak HTTP/2, as a side server sharing
// its listener needs (gRPC): negotiated by ALPN over TLS, with prior
// knowledge (h2c) over plain TCP, next to the endpoint's other protocols.
// It fails, naming the key, when the endpoint's Protocols exclude HTTP/2.
func (s *SideStart) ShareHTTP2() error {
	p, err := s.settings.protocols(true) // kestrel.go decides the protocols
	if err != nil {
		return err
	}
	s.Server.Protocols = p
	return nil
}

// AddSideServer registers s for Serve to run beside the HTTP server (see
// SideServer), and to drain when shutdown begins. It fails with ErrClosed
// once shutdown has begun or Serve has started: s would not be served.
func (a *App) AddSideServer(s SideServer) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.serving || a.draining.Load() || a.isStopping() {
		return fmt.Errorf("servicedefaults: adding a side server: %w", ErrClosed)
	}
	a.sides = append(a.sides, s)
	return nil
}

// startSides starts the side servers before Serve serves srv on addr. On
// an error the ones started are stopped at once.
func (a *App) startSides(sides []SideServer, srv *http.Server, addr string) ([]SideServer, error) {
	for i, s := range sides {
		err := s.Start(&SideStart{Server: srv, Addr: addr, Scheme: a.server.schemeName(), Grace: a.shutdownTimeout, settings: &a.server})
		if err != nil {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			done := make(chan struct{})
			close(done)
			for _, started := range sides[:i] {
				_ = started.Stop(ctx, done)
			}
			return nil, err
		}
	}
	return sides, nil
}

// stopSides starts stopping the side servers within ctx, and returns the
// function that waits for them: call it once httpDone is closed.
func stopSides(ctx context.Context, sides []SideServer, httpDone <-chan struct{}) (wait func() error) {
	errs := make([]error, len(sides))
	var wg sync.WaitGroup
	for i, s := range sides {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.Stop(ctx, httpDone)
		}()
	}
	return func() error {
		wg.Wait()
		return errors.Join(errs...)
	}
}

// drainSides tells the side servers that shutdown has begun.
func (a *App) drainSides() {
	a.mu.Lock()
	sides := a.sides
	a.mu.Unlock()
	for _, s := range sides {
		s.Drain()
	}
}
