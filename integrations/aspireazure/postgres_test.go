package aspireazure_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/goaspire/goaspire/cqrs"
	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/integrations/aspireazure"
	"github.com/goaspire/goaspire/integrations/aspirepostgres"
	"github.com/goaspire/goaspire/internal/leaktest"
	"github.com/goaspire/goaspire/internal/otlptest"
	"github.com/goaspire/goaspire/internal/poll"
	"github.com/goaspire/goaspire/servicedefaults"
	"github.com/goaspire/goaspire/servicedefaults/servicedefaultstest"
	"github.com/goaspire/goaspire/testserver"
)

// postgresResource is PostgresScope as the token endpoint sees it.
const postgresResource = "https://ossrdbms-aad.database.windows.net"

// TestPostgresEntraAuth: a service configured exactly as Aspire's Azure
// deployment configures it (connection strings with host, port and
// database only, in keyword and URI form; AZURE_CLIENT_ID, AZURE_TOKEN_CREDENTIALS, IDENTITY_ENDPOINT
// and IDENTITY_HEADER in its environment) reaches a Postgres primary and
// replica whose role, named like the managed identity, has each token the
// identity endpoint issues as its password (the stand-in sets it before
// answering): the connections log in as that role, the user coming from
// the token's xms_mirid; writes and reads succeed through
// aspirepostgres.DB. Tokens live two minutes, so each new connection gets
// a new one: after the connections are dropped, the new ones use a new
// token and the first token no longer logs in. When the endpoint fails,
// the error names the connection and the credential, the check is
// Unhealthy, and no token nor the endpoint's secret appears in any error,
// log, span or health answer.
func TestPostgresEntraAuth(t *testing.T) {
	primary := testserver.NewPostgres(t)
	replica := primary.NewReplica(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	var mu sync.Mutex
	var tokens []string
	mi := testserver.NewManagedIdentity(t, testserver.ManagedIdentityConfig{
		Name:     "orders-api-id",
		Lifetime: 2 * time.Minute, // MSAL does not cache it: each GetToken reaches the endpoint
		OnToken: func(tok testserver.ManagedIdentityToken) error {
			if tok.Resource != postgresResource {
				return fmt.Errorf("token for %q, want %q", tok.Resource, postgresResource)
			}
			if err := primary.SetPassword(ctx, tok.Name, tok.AccessToken); err != nil {
				return err
			}
			if err := replica.WaitCaughtUp(ctx); err != nil {
				return err
			}
			mu.Lock()
			tokens = append(tokens, tok.AccessToken)
			mu.Unlock()
			return nil
		},
	})
	issued := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), tokens...)
	}
	mi.Setenv(t) // azidentity reads the endpoint from the process environment

	rcv := otlptest.Start(t)
	env := []string{
		// What Aspire's Azure deployment sets.
		fmt.Sprintf("ConnectionStrings__db=Host=127.0.0.1;Port=%d;Database=%s", primary.Port(), primary.Database()),
		fmt.Sprintf("DB_REPLICA_EAST_URI=postgresql://127.0.0.1:%d/%s", replica.Port(), replica.Database()), // Aspire 13's form
		"AZURE_CLIENT_ID=" + mi.ClientID(),
		"AZURE_TOKEN_CREDENTIALS=ManagedIdentityCredential",
		"IDENTITY_ENDPOINT=" + mi.Endpoint(),
		"IDENTITY_HEADER=" + mi.Header(),
		// The test's: fast replica checks, everything exported and logged.
		"Aspire__Npgsql__db__Replicas__CheckInterval=100ms",
		"DOTNET_ENVIRONMENT=Development",
		"Logging__LogLevel__Default=Debug",
		"OTEL_TRACES_SAMPLER=always_on",
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + rcv.HTTPEndpoint,
		"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
	}
	cfg, err := discovery.Load(discovery.WithDir(t.TempDir()), discovery.WithEnviron(env))
	if err != nil {
		t.Fatal(err)
	}
	app := servicedefaultstest.NewUnstarted(t, http.NewServeMux(), nil, servicedefaults.WithConfig(cfg))
	sink := leaktest.New(t, app.App, app.Logs, rcv)

	db, err := aspirepostgres.DB(ctx, app, "db", aspireazure.PostgresAuth(app), func(c *cqrs.Config) {
		if c.Primary.Credentials == nil || len(c.Replicas) != 1 || c.Replicas[0].Credentials == nil {
			t.Error("PostgresAuth installed no hook on a connection without a password, with a managed identity")
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	replicaPool, err := db.Keyed(db.Replicas()[0].Name)
	if err != nil {
		t.Fatal(err)
	}
	tctx, span := app.Tracer("test").Start(ctx, "request")

	// Two connections that get tokens at once race for the role's one
	// password (a stand-in's limit, not the service's): retry until the
	// write goes through.
	poll.Until(t, time.Minute, "a write through the DB", func() bool {
		_, err := db.Exec(tctx, "CREATE TABLE IF NOT EXISTS orders (id int); INSERT INTO orders VALUES (1)")
		return err == nil
	})
	if err := replica.WaitCaughtUp(ctx); err != nil {
		t.Fatal(err)
	}
	whoami := func(p interface {
		QueryRow(context.Context, string, ...any) pgx.Row
	}) (string, error) {
		var user string
		var n int
		err := p.QueryRow(tctx, "SELECT current_user, count(*) FROM orders").Scan(&user, &n)
		if err == nil && n == 0 {
			err = errors.New("the write is not there")
		}
		return user, err
	}
	check := func(step string) {
		t.Helper()
		for name, p := range map[string]interface {
			QueryRow(context.Context, string, ...any) pgx.Row
		}{"primary": db.Primary(), "replica": replicaPool} {
			var user string
			var err error
			poll.Until(t, time.Minute, step+": a read on the "+name, func() bool {
				user, err = whoami(p)
				return err == nil
			})
			if user != mi.Name() {
				t.Errorf("%s: %s: current_user %q, want the identity's name %q (from xms_mirid)", step, name, user, mi.Name())
			}
		}
	}
	check("first tokens")
	first := issued()
	if len(first) == 0 {
		t.Fatal("no token was issued for Postgres")
	}

	// New connections, new tokens.
	db.Primary().Reset()
	replicaPool.Reset()
	check("after the connections were dropped")
	if now := issued(); len(now) <= len(first) {
		t.Errorf("%d tokens issued after the connections were dropped, want more than %d", len(now), len(first))
	}
	// The first token no longer logs in: the new connections did not use it.
	cc, err := pgx.ParseConfig(fmt.Sprintf("host=127.0.0.1 port=%d dbname=%s user=%s", primary.Port(), primary.Database(), mi.Name()))
	if err != nil {
		t.Fatal(err)
	}
	cc.Password = first[0]
	var pgErr *pgconn.PgError
	if c, err := pgx.ConnectConfig(ctx, cc); err == nil {
		c.Close(ctx)
		t.Error("the first token still logs in: the password was not rotated")
	} else if !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
		t.Errorf("logging in with the first token: %v; want SQLSTATE 28P01", err)
	}

	// The endpoint fails (400: azidentity does not retry it).
	mi.Fail(http.StatusBadRequest, 1000)
	db.Primary().Reset()
	_, err = db.Exec(tctx, "INSERT INTO orders VALUES (2)")
	span.End()
	var ce *cqrs.CredentialsError
	if !errors.As(err, &ce) || ce.Name != "db" || !strings.Contains(err.Error(), `postgres "db": credentials: `) ||
		!strings.Contains(err.Error(), "ManagedIdentityCredential") || !strings.Contains(err.Error(), aspireazure.PostgresScope) {
		t.Fatalf("a write with the endpoint failing: %v; want a CredentialsError naming \"db\", the credential and the scope", err)
	}
	sink.Err(err)
	var healthOut string
	poll.Until(t, 30*time.Second, "the primary's check to fail", func() bool {
		healthOut = sink.Health()
		return strings.Contains(healthOut, "Unhealthy")
	})
	for _, e := range app.Health().Run(ctx, nil).Entries {
		if e.Name == "postgres:db" && (e.Status != health.Unhealthy || !strings.Contains(e.Error, `postgres "db": credentials:`)) {
			t.Errorf("postgres:db = %s %q; want Unhealthy with the credentials error", e.Status, e.Error)
		}
	}
	app.Logger().Error("query failed", "error", err)
	sink.Check(healthOut, append(issued(), mi.Header())...)
}

// TestPostgresCredentials: the token is the password, for PostgresScope;
// the user is the connection string's when it names one, else the
// token's; a token naming no user is an error without the token.
func TestPostgresCredentials(t *testing.T) {
	const mirid = "/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/api-identity"
	for _, tc := range []struct {
		name, token, user, wantUser string
		wantErr                     error
	}{
		{"user from the token", jwt(`{"xms_mirid":"` + mirid + `","sig":"secretpart"}`), "", "api-identity", nil},
		{"user from the string", jwt(`{"xms_mirid":"` + mirid + `","sig":"secretpart"}`), "admin@contoso.com", "admin@contoso.com", nil},
		{"no user anywhere", jwt(`{"tid":"t","sig":"secretpart"}`), "", "", aspireazure.ErrNoUser},
		{"not a JWT, user given", "opaque-secretpart", "app", "app", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cred := &staticCredential{token: tc.token}
			user, pw, err := aspireazure.PostgresCredentials(cred)(context.Background(), cqrs.ConnTarget{Name: "db", User: tc.user})
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || strings.Contains(err.Error(), "secretpart") {
					t.Fatalf("error %v; want %v, without the token", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if user != tc.wantUser || pw != tc.token {
				t.Errorf("user %q, password %q; want %q and the token", user, pw, tc.wantUser)
			}
			if len(cred.scopes) != 1 || cred.scopes[0] != aspireazure.PostgresScope {
				t.Errorf("scopes %v, want [%s]", cred.scopes, aspireazure.PostgresScope)
			}
		})
	}
}

// TestPostgresAuthSelection: which connections get Entra ID.
func TestPostgresAuthSelection(t *testing.T) {
	const (
		withPassword = "Host=h;Port=5432;Username=u;Password=p;Database=db"
		noPassword   = "Host=h;Port=5432;Database=db"
	)
	for _, tc := range []struct {
		name             string
		values           map[string]string
		primary, replica bool
	}{
		{"deployed: managed identity, no password", map[string]string{"ConnectionStrings:db": noPassword, "ConnectionStrings:db-replica-a": noPassword,
			"AZURE_CLIENT_ID": "c", "AZURE_TOKEN_CREDENTIALS": "ManagedIdentityCredential"}, true, true},
		{"IDENTITY_ENDPOINT alone", map[string]string{"ConnectionStrings:db": noPassword, "ConnectionStrings:db-replica-a": withPassword,
			"IDENTITY_ENDPOINT": "http://127.0.0.1:1/msi/token"}, true, false},
		{"Azure section", map[string]string{"ConnectionStrings:db": noPassword, "ConnectionStrings:db-replica-a": noPassword,
			"Azure:Credential": "dev"}, true, true},
		{"local: a password", map[string]string{"ConnectionStrings:db": withPassword, "ConnectionStrings:db-replica-a": withPassword,
			"AZURE_CLIENT_ID": "c"}, false, false},
		{"no password, no credential", map[string]string{"ConnectionStrings:db": noPassword, "ConnectionStrings:db-replica-a": noPassword}, false, false},
		{"EntraId asked for", map[string]string{"ConnectionStrings:db": withPassword, "ConnectionStrings:db-replica-a": withPassword,
			"Aspire:Npgsql:db-replica-a:Authentication": "entraid"}, false, true},
		{"Password asked for", map[string]string{"ConnectionStrings:db": noPassword, "ConnectionStrings:db-replica-a": noPassword,
			"AZURE_CLIENT_ID": "c", "Aspire:Npgsql:Authentication": "Password"}, false, false},
		{"AwsIam is not ours", map[string]string{"ConnectionStrings:db": noPassword, "ConnectionStrings:db-replica-a": noPassword,
			"AZURE_CLIENT_ID": "c", "Aspire:Npgsql:db:Authentication": "AwsIam"}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := servicedefaultstest.NewUnstarted(t, nil, tc.values)
			c, err := cqrs.LoadConfig(app.Config(), "db")
			if err != nil {
				t.Fatal(err)
			}
			aspireazure.PostgresAuth(app)(c)
			if got := c.Primary.Credentials != nil; got != tc.primary {
				t.Errorf("primary hook %v, want %v", got, tc.primary)
			}
			if got := c.Replicas[0].Credentials != nil; got != tc.replica {
				t.Errorf("replica hook %v, want %v", got, tc.replica)
			}
		})
	}
}
