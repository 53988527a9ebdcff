// Package redact keeps secrets out of errors, logs, spans and health output.
//
// It is internal: every goaspire package uses it, users do not.
package redact

import (
	"net/url"
	"strings"
)

// Mask is what a redacted secret is replaced with.
const Mask = "***"

// secretWords are the fragments that mark a key as holding a secret. The
// match is on the lower-cased key with separators removed, so "Password",
// "pwd", "x-otlp-api-key", "ApiKey" and "AccessToken" all count.
var secretWords = []string{"password", "pwd", "secret", "token", "apikey", "accesskey", "credential", "authorization", "auth"}

// IsSecretKey reports whether a configuration key, connection-string keyword
// or header name names a secret. Only the last segment of a configuration
// path counts ("Aspire:Npgsql:Password" is a secret, "Passwords:Enabled" is
// not asked about as a whole).
func IsSecretKey(key string) bool {
	if i := strings.LastIndexAny(key, ":"); i >= 0 {
		key = key[i+1:]
	}
	k := strings.Map(func(r rune) rune {
		switch r {
		case '-', '_', ' ', '.':
			return -1
		}
		if 'A' <= r && r <= 'Z' {
			return r + ('a' - 'A')
		}
		return r
	}, key)
	for _, w := range secretWords {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}

// Value returns v unless key names a secret, in which case it returns Mask.
// Long values are shortened so an error message stays readable.
func Value(key, v string) string {
	if IsSecretKey(key) {
		return Mask
	}
	const max = 64
	if len(v) > max {
		return v[:max] + "…"
	}
	return v
}

// URL returns raw with any password in its user information replaced by
// Mask, and any query parameter whose name is a secret masked too. A value
// that does not parse as a URL is masked whole, because it may be a secret
// that was put where a URL was expected.
func URL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return Mask
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	if u.RawQuery != "" {
		q := u.Query()
		changed := false
		for k := range q {
			if IsSecretKey(k) {
				q[k] = []string{Mask}
				changed = true
			}
		}
		if changed {
			u.RawQuery = q.Encode()
		}
	}
	return strings.Replace(u.String(), ":xxxxx@", ":"+Mask+"@", 1)
}
