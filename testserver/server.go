package testserver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// server is the process bookkeeping [Postgres] and [Redis] share: the running
// process, how to stop, kill and restart it, and what to report when it had
// exited on its own. The describe argument of its methods names the server in
// errors.
type server struct {
	logPath    string
	password   string         // redacted from log tails
	stopSignal os.Signal      // asks the server to shut down cleanly
	kill       func(*process) // kills the server and reaps it

	mu     sync.Mutex
	proc   *process // nil while stopped
	closed bool
}

// stop sends stopSignal and waits for the server to exit, killing it if ctx
// ends first. Stopping a stopped server does nothing.
func (s *server) stop(ctx context.Context, describe fmt.Stringer) error {
	return s.end(describe, func(proc *process) error {
		if err := proc.signal(s.stopSignal); err != nil {
			s.kill(proc)
			return fmt.Errorf("testserver: stop %s: %w", describe, err)
		}
		if err := proc.wait(ctx); err != nil {
			s.kill(proc)
			return fmt.Errorf("testserver: stop %s: %w", describe, err)
		}
		return nil
	})
}

// crash kills the server. Killing a stopped server does nothing.
func (s *server) crash(describe fmt.Stringer) error {
	return s.end(describe, func(proc *process) error {
		s.kill(proc)
		return nil
	})
}

// end forgets the running process and hands it to finish, under s.mu. A
// stopped server is left alone; one that had exited on its own is reported
// by unexpectedExit instead.
func (s *server) end(describe fmt.Stringer, finish func(*process) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	proc := s.proc
	if proc == nil {
		return nil
	}
	s.proc = nil
	if proc.exited() {
		return s.unexpectedExit(proc, describe)
	}
	return finish(proc)
}

// unexpectedExit reports how a server that exited on its own ended, with the
// tail of its log; a clean exit is not an error.
func (s *server) unexpectedExit(proc *process, describe fmt.Stringer) error {
	if proc.err == nil {
		return nil
	}
	return fmt.Errorf("testserver: %s had exited on its own: %w%s", describe, proc.err, withLog(logTail(s.logPath, 0, s.password)))
}

// restart runs start for a stopped or killed server, under s.mu and bounded
// by defaultTimeout if ctx has no deadline. It refuses after Close and while
// the server runs.
func (s *server) restart(ctx context.Context, describe fmt.Stringer, start func(context.Context) error) error {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("testserver: start %s: closed", describe)
	}
	if s.proc != nil {
		if !s.proc.exited() {
			return fmt.Errorf("testserver: start %s: already running", describe)
		}
		s.proc = nil
	}
	if err := start(ctx); err != nil {
		return fmt.Errorf("testserver: start %s: %w", describe, err)
	}
	return nil
}

// waitReady runs probe until it succeeds, the server exits or ctx ends.
// what names the server ("redis", "postgres replica") and port its port in
// errors, which carry the log's tail from logFrom on.
func (s *server) waitReady(ctx context.Context, proc *process, logFrom int64, what string, port int, probe func(context.Context) error) error {
	attemptCtx, cancel := proc.untilExit(ctx)
	defer cancel()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		err := probe(attemptCtx)
		if err == nil {
			return nil
		}
		if proc.exited() {
			tail := logTail(s.logPath, logFrom, s.password)
			if strings.Contains(tail, "Address already in use") {
				return fmt.Errorf("%s on port %d exited during startup (%v): %w%s", what, port, proc.err, errPortInUse, withLog(tail))
			}
			return fmt.Errorf("%s on port %d exited during startup (%v)%s", what, port, proc.err, withLog(tail))
		}
		select {
		case <-proc.done: // reported above, on the next round
		case <-ctx.Done():
			return fmt.Errorf("%s on port %d not ready: %w (last attempt: %s)%s", what, port, ctx.Err(),
				redact(err.Error(), s.password), withLog(logTail(s.logPath, logFrom, s.password)))
		case <-tick.C:
		}
	}
}

// onFreePort calls start with port, or, when port is 0, with a free port,
// trying another free port (up to bindAttempts in all) when a different
// process takes the chosen one first.
func onFreePort(port int, start func(port int) error) error {
	for attempt := 1; ; attempt++ {
		p := port
		if port == 0 {
			free, err := freePort()
			if err != nil {
				return err
			}
			p = free
		}
		err := start(p)
		if err == nil || port != 0 || !errors.Is(err, errPortInUse) || attempt == bindAttempts {
			return err
		}
	}
}

// close stops the server (SIGTERM, then SIGKILL past closeTimeout) and
// removes dir, its temporary directory, once: later calls do nothing.
func (s *server) close(describe fmt.Stringer, dir string) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	errs := []error{s.stop(ctx, describe)}
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, fmt.Errorf("testserver: remove %s: %w", dir, err))
	}
	return errors.Join(errs...)
}
