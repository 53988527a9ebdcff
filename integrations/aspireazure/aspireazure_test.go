package aspireazure_test

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"go.uber.org/goleak"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/integrations/aspireazure"
	"github.com/goaspire/goaspire/internal/leaktest"
	"github.com/goaspire/goaspire/internal/otlptest"
	"github.com/goaspire/goaspire/servicedefaults/servicedefaultstest"
	"github.com/goaspire/goaspire/testserver"
)

func TestMain(m *testing.M) {
	// go-redis's re-authentication workers (one per connection marked
	// after a credentials refresh) may outlive the client's Close by up to
	// its PoolTimeout, waiting for a connection that was closed.
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/auth/streaming.(*ReAuthPoolHook).OnPut.func1"))
}

// startIdentity starts the managed identity stand-in and sets only the
// variables azidentity reads from the process environment (the endpoint and
// its secret); AZURE_CLIENT_ID and AZURE_TOKEN_CREDENTIALS are cleared, so
// that a test shows NewCredential takes them from its configuration.
func startIdentity(t *testing.T, cfg testserver.ManagedIdentityConfig) *testserver.ManagedIdentity {
	t.Helper()
	mi := testserver.NewManagedIdentity(t, cfg)
	t.Setenv("IDENTITY_ENDPOINT", mi.Endpoint())
	t.Setenv("IDENTITY_HEADER", mi.Header())
	t.Setenv("AZURE_CLIENT_ID", "")
	t.Setenv("AZURE_TOKEN_CREDENTIALS", "")
	return mi
}

func getToken(ctx context.Context, cred azcore.TokenCredential, scope string) (azcore.AccessToken, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{scope}})
}

// TestNewCredentialManagedIdentity: the selection and the user-assigned
// client ID come from the configuration (variables or the Azure section),
// the client ID reaches the endpoint, and the token's claims name the
// identity for Postgres and Redis.
func TestNewCredentialManagedIdentity(t *testing.T) {
	tests := []struct {
		name   string
		values func(mi *testserver.ManagedIdentity) map[string]string
	}{
		{"variables", func(mi *testserver.ManagedIdentity) map[string]string {
			return map[string]string{"AZURE_TOKEN_CREDENTIALS": "ManagedIdentityCredential", "AZURE_CLIENT_ID": mi.ClientID()}
		}},
		{"case-insensitive", func(mi *testserver.ManagedIdentity) map[string]string {
			return map[string]string{"AZURE_TOKEN_CREDENTIALS": "managedidentitycredential", "AZURE_CLIENT_ID": mi.ClientID()}
		}},
		{"prod", func(mi *testserver.ManagedIdentity) map[string]string {
			return map[string]string{"AZURE_TOKEN_CREDENTIALS": "prod", "AZURE_CLIENT_ID": mi.ClientID()}
		}},
		{"section", func(mi *testserver.ManagedIdentity) map[string]string {
			return map[string]string{"Azure:Credential": "ManagedIdentityCredential", "Azure:ClientId": mi.ClientID()}
		}},
		{"variables win over the section", func(mi *testserver.ManagedIdentity) map[string]string {
			return map[string]string{
				"AZURE_TOKEN_CREDENTIALS": "ManagedIdentityCredential", "AZURE_CLIENT_ID": mi.ClientID(),
				"Azure:Credential": "dev", "Azure:ClientId": "00000000-0000-0000-0000-000000000000",
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mi := startIdentity(t, testserver.ManagedIdentityConfig{Name: "orders-id"})
			cred, err := aspireazure.NewCredential(discovery.FromMap(tt.values(mi)))
			if err != nil {
				t.Fatal(err)
			}
			tok, err := getToken(t.Context(), cred, aspireazure.PostgresScope)
			if err != nil {
				t.Fatal(err)
			}
			reqs := mi.Requests()
			if len(reqs) != 1 || reqs[0].ClientID != mi.ClientID() {
				t.Fatalf("endpoint saw %+v, want one request with client_id %s", reqs, mi.ClientID())
			}
			claims, err := aspireazure.ParseClaims(tok.Token)
			if err != nil {
				t.Fatal(err)
			}
			if u, err := claims.PostgresUser(); err != nil || u != "orders-id" {
				t.Errorf("PostgresUser() = %q, %v; want orders-id", u, err)
			}
			if u, err := claims.RedisUser(); err != nil || u != mi.ObjectID() {
				t.Errorf("RedisUser() = %q, %v; want %s", u, err, mi.ObjectID())
			}
		})
	}
}

// TestNewCredentialUnknown: a value naming no credential is an error naming
// the key it came from, matching ErrUnknownCredential.
func TestNewCredentialUnknown(t *testing.T) {
	tests := []struct {
		values  map[string]string
		wantKey string
	}{
		{map[string]string{"AZURE_TOKEN_CREDENTIALS": "ManagedIdentity"}, "AZURE_TOKEN_CREDENTIALS"},
		{map[string]string{"AZURE_TOKEN_CREDENTIALS": "VisualStudioCredential"}, "AZURE_TOKEN_CREDENTIALS"},
		{map[string]string{"Azure:Credential": "production"}, "Azure:Credential"},
	}
	for _, tt := range tests {
		_, err := aspireazure.NewCredential(discovery.FromMap(tt.values))
		var ke *discovery.KeyError
		if !errors.Is(err, aspireazure.ErrUnknownCredential) || !errors.As(err, &ke) || ke.Key != tt.wantKey {
			t.Errorf("NewCredential(%v) = %v, want an ErrUnknownCredential naming %s", tt.values, err, tt.wantKey)
		}
	}
}

// TestNewCredentialErrors: a refused token request is wrapped, names the
// credential and the scope, and is still an AuthenticationFailedError.
func TestNewCredentialErrors(t *testing.T) {
	mi := startIdentity(t, testserver.ManagedIdentityConfig{})
	mi.Fail(http.StatusBadRequest, 1)
	cred, err := aspireazure.NewCredential(discovery.FromMap(map[string]string{
		"AZURE_TOKEN_CREDENTIALS": "ManagedIdentityCredential", "AZURE_CLIENT_ID": mi.ClientID(),
	}))
	if err != nil {
		t.Fatal(err)
	}
	_, err = getToken(t.Context(), cred, aspireazure.RedisScope)
	var afe *azidentity.AuthenticationFailedError
	if !errors.As(err, &afe) {
		t.Fatalf("GetToken error = %v, want an AuthenticationFailedError", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "ManagedIdentityCredential") || !strings.Contains(msg, aspireazure.RedisScope) {
		t.Errorf("error %q names neither the credential nor the scope", msg)
	}
}

// TestCredentialShared: every call on one App returns the same credential,
// whose tokens come from the configured identity.
func TestCredentialShared(t *testing.T) {
	mi := startIdentity(t, testserver.ManagedIdentityConfig{})
	app := servicedefaultstest.NewUnstarted(t, http.NewServeMux(), map[string]string{
		"AZURE_TOKEN_CREDENTIALS": "ManagedIdentityCredential", "AZURE_CLIENT_ID": mi.ClientID(),
	})
	a, err := aspireazure.Credential(t.Context(), app)
	if err != nil {
		t.Fatal(err)
	}
	b, err := aspireazure.Credential(t.Context(), app)
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Error("two calls on one App returned different credentials")
	}
	if _, err := getToken(t.Context(), b, aspireazure.PostgresScope); err != nil {
		t.Fatal(err)
	}
	other := servicedefaultstest.NewUnstarted(t, http.NewServeMux(), map[string]string{"AZURE_TOKEN_CREDENTIALS": "ManagedIdentityCredential"})
	c, err := aspireazure.Credential(t.Context(), other)
	if err != nil {
		t.Fatal(err)
	}
	if c == a {
		t.Error("two Apps share a credential")
	}
}

// TestCredentialBadConfig: Credential returns NewCredential's error.
func TestCredentialBadConfig(t *testing.T) {
	app := servicedefaultstest.NewUnstarted(t, http.NewServeMux(), map[string]string{"AZURE_TOKEN_CREDENTIALS": "nope"})
	if _, err := aspireazure.Credential(t.Context(), app); !errors.Is(err, aspireazure.ErrUnknownCredential) {
		t.Errorf("Credential error = %v, want ErrUnknownCredential", err)
	}
}

func jwt(payload string) string {
	return "eyJ0eXAiOiJKV1QifQ." + base64.RawURLEncoding.EncodeToString([]byte(payload)) + ".c2ln"
}

// TestClaims: the user names for Postgres and Redis, and malformed tokens.
func TestClaims(t *testing.T) {
	const mirid = "/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/api-identity"
	tests := []struct {
		name                    string
		token                   string
		wantPostgres, wantRedis string
		wantParseErr            bool
	}{
		{"user-assigned identity", jwt(`{"oid":"o1","xms_mirid":"` + mirid + `"}`), "api-identity", "o1", false},
		{"system-assigned identity", jwt(`{"oid":"o2","xms_mirid":"/subscriptions/s/resourcegroups/rg/providers/Microsoft.Web/sites/orders"}`), "orders", "o2", false},
		{"user upn", jwt(`{"oid":"o3","upn":"ada@contoso.com","preferred_username":"p@contoso.com","unique_name":"u@contoso.com"}`), "ada@contoso.com", "o3", false},
		{"user preferred_username", jwt(`{"oid":"o4","preferred_username":"p@contoso.com","unique_name":"u@contoso.com"}`), "p@contoso.com", "o4", false},
		{"user unique_name", jwt(`{"oid":"o5","unique_name":"u@contoso.com"}`), "u@contoso.com", "o5", false},
		{"no user", jwt(`{"tid":"t"}`), "", "", false},
		{"two parts", "eyJhIjoiYiJ9.eyJhIjoiYiJ9", "", "", true},
		{"not base64", "a.!!secret!!.c", "", "", true},
		{"not JSON", jwt(`secret-not-json`), "", "", true},
		{"wrong claim type", jwt(`{"oid":42}`), "", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := aspireazure.ParseClaims(tt.token)
			if tt.wantParseErr {
				if !errors.Is(err, aspireazure.ErrMalformedToken) {
					t.Fatalf("ParseClaims error = %v, want ErrMalformedToken", err)
				}
				if strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), tt.token) {
					t.Errorf("error %q contains the token", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			pg, err := c.PostgresUser()
			if pg != tt.wantPostgres || (tt.wantPostgres == "") != errors.Is(err, aspireazure.ErrNoUser) {
				t.Errorf("PostgresUser() = %q, %v; want %q", pg, err, tt.wantPostgres)
			}
			rd, err := c.RedisUser()
			if rd != tt.wantRedis || (tt.wantRedis == "") != errors.Is(err, aspireazure.ErrNoUser) {
				t.Errorf("RedisUser() = %q, %v; want %q", rd, err, tt.wantRedis)
			}
		})
	}
}

// TestSecretsTokenAndHeader: neither a token nor the endpoint's secret
// leaves the App, through errors, logs, telemetry or health, when token
// requests fail after tokens were issued.
func TestSecretsTokenAndHeader(t *testing.T) {
	var issued []string
	mi := startIdentity(t, testserver.ManagedIdentityConfig{
		Lifetime: time.Minute, // never cached: each GetToken reaches the endpoint
		OnToken: func(tok testserver.ManagedIdentityToken) error {
			issued = append(issued, tok.AccessToken)
			return nil
		},
	})
	rcv := otlptest.Start(t)
	app := servicedefaultstest.NewUnstarted(t, http.NewServeMux(), map[string]string{
		"AZURE_TOKEN_CREDENTIALS":     "ManagedIdentityCredential",
		"AZURE_CLIENT_ID":             mi.ClientID(),
		"DOTNET_ENVIRONMENT":          "Development",
		"OTEL_TRACES_SAMPLER":         "always_on",
		"Logging:LogLevel:Default":    "Debug",
		"OTEL_EXPORTER_OTLP_ENDPOINT": rcv.HTTPEndpoint,
		"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
	})
	s := leaktest.New(t, app.App, app.Logs, rcv)
	cred, err := aspireazure.Credential(t.Context(), app)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := getToken(t.Context(), cred, aspireazure.PostgresScope); err != nil {
		t.Fatal(err)
	}
	mi.Fail(http.StatusBadRequest, 1)
	_, err = getToken(t.Context(), cred, aspireazure.PostgresScope)
	if err == nil {
		t.Fatal("GetToken succeeded against a failing endpoint")
	}
	s.Err(err)
	_, err = aspireazure.ParseClaims(issued[0][:len(issued[0])-3] + ".x")
	s.Err(err)
	_, err = aspireazure.ParseClaims(strings.Replace(issued[0], ".", "!", 1))
	s.Err(err)
	if len(issued) != 1 {
		t.Fatalf("%d tokens issued, want 1", len(issued))
	}
	s.Check(s.Health(), issued[0], mi.Header())
}
