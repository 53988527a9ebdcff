// Package redact keeps secrets out of errors, logs, spans and health output.
//
// It is internal: every goaspire package uses it, users do not.
//
// There are three entry points, from the most to the least informed:
//   - Value, for a value whose configuration key is known: the key decides;
//   - URL, for a value known to be a URL;
//   - Text, for free text that may contain either (an error message, a
//     connection string): it finds URLs, key=value and key: value pairs,
//     JSON members and bearer tokens, and masks what is secret in them.
package redact

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"unicode/utf8"
)

// Mask is what a redacted secret is replaced with.
const Mask = "***"

// urlMask is Mask as a URL query value.
const urlMask = "%2A%2A%2A"

// MaxValue is how many bytes of a value an error or log quotes; longer
// values are cut (at a character boundary) and end in "…".
const MaxValue = 64

// secretWords are the fragments that mark a key as holding a secret. The
// match is on the lower-cased key with separators removed, so "Password",
// "pwd", "x-otlp-api-key", "ApiKey", "AccessToken", "AccountKey" and
// "SharedAccessSignature" all count.
var secretWords = []string{
	"password", "passwd", "pwd", "psw", "secret", "token", "apikey", "accesskey", "accountkey",
	"privatekey", "signature", "credential", "authorization", "auth",
}

// secretKeys are keys that mark a secret only when they are the whole key:
// as fragments they would catch harmless words ("sig" in "signal").
var secretKeys = []string{"sig", "sas", "pass"}

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
	if strings.HasSuffix(k, "name") {
		return false // "SharedAccessKeyName", "TokenName": names, not secrets
	}
	for _, w := range secretWords {
		if strings.Contains(k, w) {
			return true
		}
	}
	for _, w := range secretKeys {
		if k == w {
			return true
		}
	}
	return false
}

// Value returns v as an error or log may quote it: Mask when key names a
// secret; otherwise v with any secret inside it masked (see Text) and cut
// to MaxValue bytes, so a huge value cannot make a huge message. Every
// goaspire error that quotes a configured value goes through Value.
func Value(key, v string) string {
	if IsSecretKey(key) {
		return Mask
	}
	// Scrub a window well past the cut, so a secret straddling it is
	// still seen in its context, without scanning a huge value whole.
	if len(v) > scrubWindow {
		v = v[:scrubWindow]
	}
	return Truncate(Text(v))
}

// scrubWindow is how much of a long value Value scrubs before cutting it
// to MaxValue.
const scrubWindow = 16 * MaxValue

// Truncate cuts s to at most MaxValue bytes, at a character boundary,
// marking the cut with "…".
func Truncate(s string) string {
	if len(s) <= MaxValue {
		return s
	}
	i := MaxValue
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "…"
}

// URL returns raw with any password in its user information replaced by
// Mask, and any query parameter whose name is a secret masked too. In a
// redis://, rediss:// or tcp:// URL, user information without a ':' is a
// password (redis://secret@host, the shorthand go-redis and redis-cli
// accept), and in a nats:// URL a token (nats://token@host), so it is
// masked as one. A value that does not parse as a URL is
// masked whole, because it may be a secret that was put where a URL was
// expected.
func URL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return Mask
	}
	masked := false
	if u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
			masked = true
		} else if loneUserIsSecret(u.Scheme) && u.User.Username() != "" {
			u.User = url.User("xxxxx")
			masked = true
		}
	}
	if u.RawQuery != "" {
		q, err := url.ParseQuery(u.RawQuery)
		if err != nil {
			// An unparsable query may still hold a secret: keep the
			// rest of the URL and mask the query whole.
			u.RawQuery = Mask
		} else {
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
	}
	s := u.String()
	if masked {
		s = strings.Replace(s, ":xxxxx@", ":"+Mask+"@", 1)
		s = strings.Replace(s, "//xxxxx@", "//"+Mask+"@", 1)
	}
	return s
}

// loneUserIsSecret reports whether user information without a ':' is a
// secret in a URL of this scheme: Redis reads it as the password, NATS as
// a token.
func loneUserIsSecret(scheme string) bool {
	switch strings.ToLower(scheme) {
	case "redis", "rediss", "tcp", "nats":
		return true
	}
	return false
}

// Header returns a copy of h with the values of secret headers
// (Authorization, Cookie, X-Api-Key, x-otlp-api-key, ...) replaced by Mask.
func Header(h http.Header) http.Header {
	if h == nil {
		return nil
	}
	out := make(http.Header, len(h))
	for k, vs := range h {
		if IsSecretKey(k) || strings.EqualFold(k, "Cookie") || strings.EqualFold(k, "Set-Cookie") || strings.EqualFold(k, "Proxy-Authorization") {
			masked := make([]string, len(vs))
			for i := range masked {
				masked[i] = Mask
			}
			out[k] = masked
			continue
		}
		out[k] = append([]string(nil), vs...)
	}
	return out
}

var (
	// urlPattern finds URLs with a scheme.
	urlPattern = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.\-]*://[^\s"'<>` + "`" + `]+`)
	// userinfoPattern finds "user:password@host" outside a URL with a
	// scheme (a malformed URL, a DSN written without one).
	userinfoPattern = regexp.MustCompile(`([^\s/@:"'=;,]+):([^\s/@"']+)@([A-Za-z0-9.\-\[\]]+)`)
	// bearerPattern finds HTTP authorization credentials.
	bearerPattern = regexp.MustCompile(`(?i)\b(bearer)(\s+)[A-Za-z0-9\-._~+/]+=*`)
	// jsonPattern finds JSON object members: {"key": value or ,"key": value.
	jsonPattern = regexp.MustCompile(`([{,]\s*)"([^"\\]{1,100})"(\s*:\s*)("(?:[^"\\]|\\.)*"|-?[0-9][0-9.eE+\-]*|true|false|null)`)
	// pairPattern finds key=value and key: value pairs. The key may be
	// quoted (Npgsql keywords may contain spaces). The value is matched
	// loosely here and delimited by secretEnd.
	pairPattern = regexp.MustCompile(`(?:'([^'=;]{1,100})'|([A-Za-z_][A-Za-z0-9_.\-]*))(\s*=\s*|:\s+)`)
	// nextPairPattern finds, inside an unquoted value, the start of another
	// key=value pair separated by white space. "x==" (base64 padding) is
	// not one.
	nextPairPattern = regexp.MustCompile(`[ \t]+[A-Za-z_][A-Za-z0-9_.\-]*[ \t]*=[^=\s]`)
)

// Text masks what may be secret in free text: passwords and secret query
// parameters of URLs (see URL), and "user:password@host" without a scheme;
// the values of key=value pairs, "key: value"
// pairs and JSON members whose key names a secret ("Password=x", "pwd=x",
// "AccountKey=x", "sig=x", "password: x", `"password":"x"`); and bearer
// tokens. A secret value ends at a separator (';', ',', '&', a
// line break) or, when what follows looks like another key=value pair, at
// white space, so "Host=h;Password=a b;Port=1" loses all of "a b" while
// "password=a host=h" keeps "host=h".
func Text(s string) string {
	if s == "" {
		return s
	}
	s = urlPattern.ReplaceAllStringFunc(s, URL)
	s = userinfoPattern.ReplaceAllStringFunc(s, func(m string) string {
		sub := userinfoPattern.FindStringSubmatch(m)
		if sub[2] == Mask {
			return m
		}
		return sub[1] + ":" + Mask + "@" + sub[3]
	})
	s = bearerPattern.ReplaceAllString(s, "${1}${2}"+Mask)
	s = jsonPattern.ReplaceAllStringFunc(s, func(m string) string {
		sub := jsonPattern.FindStringSubmatch(m)
		if !IsSecretKey(sub[2]) || sub[4] == `"`+Mask+`"` {
			return m
		}
		return sub[1] + `"` + sub[2] + `"` + sub[3] + `"` + Mask + `"`
	})
	return maskPairs(s)
}

// maskPairs masks the values of secret key=value and key: value pairs.
func maskPairs(s string) string {
	locs := pairPattern.FindAllStringSubmatchIndex(s, -1)
	if locs == nil {
		return s
	}
	var b strings.Builder
	last := 0
	for _, loc := range locs {
		if loc[0] < last {
			continue // inside a value already masked
		}
		key := ""
		switch {
		case loc[2] >= 0:
			key = s[loc[2]:loc[3]]
		case loc[4] >= 0:
			key = s[loc[4]:loc[5]]
		}
		if !IsSecretKey(key) {
			continue
		}
		start := loc[1]
		end := secretEnd(s, loc[0], start)
		v := s[start:end]
		if end <= start || v == Mask || v == `"`+Mask+`"` || v == urlMask {
			continue
		}
		if strings.Contains(s[loc[6]:loc[7]], ":") && strings.HasSuffix(v, ":") {
			continue // "auth: FATAL: ...": a label follows, not a value
		}
		b.WriteString(s[last:start])
		b.WriteString(Mask)
		last = end
	}
	if last == 0 {
		return s
	}
	b.WriteString(s[last:])
	return b.String()
}

// secretEnd returns where the value starting at s[i] ends; the pair's key
// starts at s[k].
func secretEnd(s string, k, i int) int {
	if i >= len(s) {
		return i
	}
	if q := s[i]; q == '"' || q == '\'' {
		// A quoted value; a doubled quote stands for one (Npgsql), a
		// backslash escapes one (libpq, JSON).
		for j := i + 1; j < len(s); j++ {
			switch s[j] {
			case '\\':
				j++
			case q:
				if j+1 < len(s) && s[j+1] == q {
					j++
					continue
				}
				return j + 1
			}
		}
		return len(s)
	}
	end := len(s)
	if j := strings.IndexAny(s[i:], ";,&\r\n\"'`<>"); j >= 0 {
		end = i + j
	}
	// White space inside the value is part of it when the pair is one of
	// a ';' or ',' separated list (Npgsql and StackExchange.Redis read
	// "Password=a b;" as "a b"), unless another key=value pair follows the
	// space (libpq's form, where a value with a space is quoted). In free
	// text the value ends at the first space.
	// An Authorization value is a scheme and credentials ("Basic x"):
	// all of it is secret.
	if strings.Contains(strings.ToLower(s[k:i]), "authorization") {
		return trimSpaceEnd(s, i, end)
	}
	inList := end < len(s) && (s[end] == ';' || s[end] == ',')
	if j := strings.LastIndexFunc(s[:k], func(r rune) bool { return r != ' ' && r != '\t' }); j >= 0 && (s[j] == ';' || s[j] == ',') {
		inList = true
	}
	if !inList {
		if ws := strings.IndexAny(s[i:end], " \t"); ws >= 0 {
			end = i + ws
		}
	} else if loc := nextPairPattern.FindStringIndex(s[i:end]); loc != nil {
		end = i + loc[0]
	}
	return trimSpaceEnd(s, i, end)
}

func trimSpaceEnd(s string, i, end int) int {
	for end > i && (s[end-1] == ' ' || s[end-1] == '\t') {
		end--
	}
	return end
}
