package interop_test

import (
	"bufio"
	"bytes"
	"context"
	"github.com/goaspire/goaspire/internal/polyglot"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// pythonModules are the modules every script may import.
var pythonModules = []string{"pika", "redis", "httpx", "grpc", "fastapi", "uvicorn"}

var (
	pythonOnce sync.Once
	pythonPath string
	pythonErr  error
)

// python returns an interpreter that imports pythonModules (see
// polyglot.Python), skipping the test when there is none, and failing it
// under CI.
func python(tb testing.TB) string {
	tb.Helper()
	pythonOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		pythonPath, pythonErr = polyglot.Python(ctx, pythonModules...)
	})
	polyglot.Need(tb, pythonErr)
	return pythonPath
}

// script is a Python script of testdata running as a process. Its stdout
// lines are readable one by one (Line); its whole output is kept for
// failure messages.
type script struct {
	tb     testing.TB
	name   string
	cmd    *exec.Cmd
	lines  chan string
	mu     sync.Mutex
	output bytes.Buffer // stdout and stderr, as they come
	done   chan struct{}
	err    error // set before done closes
}

// lockedWriter appends to the script's output under its lock.
type lockedWriter struct{ s *script }

func (w lockedWriter) Write(p []byte) (int, error) {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	return w.s.output.Write(p)
}

// scriptTimeout bounds every script: generous, as the tests run on loaded
// machines; it only ends a script that would otherwise hang.
const scriptTimeout = 3 * time.Minute

// startScript runs testdata/name with args and env (KEY=value, added to
// the process environment). The process is killed when the test ends, or
// after scriptTimeout.
func startScript(tb testing.TB, env []string, name string, args ...string) *script {
	tb.Helper()
	py := python(tb)
	ctx, cancel := context.WithTimeout(context.Background(), scriptTimeout)
	cmd := exec.CommandContext(ctx, py, append([]string{"-u", filepath.Join("testdata", name)}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = 5 * time.Second
	s := &script{tb: tb, name: name, cmd: cmd, lines: make(chan string, 1000), done: make(chan struct{})}
	cmd.Stderr = lockedWriter{s}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		cancel()
		tb.Fatalf("start %s: %v", name, err)
	}
	go func() {
		defer close(s.done)
		defer cancel()
		sc := bufio.NewScanner(io.TeeReader(stdout, lockedWriter{s}))
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
		s.err = cmd.Wait()
		close(s.lines)
	}()
	tb.Cleanup(func() {
		cancel()
		<-s.done
	})
	return s
}

// Output returns what the script wrote so far, stdout and stderr.
func (s *script) Output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.output.String()
}

// Line returns the next stdout line that starts with prefix, without the
// prefix, skipping others; it fails the test, with the script's output,
// when the script ends first.
func (s *script) Line(prefix string) string {
	s.tb.Helper()
	for line := range s.lines {
		if rest, ok := strings.CutPrefix(line, prefix); ok {
			return rest
		}
	}
	<-s.done
	s.tb.Fatalf("%s ended (%v) before printing %q; its output:\n%s", s.name, s.err, prefix, s.Output())
	return ""
}

// Wait waits for the script to exit and fails the test, with its output,
// unless it succeeded.
func (s *script) Wait() {
	s.tb.Helper()
	for range s.lines {
	}
	<-s.done
	if s.err != nil {
		s.tb.Fatalf("%s: %v; its output:\n%s", s.name, s.err, s.Output())
	}
}

// run runs a script to its end and returns its stdout lines.
func run(tb testing.TB, env []string, name string, args ...string) []string {
	tb.Helper()
	s := startScript(tb, env, name, args...)
	var lines []string
	for line := range s.lines {
		lines = append(lines, line)
	}
	<-s.done
	if s.err != nil {
		tb.Fatalf("%s: %v; its output:\n%s", name, s.err, s.Output())
	}
	return lines
}
