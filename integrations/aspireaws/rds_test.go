package aspireaws_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/goaspire/goaspire/cqrs"
	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/integrations/aspireaws"
	"github.com/goaspire/goaspire/integrations/aspirepostgres"
	"github.com/goaspire/goaspire/internal/leaktest"
	"github.com/goaspire/goaspire/internal/otlptest"
	"github.com/goaspire/goaspire/internal/poll"
	"github.com/goaspire/goaspire/servicedefaults/servicedefaultstest"
	"github.com/goaspire/goaspire/testserver"
)

// The AWS documentation's example keys: never real credentials.
const (
	testKeyID  = "AKIDEXAMPLE"
	testSecret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
)

// isolateAWS makes the AWS SDK's standard chain see only the example keys
// (and region, when not empty): no profile, no shared files, no instance
// or container role.
func isolateAWS(t *testing.T, region string) {
	dir := t.TempDir()
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID":                      testKeyID,
		"AWS_SECRET_ACCESS_KEY":                  testSecret,
		"AWS_REGION":                             region,
		"AWS_CONFIG_FILE":                        filepath.Join(dir, "config"),
		"AWS_SHARED_CREDENTIALS_FILE":            filepath.Join(dir, "credentials"),
		"AWS_EC2_METADATA_DISABLED":              "true",
		"AWS_SESSION_TOKEN":                      "",
		"AWS_PROFILE":                            "",
		"AWS_DEFAULT_PROFILE":                    "",
		"AWS_DEFAULT_REGION":                     "",
		"AWS_ROLE_ARN":                           "",
		"AWS_WEB_IDENTITY_TOKEN_FILE":            "",
		"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "",
		"AWS_CONTAINER_CREDENTIALS_FULL_URI":     "",
	} {
		t.Setenv(k, v)
		if v == "" {
			os.Unsetenv(k) // t.Setenv restores it
		}
	}
}

// tokenURL parses an RDS IAM token, which is a presigned URL without its
// scheme.
func tokenURL(t *testing.T, token string) *url.URL {
	t.Helper()
	u, err := url.Parse("https://" + token)
	if err != nil {
		t.Fatalf("the token is not a URL without its scheme: %v", err)
	}
	return u
}

// checkToken fails the test unless token is an RDS IAM token for host,
// port, user and region signed with the example key.
func checkToken(t *testing.T, token, host string, port uint16, user, region string) {
	t.Helper()
	u := tokenURL(t, token)
	q := u.Query()
	if want := net(host, port); u.Host != want {
		t.Errorf("token for %q, want %q", u.Host, want)
	}
	if u.Path != "/" && u.Path != "" {
		t.Errorf("token path %q, want /", u.Path)
	}
	for k, want := range map[string]string{
		"Action":              "connect",
		"DBUser":              user,
		"X-Amz-Algorithm":     "AWS4-HMAC-SHA256",
		"X-Amz-Expires":       "900",
		"X-Amz-SignedHeaders": "host",
	} {
		if got := q.Get(k); got != want {
			t.Errorf("token %s = %q, want %q", k, got, want)
		}
	}
	cred := q.Get("X-Amz-Credential")
	if !strings.HasPrefix(cred, testKeyID+"/") || !strings.HasSuffix(cred, "/"+region+"/rds-db/aws4_request") {
		t.Errorf("token X-Amz-Credential = %q, want %s/{date}/%s/rds-db/aws4_request", cred, testKeyID, region)
	}
	if sig := q.Get("X-Amz-Signature"); len(sig) != 64 {
		t.Errorf("token X-Amz-Signature = %q, want 64 hex digits", sig)
	}
	if _, err := time.Parse("20060102T150405Z", q.Get("X-Amz-Date")); err != nil {
		t.Errorf("token X-Amz-Date: %v", err)
	}
	if strings.Contains(token, testSecret) {
		t.Error("the token holds the secret key")
	}
}

func net(host string, port uint16) string { return host + ":" + strconv.Itoa(int(port)) }

// TestConnCredentialsToken: the token is a presigned rds-db connect URL for
// the connection's own host, port and user, in the configured region.
func TestConnCredentialsToken(t *testing.T) {
	a := &aspireaws.RDSAuth{Region: "eu-west-1", Credentials: credentials.NewStaticCredentialsProvider(testKeyID, testSecret, "")}
	for _, tc := range []cqrs.ConnTarget{
		{Name: "db-primary", Host: "db.cluster-abc.eu-west-1.rds.amazonaws.com", Port: 5432, User: "app", Database: "db"},
		{Name: "db-replica-east", Host: "db.cluster-ro-abc.eu-west-1.rds.amazonaws.com", Port: 5433, User: "reader", Database: "db"},
		{Name: "local", Host: "127.0.0.1", Port: 6000, User: "iam_user"},
	} {
		t.Run(tc.Name, func(t *testing.T) {
			user, token, err := a.ConnCredentials(context.Background(), tc)
			if err != nil {
				t.Fatal(err)
			}
			if user != tc.User {
				t.Errorf("user %q, want %q", user, tc.User)
			}
			checkToken(t, token, tc.Host, tc.Port, tc.User, "eu-west-1")
		})
	}

	if _, _, err := a.ConnCredentials(context.Background(), cqrs.ConnTarget{Name: "db", Host: "h", Port: 5432}); err == nil || !strings.Contains(err.Error(), "Username=") {
		t.Errorf("a connection without a user: %v; want an error asking for Username", err)
	}
}

// TestLoadRDSAuth: the region comes from AWS:Region over AWS_REGION, and
// no region at all is an error naming the key.
func TestLoadRDSAuth(t *testing.T) {
	for _, tc := range []struct {
		name, envRegion, cfgRegion, want string
	}{
		{"environment", "us-east-2", "", "us-east-2"},
		{"configuration wins", "us-east-2", "ap-south-1", "ap-south-1"},
		{"configuration only", "", "sa-east-1", "sa-east-1"},
		{"none", "", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			isolateAWS(t, tc.envRegion)
			a, err := aspireaws.LoadRDSAuth(context.Background(), discovery.FromMap(map[string]string{"AWS__Region": tc.cfgRegion}))
			if tc.want == "" {
				var ke *discovery.KeyError
				if !errors.As(err, &ke) || ke.Key != aspireaws.RegionKey {
					t.Fatalf("LoadRDSAuth = %v; want a KeyError for %s", err, aspireaws.RegionKey)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if a.Region != tc.want {
				t.Errorf("region %q, want %q", a.Region, tc.want)
			}
			c, err := a.Credentials.Retrieve(context.Background())
			if err != nil || c.AccessKeyID != testKeyID {
				t.Errorf("credentials %q, %v; want the environment's", c.AccessKeyID, err)
			}
		})
	}
}

// TestAuthenticationSetting: which connections get the hook.
func TestAuthenticationSetting(t *testing.T) {
	const (
		withPassword = "Host=h;Port=5432;Username=u;Password=p;Database=db"
		noPassword   = "Host=h;Port=5432;Username=u;Database=db"
	)
	for _, tc := range []struct {
		name             string
		values           map[string]string
		primary, replica bool
	}{
		{"unset: no password is IAM", map[string]string{"ConnectionStrings:db-primary": noPassword, "ConnectionStrings:db-replica-a": withPassword}, true, false},
		{"AwsIam for the DB", map[string]string{"ConnectionStrings:db-primary": withPassword, "ConnectionStrings:db-replica-a": withPassword,
			"Aspire:Npgsql:db:Authentication": "awsiam"}, true, true},
		{"connection wins over DB", map[string]string{"ConnectionStrings:db-primary": noPassword, "ConnectionStrings:db-replica-a": noPassword,
			"Aspire:Npgsql:db:Authentication": "AwsIam", "Aspire:Npgsql:db-replica-a:Authentication": "Password"}, true, false},
		{"global Password", map[string]string{"ConnectionStrings:db-primary": noPassword, "ConnectionStrings:db-replica-a": noPassword,
			"Aspire:Npgsql:Authentication": "Password"}, false, false},
		{"EntraId is not ours", map[string]string{"ConnectionStrings:db-primary": noPassword, "ConnectionStrings:db-replica-a": noPassword,
			"Aspire:Npgsql:db-primary:Authentication": "EntraId"}, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := servicedefaultstest.NewUnstarted(t, nil, tc.values)
			c, err := cqrs.LoadConfig(app.Config(), "db")
			if err != nil {
				t.Fatal(err)
			}
			aspireaws.RDSIAMAuth(app)(c)
			if got := c.Primary.Credentials != nil; got != tc.primary {
				t.Errorf("primary hook %v, want %v", got, tc.primary)
			}
			if got := c.Replicas[0].Credentials != nil; got != tc.replica {
				t.Errorf("replica hook %v, want %v", got, tc.replica)
			}
		})
	}

	// A hook installed already (by code, or another integration) is kept
	// when the setting does not ask for AwsIam.
	app := servicedefaultstest.NewUnstarted(t, nil, map[string]string{"ConnectionStrings:jobs": noPassword})
	c, err := cqrs.LoadPoolConfig(app.Config(), "jobs")
	if err != nil {
		t.Fatal(err)
	}
	mine := func(context.Context, cqrs.ConnTarget) (string, string, error) { return "", "mine", nil }
	c.Credentials = mine
	aspireaws.RDSIAMAuthPool(app)(c)
	if _, pw, _ := c.Credentials(context.Background(), cqrs.ConnTarget{}); pw != "mine" {
		t.Error("RDSIAMAuthPool replaced a hook installed before it")
	}
}

// stand-in is what RDS does with a token, on a real Postgres: the role's
// password is set to each token the hook signs, just before the
// connection uses it, on the primary (the replica replays it).
type standIn struct {
	t       *testing.T
	primary *testserver.Postgres
	replica *testserver.Postgres
	role    string

	mu     sync.Mutex
	tokens []string
	ports  map[uint16]int
	reject bool // sign, but do not set the password: the server refuses

	// Postgres keeps one password per role, so two connections that set
	// it at once would race: one connection at a time goes from setting
	// the password to being authenticated (AfterConnect), or, when its
	// login fails, until a while later.
	connecting chan struct{}
	generation int
}

// hold takes the connect slot until release, or until a while later for
// a connection that never gets to AfterConnect.
func (s *standIn) hold(ctx context.Context) error {
	select {
	case s.connecting <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	s.mu.Lock()
	s.generation++
	g := s.generation
	s.mu.Unlock()
	time.AfterFunc(10*time.Second, func() { s.releaseGeneration(g) })
	return nil
}

// release frees the slot held by the connection now authenticated.
func (s *standIn) release() {
	s.mu.Lock()
	g := s.generation
	s.mu.Unlock()
	s.releaseGeneration(g)
}

func (s *standIn) releaseGeneration(g int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if g != s.generation {
		return
	}
	s.generation++ // a late timer or AfterConnect of g releases nothing
	select {
	case <-s.connecting:
	default:
	}
}

// afterConnect releases the connect slot once a connection is in.
func (s *standIn) afterConnect(next func(context.Context, *pgx.Conn) error) func(context.Context, *pgx.Conn) error {
	return func(ctx context.Context, c *pgx.Conn) error {
		s.release()
		if next != nil {
			return next(ctx, c)
		}
		return nil
	}
}

func (s *standIn) wrap(next cqrs.CredentialsFunc) cqrs.CredentialsFunc {
	return func(ctx context.Context, tg cqrs.ConnTarget) (string, string, error) {
		user, token, err := next(ctx, tg)
		if err != nil {
			return user, token, err
		}
		checkToken(s.t, token, tg.Host, tg.Port, s.role, "eu-west-1")
		s.mu.Lock()
		reject := s.reject
		s.mu.Unlock()
		if reject {
			s.mu.Lock()
			s.tokens = append(s.tokens, token)
			s.mu.Unlock()
			return user, token, nil
		}
		if err := s.hold(ctx); err != nil {
			return "", "", err
		}
		if err := s.primary.SetPassword(ctx, s.role, token); err != nil {
			s.release()
			return "", "", err
		}
		if s.replica != nil && int(tg.Port) == s.replica.Port() {
			if err := s.replica.WaitCaughtUp(ctx); err != nil {
				s.release()
				return "", "", err
			}
		}
		s.mu.Lock()
		s.tokens = append(s.tokens, token)
		s.ports[tg.Port]++
		s.mu.Unlock()
		return user, token, nil
	}
}

func (s *standIn) secrets() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, tok := range s.tokens {
		out = append(out, tok, tokenURL(s.t, tok).Query().Get("X-Amz-Signature"))
	}
	return out
}

// TestRDSIAMAuthPostgres: configured as a deploy to AWS gives it (the
// connection strings name the user and no password; the region from
// AWS:Region, the keys from the standard chain), aspirepostgres.DB signs a
// token for each new connection of the primary and of the replica, for
// that server's host and port, and Postgres accepts it as the password:
// writes and reads succeed. New connections get new tokens. When the
// server refuses a token, the error and the health check say so; no token
// appears in any error, log, span or health answer.
func TestRDSIAMAuthPostgres(t *testing.T) {
	isolateAWS(t, "")
	primary := testserver.NewPostgres(t)
	replica := primary.NewReplica(t)
	const role = "iam_user"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := primary.SetPassword(ctx, role, "not-a-token-yet"); err != nil {
		t.Fatal(err)
	}
	cs := func(p *testserver.Postgres) string {
		return fmt.Sprintf("Host=127.0.0.1;Port=%d;Database=%s;Username=%s", p.Port(), p.Database(), role)
	}
	rcv := otlptest.Start(t)
	app := servicedefaultstest.NewUnstarted(t, http.NewServeMux(), map[string]string{
		"ConnectionStrings:db-primary":            cs(primary),
		"ConnectionStrings:db-replica-east":       cs(replica),
		"AWS:Region":                              "eu-west-1",
		"Aspire:Npgsql:db:Replicas:CheckInterval": "100ms",
		"Aspire:Npgsql:ConnectRetry:WaitOnOpen":   "30s",
		"DOTNET_ENVIRONMENT":                      "Development",
		"OTEL_EXPORTER_OTLP_ENDPOINT":             rcv.HTTPEndpoint,
		"OTEL_EXPORTER_OTLP_PROTOCOL":             "http/protobuf",
		"OTEL_TRACES_SAMPLER":                     "always_on",
		"Logging:LogLevel:Default":                "Debug",
	})
	sink := leaktest.New(t, app.App, app.Logs, rcv)
	s := &standIn{t: t, primary: primary, replica: replica, role: role, ports: map[uint16]int{}, connecting: make(chan struct{}, 1)}
	db, err := aspirepostgres.DB(ctx, app, "db", aspireaws.RDSIAMAuth(app), func(c *cqrs.Config) {
		if c.Primary.Credentials == nil || c.Replicas[0].Credentials == nil {
			t.Fatal("RDSIAMAuth installed no hook on a connection without a password")
		}
		c.Primary.Credentials = s.wrap(c.Primary.Credentials)
		c.Replicas[0].Credentials = s.wrap(c.Replicas[0].Credentials)
		c.Primary.Config.AfterConnect = s.afterConnect(c.Primary.Config.AfterConnect)
		c.Replicas[0].Config.AfterConnect = s.afterConnect(c.Replicas[0].Config.AfterConnect)
	})
	if err != nil {
		t.Fatal(err)
	}
	tctx, span := app.Tracer("test").Start(ctx, "request")
	if _, err := db.Exec(tctx, "CREATE TABLE t (v text); INSERT INTO t VALUES ('written')"); err != nil {
		t.Fatal(err)
	}
	if err := replica.WaitCaughtUp(ctx); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 30*time.Second, "the replica in rotation", func() bool {
		for _, r := range db.Replicas() {
			if r.InRotation {
				return true
			}
		}
		return false
	})
	var v string
	var inRecovery bool
	if err := db.Replica().QueryRow(tctx, "SELECT v, pg_is_in_recovery() FROM t").Scan(&v, &inRecovery); err != nil || v != "written" || !inRecovery {
		t.Fatalf("read on the replica: %q, %v, %v", v, inRecovery, err)
	}
	s.mu.Lock()
	np, nr := s.ports[uint16(primary.Port())], s.ports[uint16(replica.Port())]
	s.mu.Unlock()
	if np == 0 || nr == 0 {
		t.Fatalf("tokens signed for the primary: %d, the replica: %d; want both", np, nr)
	}

	// A new connection gets a new token (the role's password is now the
	// last one; X-Amz-Date moves each second).
	n := len(s.secrets())
	db.Primary().Reset()
	if err := db.Primary().QueryRow(tctx, "SELECT v FROM t").Scan(&v); err != nil {
		t.Fatal(err)
	}
	if len(s.secrets()) <= n {
		t.Error("the new connection did not get a token of its own")
	}

	// The server refuses the token (the stand-in no longer takes it): the
	// error says so, the check is Unhealthy, no token leaks.
	s.mu.Lock()
	s.reject = true
	s.mu.Unlock()
	if err := s.hold(ctx); err != nil { // no connection is setting it now
		t.Fatal(err)
	}
	err = primary.SetPassword(ctx, role, "rotated-away")
	s.release()
	if err != nil {
		t.Fatal(err)
	}
	db.Primary().Reset()
	_, err = db.Exec(tctx, "INSERT INTO t VALUES ('refused')")
	span.End()
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
		t.Fatalf("a write with a refused token: %v; want SQLSTATE 28P01", err)
	}
	sink.Err(err)
	var healthOut string
	poll.Until(t, 30*time.Second, "the primary's check to fail", func() bool {
		healthOut = sink.Health()
		return strings.Contains(healthOut, "Unhealthy")
	})
	for _, e := range app.Health().Run(ctx, nil).Entries {
		if e.Name == "postgres:db-primary" && (e.Status != health.Unhealthy || !strings.Contains(e.Error, "the identity its credentials are issued for")) {
			t.Errorf("postgres:db-primary = %s %q; want Unhealthy pointing at the identity", e.Status, e.Error)
		}
	}
	app.Logger().Error("query failed", "error", err)
	sink.Check(healthOut, append(s.secrets(), testSecret)...)
}

// TestRDSIAMAuthNoRegion: without a region the connection fails with an
// error naming it and AWS:Region, and the health check reports it.
func TestRDSIAMAuthNoRegion(t *testing.T) {
	isolateAWS(t, "")
	srv := testserver.NewPostgres(t)
	app := servicedefaultstest.NewUnstarted(t, nil, map[string]string{
		"ConnectionStrings:jobs": fmt.Sprintf("Host=127.0.0.1;Port=%d;Database=%s;Username=iam_user", srv.Port(), srv.Database()),
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := aspirepostgres.Pool(ctx, app, "jobs", aspireaws.RDSIAMAuthPool(app))
	if err != nil {
		t.Fatal(err)
	}
	err = p.Ping(ctx)
	var ce *cqrs.CredentialsError
	var ke *discovery.KeyError
	if !errors.As(err, &ce) || ce.Name != "jobs" || !errors.As(err, &ke) || ke.Key != aspireaws.RegionKey {
		t.Fatalf("Ping = %v; want a CredentialsError of \"jobs\" naming %s", err, aspireaws.RegionKey)
	}
	for _, e := range app.Health().Run(ctx, nil).Entries {
		if e.Name == "postgres:jobs" && (e.Status != health.Unhealthy || !strings.Contains(e.Error, `postgres "jobs": credentials:`) || !strings.Contains(e.Error, aspireaws.RegionKey)) {
			t.Errorf("postgres:jobs = %s %q; want Unhealthy with the credentials error", e.Status, e.Error)
		}
	}
}
