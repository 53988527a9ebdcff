package aspireazure

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// ErrMalformedToken is wrapped by the errors of [ParseClaims]. They never
// contain the token.
var ErrMalformedToken = errors.New("malformed token")

// ErrNoUser is wrapped by the errors of [Claims.PostgresUser] and
// [Claims.RedisUser] when the token names no user.
var ErrNoUser = errors.New("token names no user")

// Claims are the claims of a Microsoft Entra access token that name who it
// was issued to.
type Claims struct {
	// ObjectID (oid) is the principal's object ID.
	ObjectID string `json:"oid"`
	// TenantID (tid) is the tenant that issued the token.
	TenantID string `json:"tid"`
	// AppID (appid) is the client ID of the application or managed identity.
	AppID string `json:"appid"`
	// ManagedIdentityResourceID (xms_mirid) is the Azure resource ID of the
	// managed identity: a user-assigned identity's
	// (.../providers/Microsoft.ManagedIdentity/userAssignedIdentities/NAME),
	// or, for a system-assigned one, the resource's it belongs to.
	ManagedIdentityResourceID string `json:"xms_mirid"`
	// UPN (upn), PreferredUsername (preferred_username) and UniqueName
	// (unique_name) name a user.
	UPN               string `json:"upn"`
	PreferredUsername string `json:"preferred_username"`
	UniqueName        string `json:"unique_name"`
	// ExpiresAt (exp) is when the token expires, in Unix seconds.
	ExpiresAt int64 `json:"exp"`
}

// ParseClaims reads the claims of a JWT access token without verifying
// it: the token came from Microsoft Entra ID over TLS, and the service it is
// for verifies it. Errors wrap [ErrMalformedToken] and never contain the
// token.
func ParseClaims(token string) (Claims, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return Claims{}, fmt.Errorf("aspireazure: parse token claims: %w: %d parts, want 3", ErrMalformedToken, len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return Claims{}, fmt.Errorf("aspireazure: parse token claims: %w: payload is not base64url", ErrMalformedToken)
	}
	var c Claims
	if err := json.Unmarshal(raw, &c); err != nil {
		// json's errors may quote the payload: do not wrap them.
		return Claims{}, fmt.Errorf("aspireazure: parse token claims: %w: payload is not a JSON object of claims", ErrMalformedToken)
	}
	return c, nil
}

// PostgresUser returns the user name Azure Database for PostgreSQL expects
// with the token as password, as Aspire's and Microsoft's Entra helpers for
// Npgsql derive it: upn, else preferred_username, else unique_name (a
// user), else the last segment of xms_mirid (a managed identity: the
// user-assigned identity's name, or the name of the resource a
// system-assigned identity belongs to).
func (c Claims) PostgresUser() (string, error) {
	for _, v := range []string{c.UPN, c.PreferredUsername, c.UniqueName} {
		if v != "" {
			return v, nil
		}
	}
	if id := strings.TrimRight(c.ManagedIdentityResourceID, "/"); id != "" {
		return id[strings.LastIndex(id, "/")+1:], nil
	}
	return "", fmt.Errorf("aspireazure: postgres user: %w: no upn, preferred_username, unique_name or xms_mirid claim", ErrNoUser)
}

// RedisUser returns the user name Azure Cache for Redis expects with the
// token as password: the object ID (oid).
func (c Claims) RedisUser() (string, error) {
	if c.ObjectID == "" {
		return "", fmt.Errorf("aspireazure: redis user: %w: no oid claim", ErrNoUser)
	}
	return c.ObjectID, nil
}
