package testserver

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// rabbitHost is the only address the RabbitMQ node listens on.
const rabbitHost = "127.0.0.1"

// rabbitLibBin is where the Debian and Ubuntu packages install the real
// RabbitMQ scripts; /usr/sbin/rabbitmq-server there is a wrapper that
// switches to the rabbitmq user, which a private node must not do.
var rabbitLibBin = "/usr/lib/rabbitmq/bin"

// RabbitMQ is a throwaway RabbitMQ node in its own temporary directory: its
// own node name, Erlang cookie, database (RABBITMQ_MNESIA_BASE) and logs, an
// AMQP listener and an Erlang distribution port on free 127.0.0.1 ports, no
// epmd, no plugins (so no management listener), and a user with a random
// password. Its data survives [RabbitMQ.Stop] and [RabbitMQ.Kill]: durable
// queues and their persistent messages are there again after
// [RabbitMQ.Start]. Its methods are safe for concurrent use.
type RabbitMQ struct {
	server
	bin      string
	dir      string // the temporary directory Close removes
	port     int    // AMQP
	distPort int    // Erlang distribution
	node     string
	user     string
}

// StartRabbitMQ starts a RabbitMQ node (rabbitmq-server) in a temporary
// directory on a free port with a random password; it returns once the node
// answers the AMQP protocol header, which takes several seconds. If ctx has
// no deadline, two minutes apply. Stop the node with [RabbitMQ.Close].
//
// The node runs as the current user, root included: it keeps everything,
// the Erlang cookie too, in its own directory. A missing binary gives an
// error matching [ErrBinaryNotFound]; errors carry the tail of the node's
// log, never the password.
func StartRabbitMQ(ctx context.Context) (*RabbitMQ, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 2*defaultTimeout)
		defer cancel()
	}
	bin, err := findRabbitMQ()
	if err != nil {
		return nil, fmt.Errorf("testserver: start rabbitmq: %w", err)
	}
	dir, err := os.MkdirTemp("", "goaspire-rabbitmq-*")
	if err != nil {
		return nil, fmt.Errorf("testserver: start rabbitmq: make temporary directory: %w", err)
	}
	r := &RabbitMQ{
		server: server{
			logPath:    filepath.Join(dir, "rabbitmq.log"),
			password:   rand.Text(),
			stopSignal: syscall.SIGTERM,
			kill:       killTree,
		},
		bin:  bin,
		dir:  dir,
		node: "goaspire-" + strings.ToLower(rand.Text()[:12]) + "@localhost",
		user: "goaspire",
	}
	// The cookie guards the distribution port; nothing here uses it, but
	// Erlang insists on one and would otherwise write it to $HOME.
	if err := os.WriteFile(filepath.Join(dir, ".erlang.cookie"), []byte(rand.Text()), 0o400); err != nil {
		return nil, errors.Join(fmt.Errorf("testserver: start rabbitmq: write cookie: %w", err), r.Close())
	}
	if err := os.WriteFile(filepath.Join(dir, "enabled_plugins"), []byte("[].\n"), 0o600); err != nil {
		return nil, errors.Join(fmt.Errorf("testserver: start rabbitmq: %w", err), r.Close())
	}
	if err := os.WriteFile(filepath.Join(dir, "rabbitmq-env.conf"), nil, 0o600); err != nil {
		return nil, errors.Join(fmt.Errorf("testserver: start rabbitmq: %w", err), r.Close())
	}
	if err := r.startOnFreePort(ctx); err != nil {
		return nil, errors.Join(fmt.Errorf("testserver: start rabbitmq: %w", err), r.Close())
	}
	return r, nil
}

// findRabbitMQ returns the real rabbitmq-server script: the one on PATH
// unless that is the Debian wrapper, whose sibling is then used.
func findRabbitMQ() (string, error) {
	if path, err := exec.LookPath("rabbitmq-server"); err == nil {
		real, err := filepath.EvalSymlinks(path)
		if err == nil && filepath.Base(real) != "rabbitmq-script-wrapper" {
			return real, nil
		}
		if err == nil {
			if sibling := filepath.Join(filepath.Dir(real), "rabbitmq-server"); isExecutable(sibling) {
				return sibling, nil
			}
		}
	}
	if path := filepath.Join(rabbitLibBin, "rabbitmq-server"); isExecutable(path) {
		return path, nil
	}
	return "", &BinaryNotFoundError{Name: "rabbitmq-server", Searched: []string{"PATH", rabbitLibBin}}
}

// startOnFreePort chooses the AMQP and distribution ports and starts the
// node, trying other ports when a different process takes one first.
func (r *RabbitMQ) startOnFreePort(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return onFreePort(0, func(port int) error {
		dist, err := freePort()
		if err != nil {
			return err
		}
		r.port, r.distPort = port, dist
		if err := r.writeConfig(); err != nil {
			return err
		}
		return r.startLocked(ctx)
	})
}

// writeConfig writes rabbitmq.conf (mode 0600: it holds the password).
func (r *RabbitMQ) writeConfig() error {
	conf := fmt.Sprintf(`listeners.tcp.1 = %s:%d
default_user = %s
default_pass = %s
default_vhost = /
default_permissions.configure = .*
default_permissions.read = .*
default_permissions.write = .*
log.console = true
log.console.level = info
log.file = false
`, rabbitHost, r.port, r.user, r.password)
	if err := os.WriteFile(filepath.Join(r.dir, "rabbitmq.conf"), []byte(conf), 0o600); err != nil {
		return fmt.Errorf("write rabbitmq.conf: %w", err)
	}
	return nil
}

// environ is the node's whole environment: nothing of the caller's (and
// none of /etc/rabbitmq) leaks in.
func (r *RabbitMQ) environ() []string {
	p := func(name string) string { return filepath.Join(r.dir, name) }
	return []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + r.dir, // the Erlang cookie
		"LANG=C.UTF-8", "LC_ALL=C.UTF-8",
		// Run the VM in this process (not behind a shell that traps
		// signals), so SIGTERM stops it cleanly and SIGKILL reaches it.
		"RABBITMQ_ALLOW_INPUT=true",
		"RABBITMQ_CONF_ENV_FILE=" + p("rabbitmq-env.conf"),
		"RABBITMQ_CONFIG_FILE=" + p("rabbitmq.conf"),
		"RABBITMQ_ENABLED_PLUGINS_FILE=" + p("enabled_plugins"),
		"RABBITMQ_NODENAME=" + r.node,
		"RABBITMQ_MNESIA_BASE=" + p("mnesia"),
		"RABBITMQ_LOG_BASE=" + p("log"),
		"RABBITMQ_LOGS=-",
		"RABBITMQ_NODE_IP_ADDRESS=" + rabbitHost,
		"RABBITMQ_NODE_PORT=" + strconv.Itoa(r.port),
		"RABBITMQ_DIST_PORT=" + strconv.Itoa(r.distPort),
		// No epmd: the node listens for distribution on its fixed port
		// and starts no daemon that would outlive it.
		fmt.Sprintf("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-noinput -noshell -start_epmd false -erl_epmd_port %d -kernel inet_dist_use_interface {127,0,0,1}", r.distPort),
	}
}

// startLocked starts the node and waits until it speaks AMQP.
func (r *RabbitMQ) startLocked(ctx context.Context) error {
	log, from, err := openLog(r.logPath)
	if err != nil {
		return err
	}
	defer log.Close() // the node has its own descriptor
	cmd := account{}.command(r.dir, log, r.bin)
	cmd.Env = r.environ()
	proc, err := startProcess(cmd)
	if err != nil {
		return fmt.Errorf("run %s: %w", r.bin, err)
	}
	if err := r.waitReady(ctx, proc, from, "rabbitmq", r.port, r.probe); err != nil {
		r.kill(proc)
		if strings.Contains(logTail(r.logPath, from), "eaddrinuse") {
			return fmt.Errorf("%w: %w", errPortInUse, err)
		}
		return err
	}
	r.proc = proc
	return nil
}

// probe sends the AMQP 0-9-1 protocol header and expects the first frame
// of the broker's connection.start method, speaking the protocol directly
// so that readiness checks need no client library.
func (r *RabbitMQ) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", r.Addr())
	if err != nil {
		return err
	}
	defer conn.Close()
	defer context.AfterFunc(ctx, func() { conn.Close() })()
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(deadline)
	}
	if _, err := conn.Write([]byte("AMQP\x00\x00\x09\x01")); err != nil {
		return err
	}
	head := make([]byte, 7)
	if _, err := io.ReadFull(conn, head); err != nil {
		return err
	}
	if head[0] != 1 || !bytes.Equal(head[1:3], []byte{0, 0}) {
		return fmt.Errorf("unexpected first frame % x", head)
	}
	return nil
}

// Addr returns the AMQP address, "127.0.0.1:port".
func (r *RabbitMQ) Addr() string { return net.JoinHostPort(rabbitHost, strconv.Itoa(r.port)) }

// Port returns the AMQP port; it stays the same across [RabbitMQ.Start].
func (r *RabbitMQ) Port() int { return r.port } // set before r is shared

// User returns the user name.
func (r *RabbitMQ) User() string { return r.user }

// Password returns the random password.
func (r *RabbitMQ) Password() string { return r.password }

// LogFile returns the path of the node's log.
func (r *RabbitMQ) LogFile() string { return r.logPath }

// URL returns the connection string an Aspire AppHost injects,
// amqp://user:password@127.0.0.1:port/. It holds the password: never put
// it in an error or a log.
func (r *RabbitMQ) URL() string {
	u := url.URL{Scheme: "amqp", User: url.UserPassword(r.user, r.password), Host: r.Addr(), Path: "/"}
	return u.String()
}

// String describes the node without its password.
func (r *RabbitMQ) String() string { return "rabbitmq " + r.Addr() }

// GoString describes the node without its password, for %#v.
func (r *RabbitMQ) GoString() string { return "testserver.RabbitMQ{" + r.String() + "}" }

// Stop shuts the node down (SIGTERM) and waits for it to exit. If ctx ends
// first, the node is killed. Stopping a stopped node does nothing; if the
// node had exited on its own, Stop reports how.
func (r *RabbitMQ) Stop(ctx context.Context) error { return r.stop(ctx, r) }

// Kill crashes the node with SIGKILL and reaps it and its helper
// processes. Persistent messages in durable queues that the node had
// confirmed survive.
func (r *RabbitMQ) Kill() error { return r.crash(r) }

// Start starts a stopped or killed node again on the same ports with the
// same data, and waits until it speaks AMQP. If ctx has no deadline, one
// minute applies.
func (r *RabbitMQ) Start(ctx context.Context) error { return r.restart(ctx, r, r.startLocked) }

// Close stops the node and removes its temporary directory. It is safe to
// call more than once.
func (r *RabbitMQ) Close() error { return r.close(r, r.dir) }
