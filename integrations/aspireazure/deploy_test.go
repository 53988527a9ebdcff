package aspireazure_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/integrations/aspireazure"
	"github.com/goaspire/goaspire/integrations/aspirepostgres"
	"github.com/goaspire/goaspire/integrations/aspireredis"
	"github.com/goaspire/goaspire/internal/leaktest"
	"github.com/goaspire/goaspire/internal/otlptest"
	"github.com/goaspire/goaspire/internal/poll"
	"github.com/goaspire/goaspire/servicedefaults"
	"github.com/goaspire/goaspire/servicedefaults/servicedefaultstest"
	"github.com/goaspire/goaspire/testserver"
)

// TestAspireAzureDeployment: one service, configured exactly as Aspire's
// Azure deployment configures it (connection strings without any user or
// password for Postgres and Redis, the vault's URI, the user-assigned
// identity and AZURE_TOKEN_CREDENTIALS, the platform's identity endpoint),
// reads its Key Vault secrets as configuration, writes and reads Postgres
// as the identity and uses Redis as the identity's object ID. Each server
// accepts only the tokens the managed identity endpoint issued for it, and
// no token appears in any error, log, span or health answer.
func TestAspireAzureDeployment(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pg := testserver.NewPostgres(t)
	rds := testserver.NewRedis(t, testserver.WithRedisTLS())
	admin := redis.NewClient(&redis.Options{Addr: rds.Addr(), Password: rds.Password(), TLSConfig: rds.TLSConfig()})
	t.Cleanup(func() { _ = admin.Close() })

	var (
		issued  sync.Map   // token -> resource
		setting sync.Mutex // one Postgres password change at a time
		tokens  []string
	)
	mi := testserver.NewManagedIdentity(t, testserver.ManagedIdentityConfig{
		Name:     "orders-api-id",
		Lifetime: 2 * time.Minute, // below azidentity's margin: every GetToken reaches the endpoint
		OnToken: func(tok testserver.ManagedIdentityToken) error {
			issued.Store(tok.AccessToken, tok.Resource)
			setting.Lock()
			defer setting.Unlock()
			tokens = append(tokens, tok.AccessToken)
			switch tok.Resource {
			case postgresResource:
				return pg.SetPassword(ctx, tok.Name, tok.AccessToken)
			case redisResource:
				return admin.Do(ctx, "ACL", "SETUSER", tok.ObjectID, "on", ">"+tok.AccessToken, "~*", "&*", "+@all").Err()
			}
			return nil
		},
	})
	mi.Setenv(t) // azidentity reads the endpoint from the process environment
	vault := testserver.NewKeyVault(t, testserver.KeyVaultOptions{ValidateToken: func(tok string) error {
		if res, _ := issued.Load(tok); res != testserver.KeyVaultResource {
			return errors.New("not a vault token of the managed identity")
		}
		return nil
	}})
	const apiKey = "kv-Api-Key-Value-7"
	vault.SetSecret("ApiKeys--External", apiKey)

	// The stand-ins' certificate authorities, as one bundle.
	var bundle []byte
	for _, f := range []string{rds.CACertFile(), vault.CACertFile()} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		bundle = append(bundle, b...)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, bundle, 0o600); err != nil {
		t.Fatal(err)
	}

	deploy := []string{
		// What Aspire's Azure deployment gives the service.
		fmt.Sprintf("ConnectionStrings__db=Host=127.0.0.1;Port=%d;Database=%s", pg.Port(), pg.Database()),
		fmt.Sprintf("ConnectionStrings__cache=127.0.0.1:%d,ssl=true", rds.Port()),
		"ConnectionStrings__secrets=" + vault.URL(),
		"AZURE_CLIENT_ID=" + mi.ClientID(),
		"AZURE_TOKEN_CREDENTIALS=ManagedIdentityCredential",
		"IDENTITY_ENDPOINT=" + mi.Endpoint(),
		"IDENTITY_HEADER=" + mi.Header(),
	}
	for _, kv := range deploy {
		if l := strings.ToLower(kv); strings.Contains(l, "password") || strings.Contains(l, "user") {
			t.Fatalf("the deployment's configuration names a user or password: %s", kv)
		}
	}
	rcv := otlptest.Start(t)
	env := append(deploy,
		// The test's: its stand-ins' CA, the vault on loopback, everything
		// exported and logged.
		"SSL_CERT_FILE="+caFile,
		"Aspire__Azure__Security__KeyVault__ClientOptions__DisableChallengeResourceVerification=true",
		"DOTNET_ENVIRONMENT=Development",
		"Logging__LogLevel__Default=Debug",
		"OTEL_TRACES_SAMPLER=always_on",
		"OTEL_EXPORTER_OTLP_ENDPOINT="+rcv.HTTPEndpoint,
		"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
	)
	cfg, err := discovery.Load(discovery.WithDir(t.TempDir()), discovery.WithEnviron(env))
	if err != nil {
		t.Fatal(err)
	}
	app := servicedefaultstest.NewUnstarted(t, http.NewServeMux(), nil,
		servicedefaults.WithConfig(cfg), servicedefaults.WithConfigSource(aspireazure.KeyVaultSecrets("secrets")))
	sink := leaktest.New(t, app.App, app.Logs, rcv)

	if got := app.Config().String("ApiKeys:External"); got != apiKey {
		t.Fatalf("ApiKeys:External = %q, want the vault's secret", got)
	}

	db, err := aspirepostgres.DB(ctx, app, "db", aspireazure.PostgresAuth(app))
	if err != nil {
		t.Fatal(err)
	}
	// Postgres keeps one password per role: two connections getting
	// tokens at once race for it (the stand-in's limit): retry.
	var pgUser string
	poll.Until(t, time.Minute, "a write and a read through the DB as the identity", func() bool {
		_, err := db.Exec(ctx, "CREATE TABLE IF NOT EXISTS orders (id int); INSERT INTO orders VALUES (1)")
		if err == nil {
			err = db.QueryRow(ctx, "SELECT current_user").Scan(&pgUser)
		}
		return err == nil
	})
	if pgUser != mi.Name() {
		t.Errorf("Postgres user %q, want the identity's name %q", pgUser, mi.Name())
	}

	rdb, err := aspireredis.Client(ctx, app, "cache", aspireazure.RedisAuth(app))
	if err != nil {
		t.Fatal(err)
	}
	who, err := rdb.Do(ctx, "ACL", "WHOAMI").Text()
	if err != nil {
		t.Fatal(err)
	}
	if who != mi.ObjectID() {
		t.Errorf("Redis user %q, want the identity's object ID %s", who, mi.ObjectID())
	}
	if err := rdb.Set(ctx, "order:1", "placed", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if got, err := rdb.Get(ctx, "order:1").Result(); err != nil || got != "placed" {
		t.Fatalf("Redis GET = %q, %v", got, err)
	}

	for _, res := range []string{postgresResource, redisResource, testserver.KeyVaultResource} {
		if mi.Issued(res) == 0 {
			t.Errorf("no token issued for %s", res)
		}
	}
	if st := vault.Stats(); st.Refused != 0 {
		t.Errorf("the vault refused %d tokens", st.Refused)
	}
	healthOut := sink.Health()
	if !strings.Contains(healthOut, "Healthy") {
		t.Errorf("health: %s", healthOut)
	}
	setting.Lock()
	secrets := append([]string{apiKey, mi.Header()}, tokens...)
	setting.Unlock()
	sink.Check(healthOut, secrets...)
}
