package testserver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

func TestPostgres(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	p, err := StartPostgres(ctx, WithPostgresDatabase("app"), WithPostgresUser("owner"))
	SkipIfMissing(t, err)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	wantCS := fmt.Sprintf("Host=127.0.0.1;Port=%d;Username=owner;Password=%s;Database=app", p.Port(), p.Password())
	if got := p.ConnectionString(); got != wantCS {
		t.Errorf("ConnectionString() = %q, want %q", got, wantCS)
	}
	wantURL := fmt.Sprintf("postgres://owner:%s@127.0.0.1:%d/app?sslmode=disable", p.Password(), p.Port())
	if got := p.URL(); got != wantURL {
		t.Errorf("URL() = %q, want %q", got, wantURL)
	}
	if p.Port() == 5432 || p.Host() != "127.0.0.1" || p.User() != "owner" || p.Database() != "app" {
		t.Errorf("Host/Port/User/Database = %s/%d/%s/%s", p.Host(), p.Port(), p.User(), p.Database())
	}
	if len(p.Password()) < 20 {
		t.Errorf("password %d characters long, want a random one", len(p.Password()))
	}
	for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
		if s := fmt.Sprintf(format, p); strings.Contains(s, p.Password()) {
			t.Errorf("Sprintf(%q) reveals the password: %s", format, s)
		}
	}

	if err := p.Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY, name text)"); err != nil {
		t.Fatal(err)
	}
	if err := p.Exec(ctx, "INSERT INTO t VALUES ($1, $2)", 1, "one"); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, p.URL())
	if err != nil {
		t.Fatal(err)
	}
	var db, user, name string
	err = conn.QueryRow(ctx, "SELECT current_database(), current_user, name FROM t WHERE id = 1").Scan(&db, &user, &name)
	conn.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if db != "app" || user != "owner" || name != "one" {
		t.Errorf("got database %q, user %q, row %q", db, user, name)
	}

	// Passwords are really checked, over TCP and over the socket.
	for _, host := range []string{"127.0.0.1", p.dir} {
		t.Run("wrong password via "+filepath.Base(host), func(t *testing.T) {
			cfg, err := pgx.ParseConfig(p.URL())
			if err != nil {
				t.Fatal(err)
			}
			cfg.Host, cfg.Password = host, "wrong"
			conn, err := pgx.ConnectConfig(ctx, cfg)
			if err == nil {
				conn.Close(ctx)
				t.Fatal("connected with a wrong password")
			}
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
				t.Fatalf("error = %v, want invalid_password (28P01)", err)
			}
		})
	}

	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Close left %s behind (stat: %v)", p.dir, err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestPostgresRestart(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		stop func(*Postgres) error
	}{
		{"stop", func(p *Postgres) error { return p.Stop(context.Background()) }},
		{"kill", (*Postgres).Kill},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			p := NewPostgres(t)
			port := p.Port()
			if err := p.Exec(ctx, "CREATE TABLE t (id int); INSERT INTO t VALUES (42)"); err != nil {
				t.Fatal(err)
			}
			conn, err := p.Connect(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(context.Background())
			postmaster := p.proc.pid()
			children := childrenOf(postmaster)
			if len(children) == 0 && runtime.GOOS == "linux" {
				t.Fatal("postmaster has no children to check")
			}

			if err := tt.stop(p); err != nil {
				t.Fatal(err)
			}
			for _, pid := range append(children, postmaster) {
				if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil {
					t.Errorf("process %d of the stopped server still exists (running or a zombie)", pid)
				}
			}
			if err := conn.Ping(ctx); err == nil {
				t.Error("old connection still works after the server went down")
			}
			if err := p.Exec(ctx, "SELECT 1"); err == nil {
				t.Fatal("server still answers")
			}
			if tt.name == "kill" {
				if _, err := os.Stat(filepath.Join(p.dataDir, "postmaster.pid")); err != nil {
					t.Errorf("kill left no postmaster.pid, so restarting over one is untested: %v", err)
				}
			}

			if err := p.Start(ctx); err != nil {
				t.Fatal(err)
			}
			if p.Port() != port {
				t.Errorf("port changed from %d to %d", port, p.Port())
			}
			conn2, err := pgx.Connect(ctx, p.URL())
			if err != nil {
				t.Fatal(err)
			}
			defer conn2.Close(context.Background())
			var id int
			if err := conn2.QueryRow(ctx, "SELECT id FROM t").Scan(&id); err != nil || id != 42 {
				t.Fatalf("after restart: id %d, error %v; want 42", id, err)
			}
			if err := p.Start(ctx); err == nil {
				t.Error("Start of a running server succeeded")
			}
		})
	}
}

// TestPostgresStaleLock restarts a server whose postmaster.pid names a live
// process of the server's user, as happens when the PID of a killed
// postmaster is reused.
func TestPostgresStaleLock(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	p := NewPostgres(t)
	if err := p.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	sleep, err := FindBinary("sleep")
	if err != nil {
		t.Fatal(err)
	}
	other, err := startProcess(p.acct.command(p.dir, nil, sleep, "60"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.kill()
	lock := fmt.Sprintf("%d\n%s\n0\n%d\n", other.pid(), p.dataDir, p.Port())
	path := filepath.Join(p.dataDir, "postmaster.pid")
	if err := os.WriteFile(path, []byte(lock), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.acct.chown(path); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestPostgresStartError(t *testing.T) {
	t.Parallel()
	_, err := StartPostgres(t.Context(), WithPostgresSetting("shared_buffers", "lots"))
	SkipIfMissing(t, err)
	if err == nil {
		t.Fatal("started with an invalid setting")
	}
	if !strings.Contains(err.Error(), `invalid value for parameter "shared_buffers"`) {
		t.Errorf("error lacks the server log: %v", err)
	}
}

func TestPostgresReplica(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	primary := NewPostgres(t, WithPostgresDatabase("app"), WithPostgresSetting("max_connections", "120"))
	replica := primary.NewReplica(t)
	if replica.Port() == primary.Port() || replica.Database() != "app" || replica.Password() != primary.Password() {
		t.Fatalf("replica %v of %v: unexpected port, database or password", replica, primary)
	}

	count := func(p *Postgres) int {
		t.Helper()
		conn, err := p.Connect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	if err := primary.Exec(ctx, "CREATE TABLE t (id int); INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	if err := replica.WaitCaughtUp(ctx); err != nil {
		t.Fatal(err)
	}
	if n := count(replica); n != 1 {
		t.Fatalf("replica has %d rows, want 1", n)
	}
	var pgErr *pgconn.PgError
	if err := replica.Exec(ctx, "INSERT INTO t VALUES (2)"); !errors.As(err, &pgErr) || pgErr.Code != "25006" {
		t.Errorf("write on replica: %v, want read_only_sql_transaction (25006)", err)
	}
	if err := primary.WaitCaughtUp(ctx); err == nil {
		t.Error("WaitCaughtUp on a primary succeeded")
	}

	// Lag on demand.
	if err := replica.PauseReplay(ctx); err != nil {
		t.Fatal(err)
	}
	if err := primary.Exec(ctx, "INSERT INTO t VALUES (2)"); err != nil {
		t.Fatal(err)
	}
	want, err := primary.WALPosition(ctx)
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	err = replica.WaitReplayed(short, want)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitReplayed on a paused replica: %v, want deadline exceeded", err)
	}
	got, err := replica.WALPosition(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if lsn(t, got) >= lsn(t, want) {
		t.Errorf("paused replica replayed %s, primary is at %s; want lag", got, want)
	}
	if n := count(replica); n != 1 {
		t.Errorf("paused replica has %d rows, want 1", n)
	}
	if err := replica.ResumeReplay(ctx); err != nil {
		t.Fatal(err)
	}
	if err := replica.WaitCaughtUp(ctx); err != nil {
		t.Fatal(err)
	}
	if n := count(replica); n != 2 {
		t.Errorf("resumed replica has %d rows, want 2", n)
	}

	// A crashed replica recovers and streams again.
	if err := replica.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := primary.Exec(ctx, "INSERT INTO t VALUES (3)"); err != nil {
		t.Fatal(err)
	}
	if err := replica.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := replica.WaitCaughtUp(ctx); err != nil {
		t.Fatal(err)
	}
	if n := count(replica); n != 3 {
		t.Errorf("restarted replica has %d rows, want 3", n)
	}
}

var lsnRE = regexp.MustCompile(`^([0-9A-F]+)/([0-9A-F]+)$`)

// lsn parses a WAL position such as "0/3000148".
func lsn(t *testing.T, s string) uint64 {
	t.Helper()
	m := lsnRE.FindStringSubmatch(s)
	if m == nil {
		t.Fatalf("bad LSN %q", s)
	}
	hi, _ := strconv.ParseUint(m[1], 16, 32)
	lo, _ := strconv.ParseUint(m[2], 16, 32)
	return hi<<32 | lo
}
