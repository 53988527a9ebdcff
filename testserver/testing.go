package testserver

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
)

// NewPostgres starts a PostgreSQL server for the test with [StartPostgres]
// and closes it in tb.Cleanup. It skips the test if a PostgreSQL binary is not
// installed (fails it when CI is set, see [SkipIfMissing]), and fails it on
// any other start error. When the test has failed,
// the cleanup logs the tail of the server log first.
func NewPostgres(tb testing.TB, opts ...PostgresOption) *Postgres {
	tb.Helper()
	p, err := StartPostgres(tb.Context(), opts...)
	if err != nil {
		skipOrFatal(tb, err)
	}
	tb.Cleanup(func() { closeForTest(tb, p, p.logPath, p.password) })
	return p
}

// NewReplica starts a streaming replica of p for the test with
// [Postgres.StartReplica] and closes it in tb.Cleanup (before the primary,
// when the primary came from [NewPostgres] earlier in the same test). It
// skips the test if pg_basebackup is not installed (fails it when CI is set),
// and fails it on any other start error.
func (p *Postgres) NewReplica(tb testing.TB, opts ...PostgresOption) *Postgres {
	tb.Helper()
	r, err := p.StartReplica(tb.Context(), opts...)
	if err != nil {
		skipOrFatal(tb, err)
	}
	tb.Cleanup(func() { closeForTest(tb, r, r.logPath, r.password) })
	return r
}

// NewRedis starts a Redis server for the test with [StartRedis] and closes it
// in tb.Cleanup. It skips the test if redis-server is not installed (fails it
// when CI is set), and fails it on any other start error. When the test has failed, the cleanup logs the
// tail of the server log first.
func NewRedis(tb testing.TB, opts ...RedisOption) *Redis {
	tb.Helper()
	r, err := StartRedis(tb.Context(), opts...)
	if err != nil {
		skipOrFatal(tb, err)
	}
	tb.Cleanup(func() { closeForTest(tb, r, r.logPath, r.password) })
	return r
}

// NewReplica starts a replica of r for the test with [Redis.StartReplica]
// and closes it in tb.Cleanup. It skips the test if redis-server is not
// installed (fails it when CI is set), and fails it on any other start
// error.
func (r *Redis) NewReplica(tb testing.TB, opts ...RedisOption) *Redis {
	tb.Helper()
	rep, err := r.StartReplica(tb.Context(), opts...)
	if err != nil {
		skipOrFatal(tb, err)
	}
	tb.Cleanup(func() { closeForTest(tb, rep, rep.logPath, rep.password) })
	return rep
}

// NewSentinel starts a Sentinel monitoring r as serviceName for the test
// with [Redis.StartSentinel] and closes it in tb.Cleanup. It skips the test
// if redis-server is not installed (fails it when CI is set), and fails it
// on any other start error.
func (r *Redis) NewSentinel(tb testing.TB, serviceName string, opts ...RedisOption) *Redis {
	tb.Helper()
	s, err := r.StartSentinel(tb.Context(), serviceName, opts...)
	if err != nil {
		skipOrFatal(tb, err)
	}
	tb.Cleanup(func() { closeForTest(tb, s, s.logPath, s.password) })
	return s
}

// NewRedisCluster starts an n-node cluster for the test with
// [StartRedisCluster] and closes it in tb.Cleanup. It skips the test if
// redis-server or redis-cli is not installed (fails it when CI is set), and
// fails it on any other start error. When the test has failed, the cleanup
// logs the tail of every node's log first.
func NewRedisCluster(tb testing.TB, n int, opts ...RedisOption) *RedisCluster {
	tb.Helper()
	c, err := StartRedisCluster(tb.Context(), n, opts...)
	if err != nil {
		skipOrFatal(tb, err)
	}
	tb.Cleanup(func() {
		for _, node := range c.nodes {
			logForTest(tb, node, node.logPath, node.password)
		}
		if err := c.Close(); err != nil {
			tb.Error(err)
		}
	})
	return c
}

// NewRabbitMQ starts a RabbitMQ node for the test with [StartRabbitMQ] and
// closes it in tb.Cleanup. It skips the test if rabbitmq-server is not
// installed, and fails it on any other start error. A node takes several
// seconds to start: a package with many tests should share one, started in
// TestMain with [StartRabbitMQ].
func NewRabbitMQ(tb testing.TB) *RabbitMQ {
	tb.Helper()
	r, err := StartRabbitMQ(tb.Context())
	if err != nil {
		skipOrFatal(tb, err)
	}
	tb.Cleanup(func() { closeForTest(tb, r, r.logPath, r.password) })
	return r
}

// skipOrFatal skips the test for a missing binary (fails it under CI) and
// fails it for any other error.
func skipOrFatal(tb testing.TB, err error) {
	tb.Helper()
	SkipIfMissing(tb, err)
	tb.Fatal(err)
}

// SkipIfMissing ends the test when err reports a missing server binary
// (matches [ErrBinaryNotFound]): on a developer machine it skips the test,
// saying which program is missing; when the environment variable CI is set
// to anything but "" or "false" (as .ci/run and CI services set it), it
// fails the test instead, so a CI machine without the servers cannot pass
// by skipping everything. For any other error, or nil, it returns and
// leaves the error to the caller.
func SkipIfMissing(tb testing.TB, err error) {
	tb.Helper()
	if !errors.Is(err, ErrBinaryNotFound) {
		return
	}
	name := "a server binary"
	var missing *BinaryNotFoundError
	if errors.As(err, &missing) {
		name = missing.Name
	}
	if inCI() {
		tb.Fatalf("testserver: %s not installed, and CI is set: install it (.ci/run does): %v", name, err)
	}
	tb.Skipf("testserver: %s not installed: %v", name, err)
}

// inCI reports whether the CI environment variable is set, as GitHub
// Actions, GitLab and .ci/run set it.
func inCI() bool {
	v := os.Getenv("CI")
	return v != "" && !strings.EqualFold(v, "false") && v != "0"
}

type closer interface {
	Close() error
	String() string
}

func closeForTest(tb testing.TB, s closer, logPath, password string) {
	tb.Helper()
	logForTest(tb, s, logPath, password)
	if err := s.Close(); err != nil {
		tb.Error(err)
	}
}

// logForTest logs the tail of a server's log if the test has failed.
func logForTest(tb testing.TB, s fmt.Stringer, logPath, password string) {
	tb.Helper()
	if tb.Failed() {
		if tail := logTail(logPath, 0, password); tail != "" {
			tb.Logf("%s log (%s):\n%s", s, logPath, tail)
		}
	}
}
