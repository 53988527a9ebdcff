package testserver

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// postgresHost is the only address the servers listen on.
const postgresHost = "127.0.0.1"

// Postgres is a throwaway PostgreSQL server (or streaming replica) in its own
// temporary directory. It listens on 127.0.0.1 only, checks passwords with
// scram-sha-256, and runs with fsync off. Its methods are safe for concurrent
// use.
type Postgres struct {
	server   // its mu also guards replicas
	bin      postgresBinaries
	acct     account
	user     string
	database string
	port     int
	dir      string // the temporary directory Close removes
	dataDir  string
	settings []setting // settings beyond the defaults; later ones win
	primary  *Postgres // nil unless this is a replica
	replicas []*Postgres
}

type setting struct{ name, value string }

// PostgresOption configures [StartPostgres] and [Postgres.StartReplica].
type PostgresOption func(*postgresConfig)

type postgresConfig struct {
	user, database string
	port           int
	settings       []setting
}

// WithPostgresUser sets the superuser's name (default "postgres"). A replica
// always has its primary's user.
func WithPostgresUser(name string) PostgresOption {
	return func(c *postgresConfig) { c.user = name }
}

// WithPostgresDatabase sets the database the connection strings name and
// creates it if it is not "postgres" (the default). A replica always has its
// primary's database.
func WithPostgresDatabase(name string) PostgresOption {
	return func(c *postgresConfig) { c.database = name }
}

// WithPostgresPort listens on a fixed port instead of a free one. The start
// fails if the port is taken.
func WithPostgresPort(port int) PostgresOption {
	return func(c *postgresConfig) { c.port = port }
}

// WithPostgresSetting sets a server configuration parameter, as
// "postgres -c name=value" does; it overrides the helper's defaults
// (fsync=off, shared_buffers=16MB, ...). Do not set listen_addresses, port or
// unix_socket_directories. A replica inherits its primary's settings.
func WithPostgresSetting(name, value string) PostgresOption {
	return func(c *postgresConfig) { c.settings = append(c.settings, setting{name, value}) }
}

// StartPostgres initializes a new cluster in a temporary directory and starts
// it on a free port with a random password; it returns once a client can
// connect. If ctx has no deadline, one minute applies. Stop the server with
// [Postgres.Close].
//
// A missing binary gives an error matching [ErrBinaryNotFound]; errors carry
// the tail of the server log, never the password.
func StartPostgres(ctx context.Context, opts ...PostgresOption) (*Postgres, error) {
	cfg := postgresConfig{user: "postgres", database: "postgres"}
	for _, opt := range opts {
		opt(&cfg)
	}
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()

	bin, err := findPostgresBinaries()
	if err != nil {
		return nil, fmt.Errorf("testserver: start postgres: %w", err)
	}
	acct, err := postgresAccount()
	if err != nil {
		return nil, fmt.Errorf("testserver: start postgres: %w", err)
	}
	p, err := newPostgres(bin, acct, "goaspire-postgres-*")
	if err != nil {
		return nil, fmt.Errorf("testserver: start postgres: %w", err)
	}
	p.user, p.database, p.password = cfg.user, cfg.database, rand.Text()
	p.settings = cfg.settings

	if err := p.initdb(ctx); err != nil {
		return nil, errors.Join(fmt.Errorf("testserver: start postgres: %w", err), p.Close())
	}
	if err := p.startOnFreePort(ctx, cfg.port); err != nil {
		return nil, errors.Join(fmt.Errorf("testserver: start postgres: %w", err), p.Close())
	}
	if p.database != "postgres" {
		if err := p.createDatabase(ctx); err != nil {
			return nil, errors.Join(fmt.Errorf("testserver: start postgres: %w", err), p.Close())
		}
	}
	return p, nil
}

// newPostgres makes the temporary directory of a server and hands it to the
// account the server runs as.
func newPostgres(bin postgresBinaries, acct account, pattern string) (*Postgres, error) {
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		return nil, fmt.Errorf("make temporary directory: %w", err)
	}
	if err := acct.chown(dir); err != nil {
		return nil, errors.Join(err, os.RemoveAll(dir))
	}
	return &Postgres{
		server: server{
			logPath:    filepath.Join(dir, "postgres.log"),
			stopSignal: syscall.SIGINT, // "fast" shutdown
			kill:       killTree,
		},
		bin:     bin,
		acct:    acct,
		dir:     dir,
		dataDir: filepath.Join(dir, "data"),
	}, nil
}

// initdb creates the cluster, with the superuser's password set and
// scram-sha-256 required for every connection, local ones included.
func (p *Postgres) initdb(ctx context.Context) error {
	pwfile := filepath.Join(p.dir, "pwfile")
	if err := os.WriteFile(pwfile, []byte(p.password+"\n"), 0o600); err != nil {
		return fmt.Errorf("initdb: write password file: %w", err)
	}
	defer os.Remove(pwfile)
	if err := p.acct.chown(pwfile); err != nil {
		return fmt.Errorf("initdb: %w", err)
	}
	log, from, err := openLog(p.logPath)
	if err != nil {
		return fmt.Errorf("initdb: %w", err)
	}
	defer log.Close()
	cmd := p.acct.command(p.dir, log, p.bin.initdb,
		"--pgdata="+p.dataDir,
		"--username="+p.user,
		"--pwfile="+pwfile,
		"--auth=scram-sha-256",
		"--encoding=UTF8",
		"--locale=C",
		"--no-sync",
	)
	if err := run(ctx, cmd); err != nil {
		return fmt.Errorf("%s%s: %w%s", p.bin.initdb, p.acct.hint(), err, withLog(logTail(p.logPath, from, p.password)))
	}
	return nil
}

// hint explains who ran a failed command, because a directory that user
// cannot reach (a TMPDIR under /root, say) is the usual cause.
func (a account) hint() string {
	if !a.set {
		return ""
	}
	return fmt.Sprintf(" (run as user %s; TMPDIR must be reachable by it)", a.name)
}

// serverArgs are the postgres arguments; later -c options win.
func (p *Postgres) serverArgs() []string {
	settings := []setting{
		{"listen_addresses", postgresHost},
		{"port", strconv.Itoa(p.port)},
		{"unix_socket_directories", p.dir},
		{"fsync", "off"},
		{"shared_buffers", "16MB"},
		{"logging_collector", "off"},
		{"log_destination", "stderr"},
	}
	args := []string{"-D", p.dataDir}
	for _, s := range append(settings, p.settings...) {
		args = append(args, "-c", s.name+"="+s.value)
	}
	return args
}

// startOnFreePort starts the server on port, or if port is 0 on a free port,
// trying another one when a different process takes it first.
func (p *Postgres) startOnFreePort(ctx context.Context, port int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return onFreePort(port, func(port int) error {
		p.port = port
		return p.startLocked(ctx)
	})
}

// startLocked starts postgres and waits until it accepts connections.
func (p *Postgres) startLocked(ctx context.Context) error {
	log, from, err := openLog(p.logPath)
	if err != nil {
		return err
	}
	defer log.Close() // the server has its own descriptor
	proc, err := startProcess(p.acct.command(p.dir, log, p.bin.postgres, p.serverArgs()...))
	if err != nil {
		return fmt.Errorf("run %s%s: %w", p.bin.postgres, p.acct.hint(), err)
	}
	ready := func(ctx context.Context) error {
		conn, err := p.connect(ctx, "postgres")
		if err == nil {
			err = conn.Close(ctx)
		}
		return err
	}
	if err := p.waitReady(ctx, proc, from, p.kind(), p.port, ready); err != nil {
		p.kill(proc)
		return err
	}
	p.proc = proc
	return nil
}

func (p *Postgres) kind() string {
	if p.primary != nil {
		return "postgres replica"
	}
	return "postgres"
}

// connect opens a connection to database, ignoring PG* environment variables
// that would reroute or reject it.
func (p *Postgres) connect(ctx context.Context, database string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(p.url(database))
	if err != nil {
		return nil, fmt.Errorf("parse connection config: %w", err)
	}
	cfg.Fallbacks = nil
	cfg.ValidateConnect = nil
	cfg.ConnectTimeout = 5 * time.Second
	return pgx.ConnectConfig(ctx, cfg)
}

func (p *Postgres) createDatabase(ctx context.Context) error {
	conn, err := p.connect(ctx, "postgres")
	if err != nil {
		return fmt.Errorf("create database %q: %w", p.database, err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{p.database}.Sanitize()); err != nil {
		return fmt.Errorf("create database %q: %w", p.database, err)
	}
	return nil
}

// Host returns the address the server listens on, "127.0.0.1".
func (p *Postgres) Host() string { return postgresHost }

// Port returns the TCP port; it stays the same across [Postgres.Start].
func (p *Postgres) Port() int { return p.port } // set before p is shared

// User returns the superuser's name.
func (p *Postgres) User() string { return p.user }

// Password returns the superuser's random password.
func (p *Postgres) Password() string { return p.password }

// Database returns the name of the database the connection strings name.
func (p *Postgres) Database() string { return p.database }

// LogFile returns the path of the server log.
func (p *Postgres) LogFile() string { return p.logPath }

// ConnectionString returns the connection string in the Npgsql keyword form
// an Aspire AppHost injects:
//
//	Host=127.0.0.1;Port=5433;Username=postgres;Password=...;Database=db
//
// It holds the password: never put it in an error or a log.
func (p *Postgres) ConnectionString() string {
	return fmt.Sprintf("Host=%s;Port=%d;Username=%s;Password=%s;Database=%s",
		postgresHost, p.Port(), p.user, p.password, p.database)
}

// URL returns the connection string in URL form,
// postgres://user:password@127.0.0.1:port/db?sslmode=disable. It holds the
// password: never put it in an error or a log.
func (p *Postgres) URL() string { return p.url(p.database) }

func (p *Postgres) url(database string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(p.user, p.password),
		Host:     net.JoinHostPort(postgresHost, strconv.Itoa(p.Port())),
		Path:     "/" + database,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// String describes the server without its password.
func (p *Postgres) String() string {
	return fmt.Sprintf("%s %s:%d (user %s, database %s)", p.kind(), postgresHost, p.Port(), p.user, p.database)
}

// GoString describes the server without its password, for %#v.
func (p *Postgres) GoString() string { return "testserver.Postgres{" + p.String() + "}" }

// Connect opens a new connection to the server's database. The caller closes
// it.
func (p *Postgres) Connect(ctx context.Context) (*pgx.Conn, error) {
	conn, err := p.connect(ctx, p.database)
	if err != nil {
		return nil, fmt.Errorf("testserver: connect to %s: %w", p, err)
	}
	return conn, nil
}

// Exec runs one SQL statement on a new connection to the server's database.
func (p *Postgres) Exec(ctx context.Context, sql string, args ...any) error {
	conn, err := p.Connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("testserver: exec on %s: %w", p, err)
	}
	return nil
}

// SetPassword creates role as a superuser that may log in with password,
// or sets the password of the role if it exists: a stand-in for a server
// that takes tokens as passwords (set the role's password to each token
// issued). The server's log shows the statement, password included, only
// when it fails. Postgres keeps one password per role: two calls at once
// may fail with "tuple concurrently updated".
func (p *Postgres) SetPassword(ctx context.Context, role, password string) error {
	conn, err := p.Connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var sql string
	err = conn.QueryRow(ctx, `SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)
		THEN format('ALTER ROLE %I PASSWORD %L', $1::text, $2::text)
		ELSE format('CREATE ROLE %I LOGIN SUPERUSER PASSWORD %L', $1::text, $2::text) END`, role, password).Scan(&sql)
	if err == nil {
		_, err = conn.Exec(ctx, sql)
	}
	if err != nil {
		return fmt.Errorf("testserver: set the password of role %q on %s: %w", role, p, err)
	}
	return nil
}

// Stop shuts the server down cleanly ("fast" shutdown: sessions are ended,
// a checkpoint is written) and waits for it to exit. If ctx ends first, the
// server is killed. Stopping a stopped server does nothing; if the server had
// exited on its own, Stop reports how.
func (p *Postgres) Stop(ctx context.Context) error { return p.stop(ctx, p) }

// Kill crashes the server: it SIGKILLs the postmaster and, on Linux, every
// process it started, and reaps them. Clients see their connections drop;
// committed data survives, as after a power cut with a disk cache that
// survived. Killing a stopped server does nothing.
func (p *Postgres) Kill() error { return p.crash(p) }

// Start starts a stopped or killed server again on the same port with the
// same data, recovering from a crash if it was killed, and waits until it
// accepts connections. If ctx has no deadline, one minute applies.
func (p *Postgres) Start(ctx context.Context) error {
	return p.restart(ctx, p, func(ctx context.Context) error {
		p.removeStaleLock()
		return p.startLocked(ctx)
	})
}

// removeStaleLock removes the postmaster.pid a killed server left behind if
// its process ID now belongs to another process, which postgres would take
// for a running server. Our own server processes are all reaped by now, so a
// live process with that ID is never ours.
func (p *Postgres) removeStaleLock() {
	path := filepath.Join(p.dataDir, "postmaster.pid")
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 {
		return
	}
	if processExists(pid) {
		_ = os.Remove(path)
	}
}

// Close stops the server (and first any replicas started from it) and
// removes its temporary directory. It is safe to call more than once.
func (p *Postgres) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	replicas := p.replicas
	p.replicas = nil
	p.mu.Unlock()

	var errs []error
	for _, r := range replicas {
		errs = append(errs, r.Close())
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	errs = append(errs, p.Stop(ctx))
	if err := os.RemoveAll(p.dir); err != nil {
		errs = append(errs, fmt.Errorf("testserver: remove %s: %w", p.dir, err))
	}
	return errors.Join(errs...)
}

// StartReplica makes a streaming replica of the running server: it copies
// the server with pg_basebackup -R into a new temporary directory and starts
// it as a hot standby on its own free port. The replica has the primary's
// user, password, database and settings; opts may set its port and add
// settings. Closing the primary closes its replicas. If ctx has no deadline,
// one minute applies.
func (p *Postgres) StartReplica(ctx context.Context, opts ...PostgresOption) (*Postgres, error) {
	var cfg postgresConfig
	for _, opt := range opts {
		opt(&cfg)
	}
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()

	p.mu.Lock()
	running := p.proc != nil && !p.closed
	p.mu.Unlock()
	if !running {
		return nil, fmt.Errorf("testserver: start replica of %s: primary is not running", p)
	}
	basebackup, err := p.bin.tool("pg_basebackup")
	if err != nil {
		return nil, fmt.Errorf("testserver: start replica of %s: %w", p, err)
	}
	r, err := newPostgres(p.bin, p.acct, "goaspire-postgres-replica-*")
	if err != nil {
		return nil, fmt.Errorf("testserver: start replica of %s: %w", p, err)
	}
	r.user, r.password, r.database, r.primary = p.user, p.password, p.database, p
	r.settings = append(slices.Clone(p.settings), setting{"hot_standby", "on"})
	r.settings = append(r.settings, cfg.settings...)

	if err := r.basebackup(ctx, basebackup); err != nil {
		return nil, errors.Join(fmt.Errorf("testserver: start replica of %s: %w", p, err), r.Close())
	}
	if err := r.startOnFreePort(ctx, cfg.port); err != nil {
		return nil, errors.Join(fmt.Errorf("testserver: start replica of %s: %w", p, err), r.Close())
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, errors.Join(fmt.Errorf("testserver: start replica of %s: primary closed meanwhile", p), r.Close())
	}
	p.replicas = append(p.replicas, r)
	return r, nil
}

// basebackup copies the primary into the replica's data directory and writes
// standby.signal and primary_conninfo (password included, as the replica
// needs it).
func (r *Postgres) basebackup(ctx context.Context, bin string) error {
	log, from, err := openLog(r.logPath)
	if err != nil {
		return fmt.Errorf("pg_basebackup: %w", err)
	}
	defer log.Close()
	cmd := r.acct.command(r.dir, log, bin,
		"--pgdata="+r.dataDir,
		"--host="+postgresHost,
		"--port="+strconv.Itoa(r.primary.Port()),
		"--username="+r.user,
		"--write-recovery-conf",
		"--wal-method=stream",
		"--checkpoint=fast",
		"--no-sync",
		"--no-password",
	)
	cmd.Env = append(cmd.Env, "PGPASSWORD="+r.password)
	if err := run(ctx, cmd); err != nil {
		return fmt.Errorf("%s%s: %w%s", bin, r.acct.hint(), err, withLog(logTail(r.logPath, from, r.password)))
	}
	return nil
}

// PauseReplay pauses WAL replay on a replica (pg_wal_replay_pause), so that
// what is written on the primary from now on is received but not visible on
// the replica: replication lag on demand.
func (p *Postgres) PauseReplay(ctx context.Context) error {
	if err := p.Exec(ctx, "SELECT pg_wal_replay_pause()"); err != nil {
		return fmt.Errorf("testserver: pause replay: %w", err)
	}
	return nil
}

// ResumeReplay resumes WAL replay on a replica (pg_wal_replay_resume).
func (p *Postgres) ResumeReplay(ctx context.Context) error {
	if err := p.Exec(ctx, "SELECT pg_wal_replay_resume()"); err != nil {
		return fmt.Errorf("testserver: resume replay: %w", err)
	}
	return nil
}

// WALPosition returns the server's position in the write-ahead log as text
// (such as "0/3000148"): on a primary the flushed position
// (pg_current_wal_flush_lsn), on a replica the replayed one
// (pg_last_wal_replay_lsn).
func (p *Postgres) WALPosition(ctx context.Context) (string, error) {
	conn, err := p.Connect(ctx)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.Background())
	var lsn string
	err = conn.QueryRow(ctx, `SELECT CASE WHEN pg_is_in_recovery()
		THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_flush_lsn() END::text`).Scan(&lsn)
	if err != nil {
		return "", fmt.Errorf("testserver: read WAL position of %s: %w", p, err)
	}
	return lsn, nil
}

// WaitReplayed waits until a replica has replayed the write-ahead log up to
// lsn (as returned by [Postgres.WALPosition] on the primary). A paused
// replica waits until ctx ends; if ctx has no deadline, one minute applies.
func (p *Postgres) WaitReplayed(ctx context.Context, lsn string) error {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	conn, err := p.Connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		var done *bool
		if err := conn.QueryRow(ctx, "SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", lsn).Scan(&done); err != nil {
			return fmt.Errorf("testserver: wait for %s to replay %s: %w", p, lsn, err)
		}
		if done == nil {
			return fmt.Errorf("testserver: wait for %s to replay %s: not a replica", p, lsn)
		}
		if *done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("testserver: wait for %s to replay %s: %w", p, lsn, ctx.Err())
		case <-tick.C:
		}
	}
}

// WaitCaughtUp waits until a replica has replayed everything its primary had
// flushed when WaitCaughtUp was called.
func (p *Postgres) WaitCaughtUp(ctx context.Context) error {
	if p.primary == nil {
		return fmt.Errorf("testserver: wait for %s to catch up: not a replica", p)
	}
	lsn, err := p.primary.WALPosition(ctx)
	if err != nil {
		return err
	}
	return p.WaitReplayed(ctx, lsn)
}
