package cqrs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/internal/syncbuf"
	"github.com/goaspire/goaspire/testserver"
)

// credentialsRole is the login role the credentials tests connect as; the
// servers check its password with scram-sha-256 (testserver's default for
// every connection), so a wrong password is refused.
const credentialsRole = "app_user"

// setRolePassword creates role (or changes its password) on srv.
func setRolePassword(t *testing.T, ctx context.Context, srv *testserver.Postgres, role, password string) {
	t.Helper()
	if err := srv.SetPassword(ctx, role, password); err != nil {
		t.Fatal(err)
	}
}

// rotatingSecret is a Credentials hook that returns the current password
// and records every target it was asked for.
type rotatingSecret struct {
	password atomic.Pointer[string]
	mu       sync.Mutex
	targets  []ConnTarget
}

func (r *rotatingSecret) set(p string) { r.password.Store(&p) }

func (r *rotatingSecret) credentials(_ context.Context, t ConnTarget) (string, string, error) {
	r.mu.Lock()
	r.targets = append(r.targets, t)
	r.mu.Unlock()
	user := t.User
	if user == "" {
		user = credentialsRole
	}
	return user, *r.password.Load(), nil
}

// seen returns the targets asked for since the last call.
func (r *rotatingSecret) seen() []ConnTarget {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.targets
	r.targets = nil
	return out
}

// TestCredentialsRotation: a role whose password is rotated, reached only
// through a Credentials hook (the connection strings hold no password, and
// the primary's no user either). The hook is called for each new physical
// connection of the primary and of the replica, with that server's host,
// port, database and user ("" for the primary's, whose string names none,
// the hook's user then being used); after the password changes on the
// server and in the hook, new connections use the new one; and the old
// password really is refused, so the hook is what made them work.
func TestCredentialsRotation(t *testing.T) {
	c := newCluster(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	setRolePassword(t, ctx, c.primary, credentialsRole, "first-Secret-1")
	if err := c.replica.WaitCaughtUp(ctx); err != nil {
		t.Fatal(err)
	}
	cfg := discovery.FromMap(map[string]string{
		"ConnectionStrings__db-primary": fmt.Sprintf("Host=127.0.0.1;Port=%d;Database=%s", c.primary.Port(), c.primary.Database()),
		"ConnectionStrings__db-replica-east": fmt.Sprintf("Host=127.0.0.1;Port=%d;Database=%s;Username=%s",
			c.replica.Port(), c.replica.Database(), credentialsRole),
		"Aspire__Npgsql__db__Replicas__CheckInterval": "100ms",
		"Aspire__Npgsql__ConnectTimeout":              "5s",
	})
	var secret rotatingSecret
	secret.set("first-Secret-1")
	var before atomic.Int32 // the pool's own BeforeConnect, kept
	db, err := openDB(ctx, cfg, "db", func(c *Config) {
		c.WaitOnOpen = 30 * time.Second
		c.Primary.Config.BeforeConnect = func(context.Context, *pgx.ConnConfig) error { before.Add(1); return nil }
		c.Primary.Credentials = secret.credentials
		for i := range c.Replicas {
			c.Replicas[i].Credentials = secret.credentials
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	replica, err := db.Keyed("db-replica-east")
	if err != nil {
		t.Fatal(err)
	}

	whoami := func(p interface {
		QueryRow(context.Context, string, ...any) pgx.Row
	}) (string, error) {
		var user string
		err := p.QueryRow(ctx, "SELECT current_user").Scan(&user)
		return user, err
	}
	check := func(step string) {
		t.Helper()
		for name, p := range map[string]interface {
			QueryRow(context.Context, string, ...any) pgx.Row
		}{"primary": db.Primary(), "replica": replica} {
			if user, err := whoami(p); err != nil || user != credentialsRole {
				t.Fatalf("%s: %s: current_user = %q, %v; want %q", step, name, user, err, credentialsRole)
			}
		}
		want := map[string]ConnTarget{
			"primary": {Name: "db-primary", Host: "127.0.0.1", Port: uint16(c.primary.Port()), Database: c.primary.Database()},
			"replica": {Name: "db-replica-east", Host: "127.0.0.1", Port: uint16(c.replica.Port()), Database: c.replica.Database(), User: credentialsRole},
		}
		got := map[string]bool{}
		for _, tg := range secret.seen() {
			for k, w := range want {
				if tg == w {
					got[k] = true
				}
			}
			if tg != want["primary"] && tg != want["replica"] {
				t.Errorf("%s: the hook was asked for %+v, want one of %+v", step, tg, want)
			}
		}
		if !got["primary"] || !got["replica"] {
			t.Errorf("%s: the hook was asked for the primary: %v, the replica: %v; want both", step, got["primary"], got["replica"])
		}
	}
	check("first password")
	if before.Load() == 0 {
		t.Error("the pool's own BeforeConnect was not called: the Credentials hook replaced it")
	}

	// Rotate: the server first, then the hook; new connections only.
	setRolePassword(t, ctx, c.primary, credentialsRole, "second-Secret-2")
	if err := c.replica.WaitCaughtUp(ctx); err != nil {
		t.Fatal(err)
	}
	secret.set("second-Secret-2")
	db.Primary().Reset()
	replica.Reset()
	check("second password")

	// The old password is refused now: without the hook's new password
	// the new connections would have failed.
	secret.set("first-Secret-1")
	db.Primary().Reset()
	var pgErr *pgconn.PgError
	if _, err := whoami(db.Primary()); !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
		t.Errorf("with the old password: %v; want SQLSTATE 28P01", err)
	}
}

// TestCredentialsFailure: a hook that fails makes Ping and the health
// check fail with an error naming the connection and wrapping the hook's
// error, without trying the server; the startup retry logs it once as
// missing credentials, not as an unreachable server.
func TestCredentialsFailure(t *testing.T) {
	srv := testserver.NewPostgres(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	errNoToken := errors.New("token endpoint said 503")
	var logs syncbuf.Buffer
	p, err := openPool(ctx, discovery.FromMap(map[string]string{
		"ConnectionStrings__jobs": fmt.Sprintf("Host=127.0.0.1;Port=%d;Database=%s", srv.Port(), srv.Database()),
	}), "jobs", func(c *PoolConfig) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		c.Credentials = func(context.Context, ConnTarget) (string, string, error) { return "", "", errNoToken }
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	err = p.Ping(ctx)
	var ce *CredentialsError
	if !errors.As(err, &ce) || ce.Name != "jobs" || !errors.Is(err, errNoToken) {
		t.Fatalf("Ping = %v; want a *CredentialsError of \"jobs\" wrapping the hook's error", err)
	}
	if want := `postgres "jobs": credentials: token endpoint said 503`; err.Error() != want {
		t.Errorf("Ping = %q, want %q", err, want)
	}
	checks := p.HealthChecks()
	if len(checks) != 1 {
		t.Fatalf("%d health checks, want 1", len(checks))
	}
	if err := checks[0].Check(ctx); err == nil || err.Error() != `postgres "jobs": credentials: token endpoint said 503` || checks[0].FailureStatus != health.Unhealthy {
		t.Errorf("health check %s = %v (%s); want Unhealthy with the credentials error, once", checks[0].Name, err, checks[0].FailureStatus)
	}
	eventually(t, 20*time.Second, "the failure logged", func() bool { return strings.Contains(logs.String(), "no postgres credentials yet") })
	if strings.Contains(logs.String(), "not reachable") {
		t.Errorf("missing credentials logged as an unreachable server:\n%s", logs.String())
	}

	// An empty password is an error too, not an attempt without one.
	p2, err := openPool(ctx, discovery.FromMap(map[string]string{
		"ConnectionStrings__jobs": srv.ConnectionString(),
	}), "jobs", func(c *PoolConfig) {
		c.Credentials = func(context.Context, ConnTarget) (string, string, error) { return "", "", nil }
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	if err := p2.Ping(ctx); !errors.As(err, &ce) || !strings.Contains(err.Error(), "empty password") {
		t.Errorf("Ping with an empty password = %v; want a *CredentialsError", err)
	}
}

// TestCredentialsRefused: a hook whose password the server refuses (a
// token for the wrong identity) is reported as a refusal: the health
// check gives the server's reason and points at the identity, and the
// startup retry logs it once and backs off.
func TestCredentialsRefused(t *testing.T) {
	srv := testserver.NewPostgres(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	setRolePassword(t, ctx, srv, credentialsRole, "right-Secret")
	var logs syncbuf.Buffer
	var calls atomic.Int32
	p, err := openPool(ctx, discovery.FromMap(map[string]string{
		"ConnectionStrings__jobs":                       fmt.Sprintf("Host=127.0.0.1;Port=%d;Database=%s;Username=%s", srv.Port(), srv.Database(), credentialsRole),
		"Aspire__Npgsql__ConnectRetry__InitialInterval": "10ms",
		"Aspire__Npgsql__ConnectRetry__MaxInterval":     "1h",
	}), "jobs", func(c *PoolConfig) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		c.Credentials = func(context.Context, ConnTarget) (string, string, error) {
			calls.Add(1)
			return "", "wrong-Token-Leak", nil
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	eventually(t, 20*time.Second, "the refusal logged", func() bool { return strings.Contains(logs.String(), "refused the connection") })
	n := calls.Load()
	err = p.HealthCheck().Check(ctx)
	if err == nil || !strings.Contains(err.Error(), "SQLSTATE 28P01") || !strings.Contains(err.Error(), "the identity its credentials are issued for") {
		t.Errorf("health check = %v; want the refusal pointing at the credentials", err)
	}
	if strings.Count(logs.String(), "refused the connection") != 1 {
		t.Errorf("the refusal logged more than once:\n%s", logs.String())
	}
	if got := calls.Load() - n; got != 1 { // the health check's own connection
		t.Errorf("%d connections after the refusal besides the health check's, want none (backed off)", got-1)
	}
	if s := logs.String() + err.Error(); strings.Contains(s, "wrong-Token-Leak") {
		t.Errorf("the password leaked:\n%s", s)
	}
}

// TestNamesUser: which connection strings name a user, so that a hook may
// supply one when they do not.
func TestNamesUser(t *testing.T) {
	for _, tc := range []struct {
		s    string
		want bool
	}{
		{"Host=h;Database=db", false},
		{"Host=h;Database=db;Username=u", true},
		{"Host=h;User ID=u", true},
		{"Host=h;Password=p", false},
		{"postgresql://h/db", false},
		{"postgres://h1:5432,h2:5433/db", false},
		{"postgres://u@h/db", true},
		{"postgres://u:p@h/db", true},
		{"postgres://:p@h/db", false},
		{"postgres://h/db?user=u", true},
		{"postgres://h/db?sslmode=disable", false},
	} {
		if got := namesUser(tc.s); got != tc.want {
			t.Errorf("namesUser(%q) = %v, want %v", tc.s, got, tc.want)
		}
	}
}

// TestAuthenticationSetting: the Authentication setting is read like the
// other settings (connection, then DB, then global), case-insensitively;
// an unknown value is an error naming the key; AwsIam or EntraId without
// a hook fails the open with an error naming the configure function to
// add; Password drops a hook.
func TestAuthenticationSetting(t *testing.T) {
	const cs = "Host=127.0.0.1;Port=1;Username=u;Database=db"
	base := map[string]string{"ConnectionStrings:db-primary": cs, "ConnectionStrings:db-replica-a": cs}
	with := func(kv ...string) *discovery.Config {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return discovery.FromMap(m)
	}
	for _, tc := range []struct {
		name             string
		cfg              *discovery.Config
		primary, replica string
		errKey           string
	}{
		{"unset", with(), "", "", ""},
		{"global", with("Aspire:Npgsql:Authentication", " awsIAM "), AuthenticationAwsIam, AuthenticationAwsIam, ""},
		{"DB over global", with("Aspire:Npgsql:Authentication", "AwsIam", "Aspire:Npgsql:db:Authentication", "entraid"), AuthenticationEntraID, AuthenticationEntraID, ""},
		{"connection over DB", with("Aspire:Npgsql:db:Authentication", "EntraId", "Aspire:Npgsql:db-replica-a:Authentication", "password"), AuthenticationEntraID, AuthenticationPassword, ""},
		{"unknown", with("Aspire:Npgsql:db-primary:Authentication", "Kerberos"), "", "", "Aspire:Npgsql:db-primary:Authentication"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := LoadConfig(tc.cfg, "db")
			if tc.errKey != "" {
				var ke *discovery.KeyError
				if !errors.As(err, &ke) || ke.Key != tc.errKey || !errors.Is(err, ErrInvalidValue) {
					t.Fatalf("LoadConfig = %v; want a KeyError for %s", err, tc.errKey)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Primary.Authentication != tc.primary || c.Replicas[0].Authentication != tc.replica {
				t.Errorf("Authentication = %q, %q; want %q, %q", c.Primary.Authentication, c.Replicas[0].Authentication, tc.primary, tc.replica)
			}
		})
	}

	ctx := context.Background()
	pc, err := ParseConnectionString(cs)
	if err != nil {
		t.Fatal(err)
	}
	for auth, want := range map[string]string{
		AuthenticationAwsIam:  "pass aspireaws.RDSIAMAuth(app)",
		AuthenticationEntraID: "pass aspireazure.PostgresAuth(app)",
		"Kerberos":            "PoolConfig.Authentication",
	} {
		_, err := NewPool(ctx, &PoolConfig{Name: "jobs", Config: pc, Authentication: auth, Logger: quietLogger})
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), `"jobs"`) {
			t.Errorf("NewPool with Authentication %s and no hook = %v; want an error naming the connection and %q", auth, err, want)
		}
	}
	called := false
	p, err := NewPool(ctx, &PoolConfig{Name: "jobs", Config: pc, Authentication: "password", Logger: quietLogger,
		Credentials: func(context.Context, ConnTarget) (string, string, error) { called = true; return "", "x", nil }})
	if err != nil {
		t.Fatal(err)
	}
	_ = p.Ping(ctx) // nothing listens on port 1
	p.Close()
	if called {
		t.Error("Authentication=Password still called the Credentials hook")
	}
}

// TestCredentialsFailureReplica: a replica whose hook fails leaves the
// rotation; its check reports the credentials error naming it, Degraded,
// and reads go to the primary.
func TestCredentialsFailureReplica(t *testing.T) {
	c := newCluster(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	db, err := openDB(ctx, c.config(nil), "db", func(cfg *Config) {
		cfg.Replicas[0].Credentials = func(context.Context, ConnTarget) (string, string, error) {
			return "", "", errors.New("no token for the replica")
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var found bool
	for _, chk := range db.HealthChecks() {
		if chk.Name != "postgres:db-replica-east" {
			continue
		}
		found = true
		err := chk.Check(ctx)
		if err == nil || !strings.Contains(err.Error(), `postgres "db-replica-east": credentials: no token for the replica`) || chk.FailureStatus != health.Degraded {
			t.Errorf("replica check = %v (%s); want Degraded with the credentials error", err, chk.FailureStatus)
		}
	}
	if !found {
		t.Fatal("no check for the replica")
	}
	var inRecovery bool
	if err := db.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil || inRecovery {
		t.Errorf("a read with the replica's credentials failing: recovery %v, %v; want it served by the primary", inRecovery, err)
	}
}
