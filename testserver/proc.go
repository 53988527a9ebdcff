package testserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"time"
)

const (
	// defaultTimeout bounds waits whose context has no deadline, so a broken
	// server fails a test instead of hanging it.
	defaultTimeout = 60 * time.Second
	// closeTimeout bounds the clean shutdown Close attempts before SIGKILL.
	closeTimeout = 15 * time.Second
	// bindAttempts is how often a server is started on a fresh free port when
	// another process took the port first.
	bindAttempts = 3
	// pollInterval is the pause between readiness and replay checks.
	pollInterval = 25 * time.Millisecond
)

// errPortInUse marks a start that failed because the port was taken between
// choosing it and the server binding it.
var errPortInUse = errors.New("port already in use")

// withDefaultTimeout returns ctx bounded by defaultTimeout if it has no
// deadline of its own.
func withDefaultTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, defaultTimeout)
}

// process is a started server process. A goroutine waits for it, so it is
// always reaped; done is closed once it has exited.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // the result of cmd.Wait; read only after done is closed
}

func startProcess(cmd *exec.Cmd) (*process, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signal sends sig unless the process has already exited.
func (p *process) signal(sig os.Signal) error {
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	return nil
}

// wait waits until the process has exited or ctx is done.
func (p *process) wait(ctx context.Context) error {
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// untilExit returns a context that is also cancelled when the process exits,
// so that a readiness check talking to some other program that took the port
// gives up as soon as the server is gone.
func (p *process) untilExit(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-p.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// kill sends SIGKILL and waits until the process is reaped.
func (p *process) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// account is the operating-system user a server runs as. The zero value
// means the current user.
type account struct {
	name     string
	uid, gid uint32
	set      bool
}

// postgresAccount returns the user PostgreSQL programs run as: the current
// user, or the unprivileged "postgres" user when running as root, because
// postgres and initdb refuse to run as root.
func postgresAccount() (account, error) {
	if os.Geteuid() != 0 {
		return account{}, nil
	}
	const name = "postgres"
	u, err := user.Lookup(name)
	if err != nil {
		return account{}, fmt.Errorf("running as root, so PostgreSQL must run as user %q: %w", name, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return account{}, fmt.Errorf("user %q: parse uid %q: %w", name, u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return account{}, fmt.Errorf("user %q: parse gid %q: %w", name, u.Gid, err)
	}
	return account{name: name, uid: uint32(uid), gid: uint32(gid), set: true}, nil
}

// chown hands path to the account, if it is not the current user.
func (a account) chown(path string) error {
	if !a.set {
		return nil
	}
	if err := os.Chown(path, int(a.uid), int(a.gid)); err != nil {
		return fmt.Errorf("hand %s to user %s: %w", path, a.name, err)
	}
	return nil
}

// command builds a command that runs as the account with a minimal
// environment (so PG* and locale variables of the caller cannot change the
// server), in dir, with output appended to log unless log is nil.
func (a account) command(dir string, log *os.File, name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = []string{"LC_ALL=C", "LANG=C", "PATH=" + os.Getenv("PATH")}
	if log != nil {
		cmd.Stdout = log
		cmd.Stderr = log
	}
	cmd.SysProcAttr = sysProcAttr(a)
	return cmd
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	return port, nil
}

// openLog opens a server log for appending and returns its current size, so
// that the part written by one start can be read back.
func openLog(path string) (*os.File, int64, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, 0, fmt.Errorf("open log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("open log: %w", err)
	}
	return f, fi.Size(), nil
}

const (
	tailBytes = 4096
	tailLines = 30
)

// logTail returns the last lines of the log written since offset from, with
// every secret replaced, for inclusion in an error.
func logTail(path string, from int64, secrets ...string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	start := max(from, fi.Size()-tailBytes)
	buf, err := io.ReadAll(io.NewSectionReader(f, start, fi.Size()-start))
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(buf), "\n"), "\n")
	if start > from && len(lines) > 1 {
		lines = lines[1:] // the first line is probably cut
	}
	if len(lines) > tailLines {
		lines = lines[len(lines)-tailLines:]
	}
	return redact(strings.Join(lines, "\n"), secrets...)
}

// redact replaces every non-empty secret in s.
func redact(s string, secrets ...string) string {
	for _, secret := range secrets {
		if secret != "" {
			s = strings.ReplaceAll(s, secret, "[REDACTED]")
		}
	}
	return s
}

// withLog appends a log tail to an error message, if there is one.
func withLog(tail string) string {
	if tail == "" {
		return ""
	}
	return "\n--- server log ---\n" + tail
}

// run runs cmd to completion. If ctx ends first, the process is killed and
// reaped and ctx's error returned.
func run(ctx context.Context, cmd *exec.Cmd) error {
	proc, err := startProcess(cmd)
	if err != nil {
		return err
	}
	if err := proc.wait(ctx); err != nil {
		proc.kill()
		return err
	}
	return proc.err
}
