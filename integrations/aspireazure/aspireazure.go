package aspireazure

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/servicedefaults"
)

// Scopes of the Azure services goaspire's integrations authenticate to.
const (
	// PostgresScope is the scope of a token that is a password for Azure
	// Database for PostgreSQL.
	PostgresScope = "https://ossrdbms-aad.database.windows.net/.default"
	// RedisScope is the scope of a token that is a password for Azure
	// Cache for Redis and Azure Managed Redis.
	RedisScope = "https://redis.azure.com/.default"
)

// Configuration keys [NewCredential] reads. The AZURE_* keys are the
// environment variables Aspire's deployment and the Azure SDKs use (an
// environment variable is a configuration key); each has a counterpart in
// the "Azure" section, for appsettings.json, used when the variable is not
// set. Aspire's .NET client settings configure a credential in code, not in
// configuration, so the section's names are goaspire's own.
const (
	// KeyTokenCredentials selects the credential: "dev", "prod", or the
	// name of one credential (see [NewCredential]). Section key:
	// "Azure:Credential".
	KeyTokenCredentials = "AZURE_TOKEN_CREDENTIALS"
	// KeyClientID is the client ID of a user-assigned managed identity,
	// workload identity or service principal. Section key: "Azure:ClientId".
	KeyClientID = "AZURE_CLIENT_ID"
	// KeyTenantID is the Microsoft Entra tenant. Section key: "Azure:TenantId".
	KeyTenantID = "AZURE_TENANT_ID"
	// KeyClientSecret is a service principal's secret, for
	// EnvironmentCredential. Section key: "Azure:ClientSecret".
	KeyClientSecret = "AZURE_CLIENT_SECRET"
	// KeyFederatedTokenFile is the file of a workload identity's
	// Kubernetes service account token. Section key: "Azure:FederatedTokenFile".
	KeyFederatedTokenFile = "AZURE_FEDERATED_TOKEN_FILE"
	// KeyAuthorityHost is the Microsoft Entra authority, for a sovereign
	// cloud. Section key: "Azure:AuthorityHost".
	KeyAuthorityHost = "AZURE_AUTHORITY_HOST"
)

// section maps each AZURE_* key to its key in the "Azure" section.
var section = map[string]string{
	KeyTokenCredentials:   "Azure:Credential",
	KeyClientID:           "Azure:ClientId",
	KeyTenantID:           "Azure:TenantId",
	KeyClientSecret:       "Azure:ClientSecret",
	KeyFederatedTokenFile: "Azure:FederatedTokenFile",
	KeyAuthorityHost:      "Azure:AuthorityHost",
}

// lookup returns the value of key, else of its section key, and the key it
// came from.
func lookup(cfg *discovery.Config, key string) (value, from string) {
	if v := strings.TrimSpace(cfg.String(key)); v != "" {
		return v, key
	}
	return strings.TrimSpace(cfg.String(section[key])), section[key]
}

// Names of the credentials AZURE_TOKEN_CREDENTIALS may select, as azidentity
// and Azure.Identity name them.
const (
	EnvironmentCredential           = "EnvironmentCredential"
	WorkloadIdentityCredential      = "WorkloadIdentityCredential"
	ManagedIdentityCredential       = "ManagedIdentityCredential"
	AzureCLICredential              = "AzureCLICredential"
	AzureDeveloperCLICredential     = "AzureDeveloperCLICredential"
	AzurePowerShellCredential       = "AzurePowerShellCredential"
	credentialsDev, credentialsProd = "dev", "prod"
)

// ErrUnknownCredential is wrapped by the error of [NewCredential] when
// AZURE_TOKEN_CREDENTIALS names no credential it knows.
var ErrUnknownCredential = errors.New("unknown credential")

// NewCredential returns the credential the configuration selects, the way
// .NET's DefaultAzureCredential and azidentity's NewDefaultAzureCredential
// read AZURE_TOKEN_CREDENTIALS (or "Azure:Credential"):
//
//   - a credential's name (case-insensitive): that credential only.
//     ManagedIdentityCredential, what Aspire's Azure deployment sets, uses
//     the user-assigned identity AZURE_CLIENT_ID names, or the system-assigned
//     one when it is empty. WorkloadIdentityCredential takes
//     AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE and
//     AZURE_AUTHORITY_HOST from cfg. EnvironmentCredential is a client
//     secret credential when cfg has AZURE_TENANT_ID, AZURE_CLIENT_ID and
//     AZURE_CLIENT_SECRET, else azidentity's EnvironmentCredential, which
//     reads the process environment (certificate, user name and password).
//     AzureCLICredential, AzureDeveloperCLICredential and
//     AzurePowerShellCredential run the developer's tool, with AZURE_TENANT_ID.
//   - "dev": the three developer tools, in that order.
//   - "prod": EnvironmentCredential and WorkloadIdentityCredential when cfg
//     configures them, then ManagedIdentityCredential.
//   - not set: azidentity's DefaultAzureCredential with AZURE_TENANT_ID,
//     which reads the rest of its configuration from the process
//     environment itself.
//
// Any other value is an error naming the key and wrapping
// [ErrUnknownCredential]. azidentity reads the managed identity endpoint
// (IDENTITY_ENDPOINT and IDENTITY_HEADER on App Service and Container Apps,
// IMDS otherwise) from the process environment only: no option sets it.
//
// The credential's GetToken errors name the credential and the scopes and
// wrap azidentity's error (errors.As finds *azidentity.AuthenticationFailedError);
// none contains a token or a secret.
func NewCredential(cfg *discovery.Config) (azcore.TokenCredential, error) {
	if cfg == nil {
		cfg = discovery.FromMap(nil)
	}
	selected, key := lookup(cfg, KeyTokenCredentials)
	clientID, _ := lookup(cfg, KeyClientID)
	tenantID, _ := lookup(cfg, KeyTenantID)
	var opts azcore.ClientOptions
	if host, _ := lookup(cfg, KeyAuthorityHost); host != "" {
		opts.Cloud = cloud.Configuration{ActiveDirectoryAuthorityHost: host}
	}
	b := builder{cfg: cfg, opts: opts, clientID: clientID, tenantID: tenantID}

	var names []string
	switch {
	case selected == "":
		cred, err := azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{ClientOptions: opts, TenantID: tenantID})
		if err != nil {
			return nil, fmt.Errorf("aspireazure: DefaultAzureCredential: %w", err)
		}
		return &credential{name: "DefaultAzureCredential", cred: cred}, nil
	case strings.EqualFold(selected, credentialsDev):
		names = []string{AzureCLICredential, AzureDeveloperCLICredential, AzurePowerShellCredential}
	case strings.EqualFold(selected, credentialsProd):
		return b.prod()
	default:
		for _, n := range []string{EnvironmentCredential, WorkloadIdentityCredential, ManagedIdentityCredential,
			AzureCLICredential, AzureDeveloperCLICredential, AzurePowerShellCredential} {
			if strings.EqualFold(selected, n) {
				names = []string{n}
			}
		}
		if names == nil {
			return nil, &discovery.KeyError{Key: key, Err: fmt.Errorf(
				"%w %q: want dev, prod, EnvironmentCredential, WorkloadIdentityCredential, ManagedIdentityCredential, AzureCLICredential, AzureDeveloperCLICredential or AzurePowerShellCredential",
				ErrUnknownCredential, selected)}
		}
	}
	return b.chain(names)
}

// chain builds the credentials called names, in order: the one
// credential, or a chain of them.
func (b builder) chain(names []string) (azcore.TokenCredential, error) {
	creds := make([]azcore.TokenCredential, 0, len(names))
	for _, n := range names {
		c, err := b.build(n)
		if err != nil {
			return nil, fmt.Errorf("aspireazure: %s: %w", n, err)
		}
		creds = append(creds, c)
	}
	name := strings.Join(names, ", ")
	if len(creds) == 1 {
		return &credential{name: name, cred: creds[0]}, nil
	}
	c, err := azidentity.NewChainedTokenCredential(creds, nil)
	if err != nil {
		return nil, fmt.Errorf("aspireazure: %s: %w", name, err)
	}
	return &credential{name: name, cred: c}, nil
}

type builder struct {
	cfg                *discovery.Config
	opts               azcore.ClientOptions
	clientID, tenantID string
}

// prod is EnvironmentCredential and WorkloadIdentityCredential when cfg
// configures them, then ManagedIdentityCredential.
func (b builder) prod() (azcore.TokenCredential, error) {
	var names []string
	if secret, _ := lookup(b.cfg, KeyClientSecret); secret != "" && b.clientID != "" && b.tenantID != "" {
		names = append(names, EnvironmentCredential)
	}
	if file, _ := lookup(b.cfg, KeyFederatedTokenFile); file != "" && b.clientID != "" && b.tenantID != "" {
		names = append(names, WorkloadIdentityCredential)
	}
	names = append(names, ManagedIdentityCredential)
	return b.chain(names)
}

// build makes the credential called name.
func (b builder) build(name string) (azcore.TokenCredential, error) {
	switch name {
	case ManagedIdentityCredential:
		o := &azidentity.ManagedIdentityCredentialOptions{ClientOptions: b.opts}
		if b.clientID != "" {
			o.ID = azidentity.ClientID(b.clientID)
		}
		return azidentity.NewManagedIdentityCredential(o)
	case WorkloadIdentityCredential:
		file, _ := lookup(b.cfg, KeyFederatedTokenFile)
		return azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
			ClientOptions: b.opts,
			ClientID:      b.clientID,
			TenantID:      b.tenantID,
			TokenFilePath: file,
		})
	case EnvironmentCredential:
		if secret, _ := lookup(b.cfg, KeyClientSecret); secret != "" && b.clientID != "" && b.tenantID != "" {
			return azidentity.NewClientSecretCredential(b.tenantID, b.clientID, secret,
				&azidentity.ClientSecretCredentialOptions{ClientOptions: b.opts})
		}
		return azidentity.NewEnvironmentCredential(&azidentity.EnvironmentCredentialOptions{ClientOptions: b.opts})
	case AzureCLICredential:
		return azidentity.NewAzureCLICredential(&azidentity.AzureCLICredentialOptions{TenantID: b.tenantID})
	case AzureDeveloperCLICredential:
		return azidentity.NewAzureDeveloperCLICredential(&azidentity.AzureDeveloperCLICredentialOptions{TenantID: b.tenantID})
	default: // AzurePowerShellCredential
		return azidentity.NewAzurePowerShellCredential(&azidentity.AzurePowerShellCredentialOptions{TenantID: b.tenantID})
	}
}

// credential wraps the errors of GetToken with the credential's name and
// the scopes.
type credential struct {
	name string
	cred azcore.TokenCredential
}

// GetToken implements azcore.TokenCredential.
func (c *credential) GetToken(ctx context.Context, opts policy.TokenRequestOptions) (azcore.AccessToken, error) {
	tok, err := c.cred.GetToken(ctx, opts)
	if err != nil {
		return azcore.AccessToken{}, fmt.Errorf("aspireazure: %s: get token for %s: %w", c.name, strings.Join(opts.Scopes, " "), err)
	}
	return tok, nil
}

// credentialKind is the kind under which [Credential] shares the App's
// credential.
const credentialKind = "azure-credential"

// Credential returns the App's credential, made by [NewCredential] from
// h.Config() on first use and shared by every client of the App (through
// servicedefaults.OpenClient), so that they share azidentity's token cache.
func Credential(ctx context.Context, h servicedefaults.Host) (azcore.TokenCredential, error) {
	return servicedefaults.OpenClient(ctx, h, credentialKind, "default", func(context.Context) (servicedefaults.Opened[azcore.TokenCredential], error) {
		cred, err := NewCredential(h.Config())
		if err != nil {
			return servicedefaults.Opened[azcore.TokenCredential]{}, err
		}
		return servicedefaults.Opened[azcore.TokenCredential]{Client: cred}, nil
	})
}
