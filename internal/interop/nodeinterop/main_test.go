package nodeinterop

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/goaspire/goaspire/internal/polyglot"
	"github.com/goaspire/goaspire/internal/syncbuf"
	"github.com/goaspire/goaspire/testserver"
)

// lineTimeout bounds the wait for one line from a Node process: generous,
// for a loaded 2-core machine.
const lineTimeout = 90 * time.Second

var (
	// node is the node program, "" when it is not installed (the tests
	// skip then, and TestMain fails under CI).
	node string
	// nodePath is the node_modules of the repository's npm project.
	nodePath string
	nodeErr  error
	// broker is the RabbitMQ node the package's tests share, started by
	// the first test that needs it.
	broker testserver.SharedRabbitMQ
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	node, nodeErr = setupNode(ctx)
	if nodeErr != nil && (!errors.Is(nodeErr, polyglot.ErrMissing) || polyglot.InCI()) {
		fmt.Fprintln(os.Stderr, nodeErr)
		return 1
	}
	code := m.Run()
	if err := broker.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	return code
}

// setupNode finds node and installs the npm project's packages (npm ci)
// when they are missing.
func setupNode(ctx context.Context) (string, error) {
	bin, _, err := polyglot.Node()
	if err != nil {
		return "", err
	}
	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	if err != nil {
		return "", err
	}
	dir := polyglot.Dir(root)
	if err := polyglot.NodeModules(ctx, dir); err != nil {
		return "", err
	}
	nodePath = filepath.Join(dir, "node_modules")
	return bin, nil
}

// needNode skips the test when node is not installed (TestMain has failed
// already under CI).
func needNode(tb testing.TB) {
	tb.Helper()
	if node == "" {
		tb.Skipf("node not available: %v", nodeErr)
	}
}

// needBroker returns the shared RabbitMQ node, skipping the test when
// rabbitmq-server is not installed (failing it under CI).
func needBroker(tb testing.TB) *testserver.RabbitMQ {
	tb.Helper()
	return broker.Get(tb)
}

// nodeProc is a running testdata/interop.js command.
type nodeProc struct {
	tb     testing.TB
	name   string
	cmd    *exec.Cmd
	lines  chan []byte
	stderr *syncbuf.Buffer
	exited chan struct{}
	err    error // set before exited is closed
}

// startNode runs `node testdata/interop.js args...` with env added to the
// test's environment; it is killed when the test ends if still running.
func startNode(tb testing.TB, env []string, args ...string) *nodeProc {
	tb.Helper()
	needNode(tb)
	cmd := exec.Command(node, append([]string{filepath.Join("testdata", "interop.js")}, args...)...)
	cmd.Env = append(append(os.Environ(), "NODE_PATH="+nodePath), env...)
	p := &nodeProc{tb: tb, name: args[0], cmd: cmd, lines: make(chan []byte, 1024), stderr: &syncbuf.Buffer{}, exited: make(chan struct{})}
	cmd.Stderr = p.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("starting node: %v", err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64*1024), 4<<20)
		for sc.Scan() {
			p.lines <- append([]byte(nil), sc.Bytes()...)
		}
		p.err = cmd.Wait()
		close(p.lines)
		close(p.exited)
	}()
	tb.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = cmd.Process.Kill()
			<-p.exited
		}
		if tb.Failed() {
			tb.Logf("node %s stderr:\n%s", p.name, p.stderr.String())
		}
	})
	return p
}

// next decodes the next line the process writes into v, failing the test
// if none comes within lineTimeout or the process ends first.
func (p *nodeProc) next(v any) {
	p.tb.Helper()
	select {
	case line, ok := <-p.lines:
		if !ok {
			p.tb.Fatalf("node %s exited (%v) before writing the expected line; stderr:\n%s", p.name, p.err, p.stderr.String())
		}
		if err := json.Unmarshal(line, v); err != nil {
			p.tb.Fatalf("node %s wrote %q: %v", p.name, line, err)
		}
	case <-time.After(lineTimeout):
		p.tb.Fatalf("node %s wrote nothing within %s; stderr:\n%s", p.name, lineTimeout, p.stderr.String())
	}
}

// wait waits for the process to exit and fails the test if it failed.
func (p *nodeProc) wait() {
	p.tb.Helper()
	select {
	case <-p.exited:
	case <-time.After(lineTimeout):
		p.tb.Fatalf("node %s did not exit within %s", p.name, lineTimeout)
	}
	if p.err != nil {
		p.tb.Fatalf("node %s: %v; stderr:\n%s", p.name, p.err, p.stderr.String())
	}
}
