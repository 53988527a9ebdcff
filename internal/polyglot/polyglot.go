// Package polyglot finds the Node.js and Python runtimes that the
// polyglot demo (examples/apphost) and the interop tests
// (internal/interop/nodeinterop) run beside the Go services, and installs
// the demo's npm packages from its lockfile.
//
// The npm project is examples/apphost/polyglot (package.json and
// package-lock.json: amqplib, express, redis). Its node_modules is not
// committed: [NodeModules] runs `npm ci` there when it is missing or older
// than the lockfile, one process at a time (a file lock), so that two
// test packages starting at once do not install over each other. .ci/run
// installs it before the tests.
package polyglot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// ErrMissing is wrapped by the errors of a runtime, tool or module that is
// not installed: a test skips on it locally and fails under CI.
var ErrMissing = errors.New("not installed")

// MissingError says what is missing and how to install it.
type MissingError struct {
	// What is missing ("node", "python3 with pika and redis").
	What string
	// Hint says how to install it.
	Hint string
}

func (e *MissingError) Error() string {
	return fmt.Sprintf("polyglot: %s is not installed (%s)", e.What, e.Hint)
}

// Unwrap returns ErrMissing.
func (e *MissingError) Unwrap() error { return ErrMissing }

// InCI reports whether the CI environment variable is set (and not
// "false" or "0"), as testserver reads it: a missing runtime then fails a
// test instead of skipping it.
func InCI() bool {
	v := os.Getenv("CI")
	return v != "" && !strings.EqualFold(v, "false") && v != "0"
}

// Need fails the test on err, except that a missing runtime or module
// (ErrMissing) skips it on a developer's machine; under CI it fails too.
func Need(tb testing.TB, err error) {
	tb.Helper()
	if err == nil {
		return
	}
	if errors.Is(err, ErrMissing) && !InCI() {
		tb.Skip(err)
	}
	tb.Fatal(err)
}

// DirName is the npm project's directory, relative to the module root.
const DirName = "examples/apphost/polyglot"

// Dir returns the npm project's directory under the module root root.
func Dir(root string) string { return filepath.Join(root, filepath.FromSlash(DirName)) }

// Node returns the path of the node program and of npm.
func Node() (node, npm string, err error) {
	node, err = exec.LookPath("node")
	if err != nil {
		return "", "", &MissingError{What: "node", Hint: "apt-get install nodejs npm"}
	}
	npm, err = exec.LookPath("npm")
	if err != nil {
		return "", "", &MissingError{What: "npm", Hint: "apt-get install npm"}
	}
	return node, npm, nil
}

// NodeModules makes sure dir/node_modules holds what dir/package-lock.json
// pins, running `npm ci` when it does not (no node_modules, or one older
// than the lockfile). Concurrent callers, in this process or others, wait
// for one another.
func NodeModules(ctx context.Context, dir string) error {
	_, npm, err := Node()
	if err != nil {
		return err
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".npm-ci.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return fmt.Errorf("polyglot: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("polyglot: locking %s: %w", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if current(dir) {
		return nil
	}
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("polyglot: npm ci in %s: %w\n%s", dir, err, out)
	}
	return nil
}

// current reports whether npm's record of what it installed is at least as
// new as the lockfile.
func current(dir string) bool {
	installed, err := os.Stat(filepath.Join(dir, "node_modules", ".package-lock.json"))
	if err != nil {
		return false
	}
	lockfile, err := os.Stat(filepath.Join(dir, "package-lock.json"))
	return err == nil && !installed.ModTime().Before(lockfile.ModTime())
}

// Python returns a python3 that can import every module in modules:
// GOASPIRE_PYTHON when set, the one on PATH, else Debian's /usr/bin/python3
// (where apt's python3-pika and python3-redis install, when PATH leads to
// another Python first, such as a pyenv one).
func Python(ctx context.Context, modules ...string) (string, error) {
	var candidates []string
	if p := os.Getenv("GOASPIRE_PYTHON"); p != "" {
		candidates = append(candidates, p)
	}
	if p, err := exec.LookPath("python3"); err == nil {
		candidates = append(candidates, p)
	}
	candidates = append(candidates, "/usr/bin/python3")
	script := "import " + strings.Join(append([]string{"sys"}, modules...), ", ")
	for _, p := range candidates {
		if err := exec.CommandContext(ctx, p, "-c", script).Run(); err == nil {
			return p, nil
		}
	}
	what := "python3"
	if len(modules) > 0 {
		what += " with " + strings.Join(modules, " and ")
	}
	debs := make([]string, len(modules))
	for i, m := range modules {
		if m == "grpc" {
			m = "grpcio" // Debian names the package after the project
		}
		debs[i] = "python3-" + m
	}
	return "", &MissingError{What: what, Hint: "apt-get install " + strings.Join(append([]string{"python3"}, debs...), " ")}
}
