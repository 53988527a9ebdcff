package cqrs

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Values of PoolConfig.Authentication and of the Authentication setting.
const (
	// AuthenticationPassword uses the connection string's password (or
	// PGPASSWORD, ~/.pgpass), and no Credentials hook.
	AuthenticationPassword = "Password"
	// AuthenticationAwsIam signs an AWS RDS IAM token for each new
	// connection (integrations/aspireaws).
	AuthenticationAwsIam = "AwsIam"
	// AuthenticationEntraID gets a Microsoft Entra ID token for each new
	// connection (integrations/aspireazure).
	AuthenticationEntraID = "EntraId"
)

// ParseAuthentication returns the canonical spelling of an
// Authentication setting (case and surrounding spaces ignored): "",
// AuthenticationPassword, AuthenticationAwsIam or AuthenticationEntraID.
// Any other value is an error wrapping ErrInvalidValue.
func ParseAuthentication(s string) (string, error) {
	s = strings.TrimSpace(s)
	for _, v := range []string{"", AuthenticationPassword, AuthenticationAwsIam, AuthenticationEntraID} {
		if strings.EqualFold(s, v) {
			return v, nil
		}
	}
	return "", fmt.Errorf("%w: %q: want %s, %s or %s", ErrInvalidValue, s, AuthenticationPassword, AuthenticationAwsIam, AuthenticationEntraID)
}

// ConnTarget is the physical connection a pool is about to open, as a
// [PoolConfig.Credentials] hook sees it: a token-based password (AWS RDS
// IAM, Microsoft Entra ID) is issued for one host, port, user and
// database.
type ConnTarget struct {
	// Name is the connection name (PoolConfig.Name, "db-replica-east").
	Name string
	// Host and Port are the server the connection goes to. With several
	// hosts in one connection string they are the first one tried; pgx
	// sends the same password to the others.
	Host string
	Port uint16
	// Database is the database the connection opens.
	Database string
	// User is the user the connection string named, after any
	// BeforeConnect of the pool's; empty when the string named none
	// (LoadPoolConfig and LoadConfig record that; on a PoolConfig built
	// by hand it is pgx's ConnConfig.User, which pgx fills with PGUSER or
	// the operating-system user when the string names none).
	User string
}

// CredentialsFunc returns the user and password of one new physical
// connection to target. It is called for every connection a pool opens,
// before the connection is made, so a short-lived token it returns is
// fresh for that connection; it should cache what it can. An empty user
// keeps target's (or pgx's default when target has none). Its error must
// not contain the password or token: it reaches health checks and logs.
type CredentialsFunc func(ctx context.Context, target ConnTarget) (user, password string, err error)

// CredentialsError is the error of a connection whose
// PoolConfig.Credentials hook failed: the pool could not get a password,
// so it did not try the server. Ping, queries and the pool's health check
// return it (wrapped) until the hook succeeds.
type CredentialsError struct {
	// Name is the connection name.
	Name string
	// Err is the hook's error.
	Err error
}

// Error implements error.
func (e *CredentialsError) Error() string {
	return fmt.Sprintf("postgres %q: credentials: %v", e.Name, e.Err)
}

// Unwrap returns Err.
func (e *CredentialsError) Unwrap() error { return e.Err }

// withCredentials returns pc's BeforeConnect with the Credentials hook of
// connection name after it: pc's own hook (a Load Balance Hosts rotation,
// or one set in code) runs first, so that the hook sees the host the
// connection goes to. userDefault is the user pgx filled in because the
// connection string named none ("" when it named one).
func withCredentials(name string, creds CredentialsFunc, userDefault string, before func(context.Context, *pgx.ConnConfig) error) func(context.Context, *pgx.ConnConfig) error {
	return func(ctx context.Context, cc *pgx.ConnConfig) error {
		if before != nil {
			if err := before(ctx, cc); err != nil {
				return err
			}
		}
		t := ConnTarget{Name: name, Host: cc.Host, Port: cc.Port, Database: cc.Database, User: cc.User}
		if userDefault != "" && cc.User == userDefault {
			t.User = ""
		}
		if _, ok := ctx.Deadline(); !ok && cc.ConnectTimeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, cc.ConnectTimeout)
			defer cancel()
		}
		user, password, err := creds(ctx, t)
		if err != nil {
			return &CredentialsError{Name: name, Err: err}
		}
		if password == "" {
			return &CredentialsError{Name: name, Err: errors.New("the hook returned an empty password")}
		}
		if user != "" {
			cc.User = user
		}
		cc.Password = password
		return nil
	}
}

// namesUser reports whether the connection string s names a user: the
// Username keyword (or a synonym), or a URL's user information or user
// parameter. It is called on strings that parsed.
func namesUser(s string) bool {
	s = strings.TrimSpace(s)
	if isURL(s) {
		p := s[strings.Index(s, "://")+3:]
		// Like libpq, the user information ends at the first '@' before
		// any '/'.
		if i := strings.IndexAny(p, "@/"); i >= 0 && p[i] == '@' {
			if user, _, _ := strings.Cut(p[:i], ":"); user != "" {
				return true
			}
		}
		return urlQueryKeys(s)["user"]
	}
	st, err := parseSettings(s)
	if err != nil {
		return true
	}
	return st.libpq["user"] != ""
}
