package testserver

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Sentinel timings, short so that a test's failover takes seconds.
const (
	sentinelDownAfter       = 500 * time.Millisecond
	sentinelFailoverTimeout = 3 * time.Second
	// clusterNodeTimeout is how long a cluster node may be unreachable
	// before the others consider it failing.
	clusterNodeTimeout = 2 * time.Second
)

// writeConfig adds the topology's directives to redis.conf.
func (t redisTopology) writeConfig(line func(name string, args ...string), password string) {
	switch t.kind {
	case "replica":
		line("replicaof", redisHost, strconv.Itoa(t.primary.port))
	case "sentinel":
		name := t.serviceName
		line("sentinel", "monitor", name, redisHost, strconv.Itoa(t.primary.port), "1")
		line("sentinel", "auth-pass", name, password)
		line("sentinel", "down-after-milliseconds", name, strconv.FormatInt(sentinelDownAfter.Milliseconds(), 10))
		line("sentinel", "failover-timeout", name, strconv.FormatInt(sentinelFailoverTimeout.Milliseconds(), 10))
	case "cluster node":
		line("cluster-enabled", "yes")
		line("cluster-config-file", "nodes.conf")
		line("cluster-port", strconv.Itoa(t.clusterPort))
		line("cluster-node-timeout", strconv.FormatInt(clusterNodeTimeout.Milliseconds(), 10))
	}
}

// withPassword makes a server share a topology's password.
func withPassword(password string) RedisOption {
	return func(c *redisConfig) { c.password = password }
}

// running reports whether the server runs, for the starters that need it.
func (r *Redis) running() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.proc != nil && !r.closed
}

// StartReplica starts a replica of the running server (replicaof) in its own
// temporary directory on a free port, with the primary's password; it
// returns once the replica answers PING, which may be before it has copied
// the primary's data. opts may set its port and add settings (not TLS).
// Close the replica with [Redis.Close]; closing the primary does not. If ctx
// has no deadline, one minute applies.
func (r *Redis) StartReplica(ctx context.Context, opts ...RedisOption) (*Redis, error) {
	if !r.running() {
		return nil, fmt.Errorf("testserver: start replica of %s: primary is not running", r)
	}
	return startRedis(ctx, redisTopology{kind: "replica", primary: r}, append(opts, withPassword(r.password)))
}

// StartSentinel starts a Redis Sentinel (redis-server --sentinel) that
// monitors the running server as serviceName with a quorum of 1, short
// timeouts (down after 500 ms, failover timeout 3 s), and the server's
// password, both to reach the servers and to let clients in (as a
// StackExchange.Redis connection string with serviceName uses one password
// for both). Its [Redis.ConnectionString] names serviceName. It returns once
// the sentinel answers PING; it learns of replicas from the primary shortly
// after. opts may set its port and add settings (not TLS). If ctx has no
// deadline, one minute applies.
func (r *Redis) StartSentinel(ctx context.Context, serviceName string, opts ...RedisOption) (*Redis, error) {
	if serviceName == "" || strings.ContainsAny(serviceName, " \t\r\n\",") {
		return nil, fmt.Errorf("testserver: start sentinel of %s: invalid service name %q", r, serviceName)
	}
	if !r.running() {
		return nil, fmt.Errorf("testserver: start sentinel of %s: primary is not running", r)
	}
	return startRedis(ctx, redisTopology{kind: "sentinel", primary: r, serviceName: serviceName}, append(opts, withPassword(r.password)))
}

// RedisCluster is a throwaway Redis Cluster: several [Redis] servers with
// cluster-enabled, each in its own temporary directory on free loopback
// ports (one for clients, one for the cluster bus), sharing one random
// password, with the 16384 slots spread over them and no replicas.
type RedisCluster struct {
	nodes []*Redis
}

// StartRedisCluster starts n cluster nodes (at least 3, as redis-cli
// requires), joins them with redis-cli --cluster create, and returns once
// every node reports cluster_state:ok. opts apply to every node (not TLS
// or a fixed port). If ctx has no deadline, one minute applies. Stop the
// cluster with [RedisCluster.Close].
//
// A missing redis-server or redis-cli gives an error matching
// [ErrBinaryNotFound].
func StartRedisCluster(ctx context.Context, n int, opts ...RedisOption) (*RedisCluster, error) {
	if n < 3 {
		return nil, fmt.Errorf("testserver: start redis cluster: %d nodes; redis-cli needs at least 3", n)
	}
	var cfg redisConfig
	for _, opt := range opts {
		opt(&cfg)
	}
	if cfg.port != 0 {
		return nil, errors.New("testserver: start redis cluster: the nodes need a port each; do not set one")
	}
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	cli, err := FindBinary("redis-cli")
	if err != nil {
		return nil, fmt.Errorf("testserver: start redis cluster: %w", err)
	}
	c := &RedisCluster{}
	fail := func(err error) (*RedisCluster, error) {
		return nil, errors.Join(fmt.Errorf("testserver: start redis cluster: %w", err), c.Close())
	}
	password := rand.Text()
	for range n {
		node, err := startRedis(ctx, redisTopology{kind: "cluster node"}, append(opts, withPassword(password)))
		if err != nil {
			return fail(err)
		}
		c.nodes = append(c.nodes, node)
	}
	if err := c.create(ctx, cli); err != nil {
		return fail(err)
	}
	if err := c.WaitOK(ctx); err != nil {
		return nil, errors.Join(err, c.Close())
	}
	return c, nil
}

// create runs redis-cli --cluster create, with the password in
// REDISCLI_AUTH rather than on the command line, and its output in the
// first node's directory.
func (c *RedisCluster) create(ctx context.Context, cli string) error {
	first := c.nodes[0]
	logPath := filepath.Join(first.dir, "cluster-create.log")
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer log.Close()
	args := []string{"--cluster", "create"}
	for _, n := range c.nodes {
		args = append(args, n.Addr())
	}
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	cmd := account{}.command(first.dir, log, cli, args...)
	cmd.Env = append(cmd.Env, "REDISCLI_AUTH="+first.password)
	if err := run(ctx, cmd); err != nil {
		return fmt.Errorf("redis-cli --cluster create: %w%s", err, withLog(logTail(logPath, 0, first.password)))
	}
	return nil
}

// WaitOK waits until every node reports cluster_state:ok, as after a node
// was killed and started again. If ctx has no deadline, one minute applies.
func (c *RedisCluster) WaitOK(ctx context.Context) error {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for _, n := range c.nodes {
		for {
			info, err := n.command(ctx, "CLUSTER", "INFO")
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			select {
			case <-ctx.Done():
				last := "cluster_state not ok"
				if err != nil {
					last = redact(err.Error(), n.password)
				}
				return fmt.Errorf("testserver: %s: cluster not ready: %w (last attempt: %s)", n, ctx.Err(), last)
			case <-tick.C:
			}
		}
	}
	return nil
}

// Nodes returns the cluster's servers, in the order they were started.
// Each can be stopped, killed and started again; the caller must not
// close them (use [RedisCluster.Close]).
func (c *RedisCluster) Nodes() []*Redis { return append([]*Redis(nil), c.nodes...) }

// Password returns the password all nodes share.
func (c *RedisCluster) Password() string { return c.nodes[0].password }

// ConnectionString returns the StackExchange.Redis connection string that
// names every node, "127.0.0.1:p1,127.0.0.1:p2,...,password=...". It holds
// the password: never put it in an error or a log.
func (c *RedisCluster) ConnectionString() string {
	addrs := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		addrs[i] = n.Addr()
	}
	return strings.Join(addrs, ",") + ",password=" + c.Password()
}

// String describes the cluster without its password.
func (c *RedisCluster) String() string {
	addrs := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		addrs[i] = n.Addr()
	}
	return "redis cluster " + strings.Join(addrs, ",")
}

// GoString describes the cluster without its password, for %#v.
func (c *RedisCluster) GoString() string { return "testserver.RedisCluster{" + c.String() + "}" }

// Close stops every node and removes their temporary directories. It is
// safe to call more than once.
func (c *RedisCluster) Close() error {
	var errs []error
	for _, n := range c.nodes {
		errs = append(errs, n.Close())
	}
	return errors.Join(errs...)
}
