package aspirerabbitmq_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/goaspire/goaspire/testserver"
)

// broker is the one RabbitMQ node the package's tests share (a node takes
// seconds to start).
var (
	broker    *testserver.RabbitMQ
	brokerErr error
)

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	broker, brokerErr = testserver.StartRabbitMQ(ctx)
	cancel()
	if brokerErr != nil && !errors.Is(brokerErr, testserver.ErrBinaryNotFound) {
		fmt.Fprintln(os.Stderr, brokerErr)
		os.Exit(1)
	}
	code := m.Run()
	if broker != nil {
		if err := broker.Close(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
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
	if broker == nil {
		testserver.SkipIfMissing(tb, brokerErr)
		tb.Fatal(brokerErr)
	}
	return broker
}
