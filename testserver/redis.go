package testserver

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// redisHost is the only address Redis listens on.
const redisHost = "127.0.0.1"

// Redis is a throwaway Redis server in its own temporary directory. It
// listens on 127.0.0.1 only, requires a random password, and keeps nothing
// on disk (no RDB snapshots, no AOF), so a kill loses its data. Its methods
// are safe for concurrent use.
type Redis struct {
	server
	bin      string
	port     int
	dir      string // the temporary directory Close removes
	confPath string
	settings []redisSetting
	tls      *serverTLS // nil without TLS
	topology redisTopology
}

// redisTopology is the part a server plays beyond a standalone one: a
// replica of primary, a Sentinel monitoring primary as serviceName, or a
// cluster node. The zero value is a standalone server.
type redisTopology struct {
	kind        string // "" (standalone), "replica", "sentinel" or "cluster node"
	primary     *Redis // the replica's primary, the sentinel's monitored primary
	serviceName string // the sentinel's name for primary
	clusterPort int    // the cluster node's bus port
}

type redisSetting struct {
	name string
	args []string
}

// RedisOption configures [StartRedis].
type RedisOption func(*redisConfig)

type redisConfig struct {
	tls      bool
	port     int
	settings []redisSetting
	password string // set for servers that share a password: replicas, sentinels, cluster nodes
}

// WithRedisTLS serves TLS only: a throwaway CA and a server certificate for
// 127.0.0.1, ::1 and localhost are generated in the temporary directory, and
// Redis listens with tls-port only (no plain port; client certificates are
// not required). Trust the CA with [Redis.CACertPool], [Redis.TLSConfig] or
// [Redis.CACertFile].
func WithRedisTLS() RedisOption {
	return func(c *redisConfig) { c.tls = true }
}

// WithRedisPort listens on a fixed port instead of a free one. The start
// fails if the port is taken.
func WithRedisPort(port int) RedisOption {
	return func(c *redisConfig) { c.port = port }
}

// WithRedisSetting adds a configuration directive, such as
// WithRedisSetting("maxmemory", "10mb"); each argument is quoted. It
// overrides the helper's defaults; do not set bind, port, tls-port,
// requirepass or dir.
func WithRedisSetting(name string, args ...string) RedisOption {
	return func(c *redisConfig) { c.settings = append(c.settings, redisSetting{name, args}) }
}

// StartRedis starts redis-server in a temporary directory on a free port with
// a random password; it returns once the server answers PING. If ctx has no
// deadline, one minute applies. Stop the server with [Redis.Close].
//
// A missing binary gives an error matching [ErrBinaryNotFound]; errors carry
// the tail of the server log, never the password.
func StartRedis(ctx context.Context, opts ...RedisOption) (*Redis, error) {
	return startRedis(ctx, redisTopology{}, opts)
}

// startRedis starts a server of any topology: StartRedis, the replica and
// sentinel starters and StartRedisCluster all come here.
func startRedis(ctx context.Context, topo redisTopology, opts []RedisOption) (*Redis, error) {
	var cfg redisConfig
	for _, opt := range opts {
		opt(&cfg)
	}
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()

	what := topo.what()
	if cfg.tls && topo.kind != "" {
		return nil, fmt.Errorf("testserver: start %s: TLS is supported for standalone servers only", what)
	}
	bin, err := FindBinary("redis-server")
	if err != nil {
		return nil, fmt.Errorf("testserver: start %s: %w", what, err)
	}
	dir, err := os.MkdirTemp("", "goaspire-redis-*")
	if err != nil {
		return nil, fmt.Errorf("testserver: start %s: make temporary directory: %w", what, err)
	}
	password := cfg.password
	if password == "" {
		password = rand.Text()
	}
	r := &Redis{
		server: server{
			logPath:    filepath.Join(dir, "redis.log"),
			password:   password,
			stopSignal: syscall.SIGTERM,
			kill:       (*process).kill,
		},
		bin:      bin,
		dir:      dir,
		confPath: filepath.Join(dir, "redis.conf"),
		settings: cfg.settings,
		topology: topo,
	}
	if cfg.tls {
		if r.tls, err = writeTLSFiles(dir); err != nil {
			return nil, errors.Join(fmt.Errorf("testserver: start %s: %w", what, err), r.Close())
		}
	}
	if err := r.startOnFreePort(ctx, cfg.port); err != nil {
		return nil, errors.Join(fmt.Errorf("testserver: start %s: %w", what, err), r.Close())
	}
	return r, nil
}

// writeConfig writes redis.conf (mode 0600: it holds the password, which is
// why it is not passed on the command line).
func (r *Redis) writeConfig() error {
	var b strings.Builder
	line := func(name string, args ...string) {
		b.WriteString(name)
		for _, a := range args {
			b.WriteString(" " + quoteRedis(a))
		}
		b.WriteString("\n")
	}
	line("bind", redisHost)
	if r.tls != nil {
		line("port", "0")
		line("tls-port", strconv.Itoa(r.port))
		line("tls-cert-file", r.tls.certFile)
		line("tls-key-file", r.tls.keyFile)
		line("tls-ca-cert-file", r.tls.caFile)
		line("tls-auth-clients", "no")
	} else {
		line("port", strconv.Itoa(r.port))
	}
	line("daemonize", "no")
	line("logfile", "")
	line("save", "")
	line("appendonly", "no")
	line("dir", r.dir)
	line("requirepass", r.password)
	// Every server can become a replica (a Sentinel demotes a primary that
	// comes back), and all servers of one topology share the password.
	line("masterauth", r.password)
	line("repl-diskless-sync-delay", "0") // replicas sync at once
	r.topology.writeConfig(line, r.password)
	for _, s := range r.settings {
		line(s.name, s.args...)
	}
	if err := os.WriteFile(r.confPath, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("write redis.conf: %w", err)
	}
	return nil
}

// quoteRedis quotes a configuration argument for redis.conf.
func quoteRedis(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s) + `"`
}

// startOnFreePort starts the server on port, or if port is 0 on a free port,
// trying another one when a different process takes it first.
func (r *Redis) startOnFreePort(ctx context.Context, port int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return onFreePort(port, func(port int) error {
		r.port = port
		if r.topology.kind == "cluster node" {
			// The cluster bus needs a second port; the default, port+10000,
			// may be taken or out of range.
			bus, err := freePort()
			if err != nil {
				return err
			}
			r.topology.clusterPort = bus
		}
		if err := r.writeConfig(); err != nil {
			return err
		}
		return r.startLocked(ctx)
	})
}

// startLocked starts redis-server and waits until it answers PING.
func (r *Redis) startLocked(ctx context.Context) error {
	log, from, err := openLog(r.logPath)
	if err != nil {
		return err
	}
	defer log.Close() // the server has its own descriptor
	args := []string{r.confPath}
	if r.topology.kind == "sentinel" {
		args = append(args, "--sentinel")
	}
	proc, err := startProcess(account{}.command(r.dir, log, r.bin, args...))
	if err != nil {
		return fmt.Errorf("run %s: %w", r.bin, err)
	}
	if err := r.waitReady(ctx, proc, from, r.what(), r.port, r.ping); err != nil {
		r.kill(proc)
		return err
	}
	r.proc = proc
	return nil
}

// ping authenticates and sends PING.
func (r *Redis) ping(ctx context.Context) error {
	got, err := r.command(ctx, "PING")
	if err == nil && got != "PONG" {
		err = fmt.Errorf("unexpected reply %q to PING", got)
	}
	return err
}

// command authenticates and sends one command over a new connection,
// speaking RESP directly so that readiness checks start no client
// goroutines. It returns a simple string, bulk string or integer reply as
// text; an error reply is an error.
func (r *Redis) command(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var d interface {
		DialContext(ctx context.Context, network, addr string) (net.Conn, error)
	} = &net.Dialer{}
	if r.tls != nil {
		d = &tls.Dialer{Config: r.TLSConfig()}
	}
	conn, err := d.DialContext(ctx, "tcp", r.Addr())
	if err != nil {
		return "", err
	}
	defer conn.Close()
	defer context.AfterFunc(ctx, func() { conn.Close() })()
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(deadline)
	}
	var b strings.Builder
	for _, cmd := range [][]string{{"AUTH", r.password}, args} {
		fmt.Fprintf(&b, "*%d\r\n", len(cmd))
		for _, a := range cmd {
			fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
		}
	}
	if _, err := conn.Write([]byte(b.String())); err != nil {
		return "", err
	}
	br := bufio.NewReader(conn)
	if got, err := readReply(br); err != nil {
		return "", fmt.Errorf("AUTH: %w", err)
	} else if got != "OK" {
		return "", fmt.Errorf("unexpected reply %q to AUTH", got)
	}
	return readReply(br)
}

// CommandCalls returns how many times the server has run command (for
// example "auth") since it started or its statistics were reset, and how
// many of those failed, from INFO commandstats: a test counts the AUTHs
// a client sent to re-authenticate, say.
func (r *Redis) CommandCalls(ctx context.Context, command string) (calls, failed int, err error) {
	info, err := r.command(ctx, "INFO", "commandstats")
	if err != nil {
		return 0, 0, fmt.Errorf("testserver: INFO commandstats on %s: %w", r, err)
	}
	prefix := "cmdstat_" + strings.ToLower(command) + ":"
	for _, line := range strings.Split(info, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), prefix)
		if !ok {
			continue
		}
		for _, f := range strings.Split(rest, ",") {
			k, v, _ := strings.Cut(f, "=")
			n, _ := strconv.Atoi(v)
			switch k {
			case "calls":
				calls = n
			case "failed_calls":
				failed = n
			}
		}
	}
	return calls, failed, nil
}

// readReply reads one RESP reply that is not an array.
func readReply(br *bufio.Reader) (string, error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", errors.New("empty reply")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", fmt.Errorf("server replied %q", line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", fmt.Errorf("unexpected reply %q", line)
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(br, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	return "", fmt.Errorf("unexpected reply %q", line)
}

// Addr returns the server's address, "127.0.0.1:port".
func (r *Redis) Addr() string { return net.JoinHostPort(redisHost, strconv.Itoa(r.port)) }

// Port returns the TCP port (the TLS port with [WithRedisTLS]); it stays the
// same across [Redis.Start].
func (r *Redis) Port() int { return r.port } // set before r is shared

// Password returns the random password (requirepass).
func (r *Redis) Password() string { return r.password }

// LogFile returns the path of the server log.
func (r *Redis) LogFile() string { return r.logPath }

// ConnectionString returns the connection string in the StackExchange.Redis
// form an Aspire AppHost injects, "127.0.0.1:port,password=...", with
// ",ssl=true" appended under TLS. A Sentinel's names the monitored
// primary: "127.0.0.1:port,serviceName=name,password=...". It holds the
// password: never put it in an error or a log.
func (r *Redis) ConnectionString() string {
	s := r.Addr()
	if r.topology.kind == "sentinel" {
		s += ",serviceName=" + r.topology.serviceName
	}
	s += ",password=" + r.password
	if r.tls != nil {
		s += ",ssl=true"
	}
	return s
}

// URL returns the connection string in URL form, redis://:password@127.0.0.1:port
// (rediss:// under TLS). It holds the password: never put it in an error or
// a log.
func (r *Redis) URL() string {
	u := url.URL{Scheme: "redis", User: url.UserPassword("", r.password), Host: r.Addr()}
	if r.tls != nil {
		u.Scheme = "rediss"
	}
	return u.String()
}

// String describes the server without its password.
func (r *Redis) String() string {
	if r.tls != nil {
		return r.what() + " " + r.Addr() + " (TLS)"
	}
	return r.what() + " " + r.Addr()
}

// what names the kind of server: "redis", "redis replica", "redis
// sentinel" or "redis cluster node".
func (r *Redis) what() string { return r.topology.what() }

func (t redisTopology) what() string {
	if t.kind == "" {
		return "redis"
	}
	return "redis " + t.kind
}

// GoString describes the server without its password, for %#v.
func (r *Redis) GoString() string { return "testserver.Redis{" + r.String() + "}" }

// Stop shuts the server down (SIGTERM) and waits for it to exit. If ctx ends
// first, the server is killed. Stopping a stopped server does nothing; if the
// server had exited on its own, Stop reports how.
func (r *Redis) Stop(ctx context.Context) error { return r.stop(ctx, r) }

// Kill crashes the server with SIGKILL and reaps it; its data is lost.
// Killing a stopped server does nothing.
func (r *Redis) Kill() error { return r.crash(r) }

// Start starts a stopped or killed server again on the same port, with the
// same password and certificates, and waits until it answers PING. If ctx
// has no deadline, one minute applies.
func (r *Redis) Start(ctx context.Context) error { return r.restart(ctx, r, r.startLocked) }

// Close stops the server and removes its temporary directory. It is safe to
// call more than once.
func (r *Redis) Close() error { return r.close(r, r.dir) }

// CACertFile returns the path of the PEM file holding the throwaway CA
// certificate, or "" without TLS. Child processes can trust it through
// SSL_CERT_FILE; in this process, Go reads SSL_CERT_FILE only once, when the
// system roots are first loaded, so prefer [Redis.CACertPool].
func (r *Redis) CACertFile() string { return r.tls.caFilePath() }

// CACertPool returns a pool holding only the throwaway CA certificate, or nil
// without TLS.
func (r *Redis) CACertPool() *x509.CertPool { return r.tls.caPool() }

// TLSConfig returns a new client TLS configuration that trusts the throwaway
// CA and expects the server name 127.0.0.1, or nil without TLS.
func (r *Redis) TLSConfig() *tls.Config {
	if r.tls == nil {
		return nil
	}
	return &tls.Config{RootCAs: r.tls.pool, ServerName: redisHost, MinVersion: tls.VersionTLS12}
}
