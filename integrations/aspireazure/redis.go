package aspireazure

import (
	"context"
	"fmt"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/goaspire/goaspire/cache"
	"github.com/goaspire/goaspire/servicedefaults"
)

// RedisAuth returns a configure function for aspireredis.Client that
// authenticates the connection to Azure Managed Redis or Azure Cache for
// Redis with Microsoft Entra ID, as .NET Aspire's
// AddRedisClientBuilder(...).WithAzureAuthentication() does:
//
//	rdb, err := aspireredis.Client(ctx, app, "cache", aspireazure.RedisAuth(app))
//
// It sets RedisConfig.Credentials to [RedisCredentials] unless the
// connection carries a password (an access key: Aspire's deployment gives
// none in Entra mode, only "{host}:10000,ssl=true"), so the same code runs
// against a local Redis with a password and against Azure. The client then
// authenticates every connection with a token of the App's credential
// ([Credential]) for [RedisScope] and the identity's object ID as user
// name, and re-authenticates its connections before the token expires
// (see cache.CredentialsProvider); the subscriptions of the caches and of
// redisevents move to a connection with the new token before the old one
// expires, so Azure closing expired connections loses no message.
//
// Caches made with aspireredis.NewCache share the client of their
// connection: call Client with RedisAuth first (with
// RedisConfig.HealthCheckFailureStatus set to Degraded in configure if the
// connection is used only by caches).
//
// Errors getting the credential or the token surface when the client
// connects and in its health check; they name the credential and the
// scope and never contain the token.
func RedisAuth(h servicedefaults.Host) func(*cache.RedisConfig) {
	return func(c *cache.RedisConfig) {
		if c.Options != nil && c.Options.Password != "" {
			return
		}
		c.Credentials = RedisCredentials(h)
	}
}

// RedisCredentials returns the credentials of the App's identity for Azure
// Redis: a token of [Credential] for [RedisScope] as password, and the
// object ID (oid claim, [Claims.RedisUser]) of the identity as user name,
// expiring with the token.
//
// azidentity caches tokens and, for tokens of less than two hours, renews
// them only within five minutes of their expiry: until then a call returns
// the token already held, and cache.CredentialsProvider asks again after
// half the time left, so that the new token is fetched and pushed to the
// connections before the old one expires.
func RedisCredentials(h servicedefaults.Host) cache.CredentialsFunc {
	return func(ctx context.Context) (cache.RedisCredentials, error) {
		cred, err := Credential(ctx, h)
		if err != nil {
			return cache.RedisCredentials{}, err
		}
		tok, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{RedisScope}})
		if err != nil {
			return cache.RedisCredentials{}, err
		}
		claims, err := ParseClaims(tok.Token)
		if err != nil {
			return cache.RedisCredentials{}, fmt.Errorf("aspireazure: redis token: %w", err)
		}
		user, err := claims.RedisUser()
		if err != nil {
			return cache.RedisCredentials{}, err
		}
		return cache.RedisCredentials{Username: user, Password: tok.Token, ExpiresOn: tok.ExpiresOn}, nil
	}
}
