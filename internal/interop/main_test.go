package interop_test

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/goaspire/goaspire/testserver"
)

// broker is the RabbitMQ node the tests share, started by the first test
// that needs one (a node takes seconds to start) and stopped by TestMain.
var broker testserver.SharedRabbitMQ

func TestMain(m *testing.M) {
	code := m.Run()
	if err := broker.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	os.Exit(code)
}

// rabbit returns the shared node, skipping the test when rabbitmq-server
// is not installed (failing it under CI).
func rabbit(tb testing.TB) *testserver.RabbitMQ {
	tb.Helper()
	return broker.Get(tb)
}

// freePort returns a loopback port free at the moment, for a server in
// another process, which must bind it itself.
func freePort(tb testing.TB) int {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	n, _ := strconv.Atoi(port)
	return n
}

// unique returns a name unique to the test run, for queues that outlive a
// test on the shared node.
func unique(tb testing.TB, base string) string {
	return fmt.Sprintf("%s-%d", base, time.Now().UnixNano())
}
