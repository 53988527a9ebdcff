package testserver_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/goaspire/goaspire/testserver"
)

const postgresScope = "https://ossrdbms-aad.database.windows.net/.default"

// claimsOf decodes the payload of a JWT-shaped token.
func claimsOf(t *testing.T, token string) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts, want 3", len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatalf("decode claims: %v", err)
	}
	var claims map[string]any
	if err := json.Unmarshal(raw, &claims); err != nil {
		t.Fatalf("unmarshal claims: %v", err)
	}
	return claims
}

func getToken(ctx context.Context, cred azcore.TokenCredential, scope string) (azcore.AccessToken, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{scope}})
}

// TestManagedIdentityWithAzidentity: azidentity's ManagedIdentityCredential
// finds the server through IDENTITY_ENDPOINT and IDENTITY_HEADER, sends the
// user-assigned client ID, and accepts the token, whose claims name the
// identity; OnToken sees the very token the credential returns.
func TestManagedIdentityWithAzidentity(t *testing.T) {
	var mu sync.Mutex
	var seen []testserver.ManagedIdentityToken
	mi := testserver.NewManagedIdentity(t, testserver.ManagedIdentityConfig{
		Name: "orders-identity",
		OnToken: func(tok testserver.ManagedIdentityToken) error {
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, tok)
			return nil
		},
	})
	mi.Setenv(t)
	cred, err := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{ID: azidentity.ClientID(mi.ClientID())})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := getToken(t.Context(), cred, postgresScope)
	if err != nil {
		t.Fatal(err)
	}
	claims := claimsOf(t, tok.Token)
	want := map[string]any{
		"aud":       "https://ossrdbms-aad.database.windows.net",
		"oid":       mi.ObjectID(),
		"tid":       mi.TenantID(),
		"appid":     mi.ClientID(),
		"xms_mirid": mi.ResourceID(),
	}
	for k, v := range want {
		if claims[k] != v {
			t.Errorf("claim %s = %v, want %v", k, claims[k], v)
		}
	}
	if !strings.HasSuffix(mi.ResourceID(), "/providers/Microsoft.ManagedIdentity/userAssignedIdentities/orders-identity") {
		t.Errorf("ResourceID() = %q", mi.ResourceID())
	}
	if d := time.Until(tok.ExpiresOn); d < 50*time.Minute || d > 61*time.Minute {
		t.Errorf("ExpiresOn in %v, want about an hour", d)
	}
	reqs := mi.Requests()
	if len(reqs) != 1 || reqs[0].ClientID != mi.ClientID() || reqs[0].Resource != "https://ossrdbms-aad.database.windows.net" || reqs[0].Status != http.StatusOK {
		t.Errorf("Requests() = %+v", reqs)
	}
	mu.Lock()
	if len(seen) != 1 || seen[0].AccessToken != tok.Token {
		t.Errorf("OnToken saw %d tokens, or not the one returned", len(seen))
	}
	mu.Unlock()

	// An hour-long token is cached by MSAL: a second GetToken does not
	// reach the server.
	again, err := getToken(t.Context(), cred, postgresScope)
	if err != nil {
		t.Fatal(err)
	}
	if again.Token != tok.Token || mi.Issued("https://ossrdbms-aad.database.windows.net") != 1 {
		t.Errorf("second GetToken: same token %v, issued %d; want the cached token",
			again.Token == tok.Token, mi.Issued("https://ossrdbms-aad.database.windows.net"))
	}
}

// TestManagedIdentityShortLifetime: a token valid for five minutes or less is
// never served from MSAL's cache, so every GetToken gets a new, different
// token: what a rotation test relies on.
func TestManagedIdentityShortLifetime(t *testing.T) {
	mi := testserver.NewManagedIdentity(t, testserver.ManagedIdentityConfig{Lifetime: 2 * time.Minute})
	mi.Setenv(t)
	cred, err := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{ID: azidentity.ClientID(mi.ClientID())})
	if err != nil {
		t.Fatal(err)
	}
	const redisScope = "https://redis.azure.com/.default"
	first, err := getToken(t.Context(), cred, redisScope)
	if err != nil {
		t.Fatal(err)
	}
	second, err := getToken(t.Context(), cred, redisScope)
	if err != nil {
		t.Fatal(err)
	}
	if first.Token == second.Token {
		t.Error("two GetToken calls returned the same short-lived token")
	}
	if claimsOf(t, first.Token)["jti"] == claimsOf(t, second.Token)["jti"] {
		t.Error("two tokens share a jti")
	}
	if n := mi.Issued("https://redis.azure.com"); n != 2 {
		t.Errorf("Issued = %d, want 2", n)
	}
}

// TestManagedIdentityDefaultAzureCredential: DefaultAzureCredential limited
// by AZURE_TOKEN_CREDENTIALS=ManagedIdentityCredential (as Aspire deploys)
// reads AZURE_CLIENT_ID itself and gets its token from the server.
func TestManagedIdentityDefaultAzureCredential(t *testing.T) {
	mi := testserver.NewManagedIdentity(t, testserver.ManagedIdentityConfig{})
	mi.Setenv(t)
	cred, err := azidentity.NewDefaultAzureCredential(nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := getToken(t.Context(), cred, postgresScope)
	if err != nil {
		t.Fatal(err)
	}
	if claimsOf(t, tok.Token)["oid"] != mi.ObjectID() {
		t.Error("token is not the identity's")
	}
	if reqs := mi.Requests(); len(reqs) != 1 || reqs[0].ClientID != mi.ClientID() {
		t.Errorf("Requests() = %+v, want one with client_id %s", reqs, mi.ClientID())
	}
}

// TestManagedIdentityRefusals: the server refuses what the real endpoint
// refuses, and fails on demand.
func TestManagedIdentityRefusals(t *testing.T) {
	tests := []struct {
		name       string
		setup      func(t *testing.T, mi *testserver.ManagedIdentity) azidentity.ManagedIDKind
		wantStatus []int
	}{
		{
			name: "wrong header",
			setup: func(t *testing.T, mi *testserver.ManagedIdentity) azidentity.ManagedIDKind {
				t.Setenv("IDENTITY_HEADER", "not-the-secret")
				return azidentity.ClientID(mi.ClientID())
			},
			wantStatus: []int{http.StatusUnauthorized},
		},
		{
			name: "identity not assigned",
			setup: func(*testing.T, *testserver.ManagedIdentity) azidentity.ManagedIDKind {
				return azidentity.ClientID("00000000-0000-0000-0000-000000000000")
			},
			wantStatus: []int{http.StatusBadRequest},
		},
		{
			name: "injected 400",
			setup: func(_ *testing.T, mi *testserver.ManagedIdentity) azidentity.ManagedIDKind {
				mi.Fail(http.StatusBadRequest, 1)
				return azidentity.ClientID(mi.ClientID())
			},
			wantStatus: []int{http.StatusBadRequest},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mi := testserver.NewManagedIdentity(t, testserver.ManagedIdentityConfig{})
			mi.Setenv(t)
			id := tt.setup(t, mi)
			cred, err := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{ID: id})
			if err != nil {
				t.Fatal(err)
			}
			_, err = getToken(t.Context(), cred, postgresScope)
			var afe *azidentity.AuthenticationFailedError
			if !errors.As(err, &afe) {
				t.Fatalf("GetToken error = %v, want an AuthenticationFailedError", err)
			}
			var got []int
			for _, r := range mi.Requests() {
				got = append(got, r.Status)
			}
			if len(got) != len(tt.wantStatus) || got[0] != tt.wantStatus[0] {
				t.Errorf("statuses = %v, want %v", got, tt.wantStatus)
			}
			if strings.Contains(err.Error(), mi.Header()) {
				t.Error("error contains the identity header secret")
			}
		})
	}
}

// TestManagedIdentityRetried500: azcore retries a 500, and the retry gets a
// token.
func TestManagedIdentityRetried500(t *testing.T) {
	mi := testserver.NewManagedIdentity(t, testserver.ManagedIdentityConfig{})
	mi.Setenv(t)
	mi.Fail(http.StatusInternalServerError, 1)
	cred, err := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{ID: azidentity.ClientID(mi.ClientID())})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := getToken(t.Context(), cred, postgresScope); err != nil {
		t.Fatal(err)
	}
	reqs := mi.Requests()
	if len(reqs) != 2 || reqs[0].Status != http.StatusInternalServerError || reqs[1].Status != http.StatusOK {
		t.Errorf("Requests() = %+v, want a 500 then a 200", reqs)
	}
}
