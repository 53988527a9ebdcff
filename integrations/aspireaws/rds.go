// Package aspireaws connects a service to AWS managed databases without a
// password, as a production deploy on AWS wants: PostgreSQL on Amazon RDS
// or Aurora with IAM database authentication, where the password of each
// new connection is a short-lived token signed with the service's AWS
// credentials (its task or instance role).
//
// It is its own package so that only services that import it link the
// AWS SDK. Install it on a database opened by package aspirepostgres:
//
//	db, err := aspirepostgres.DB(ctx, app, "db", aspireaws.RDSIAMAuth(app))
//
// # Configuration
//
// Whether a connection uses IAM authentication is its Authentication
// setting (cqrs.PoolConfig.Authentication), read from
// Aspire:Npgsql:{connection}:Authentication, then
// Aspire:Npgsql:{db}:Authentication, then Aspire:Npgsql:Authentication:
//
//   - "AwsIam": a token signed for the connection's host, port and user
//     (the connection string must name the user: Username=...);
//   - "Password" (or "EntraId"): not this package's;
//   - unset: AwsIam when the connection string has no password (what a
//     deploy to AWS gives) and no other credentials hook is installed,
//     else the password (what the AppHost gives when running locally).
//
// The AWS region and credentials come from the AWS SDK's standard chain
// (AWS_REGION, AWS_PROFILE, the shared config and credentials files, web
// identity, ECS and EC2 roles), read once per App on the first connection.
// AWS:Region and AWS:Profile in the App's configuration (the keys of the
// AWS SDK for .NET's appsettings section, AWS__Region as a variable)
// override the region and profile.
//
// RDS accepts IAM authentication over TLS only: give the connection string
// SSL Mode=Require (or VerifyFull with the RDS root certificates).
//
// Errors name the connection and the key at fault and never contain a
// token: a token is a password for 15 minutes.
package aspireaws

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/rds/auth"

	"github.com/goaspire/goaspire/cqrs"
	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/servicedefaults"
)

// Configuration keys read by LoadRDSAuth.
const (
	// RegionKey overrides the AWS region of the standard chain.
	RegionKey = "AWS:Region"
	// ProfileKey overrides the shared-config profile of the standard
	// chain.
	ProfileKey = "AWS:Profile"
)

// RDSAuth signs the IAM authentication tokens of Amazon RDS and Aurora
// PostgreSQL. Its zero value is not usable: set Region and Credentials, or
// use LoadRDSAuth.
type RDSAuth struct {
	// Region is the AWS region of the databases ("eu-west-1").
	Region string
	// Credentials sign the tokens; they should cache (aws.CredentialsCache,
	// as LoadRDSAuth's do), since each new connection asks for them.
	Credentials aws.CredentialsProvider
}

// LoadRDSAuth loads the AWS region and credentials from the AWS SDK's
// standard chain, with the region and profile of cfg's AWS:Region and
// AWS:Profile when set. It fails when no region is known.
func LoadRDSAuth(ctx context.Context, cfg *discovery.Config) (*RDSAuth, error) {
	if cfg == nil {
		cfg = discovery.FromMap(nil)
	}
	var opts []func(*awsconfig.LoadOptions) error
	if r := strings.TrimSpace(cfg.String(RegionKey)); r != "" {
		opts = append(opts, awsconfig.WithRegion(r))
	}
	if p := strings.TrimSpace(cfg.String(ProfileKey)); p != "" {
		opts = append(opts, awsconfig.WithSharedConfigProfile(p))
	}
	ac, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("aspireaws: load the AWS configuration: %w", err)
	}
	if ac.Region == "" {
		return nil, fmt.Errorf("aspireaws: %w", &discovery.KeyError{Key: RegionKey,
			Err: errors.New("no AWS region: set it, or AWS_REGION, or the profile's region")})
	}
	if ac.Credentials == nil {
		return nil, errors.New("aspireaws: the AWS configuration has no credentials provider")
	}
	return &RDSAuth{Region: ac.Region, Credentials: ac.Credentials}, nil
}

// ConnCredentials returns the user of t and a token for it, signed for t's
// host and port: it is a cqrs.CredentialsFunc. t must name a user.
func (a *RDSAuth) ConnCredentials(ctx context.Context, t cqrs.ConnTarget) (user, password string, err error) {
	if t.User == "" {
		return "", "", errors.New("RDS IAM authentication needs the database user: name it in the connection string (Username=...)")
	}
	if a == nil || a.Credentials == nil || a.Region == "" {
		return "", "", errors.New("aspireaws: RDSAuth needs Region and Credentials")
	}
	endpoint := net.JoinHostPort(t.Host, strconv.Itoa(int(t.Port)))
	token, err := auth.BuildAuthToken(ctx, endpoint, a.Region, t.User, a.Credentials)
	if err != nil {
		// The SDK's errors are about the credentials or the endpoint;
		// they cannot hold the token, which does not exist yet.
		return "", "", fmt.Errorf("sign an RDS IAM token for %s in %s: %w", endpoint, a.Region, err)
	}
	return t.User, token, nil
}

// kindAuth is the kind under which the App keeps its RDSAuth.
const kindAuth = "aws-rds-auth"

// appAuth returns the RDSAuth of h, loaded on first use and shared by
// every connection of the App; a failed load is tried again by the next
// connection.
func appAuth(ctx context.Context, h servicedefaults.Host) (*RDSAuth, error) {
	return servicedefaults.OpenClient(ctx, h, kindAuth, "default", func(ctx context.Context) (servicedefaults.Opened[*RDSAuth], error) {
		a, err := LoadRDSAuth(ctx, h.Config())
		if err != nil {
			return servicedefaults.Opened[*RDSAuth]{}, err
		}
		return servicedefaults.Opened[*RDSAuth]{Client: a}, nil
	})
}

// RDSIAMAuth returns a configure function for aspirepostgres.DB that
// gives each connection of the DB (primary and replicas) whose
// Authentication setting is AwsIam, or unset with no password in its
// connection string (see the package documentation), an RDS IAM token as the password of each new
// physical connection (see the package documentation). The region and
// credentials are h's (LoadRDSAuth), loaded once per App at the first
// connection: a failure to load them fails that connection with an
// error naming it, reported by its health check, and the next connection
// tries again.
func RDSIAMAuth(h servicedefaults.Host) func(*cqrs.Config) {
	return func(c *cqrs.Config) {
		install(h, &c.Primary)
		for i := range c.Replicas {
			install(h, &c.Replicas[i])
		}
	}
}

// RDSIAMAuthPool is RDSIAMAuth for aspirepostgres.Pool.
func RDSIAMAuthPool(h servicedefaults.Host) func(*cqrs.PoolConfig) {
	return func(c *cqrs.PoolConfig) { install(h, c) }
}

// install sets p's Credentials hook when its Authentication asks for IAM
// authentication, or is unset while the connection string has no
// password and no other hook is installed.
func install(h servicedefaults.Host, p *cqrs.PoolConfig) {
	switch p.Authentication {
	case cqrs.AuthenticationAwsIam:
	case "":
		if p.Credentials != nil || p.Config == nil || p.Config.ConnConfig.Password != "" {
			return
		}
	default:
		return
	}
	p.Credentials = func(ctx context.Context, t cqrs.ConnTarget) (string, string, error) {
		a, err := appAuth(ctx, h)
		if err != nil {
			return "", "", err
		}
		return a.ConnCredentials(ctx, t)
	}
}
