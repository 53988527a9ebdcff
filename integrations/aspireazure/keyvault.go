package aspireazure

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/internal/redact"
	"github.com/goaspire/goaspire/internal/roots"
)

// KeyVaultSection is the configuration section KeyVaultSecrets reads its
// settings from, as Aspire's AddAzureKeyVaultSecrets does; the section
// KeyVaultSection + ":" + name, when set, overrides it key by key.
const KeyVaultSection = "Aspire:Azure:Security:KeyVault"

// keyVaultGets bounds the secrets fetched at once, as .NET's provider
// bounds its parallel loader.
const keyVaultGets = 8

// KeyVaultSettings configures KeyVaultSecrets. Settings are read from
// the configuration when the source is first loaded: from KeyVaultSection
// and KeyVaultSection:{name} ("VaultUri",
// "ClientOptions:DisableChallengeResourceVerification"), then
// ConnectionStrings:{name}, which is what an Aspire AppHost sets with
// WithReference(keyVault) and wins over VaultUri; the configure functions
// given to KeyVaultSecrets run last.
type KeyVaultSettings struct {
	// VaultURI is the vault's URI, "https://{vault}.vault.azure.net/".
	VaultURI string
	// Credential gets the tokens. Nil: NewCredential of the configuration
	// (AZURE_TOKEN_CREDENTIALS, AZURE_CLIENT_ID: the managed identity in an
	// Aspire Azure deployment).
	Credential azcore.TokenCredential
	// RootCAs are the roots trusted for the vault's TLS certificate. Nil:
	// the system roots plus SSL_CERT_FILE and SSL_CERT_DIR as the
	// configuration names them, as the App trusts.
	RootCAs *x509.CertPool
	// DisableChallengeResourceVerification lets the vault's
	// authentication challenge name a resource that is not the vault's
	// own domain: for a vault stand-in on loopback (testserver.KeyVault),
	// never for a real vault. See
	// azsecrets.ClientOptions.DisableChallengeResourceVerification.
	DisableChallengeResourceVerification bool
}

// KeyVaultSecrets returns the configuration source of the secrets of the
// Azure Key Vault connected as name, the Go form of .NET's
// builder.Configuration.AddAzureKeyVaultSecrets(name):
//
//	cfg, err = cfg.AddSource(ctx, aspireazure.KeyVaultSecrets("secrets"))
//
// To reload the secrets, set the returned Source's ReloadInterval (like
// .NET's AzureKeyVaultConfigurationOptions.ReloadInterval, a code
// setting); discovery.Config.Watch, or the App given the source with
// servicedefaults.WithConfigSource, then loads them again that often.
//
// Every enabled secret becomes a configuration key, "--" read as ':' (the
// secret ApiKeys--External is ApiKeys:External); disabled secrets are
// skipped. As in .NET, a secret past its expiry or before its activation
// time is still loaded: Key Vault only informs about those dates. The
// source is marked Secret, so the configuration's errors never quote its
// values; it logs nothing, and its errors name the vault and the secret at
// fault, never a value.
//
// The source sits where discovery.Source says: above the appsettings
// files, below environment variables. (.NET adds the provider last, above
// the environment.)
//
// On a reload, only the secrets whose
// "updated" time changed are fetched again, and the secrets no longer
// listed, or disabled, disappear from the configuration. A reload that
// fails keeps the values of the last good one.
func KeyVaultSecrets(name string, configure ...func(*KeyVaultSettings)) discovery.Source {
	s := &vaultSource{name: name, configure: configure}
	return discovery.Source{
		Name:   fmt.Sprintf("Azure Key Vault %q", name),
		Secret: true,
		Load:   s.load,
	}
}

// vaultSource loads one vault's secrets. The client is made on the first
// load and kept for the reloads.
type vaultSource struct {
	name      string
	configure []func(*KeyVaultSettings)

	mu     sync.Mutex
	client *azsecrets.Client
	vault  string                  // the vault URI, for errors
	loaded map[string]loadedSecret // by secret name, from the last good load
}

type loadedSecret struct {
	updated time.Time
	value   string
}

// readKeyVaultSettings reads the settings of the vault connected as name.
func readKeyVaultSettings(cfg *discovery.Config, name string, configure []func(*KeyVaultSettings)) (KeyVaultSettings, error) {
	var s KeyVaultSettings
	if strings.TrimSpace(name) == "" {
		return s, errors.New("empty connection name")
	}
	var errs []error
	for _, sec := range []*discovery.Config{cfg.Section(KeyVaultSection), cfg.Section(KeyVaultSection + ":" + name)} {
		if v, ok := sec.Lookup("VaultUri"); ok && strings.TrimSpace(v) != "" {
			s.VaultURI = strings.TrimSpace(v)
		}
		b, err := sec.Bool("ClientOptions:DisableChallengeResourceVerification", s.DisableChallengeResourceVerification)
		errs = append(errs, err)
		s.DisableChallengeResourceVerification = b
	}
	if cs, err := cfg.ConnectionString(name); err == nil {
		s.VaultURI = cs
	}
	for _, f := range configure {
		f(&s)
	}
	if err := errors.Join(errs...); err != nil {
		return s, err
	}
	if s.VaultURI == "" {
		return s, fmt.Errorf("no vault URI: set ConnectionStrings:%s (ConnectionStrings__%s) or %s:VaultUri: %w",
			name, name, KeyVaultSection, discovery.ErrNotFound)
	}
	u, err := url.Parse(s.VaultURI)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil {
		return s, fmt.Errorf("vault URI %q: want https://{vault}.vault.azure.net/", redact.Value("VaultUri", s.VaultURI))
	}
	return s, nil
}

// open makes the client on the first load.
func (s *vaultSource) open(cfg *discovery.Config) (*azsecrets.Client, error) {
	if s.client != nil {
		return s.client, nil
	}
	set, err := readKeyVaultSettings(cfg, s.name, s.configure)
	if err != nil {
		return nil, err
	}
	cred := set.Credential
	if cred == nil {
		if cred, err = NewCredential(cfg); err != nil {
			return nil, err
		}
	}
	rootCAs := set.RootCAs
	if rootCAs == nil {
		if rootCAs, err = roots.Pool(cfg.String("SSL_CERT_FILE"), cfg.String("SSL_CERT_DIR")); err != nil {
			return nil, err
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: rootCAs, MinVersion: tls.VersionTLS12}
	c, err := azsecrets.NewClient(set.VaultURI, cred, &azsecrets.ClientOptions{
		ClientOptions:                        azcore.ClientOptions{Transport: &http.Client{Transport: tr}},
		DisableChallengeResourceVerification: set.DisableChallengeResourceVerification,
	})
	if err != nil {
		return nil, fmt.Errorf("vault %s: %w", set.VaultURI, err)
	}
	s.client, s.vault = c, set.VaultURI
	return c, nil
}

// load lists the vault's secrets and fetches those new or updated since
// the last load.
func (s *vaultSource) load(ctx context.Context, cfg *discovery.Config) (map[string]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.open(cfg)
	if err != nil {
		return nil, err
	}
	next := map[string]loadedSecret{}
	var fetch []string
	pager := c.NewListSecretPropertiesPager(nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("vault %s: listing secrets: %w", s.vault, err)
		}
		for _, p := range page.Value {
			if p == nil || p.ID == nil || p.Attributes == nil || p.Attributes.Enabled == nil || !*p.Attributes.Enabled {
				continue // disabled, as .NET skips them
			}
			name := p.ID.Name()
			var updated time.Time
			if p.Attributes.Updated != nil {
				updated = *p.Attributes.Updated
			}
			if old, ok := s.loaded[name]; ok && !updated.IsZero() && old.updated.Equal(updated) {
				next[name] = old
				continue
			}
			next[name] = loadedSecret{updated: updated}
			fetch = append(fetch, name)
		}
	}
	if err := s.fetch(ctx, c, fetch, next); err != nil {
		return nil, err
	}
	s.loaded = next
	out := make(map[string]string, len(next))
	for name, sec := range next {
		out[strings.ReplaceAll(name, "--", ":")] = sec.value
	}
	return out, nil
}

// fetch gets the values of names, a few at a time, into next. A secret
// deleted or disabled between the list and the get is left out.
func (s *vaultSource) fetch(ctx context.Context, c *azsecrets.Client, names []string, next map[string]loadedSecret) error {
	type result struct {
		name, value string
		skip        bool
		err         error
	}
	results := make([]result, len(names))
	sem := make(chan struct{}, keyVaultGets)
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			r := result{name: name}
			resp, err := c.GetSecret(ctx, name, "", nil)
			var re *azcore.ResponseError
			switch {
			case errors.As(err, &re) && (re.StatusCode == http.StatusNotFound || re.ErrorCode == "Forbidden" && strings.Contains(err.Error(), "SecretDisabled")):
				r.skip = true
			case err != nil:
				r.err = fmt.Errorf("vault %s: secret %s: %w", s.vault, name, err)
			case resp.Value != nil:
				r.value = *resp.Value
			}
			results[i] = r
		}()
	}
	wg.Wait()
	var errs []error
	for _, r := range results {
		switch {
		case r.err != nil:
			errs = append(errs, r.err)
		case r.skip:
			delete(next, r.name)
		default:
			sec := next[r.name]
			sec.value = r.value
			next[r.name] = sec
		}
	}
	return errors.Join(errs...)
}
