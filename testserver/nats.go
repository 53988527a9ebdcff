package testserver

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// natsHost is the only address NATS listens on.
const natsHost = "127.0.0.1"

// debianNATS is where Debian's nats-server package puts the binary.
const debianNATS = "/usr/sbin/nats-server"

// natsUser is the user the throwaway NATS server accepts.
const natsUser = "goaspire"

// NATS is a throwaway nats-server with JetStream enabled, its store in its
// own temporary directory (so streams survive Stop/Kill and Start). It
// listens on 127.0.0.1 only and requires a user and a random password. Its
// methods are safe for concurrent use.
type NATS struct {
	server
	bin      string
	port     int
	dir      string
	confPath string
	tls      *serverTLS // nil without TLS
}

// NATSOption configures [StartNATS].
type NATSOption func(*natsConfig)

type natsConfig struct {
	port int
	tls  bool
}

// WithNATSTLS requires TLS: a throwaway CA and a server certificate for
// 127.0.0.1, ::1 and localhost are generated in the temporary directory.
// Trust the CA with [NATS.CACertFile] or [NATS.CACertPool]; [NATS.URL]
// then uses the tls:// scheme.
func WithNATSTLS() NATSOption { return func(c *natsConfig) { c.tls = true } }

// WithNATSPort listens on a fixed port instead of a free one.
func WithNATSPort(port int) NATSOption {
	return func(c *natsConfig) { c.port = port }
}

// StartNATS starts nats-server with JetStream in a temporary directory on a
// free port with a random password; it returns once the server answers a
// PING after authenticating. If ctx has no deadline, one minute applies.
// Stop the server with [NATS.Close].
//
// A missing binary gives an error matching [ErrBinaryNotFound]; errors carry
// the tail of the server log, never the password.
func StartNATS(ctx context.Context, opts ...NATSOption) (*NATS, error) {
	var cfg natsConfig
	for _, opt := range opts {
		opt(&cfg)
	}
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()

	bin, err := FindBinary("nats-server")
	if err != nil {
		// Debian installs it in /usr/sbin, which a non-root PATH may lack.
		if _, serr := os.Stat(debianNATS); serr != nil {
			return nil, fmt.Errorf("testserver: start nats: %w", err)
		}
		bin = debianNATS
	}
	dir, err := os.MkdirTemp("", "goaspire-nats-*")
	if err != nil {
		return nil, fmt.Errorf("testserver: start nats: make temporary directory: %w", err)
	}
	n := &NATS{
		server: server{
			logPath:    filepath.Join(dir, "nats.log"),
			password:   rand.Text(),
			stopSignal: syscall.SIGTERM,
			kill:       (*process).kill,
		},
		bin:      bin,
		dir:      dir,
		confPath: filepath.Join(dir, "nats.conf"),
	}
	if cfg.tls {
		if n.tls, err = writeTLSFiles(dir); err != nil {
			return nil, errors.Join(fmt.Errorf("testserver: start nats: %w", err), n.Close())
		}
	}
	n.mu.Lock()
	err = onFreePort(cfg.port, func(port int) error {
		n.port = port
		if err := n.writeConfig(); err != nil {
			return err
		}
		return n.startLocked(ctx)
	})
	n.mu.Unlock()
	if err != nil {
		return nil, errors.Join(fmt.Errorf("testserver: start nats: %w", err), n.Close())
	}
	return n, nil
}

// NewNATS starts a NATS server for the test with [StartNATS] and closes it in
// tb.Cleanup. It skips the test if nats-server is not installed (unless the
// CI environment variable is set: then it fails), and fails it on any other
// start error.
func NewNATS(tb testing.TB, opts ...NATSOption) *NATS {
	tb.Helper()
	n, err := StartNATS(tb.Context(), opts...)
	if err != nil {
		if errors.Is(err, ErrBinaryNotFound) && os.Getenv("CI") != "" {
			tb.Fatalf("testserver: nats-server is required when CI is set: %v", err)
		}
		skipOrFatal(tb, err)
	}
	tb.Cleanup(func() { closeForTest(tb, n, n.logPath, n.password) })
	return n
}

// writeConfig writes nats.conf (mode 0600: it holds the password).
func (n *NATS) writeConfig() error {
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	conf := fmt.Sprintf(`listen: %s
jetstream {
  store_dir: %s
  max_memory_store: 64MB
  max_file_store: 256MB
}
authorization {
  user: %s
  password: %s
}
`, q(net.JoinHostPort(natsHost, strconv.Itoa(n.port))), q(filepath.Join(n.dir, "jetstream")), q(natsUser), q(n.password))
	if n.tls != nil {
		conf += fmt.Sprintf("tls {\n  cert_file: %s\n  key_file: %s\n}\n", q(n.tls.certFile), q(n.tls.keyFile))
	}
	if err := os.WriteFile(n.confPath, []byte(conf), 0o600); err != nil {
		return fmt.Errorf("write nats.conf: %w", err)
	}
	return nil
}

// startLocked starts nats-server and waits until it answers PING.
func (n *NATS) startLocked(ctx context.Context) error {
	log, from, err := openLog(n.logPath)
	if err != nil {
		return err
	}
	defer log.Close()
	proc, err := startProcess(account{}.command(n.dir, log, n.bin, "-c", n.confPath))
	if err != nil {
		return fmt.Errorf("run %s: %w", n.bin, err)
	}
	if err := n.waitReady(ctx, proc, from, "nats", n.port, n.ping); err != nil {
		n.kill(proc)
		return err
	}
	n.proc = proc
	return nil
}

// ping speaks the NATS protocol directly (INFO, CONNECT, PING/PONG), so
// that readiness checks start no client goroutines.
func (n *NATS) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", n.Addr())
	if err != nil {
		return err
	}
	br := bufio.NewReader(conn)
	info, err := br.ReadString('\n')
	if err != nil {
		conn.Close()
		return err
	}
	if !strings.HasPrefix(info, "INFO ") {
		conn.Close()
		return fmt.Errorf("unexpected greeting %q", strings.TrimSpace(info))
	}
	if n.tls != nil {
		// NATS greets in the clear, then the client upgrades.
		tc := tls.Client(conn, &tls.Config{RootCAs: n.tls.pool, ServerName: natsHost, MinVersion: tls.VersionTLS12})
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return err
		}
		conn = tc
		br = bufio.NewReader(conn)
	}
	defer conn.Close()
	defer context.AfterFunc(ctx, func() { conn.Close() })()
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(deadline)
	}
	connect, _ := json.Marshal(map[string]any{"user": natsUser, "pass": n.password, "verbose": false, "pedantic": false})
	if _, err := fmt.Fprintf(conn, "CONNECT %s\r\nPING\r\n", connect); err != nil {
		return err
	}
	got, err := br.ReadString('\n')
	if err != nil {
		return err
	}
	if got = strings.TrimRight(got, "\r\n"); got != "PONG" {
		return fmt.Errorf("unexpected reply %q", redact(got, n.password))
	}
	return nil
}

// Addr returns the server's address, "127.0.0.1:port".
func (n *NATS) Addr() string { return net.JoinHostPort(natsHost, strconv.Itoa(n.port)) }

// Port returns the TCP port; it stays the same across [NATS.Start].
func (n *NATS) Port() int { return n.port }

// User returns the user name the server accepts.
func (n *NATS) User() string { return natsUser }

// Password returns the random password.
func (n *NATS) Password() string { return n.password }

// LogFile returns the path of the server log.
func (n *NATS) LogFile() string { return n.logPath }

// URL returns the connection string an Aspire AppHost injects,
// nats://user:password@127.0.0.1:port (tls:// with [WithNATSTLS]). It holds the password: never put it
// in an error or a log.
func (n *NATS) URL() string {
	u := url.URL{Scheme: "nats", User: url.UserPassword(natsUser, n.password), Host: n.Addr()}
	if n.tls != nil {
		u.Scheme = "tls"
	}
	return u.String()
}

// CACertFile returns the path of the PEM file holding the throwaway CA
// certificate, or "" without TLS.
func (n *NATS) CACertFile() string { return n.tls.caFilePath() }

// CACertPool returns a pool holding only the throwaway CA certificate, or
// nil without TLS.
func (n *NATS) CACertPool() *x509.CertPool { return n.tls.caPool() }

// String describes the server without its password.
func (n *NATS) String() string { return "nats " + n.Addr() }

// GoString describes the server without its password, for %#v.
func (n *NATS) GoString() string { return "testserver.NATS{" + n.String() + "}" }

// Stop shuts the server down (SIGTERM) and waits for it to exit. If ctx ends
// first, the server is killed.
func (n *NATS) Stop(ctx context.Context) error { return n.stop(ctx, n) }

// Kill crashes the server with SIGKILL and reaps it. JetStream data written
// to its store survives; messages in flight do not.
func (n *NATS) Kill() error { return n.crash(n) }

// Start starts a stopped or killed server again on the same port, with the
// same password and JetStream store, and waits until it answers PING.
func (n *NATS) Start(ctx context.Context) error { return n.restart(ctx, n, n.startLocked) }

// Close stops the server and removes its temporary directory. It is safe to
// call more than once.
func (n *NATS) Close() error { return n.close(n, n.dir) }
