package testserver

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

var errSharedClosed = errors.New("closed")

// SharedRabbitMQ is one RabbitMQ node shared by the tests of a package: a
// node takes seconds to start, so a package starts one, on the first test
// that asks for it, and stops it after the last. The zero value is ready to
// use; declare it as a package variable and close it in TestMain:
//
//	var mq testserver.SharedRabbitMQ
//
//	func TestMain(m *testing.M) {
//		code := m.Run()
//		if err := mq.Close(); err != nil {
//			fmt.Fprintln(os.Stderr, err)
//			code = 1
//		}
//		os.Exit(code)
//	}
//
//	func TestOrders(t *testing.T) {
//		broker := mq.Get(t)
//		// ... broker.URL() ...
//	}
//
// Tests that stop or restart the node must not run in parallel with the
// others. A SharedRabbitMQ is safe for concurrent use.
type SharedRabbitMQ struct {
	// StartTimeout bounds the first start; zero means two minutes.
	StartTimeout time.Duration

	mu     sync.Mutex
	node   *RabbitMQ
	err    error
	closed bool
}

// Get returns the shared node, starting it on the first call. When
// rabbitmq-server is not installed it skips the test, or fails it under CI
// (see SkipIfMissing); when the node fails to start it fails the test, and
// every later Get fails with the same error without trying again.
func (s *SharedRabbitMQ) Get(tb testing.TB) *RabbitMQ {
	tb.Helper()
	node, err := s.start()
	if err != nil {
		SkipIfMissing(tb, err)
		tb.Fatalf("testserver: the shared RabbitMQ node: %v", err)
	}
	return node
}

func (s *SharedRabbitMQ) start() (*RabbitMQ, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errSharedClosed
	}
	if s.node != nil || s.err != nil {
		return s.node, s.err
	}
	timeout := s.StartTimeout
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	s.node, s.err = StartRabbitMQ(ctx)
	return s.node, s.err
}

// Close stops the node, if one was started, and removes its files. Get
// fails after Close.
func (s *SharedRabbitMQ) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.node == nil {
		return nil
	}
	node := s.node
	s.node = nil
	return node.Close()
}
