package aspireazure

import (
	"context"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/goaspire/goaspire/cqrs"
	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/servicedefaults"
)

// PostgresAuth returns a configure function for aspirepostgres.DB that
// authenticates the DB's connections (primary and replicas) to Azure
// Database for PostgreSQL with Microsoft Entra ID, as Aspire.Azure.Npgsql
// does: each new physical connection gets a token for [PostgresScope]
// from the App's [Credential] as its password, and, when its connection
// string names no user, the user the token names ([Claims.PostgresUser]:
// the user-assigned identity's name for a managed identity).
//
// A connection uses Entra ID when its Authentication setting
// (Aspire:Npgsql[:{name}]:Authentication, see cqrs.PoolConfig) is
// "EntraId", or when the setting is unset, its connection string has no
// password, no other credentials hook is installed, and the configuration
// names an Azure credential: AZURE_TOKEN_CREDENTIALS, AZURE_CLIENT_ID,
// AZURE_FEDERATED_TOKEN_FILE or IDENTITY_ENDPOINT (what Aspire's Azure
// deployment sets), or Azure:Credential or Azure:ClientId. Run locally,
// the AppHost's connection string has a password, and the same code uses
// it.
//
// The credential is made on the first connection and shared by the App's
// clients; azidentity caches its tokens. A token that cannot be had
// fails the connection with an error naming it and the credential
// (a *cqrs.CredentialsError), which Ping, queries and the connection's
// health check report; no error contains a token.
func PostgresAuth(h servicedefaults.Host) func(*cqrs.Config) {
	return func(c *cqrs.Config) {
		installPostgres(h, &c.Primary)
		for i := range c.Replicas {
			installPostgres(h, &c.Replicas[i])
		}
	}
}

// PostgresPoolAuth is PostgresAuth for aspirepostgres.Pool.
func PostgresPoolAuth(h servicedefaults.Host) func(*cqrs.PoolConfig) {
	return func(c *cqrs.PoolConfig) { installPostgres(h, c) }
}

// PostgresCredentials returns a cqrs.CredentialsFunc that gives each
// connection a token of cred for [PostgresScope] as its password, and
// the token's user ([Claims.PostgresUser]) when the connection names
// none. Set it as a cqrs.PoolConfig's Credentials to use a credential of
// your own.
func PostgresCredentials(cred azcore.TokenCredential) cqrs.CredentialsFunc {
	return func(ctx context.Context, t cqrs.ConnTarget) (string, string, error) {
		return postgresToken(ctx, cred, t)
	}
}

func postgresToken(ctx context.Context, cred azcore.TokenCredential, t cqrs.ConnTarget) (string, string, error) {
	tok, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{PostgresScope}})
	if err != nil {
		return "", "", err // names the credential and the scope
	}
	user := t.User
	if user == "" {
		c, err := ParseClaims(tok.Token)
		if err != nil {
			return "", "", err
		}
		if user, err = c.PostgresUser(); err != nil {
			return "", "", err
		}
	}
	return user, tok.Token, nil
}

// installPostgres sets p's Credentials hook when p should use Entra ID.
func installPostgres(h servicedefaults.Host, p *cqrs.PoolConfig) {
	switch p.Authentication {
	case cqrs.AuthenticationEntraID:
	case "":
		if p.Credentials != nil || p.Config == nil || p.Config.ConnConfig.Password != "" || !credentialConfigured(h.Config()) {
			return
		}
	default:
		return
	}
	p.Credentials = func(ctx context.Context, t cqrs.ConnTarget) (string, string, error) {
		cred, err := Credential(ctx, h)
		if err != nil {
			return "", "", err
		}
		return postgresToken(ctx, cred, t)
	}
}

// credentialConfigured reports whether cfg names an Azure credential, as a
// deployment to Azure does.
func credentialConfigured(cfg *discovery.Config) bool {
	for _, k := range []string{KeyTokenCredentials, KeyClientID, KeyFederatedTokenFile} {
		if v, _ := lookup(cfg, k); v != "" {
			return true
		}
	}
	return cfg.String("IDENTITY_ENDPOINT") != ""
}
