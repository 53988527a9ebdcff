// Package connstr lexes the two connection-string shapes Aspire injects:
// the ADO.NET "key=value;key=value" form used by Npgsql (and every
// DbConnectionStringBuilder), and the StackExchange.Redis
// "host:port,option=value" form.
//
// It only splits text into pairs; the clients (cqrs, cache) give the pairs
// meaning and reject unknown keywords. Errors never quote a value, because
// any value may be a password.
package connstr

import (
	"errors"
	"fmt"
	"strings"
)

// ErrSyntax is wrapped by every lexing error.
var ErrSyntax = errors.New("connection string syntax error")

// Pair is one keyword and its value. Key keeps the spelling it had in the
// input (trimmed); compare keys with strings.EqualFold or NormalizeKey.
type Pair struct {
	Key   string
	Value string
}

// NormalizeKey folds a keyword for comparison the way Npgsql does: case is
// ignored and so are spaces, so "User ID", "userid" and "USER ID" are equal.
func NormalizeKey(k string) string {
	return strings.ToLower(strings.ReplaceAll(k, " ", ""))
}

// ParseKeyValue splits an ADO.NET connection string into pairs, following
// DbConnectionStringBuilder's rules: pairs are separated by ';'; a key ends
// at the first single '=' ("==" is a literal '=' inside a key); keys and
// unquoted values are trimmed; a value may be quoted with ' or " and a
// doubled quote inside it stands for one; empty segments are ignored.
//
// A later duplicate key replaces an earlier one, as in .NET; the returned
// slice keeps the first position of each key.
func ParseKeyValue(s string) ([]Pair, error) {
	var pairs []Pair
	index := map[string]int{}
	i, n := 0, len(s)
	segment := 0
	for i < n {
		// Skip separators and white space between pairs.
		for i < n && (s[i] == ';' || isSpace(s[i])) {
			i++
		}
		if i >= n {
			break
		}
		segment++
		// Key: up to a single '='.
		var key strings.Builder
		for {
			if i >= n {
				return nil, fmt.Errorf("%w: pair %d has no '='", ErrSyntax, segment)
			}
			c := s[i]
			if c == '=' {
				if i+1 < n && s[i+1] == '=' {
					key.WriteByte('=')
					i += 2
					continue
				}
				i++
				break
			}
			if c == ';' {
				return nil, fmt.Errorf("%w: pair %d has no '='", ErrSyntax, segment)
			}
			key.WriteByte(c)
			i++
		}
		k := strings.TrimSpace(key.String())
		if k == "" {
			return nil, fmt.Errorf("%w: pair %d has an empty keyword", ErrSyntax, segment)
		}
		// Value.
		for i < n && isSpace(s[i]) {
			i++
		}
		var v string
		if i < n && (s[i] == '\'' || s[i] == '"') {
			q := s[i]
			i++
			var b strings.Builder
			closed := false
			for i < n {
				if s[i] == q {
					if i+1 < n && s[i+1] == q {
						b.WriteByte(q)
						i += 2
						continue
					}
					i++
					closed = true
					break
				}
				b.WriteByte(s[i])
				i++
			}
			if !closed {
				return nil, fmt.Errorf("%w: the value of %q has no closing quote", ErrSyntax, k)
			}
			for i < n && isSpace(s[i]) {
				i++
			}
			if i < n && s[i] != ';' {
				return nil, fmt.Errorf("%w: unexpected text after the quoted value of %q", ErrSyntax, k)
			}
			v = b.String()
		} else {
			start := i
			for i < n && s[i] != ';' {
				i++
			}
			v = strings.TrimSpace(s[start:i])
		}
		nk := NormalizeKey(k)
		if at, dup := index[nk]; dup {
			pairs[at].Value = v
			continue
		}
		index[nk] = len(pairs)
		pairs = append(pairs, Pair{Key: k, Value: v})
	}
	return pairs, nil
}

// QuoteValue quotes v for an ADO.NET connection string when it needs it, so
// that ParseKeyValue gives v back.
func QuoteValue(v string) string {
	if v == "" || strings.ContainsAny(v, ";'\"") || strings.TrimSpace(v) != v || v[0] == '=' {
		return `"` + strings.ReplaceAll(v, `"`, `""`) + `"`
	}
	return v
}

// Redis is a StackExchange.Redis configuration string split into its
// endpoints and its options.
type Redis struct {
	// Endpoints are the "host:port" (or "host", or "[v6]:port") items in
	// order.
	Endpoints []string
	// Options are the "key=value" items in order.
	Options []Pair
}

// ParseRedis splits a StackExchange.Redis configuration string:
// comma-separated items, each either an endpoint or a key=value option.
// White space around items is trimmed and empty items are ignored, as
// StackExchange.Redis does. At least one endpoint is required.
func ParseRedis(s string) (Redis, error) {
	var r Redis
	for idx, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if eq := strings.IndexByte(item, '='); eq >= 0 {
			k := strings.TrimSpace(item[:eq])
			if k == "" {
				return Redis{}, fmt.Errorf("%w: item %d has an empty option name", ErrSyntax, idx+1)
			}
			r.Options = append(r.Options, Pair{Key: k, Value: strings.TrimSpace(item[eq+1:])})
			continue
		}
		r.Endpoints = append(r.Endpoints, item)
	}
	if len(r.Endpoints) == 0 {
		return Redis{}, fmt.Errorf("%w: no endpoint (host:port) given", ErrSyntax)
	}
	return r, nil
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r'
}
