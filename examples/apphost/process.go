package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// service is one started example process.
type service struct {
	name    string // "catalog-0"
	binary  string
	args    []string // after the binary: a script, for node
	env     []string
	port    int
	logPath string
	cmd     *exec.Cmd
	done    chan error
}

func (s *service) url() string { return "http://127.0.0.1:" + strconv.Itoa(s.port) }

// buildServices compiles the example services into dir, the way
// Aspire.Hosting.Go's AddGoApp runs `go build` for each.
func buildServices(ctx context.Context, dir string, names ...string) (map[string]string, error) {
	root, err := moduleRoot(ctx)
	if err != nil {
		return nil, err
	}
	bins := map[string]string{}
	args := []string{"build", "-o", dir + string(os.PathSeparator)}
	for _, n := range names {
		args = append(args, "./examples/"+n)
		bins[n] = filepath.Join(dir, n)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building %s: %w\n%s", strings.Join(names, ", "), err, out)
	}
	return bins, nil
}

func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("finding the module root (is the go command installed?): %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("run the launcher from inside the goaspire module")
	}
	return filepath.Dir(gomod), nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// start runs the service with its environment, its output in its log file.
func (s *service) start() error {
	logFile, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	s.cmd = exec.Command(s.binary, s.args...)
	s.cmd.Env = s.env
	s.cmd.Stdout = logFile
	s.cmd.Stderr = logFile
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("starting %s: %w", s.name, err)
	}
	s.done = make(chan error, 1)
	go func() {
		s.done <- s.cmd.Wait()
		logFile.Close()
	}()
	return nil
}

// waitHealthy polls /health until it answers 200.
func (s *service) waitHealthy(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.url()+"/health", nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case err := <-s.done:
			s.done <- err
			return fmt.Errorf("%s exited before it was healthy (%v); its log:\n%s", s.name, err, s.logTail())
		case <-ctx.Done():
			return fmt.Errorf("%s was not healthy within %s; its log:\n%s", s.name, timeout, s.logTail())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// stop sends SIGTERM, as an orchestrator does, and waits for a clean exit
// within grace; past it the process is killed.
func (s *service) stop(grace time.Duration) error {
	if s.cmd == nil || s.cmd.Process == nil {
		return nil
	}
	select {
	case err := <-s.done:
		s.done <- err
		return nil // already gone
	default:
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		s.done <- err
		if err != nil {
			return fmt.Errorf("%s exited with %v after SIGTERM", s.name, err)
		}
		return nil
	case <-time.After(grace):
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
		return fmt.Errorf("%s did not exit within %s of SIGTERM; killed", s.name, grace)
	}
}

// kill ends the process at once, as a crash would.
func (s *service) kill() {
	if s.cmd != nil && s.cmd.Process != nil {
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		err := <-s.done
		s.done <- err
	}
}

func (s *service) logTail() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return "(no log)"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return "    " + strings.Join(lines, "\n    ")
}

// findSecret returns the name of the first secret that appears in the
// service's log, or "".
func (s *service) findSecret(secrets map[string]string) string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return ""
	}
	for what, secret := range secrets {
		if secret != "" && strings.Contains(string(b), secret) {
			return what
		}
	}
	return ""
}
