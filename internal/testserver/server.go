package testserver

import (
	"context"
	"fmt"
	"os"
	"sync"
)

// server is the process bookkeeping [Postgres] and [Redis] share: the running
// process, how to stop or kill it, and what to report when it had exited on
// its own. The describe argument of its methods names the server in errors.
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
	if err := proc.signal(s.stopSignal); err != nil {
		s.kill(proc)
		return fmt.Errorf("testserver: stop %s: %w", describe, err)
	}
	if err := proc.wait(ctx); err != nil {
		s.kill(proc)
		return fmt.Errorf("testserver: stop %s: %w", describe, err)
	}
	return nil
}

// crash kills the server. Killing a stopped server does nothing.
func (s *server) crash(describe fmt.Stringer) error {
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
	s.kill(proc)
	return nil
}

// unexpectedExit reports how a server that exited on its own ended, with the
// tail of its log; a clean exit is not an error.
func (s *server) unexpectedExit(proc *process, describe fmt.Stringer) error {
	if proc.err == nil {
		return nil
	}
	return fmt.Errorf("testserver: %s had exited on its own: %w%s", describe, proc.err, withLog(logTail(s.logPath, 0, s.password)))
}

// checkRestartLocked reports whether a Start may go ahead: not after Close,
// not while the server runs. It forgets a process that has exited.
func (s *server) checkRestartLocked(describe fmt.Stringer) error {
	if s.closed {
		return fmt.Errorf("testserver: start %s: closed", describe)
	}
	if s.proc != nil {
		if !s.proc.exited() {
			return fmt.Errorf("testserver: start %s: already running", describe)
		}
		s.proc = nil
	}
	return nil
}
