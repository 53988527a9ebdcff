package rabbitmq

import (
	"fmt"
	"os"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/goaspire/goaspire/testserver"
)

// broker is the one RabbitMQ node the package's tests share, started by
// the first test that needs it (a node takes seconds to start). Tests
// that restart it do not run in parallel.
var broker testserver.SharedRabbitMQ

func TestMain(m *testing.M) {
	code := m.Run()
	if err := broker.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// needBroker returns the shared node. When rabbitmq-server is not
// installed it skips the test, or fails it under CI (see
// testserver.SkipIfMissing).
func needBroker(tb testing.TB) *testserver.RabbitMQ {
	tb.Helper()
	return broker.Get(tb)
}

// newClient connects a Client to the shared node, with quick reconnects.
// New waits for the connection (WaitOnOpen), so that the client is
// connected when it returns.
func newClient(tb testing.TB, modify ...func(*Config)) *Client {
	tb.Helper()
	b := needBroker(tb)
	cfg := &Config{URL: b.URL(), Name: "test", ReconnectDelay: 20 * time.Millisecond, MaxReconnectDelay: 300 * time.Millisecond, Heartbeat: 2 * time.Second,
		WaitOnOpen: time.Minute}
	for _, f := range modify {
		f(cfg)
	}
	c, err := New(tb.Context(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := c.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return c
}

// bare opens a plain amqp091-go channel on the shared node, for checking
// what the broker holds independently of the client under test.
func bare(tb testing.TB) *amqp.Channel {
	tb.Helper()
	conn, err := amqp.Dial(needBroker(tb).URL())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		tb.Fatal(err)
	}
	return ch
}

// queueName returns a queue name unique to the test.
func queueName(tb testing.TB, suffix string) string {
	return fmt.Sprintf("%s-%s-%d", tb.Name(), suffix, time.Now().UnixNano())
}

// restartBroker stops the node (cleanly, or with SIGKILL when kill is set),
// runs whileDown (if not nil), and starts it again.
func restartBroker(tb testing.TB, kill bool, whileDown ...func()) {
	tb.Helper()
	b := needBroker(tb)
	var err error
	if kill {
		err = b.Kill()
	} else {
		err = b.Stop(tb.Context())
	}
	if err != nil {
		tb.Fatal(err)
	}
	for _, f := range whileDown {
		f()
	}
	if err := b.Start(tb.Context()); err != nil {
		tb.Fatal(err)
	}
}
