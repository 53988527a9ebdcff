package testserver

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
)

// fakeCredential hands out a fixed token and records what it was asked.
type fakeCredential struct {
	token string
	mu    sync.Mutex
	asked []policy.TokenRequestOptions
}

func (c *fakeCredential) GetToken(_ context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.asked = append(c.asked, o)
	return azcore.AccessToken{Token: c.token, ExpiresOn: time.Now().Add(time.Hour)}, nil
}

func vaultClient(t *testing.T, kv *KeyVault, cred azcore.TokenCredential, verify bool) *azsecrets.Client {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: kv.CACertPool()}}}
	t.Cleanup(hc.CloseIdleConnections)
	c, err := azsecrets.NewClient(kv.URL(), cred, &azsecrets.ClientOptions{
		ClientOptions:                        azcore.ClientOptions{Transport: hc, Retry: policy.RetryOptions{MaxRetries: -1}},
		DisableChallengeResourceVerification: !verify,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestKeyVaultWithAzsecrets drives the stand-in with the real azsecrets
// client: the challenge, the scope and tenant it makes the client ask
// for, paging, disabled and missing secrets.
func TestKeyVaultWithAzsecrets(t *testing.T) {
	kv := NewKeyVault(t, KeyVaultOptions{PageSize: 2, Tenant: "tenant-1"})
	for _, n := range []string{"a", "B", "c", "d", "e"} {
		kv.SetSecret(n, "value-"+n)
	}
	kv.SetSecret("c", "value-c2")
	if !kv.SetEnabled("d", false) || kv.SetEnabled("nope", false) {
		t.Fatal("SetEnabled reports existence wrongly")
	}
	cred := &fakeCredential{token: "tok"}
	c := vaultClient(t, kv, cred, false)
	ctx := context.Background()

	var names []string
	enabled := map[string]bool{}
	pager := c.NewListSecretPropertiesPager(nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			t.Fatalf("list: %v", err)
		}
		for _, p := range page.Value {
			names = append(names, p.ID.Name())
			enabled[p.ID.Name()] = *p.Attributes.Enabled
		}
	}
	if strings.Join(names, ",") != "a,B,c,d,e" || enabled["d"] || !enabled["a"] {
		t.Errorf("listed %v, enabled %v", names, enabled)
	}
	st := kv.Stats()
	if st.Challenges != 1 || st.ListPages != 3 {
		t.Errorf("stats %+v; want 1 challenge, 3 pages", st)
	}
	cred.mu.Lock()
	asked := cred.asked[0]
	cred.mu.Unlock()
	if len(asked.Scopes) != 1 || asked.Scopes[0] != KeyVaultResource+"/.default" || asked.TenantID != "tenant-1" {
		t.Errorf("credential asked for %+v", asked)
	}

	got, err := c.GetSecret(ctx, "C", "", nil) // names are case-insensitive
	if err != nil || *got.Value != "value-c2" || got.ID.Name() != "c" || got.ID.Version() == "" {
		t.Fatalf("GetSecret(c) = %+v, %v", got, err)
	}
	if _, err := c.GetSecret(ctx, "c", got.ID.Version(), nil); err != nil {
		t.Errorf("GetSecret at its version: %v", err)
	}
	for _, tt := range []struct {
		name   string
		status int
		code   string
	}{{"d", http.StatusForbidden, "Forbidden"}, {"missing", http.StatusNotFound, "SecretNotFound"}} {
		_, err := c.GetSecret(ctx, tt.name, "", nil)
		var re *azcore.ResponseError
		if !errors.As(err, &re) || re.StatusCode != tt.status || re.ErrorCode != tt.code {
			t.Errorf("GetSecret(%s) error = %v; want %d %s", tt.name, err, tt.status, tt.code)
		}
	}
	kv.DeleteSecret("a")
	if _, err := c.GetSecret(ctx, "a", "", nil); err == nil {
		t.Error("a deleted secret is still served")
	}
}

// TestKeyVaultTokens checks the token validator and that the client's
// challenge resource verification refuses the loopback vault unless
// disabled.
func TestKeyVaultTokens(t *testing.T) {
	kv := NewKeyVault(t, KeyVaultOptions{ValidateToken: func(tok string) error {
		if tok != "good" {
			return errors.New("unknown token")
		}
		return nil
	}})
	kv.SetSecret("s", "v")
	ctx := context.Background()
	if _, err := vaultClient(t, kv, &fakeCredential{token: "bad"}, false).GetSecret(ctx, "s", "", nil); err == nil {
		t.Error("a refused token got the secret")
	}
	if kv.Stats().Refused == 0 {
		t.Errorf("stats %+v: no refusal counted", kv.Stats())
	}
	if _, err := vaultClient(t, kv, &fakeCredential{token: "good"}, false).GetSecret(ctx, "s", "", nil); err != nil {
		t.Errorf("a good token: %v", err)
	}
	_, err := vaultClient(t, kv, &fakeCredential{token: "good"}, true).GetSecret(ctx, "s", "", nil)
	if err == nil || !strings.Contains(err.Error(), "DisableChallengeResourceVerification") {
		t.Errorf("with resource verification: %v; want the client to refuse the challenge", err)
	}
}
