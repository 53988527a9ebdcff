// Package aspireazure gives a service the Azure credential an Aspire Azure
// deployment sets it up for, and reads the claims of the tokens it gets:
// the shared ground of goaspire's passwordless (Microsoft Entra ID)
// integrations.
//
// Aspire's Azure deployment gives a service a connection string without a
// password (ConnectionStrings__db=Host=myserver.postgres.database.azure.com),
// the client ID of the user-assigned managed identity it runs as in
// AZURE_CLIENT_ID, and AZURE_TOKEN_CREDENTIALS=ManagedIdentityCredential.
// [NewCredential] builds the credential .NET's DefaultAzureCredential builds
// from those, with azidentity; [Credential] shares one per App. The
// password is then a token: for Azure Database for PostgreSQL a token for
// [PostgresScope] with the user name [Claims.PostgresUser] gives, for Azure
// Cache for Redis a token for [RedisScope] with [Claims.RedisUser].
//
// The core package servicedefaults does not link the Azure SDK: only a
// service that imports this package does.
//
// In tests, testserver.ManagedIdentity stands in for the App Service and
// Container Apps managed identity endpoint.
package aspireazure
