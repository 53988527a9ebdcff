package aspireazure_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/integrations/aspireazure"
	"github.com/goaspire/goaspire/internal/leaktest"
	"github.com/goaspire/goaspire/internal/otlptest"
	"github.com/goaspire/goaspire/servicedefaults"
	"github.com/goaspire/goaspire/servicedefaults/servicedefaultstest"
	"github.com/goaspire/goaspire/testserver"
)

// vaultValues is the configuration an AppHost gives a service that
// references the vault as "secrets", plus the test CA as SSL_CERT_FILE
// and the loopback challenge allowed.
func vaultValues(kv *testserver.KeyVault, more ...string) map[string]string {
	m := map[string]string{
		"ConnectionStrings__secrets": kv.URL(),
		"SSL_CERT_FILE":              kv.CACertFile(),
		"Aspire:Azure:Security:KeyVault:ClientOptions:DisableChallengeResourceVerification": "true",
	}
	for i := 0; i+1 < len(more); i += 2 {
		m[more[i]] = more[i+1]
	}
	return m
}

func withCredential(c azcore.TokenCredential) func(*aspireazure.KeyVaultSettings) {
	return func(s *aspireazure.KeyVaultSettings) { s.Credential = c }
}

// togglingValidator accepts the token "good" unless refusing is set.
type togglingValidator struct{ refuse atomic.Bool }

func (v *togglingValidator) validate(tok string) error {
	if v.refuse.Load() || tok != "good" {
		return errors.New("token refused")
	}
	return nil
}

// TestKeyVaultSecrets loads a vault through the real azsecrets client:
// every enabled secret, over several pages, "--" read as ':'; disabled
// ones skipped; the challenge answered with a vault-scoped token.
func TestKeyVaultSecrets(t *testing.T) {
	kv := testserver.NewKeyVault(t, testserver.KeyVaultOptions{PageSize: 3})
	kv.SetSecret("ApiKeys--External", "ext-key-1")
	kv.SetSecret("ConnectionStrings--orders", "Host=db;Password=pw-2")
	kv.SetSecret("Disabled--One", "never-seen")
	kv.SetEnabled("Disabled--One", false)
	for i := range 7 {
		kv.SetSecret(fmt.Sprintf("Bulk--Item%d", i), fmt.Sprint(i))
	}
	cred := &staticCredential{token: "tok"}
	cfg, err := discovery.FromMap(vaultValues(kv)).AddSource(context.Background(),
		aspireazure.KeyVaultSecrets("secrets", withCredential(cred)))
	if err != nil {
		t.Fatal(err)
	}
	if v := cfg.String("ApiKeys:External"); v != "ext-key-1" {
		t.Errorf("ApiKeys:External = %q", v)
	}
	if cs, err := cfg.ConnectionString("orders"); err != nil || cs != "Host=db;Password=pw-2" {
		t.Errorf("ConnectionString(orders) = %q, %v", cs, err)
	}
	if _, ok := cfg.Lookup("Disabled:One"); ok {
		t.Error("a disabled secret was loaded")
	}
	if n := len(cfg.Section("Bulk").Children()); n != 7 {
		t.Errorf("Bulk has %d children; want 7", n)
	}
	st := kv.Stats()
	if st.ListPages != 4 || st.Gets != 9 || st.Challenges < 1 {
		t.Errorf("vault stats %+v; want 4 pages, 9 gets (not the disabled one), a challenge", st)
	}
	cred.mu.Lock()
	scopes := strings.Join(cred.scopes, ",")
	cred.mu.Unlock()
	if !strings.HasPrefix(scopes, testserver.KeyVaultResource+"/.default") {
		t.Errorf("the credential was asked for %q", scopes)
	}
	if !cfg.IsSecret("ApiKeys:External") || !cfg.IsSecret("Bulk:Item1") {
		t.Error("Key Vault values are not marked secret")
	}
}

// TestKeyVaultLayering checks where the vault sits: above appsettings
// files, below environment variables.
func TestKeyVaultLayering(t *testing.T) {
	kv := testserver.NewKeyVault(t, testserver.KeyVaultOptions{})
	for _, n := range []string{"FileAndVault", "VaultAndEnv", "OnlyVault"} {
		kv.SetSecret(n, "vault")
	}
	fsys := fstest.MapFS{"appsettings.json": {Data: []byte(`{"OnlyFile": "file", "FileAndVault": "file"}`)}}
	env := []string{"VaultAndEnv=env", "OnlyEnv=env"}
	for k, v := range vaultValues(kv) {
		env = append(env, k+"="+v)
	}
	base, err := discovery.Load(discovery.WithFS(fsys), discovery.WithEnviron(env))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := base.AddSource(context.Background(), aspireazure.KeyVaultSecrets("secrets", withCredential(&staticCredential{token: "t"})))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ key, want string }{
		{"OnlyFile", "file"},
		{"FileAndVault", "vault"},
		{"OnlyVault", "vault"},
		{"VaultAndEnv", "env"},
		{"OnlyEnv", "env"},
	} {
		if v := cfg.String(tt.key); v != tt.want {
			t.Errorf("%s = %q; want %q", tt.key, v, tt.want)
		}
	}
}

// TestKeyVaultReload changes, removes and disables secrets and reloads:
// the configuration follows, only changed secrets are fetched again, and
// a failed reload keeps the last values without quoting any.
func TestKeyVaultReload(t *testing.T) {
	v := &togglingValidator{}
	kv := testserver.NewKeyVault(t, testserver.KeyVaultOptions{ValidateToken: v.validate})
	kv.SetSecret("ApiKeys--External", "first-value")
	kv.SetSecret("ApiKeys--Removed", "removed-value")
	kv.SetSecret("ApiKeys--Disabled", "disabled-value")
	kv.SetSecret("ApiKeys--Same", "same-value")
	ctx := context.Background()
	cfg, err := discovery.FromMap(vaultValues(kv)).AddSource(ctx,
		aspireazure.KeyVaultSecrets("secrets", withCredential(&staticCredential{token: "good"})))
	if err != nil {
		t.Fatal(err)
	}
	sec := cfg.Section("ApiKeys")
	gets := kv.Stats().Gets

	kv.SetSecret("ApiKeys--External", "second-value")
	kv.DeleteSecret("ApiKeys--Removed")
	kv.SetEnabled("ApiKeys--Disabled", false)
	kv.SetSecret("ApiKeys--Added", "added-value")
	if err := cfg.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"External": "second-value", "Same": "same-value", "Added": "added-value"}
	for k, w := range want {
		if got := sec.String(k); got != w {
			t.Errorf("after reload %s = %q; want %q", k, got, w)
		}
	}
	for _, k := range []string{"Removed", "Disabled"} {
		if _, ok := sec.Lookup(k); ok {
			t.Errorf("after reload %s is still set", k)
		}
	}
	if n := kv.Stats().Gets - gets; n != 2 {
		t.Errorf("the reload fetched %d secrets; want 2 (the changed and the added)", n)
	}

	v.refuse.Store(true)
	err = cfg.Reload(ctx)
	var se *discovery.SourceError
	if !errors.As(err, &se) || !strings.Contains(err.Error(), kv.URL()) {
		t.Fatalf("reload with refused tokens: %v; want a SourceError naming the vault", err)
	}
	for _, val := range []string{"second-value", "same-value", "added-value", "good"} {
		if strings.Contains(err.Error(), val) {
			t.Errorf("the reload error quotes %q: %v", val, err)
		}
	}
	if sec.String("External") != "second-value" {
		t.Error("a failed reload lost the last good values")
	}
}

func TestKeyVaultSettings(t *testing.T) {
	kv := testserver.NewKeyVault(t, testserver.KeyVaultOptions{})
	kv.SetSecret("K", "v")
	cred := withCredential(&staticCredential{token: "t"})
	noConn := func(more ...string) map[string]string {
		m := vaultValues(kv, more...)
		delete(m, "ConnectionStrings__secrets")
		return m
	}
	tests := []struct {
		name    string
		values  map[string]string
		wantErr string // "" loads K
	}{
		{"connection string", vaultValues(kv), ""},
		{"VaultUri", noConn("Aspire:Azure:Security:KeyVault:VaultUri", kv.URL()), ""},
		{"named VaultUri", noConn("Aspire:Azure:Security:KeyVault:VaultUri", "https://wrong.invalid/",
			"Aspire:Azure:Security:KeyVault:secrets:VaultUri", kv.URL()), ""},
		{"connection string over VaultUri", vaultValues(kv, "Aspire:Azure:Security:KeyVault:VaultUri", "https://wrong.invalid/"), ""},
		{"nothing", noConn(), "ConnectionStrings:secrets"},
		{"not https", vaultValues(kv, "ConnectionStrings__secrets", "http://u:pw-in-uri@127.0.0.1:1/"), "want https://"},
		{"bad bool", vaultValues(kv, "Aspire:Azure:Security:KeyVault:ClientOptions:DisableChallengeResourceVerification", "maybe"), "DisableChallengeResourceVerification"},
		{"challenge verified", noConn("Aspire:Azure:Security:KeyVault:ClientOptions:DisableChallengeResourceVerification", "false",
			"Aspire:Azure:Security:KeyVault:VaultUri", kv.URL()), "DisableChallengeResourceVerification"},
	}
	if _, err := discovery.FromMap(vaultValues(kv)).AddSource(context.Background(), aspireazure.KeyVaultSecrets(" ", cred)); err == nil ||
		!strings.Contains(err.Error(), "empty connection name") {
		t.Errorf("an empty name: %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := discovery.FromMap(tt.values).AddSource(context.Background(), aspireazure.KeyVaultSecrets("secrets", cred))
			if tt.wantErr == "" {
				if err != nil || cfg.String("K") != "v" {
					t.Fatalf("AddSource: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("AddSource error = %v; want it to mention %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "pw-in-uri") {
				t.Errorf("the error quotes a password: %v", err)
			}
		})
	}
}

// TestKeyVaultThroughApp gives an App the vault as a reloading source:
// the secrets are App configuration, a change reaches it, a vault that
// starts refusing is logged once, and no value leaves the App.
func TestKeyVaultThroughApp(t *testing.T) {
	v := &togglingValidator{}
	kv := testserver.NewKeyVault(t, testserver.KeyVaultOptions{ValidateToken: v.validate})
	const first, second = "ExtKeyLeakOne", "ExtKeyLeakTwo"
	kv.SetSecret("ApiKeys--External", first)
	kv.SetSecret("Limits--Count", "not-a-number-LeakThree")

	src := aspireazure.KeyVaultSecrets("secrets", withCredential(&staticCredential{token: "good"}))
	src.ReloadInterval = 10 * time.Millisecond
	rcv := otlptest.Start(t)
	values := vaultValues(kv,
		"DOTNET_ENVIRONMENT", "Development",
		"Logging:LogLevel:Default", "Debug",
		"OTEL_EXPORTER_OTLP_ENDPOINT", rcv.HTTPEndpoint,
		"OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	app := servicedefaultstest.NewUnstarted(t, http.NewServeMux(), maps.Clone(values), servicedefaults.WithConfigSource(src))
	sink := leaktest.New(t, app.App, app.Logs, rcv)

	cfg := app.Config()
	if got := cfg.String("ApiKeys:External"); got != first {
		t.Fatalf("ApiKeys:External = %q", got)
	}
	_, err := cfg.Int("Limits:Count", 0)
	sink.Err(err)
	if err == nil {
		t.Fatal("Int of a non-number: no error")
	}

	kv.SetSecret("ApiKeys--External", second)
	waitFor(t, "the App to see the new value", func() bool { return cfg.String("ApiKeys:External") == second })

	v.refuse.Store(true)
	waitFor(t, "the failed reload to be logged", func() bool {
		return strings.Contains(app.Logs.String(), "configuration reload failed")
	})
	before := kv.Stats().Refused
	waitFor(t, "more failed reloads", func() bool { return kv.Stats().Refused >= before+3 })
	if n := strings.Count(app.Logs.String(), "configuration reload failed"); n != 1 {
		t.Errorf("a vault refusing for several reloads was logged %d times; want 1", n)
	}
	if cfg.String("ApiKeys:External") != second {
		t.Error("the failed reloads lost the last good value")
	}
	sink.Check(sink.Health(), first, second, "LeakThree")
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestKeyVaultManagedIdentity is the passwordless path end to end: no
// credential in code; the App's configuration selects the managed
// identity (AZURE_TOKEN_CREDENTIALS, AZURE_CLIENT_ID), azidentity gets a
// token for the vault from the managed identity stand-in, and the vault
// stand-in accepts only tokens that stand-in issued for its resource.
func TestKeyVaultManagedIdentity(t *testing.T) {
	var issued sync.Map // token -> resource
	mi := startIdentity(t, testserver.ManagedIdentityConfig{
		OnToken: func(tok testserver.ManagedIdentityToken) error {
			issued.Store(tok.AccessToken, tok.Resource)
			return nil
		},
	})
	kv := testserver.NewKeyVault(t, testserver.KeyVaultOptions{ValidateToken: func(tok string) error {
		res, ok := issued.Load(tok)
		if !ok {
			return errors.New("not issued by the managed identity")
		}
		if res != testserver.KeyVaultResource {
			return fmt.Errorf("audience %v", res)
		}
		return nil
	}})
	const secret = "MiKvSecretLeak"
	kv.SetSecret("ApiKeys--External", secret)

	values := vaultValues(kv,
		"AZURE_TOKEN_CREDENTIALS", "ManagedIdentityCredential",
		"AZURE_CLIENT_ID", mi.ClientID())
	app := servicedefaultstest.NewUnstarted(t, nil, values, servicedefaults.WithConfigSource(aspireazure.KeyVaultSecrets("secrets")))
	if got := app.Config().String("ApiKeys:External"); got != secret {
		t.Fatalf("ApiKeys:External = %q", got)
	}
	var vaultTokens int
	for _, r := range mi.Requests() {
		if r.Resource == testserver.KeyVaultResource && r.ClientID == mi.ClientID() && r.Status == http.StatusOK {
			vaultTokens++
		}
	}
	if vaultTokens == 0 {
		t.Errorf("no vault token was issued to the identity: %+v", mi.Requests())
	}
	if st := kv.Stats(); st.Refused != 0 || st.Gets != 1 {
		t.Errorf("vault stats %+v; want every token accepted and one get", st)
	}
	if strings.Contains(app.Logs.String(), secret) {
		t.Error("the App logged the secret")
	}
}
