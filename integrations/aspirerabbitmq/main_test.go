package aspirerabbitmq_test

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/goaspire/goaspire/testserver"
)

// broker is the one RabbitMQ node the package's tests share, started by
// the first test that needs it (a node takes seconds to start).
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
