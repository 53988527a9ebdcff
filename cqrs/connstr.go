package cqrs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/goaspire/goaspire/internal/connstr"
	"github.com/goaspire/goaspire/internal/redact"
)

// Errors wrapped by connection-string errors, for errors.Is.
var (
	// ErrUnknownKeyword reports a keyword Npgsql does not define.
	ErrUnknownKeyword = errors.New("unknown keyword")
	// ErrInvalidValue reports a value that does not fit its keyword.
	ErrInvalidValue = errors.New("invalid value")
	// ErrUnsupported reports a keyword or value Npgsql understands but pgx
	// cannot honour; it is refused rather than silently dropped.
	ErrUnsupported = errors.New("not supported by pgx")
)

// KeywordError reports a problem with one keyword of a connection string.
// It names the keyword as it was written and never carries its value.
type KeywordError struct {
	// Keyword is the keyword as written in the connection string.
	Keyword string
	// Err says what is wrong; it wraps ErrUnknownKeyword, ErrInvalidValue
	// or ErrUnsupported.
	Err error
}

// Error implements error.
func (e *KeywordError) Error() string {
	return fmt.Sprintf("cqrs: connection string keyword %q: %v", e.Keyword, e.Err)
}

// Unwrap returns the underlying error.
func (e *KeywordError) Unwrap() error { return e.Err }

// Npgsql defaults that differ from pgx's, applied when a connection string
// (of either form) does not set them.
const (
	defaultConnectTimeout  = 15 * time.Second // Npgsql "Timeout"
	defaultMaxConns        = 100              // Npgsql "Maximum Pool Size"
	defaultMaxConnIdleTime = 300 * time.Second
	defaultPruneInterval   = 10 * time.Second // Npgsql "Connection Pruning Interval"
)

// ParseConnectionString turns a PostgreSQL connection string into a pgx
// pool configuration. It accepts the two forms Aspire injects:
//
//   - Npgsql keyword form, "Host=h;Port=5432;Username=u;Password=p;Database=db",
//     with every keyword and synonym Npgsql defines (see the package
//     documentation for the mapping), case-insensitive, spaces in keywords
//     ignored, values optionally quoted;
//   - URL form, "postgres://u:p@h1:5432,h2:5433/db?sslmode=require" (also
//     postgresql://), with libpq's query parameters and pgx's pool_*
//     parameters, parsed by pgx.
//
// Where Npgsql's defaults differ from pgx's (connect timeout 15 s, at most
// 100 connections, idle connections closed after 300 s and pruned every
// 10 s), Npgsql's apply to both forms, so one service sees the same pool
// whichever form the AppHost injected. As with Npgsql and libpq, the
// standard PG* environment variables (PGPASSWORD, PGSSLROOTCERT, ...) and
// ~/.pgpass fill what the string leaves out; pgx reads them.
//
// An unknown keyword, a bad value, or a setting pgx cannot honour is a
// *KeywordError naming the keyword. No error ever contains the password.
func ParseConnectionString(s string) (*pgxpool.Config, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return nil, errors.New("cqrs: empty connection string")
	}
	if isURL(t) {
		return parseURL(t)
	}
	return parseKeywords(t)
}

func isURL(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// parseURL lets pgx parse a postgres:// URL and applies the Npgsql defaults
// the URL does not override.
func parseURL(s string) (*pgxpool.Config, error) {
	if strings.IndexByte(s, 0) >= 0 {
		return nil, errors.New("cqrs: connection string contains a NUL byte")
	}
	c, err := pgxpool.ParseConfig(s)
	if err != nil {
		return nil, pgxParseError(err, urlSecrets(s))
	}
	for _, h := range append([]string{c.ConnConfig.Host}, fallbackHosts(c)...) {
		if strings.ContainsAny(h, "@/") && !strings.HasPrefix(h, "/") {
			// postgres://u:p@ss@h parses as host "ss@h": a password with an
			// '@' (or '/') that was not percent-encoded.
			return nil, errors.New("cqrs: connection URL: the host contains '@' or '/': percent-encode them in the user name and password (%40, %2F)")
		}
	}
	params := urlQueryKeys(s)
	if !params["connect_timeout"] {
		c.ConnConfig.ConnectTimeout = defaultConnectTimeout
	}
	if !params["pool_max_conns"] {
		c.MaxConns = defaultMaxConns
	}
	if !params["pool_max_conn_idle_time"] {
		c.MaxConnIdleTime = defaultMaxConnIdleTime
	}
	if !params["pool_health_check_period"] {
		c.HealthCheckPeriod = defaultPruneInterval
	}
	if c.MinConns > c.MaxConns {
		return nil, fmt.Errorf("cqrs: connection URL: pool_min_conns (%d) exceeds pool_max_conns (%d): %w", c.MinConns, c.MaxConns, ErrInvalidValue)
	}
	return c, nil
}

func fallbackHosts(c *pgxpool.Config) []string {
	var hs []string
	for _, f := range c.ConnConfig.Fallbacks {
		hs = append(hs, f.Host)
	}
	return hs
}

// urlQueryKeys returns the names of the query parameters of a URL, without
// decoding values (they may be secrets and are not needed).
func urlQueryKeys(s string) map[string]bool {
	keys := map[string]bool{}
	rest := s
	// The query starts at the first '?' after the authority; a '?' in the
	// user information is not valid URL syntax anyway.
	if i := strings.IndexByte(rest, '?'); i >= 0 {
		for _, kv := range strings.Split(rest[i+1:], "&") {
			k, _, _ := strings.Cut(kv, "=")
			keys[strings.ToLower(k)] = true
		}
	}
	return keys
}

// urlSecrets returns the texts in a URL that may be secrets, raw and
// percent-decoded, so they can be scrubbed from pgx's error messages.
func urlSecrets(s string) []string {
	var out []string
	add := func(v string) {
		if v == "" {
			return
		}
		out = append(out, v)
		if d, err := urlUnescape(v); err == nil && d != v && d != "" {
			out = append(out, d)
		}
	}
	p := s
	for _, prefix := range []string{"postgresql://", "postgres://"} {
		if rest, ok := strings.CutPrefix(p, prefix); ok {
			p = rest
			break
		}
	}
	// Like libpq, the user information ends at the first '@' before any '/'.
	if i := strings.IndexAny(p, "@/"); i >= 0 && p[i] == '@' {
		if _, pw, ok := strings.Cut(p[:i], ":"); ok {
			add(pw)
		}
	}
	// Malformed URLs may strand a password elsewhere: treat every
	// ":...@" span as a candidate too.
	for rest := p; ; {
		c := strings.IndexByte(rest, ':')
		if c < 0 {
			break
		}
		a := strings.IndexByte(rest[c+1:], '@')
		if a < 0 {
			break
		}
		add(rest[c+1 : c+1+a])
		rest = rest[c+1:]
	}
	if i := strings.IndexByte(p, '?'); i >= 0 {
		for _, kv := range strings.Split(p[i+1:], "&") {
			k, v, _ := strings.Cut(kv, "=")
			if dk, err := urlUnescape(k); err == nil {
				k = dk
			}
			if redact.IsSecretKey(k) {
				add(v)
			}
		}
	}
	return out
}

func urlUnescape(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '%' {
			if i+2 >= len(s) {
				return "", errors.New("bad escape")
			}
			n, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
			if err != nil {
				return "", errors.New("bad escape")
			}
			b.WriteByte(byte(n))
			i += 2
			continue
		}
		b.WriteByte(c)
	}
	return b.String(), nil
}

// pgxParseError rewrites an error from pgx's parser so that it carries no
// secret. pgx quotes the whole connection string in its message, masking
// only what it recognizes as a password; that part is cut out, the rest is
// scrubbed of every secret the caller knows about, and the pgx error is not
// wrapped, because *pgconn.ParseConfigError keeps the raw connection string
// in a public field.
func pgxParseError(err error, secrets []string) error {
	msg := err.Error()
	const open = "cannot parse `"
	if i := strings.Index(msg, open); i >= 0 {
		// The quoted string ends at the last "`: ": cutting there may cut
		// some of pgx's reason too, never leave some of the string.
		if j := strings.LastIndex(msg, "`: "); j >= i+len(open) {
			msg = msg[:i] + msg[j+len("`: "):]
		} else {
			msg = msg[:i] + "invalid connection string"
		}
	}
	return fmt.Errorf("cqrs: connection string rejected by pgx: %s", scrub(unquote(msg), secrets))
}

// safeQuoted are the pgx messages whose quoted parts are known to be a
// parameter name or one character, never a value.
var safeQuoted = []*regexp.Regexp{
	regexp.MustCompile(`(missing|extra) key/value separator "=" in URI query parameter: "[a-z_][a-z0-9_]{0,63}"`),
	regexp.MustCompile(`unexpected character "[^"]" at position \d+ in URI \(expected ":" or "/"\)`),
	regexp.MustCompile(`end of string reached when looking for matching "\]" in IPv6 host address in URI`),
}

// unquote cuts the quoted part of a pgx message: pgx quotes pieces of a
// malformed URL (hosts, database names, parameter values) that may hold a
// secret, without escaping quotes inside them, so everything from the
// first quote to the last goes, unless the message is one of safeQuoted.
func unquote(msg string) string {
	first := strings.IndexByte(msg, '"')
	if first < 0 {
		return msg
	}
	last := strings.LastIndexByte(msg, '"')
	for _, re := range safeQuoted {
		if loc := re.FindStringIndex(msg); loc != nil && loc[0] <= first && last < loc[1] {
			return msg
		}
	}
	return msg[:first] + `"…"` + msg[last+1:]
}

// scrub replaces every occurrence of each secret in msg with redact.Mask,
// in one pass, trying longer secrets first so that a secret containing
// another is masked whole. (One pass: a secret may occur in the mask.)
func scrub(msg string, secrets []string) string {
	var ss []string
	for _, s := range secrets {
		if s != "" {
			ss = append(ss, s)
		}
	}
	if len(ss) == 0 {
		return msg
	}
	sort.Slice(ss, func(i, j int) bool { return len(ss[i]) > len(ss[j]) })
	pairs := make([]string, 0, 2*len(ss))
	for _, s := range ss {
		pairs = append(pairs, s, redact.Mask)
	}
	return strings.NewReplacer(pairs...).Replace(msg)
}

// keyword says what one Npgsql keyword means.
type keyword struct {
	// name is the canonical Npgsql spelling, used in documentation.
	name string
	// apply records the value in the settings.
	apply func(s *npgsqlSettings, v string) error
}

// npgsqlSettings are the parsed keywords of one connection string.
type npgsqlSettings struct {
	hosts          []hostPort
	port           int
	libpq          map[string]string // libpq keyword -> value, passed to pgx
	password       *string
	sslMode        string
	trustServer    bool
	connectTimeout *time.Duration
	commandTimeout *time.Duration
	minConns       *int
	maxConns       *int
	idleLifetime   *time.Duration
	pruneInterval  *time.Duration
	lifetime       *time.Duration
	targetSession  string
	loadBalance    bool
	keepAlive      *time.Duration
	tcpKeepAlive   *bool
	tcpKAIdle      *time.Duration
	tcpKAInterval  *time.Duration
}

type hostPort struct {
	host string
	port int // 0: use Port
}

// keywords maps the normalized (lower-case, no spaces) Npgsql keyword to
// its meaning. Keep it in step with the table in doc.go.
var keywords = map[string]keyword{}

func init() {
	str := func(libpq string) func(*npgsqlSettings, string) error {
		return func(s *npgsqlSettings, v string) error { s.libpq[libpq] = v; return nil }
	}
	ignoreInt := func(s *npgsqlSettings, v string) error { _, err := parseInt(v, -1); return err }
	ignoreBool := func(s *npgsqlSettings, v string) error { _, err := parseBool(v); return err }
	ignore := func(*npgsqlSettings, string) error { return nil }
	seconds := func(dst func(*npgsqlSettings) **time.Duration) func(*npgsqlSettings, string) error {
		return func(s *npgsqlSettings, v string) error {
			n, err := parseInt(v, 0)
			if err != nil {
				return err
			}
			d := time.Duration(n) * time.Second
			*dst(s) = &d
			return nil
		}
	}
	millis := func(dst func(*npgsqlSettings) **time.Duration) func(*npgsqlSettings, string) error {
		return func(s *npgsqlSettings, v string) error {
			n, err := parseInt(v, 0)
			if err != nil {
				return err
			}
			d := time.Duration(n) * time.Millisecond
			*dst(s) = &d
			return nil
		}
	}
	count := func(dst func(*npgsqlSettings) **int, min int) func(*npgsqlSettings, string) error {
		return func(s *npgsqlSettings, v string) error {
			n, err := parseInt(v, min)
			if err != nil {
				return err
			}
			if n > 1<<30 {
				return fmt.Errorf("%w: too large", ErrInvalidValue)
			}
			*dst(s) = &n
			return nil
		}
	}
	def := func(name string, apply func(*npgsqlSettings, string) error, synonyms ...string) {
		for _, k := range append([]string{name}, synonyms...) {
			keywords[connstr.NormalizeKey(k)] = keyword{name: name, apply: apply}
		}
	}

	// Basic connection.
	def("Host", applyHost, "Server")
	def("Port", func(s *npgsqlSettings, v string) error {
		n, err := parsePort(v)
		s.port = n
		return err
	})
	def("Database", str("database"), "DB")
	def("Username", str("user"), "User Name", "User Id", "UserId", "Uid", "User")
	def("Password", func(s *npgsqlSettings, v string) error { s.password = &v; return nil }, "PSW", "PWD")
	def("Passfile", str("passfile"))

	// Security and encryption.
	def("SSL Mode", applySSLMode, "SslMode")
	def("Trust Server Certificate", func(s *npgsqlSettings, v string) error {
		b, err := parseBool(v)
		s.trustServer = b
		return err
	})
	def("SSL Certificate", str("sslcert"))
	def("SSL Key", str("sslkey"))
	def("SSL Password", str("sslpassword"))
	def("Root Certificate", str("sslrootcert"))
	def("SSL Negotiation", func(s *npgsqlSettings, v string) error {
		switch strings.ToLower(v) {
		case "postgres":
			s.libpq["sslnegotiation"] = "postgres"
		case "direct":
			s.libpq["sslnegotiation"] = "direct"
		default:
			return fmt.Errorf("%w: want Postgres or Direct", ErrInvalidValue)
		}
		return nil
	})
	def("Check Certificate Revocation", mustBeFalse("certificate revocation lists are not checked by Go's TLS stack"))
	def("Integrated Security", mustBeFalse("GSS/SSPI login needs a GSS provider registered with pgconn.RegisterGSSProvider; set it up in code"))
	def("Kerberos Service Name", str("krbsrvname"), "KrbSrvName")
	def("Include Realm", ignoreBool)
	def("Persist Security Info", ignoreBool)
	def("Channel Binding", func(s *npgsqlSettings, v string) error {
		switch strings.ToLower(v) {
		case "disable", "prefer", "require":
			s.libpq["channel_binding"] = strings.ToLower(v)
			return nil
		}
		return fmt.Errorf("%w: want Disable, Prefer or Require", ErrInvalidValue)
	})
	def("Require Auth", applyRequireAuth)
	def("GSS Encryption Mode", func(s *npgsqlSettings, v string) error {
		switch strings.ToLower(v) {
		case "disable", "prefer":
			return nil // pgx never uses GSS encryption, which Prefer allows
		case "require":
			return fmt.Errorf("%w: GSS encryption", ErrUnsupported)
		}
		return fmt.Errorf("%w: want Disable, Prefer or Require", ErrInvalidValue)
	}, "GssEncMode")
	def("Log Parameters", ignoreBool)                                // parameters are never recorded
	def("Include Error Detail", ignoreBool, "Include Error Details") // pgx always fills PgError.Detail

	// Pooling.
	def("Pooling", func(s *npgsqlSettings, v string) error {
		b, err := parseBool(v)
		if err != nil {
			return err
		}
		if !b {
			return fmt.Errorf("%w: Pooling=false (cqrs always pools; use pgx.Connect for a single connection)", ErrUnsupported)
		}
		return nil
	})
	def("Minimum Pool Size", count(func(s *npgsqlSettings) **int { return &s.minConns }, 0), "MinPoolSize")
	def("Maximum Pool Size", count(func(s *npgsqlSettings) **int { return &s.maxConns }, 1), "MaxPoolSize")
	def("Connection Idle Lifetime", seconds(func(s *npgsqlSettings) **time.Duration { return &s.idleLifetime }))
	def("Connection Pruning Interval", seconds(func(s *npgsqlSettings) **time.Duration { return &s.pruneInterval }))
	def("Connection Lifetime", seconds(func(s *npgsqlSettings) **time.Duration { return &s.lifetime }), "Load Balance Timeout")

	// Timeouts and keepalive.
	def("Timeout", seconds(func(s *npgsqlSettings) **time.Duration { return &s.connectTimeout }))
	def("Command Timeout", seconds(func(s *npgsqlSettings) **time.Duration { return &s.commandTimeout }))
	def("Internal Command Timeout", ignoreInt)
	def("Cancellation Timeout", ignoreInt)
	def("Keepalive", seconds(func(s *npgsqlSettings) **time.Duration { return &s.keepAlive }))
	def("Tcp Keepalive", func(s *npgsqlSettings, v string) error {
		b, err := parseBool(v)
		s.tcpKeepAlive = &b
		return err
	})
	def("Tcp Keepalive Time", millis(func(s *npgsqlSettings) **time.Duration { return &s.tcpKAIdle }))
	def("Tcp Keepalive Interval", millis(func(s *npgsqlSettings) **time.Duration { return &s.tcpKAInterval }))

	// Performance: pgx manages its buffers and statement cache itself.
	def("Max Auto Prepare", ignoreInt)
	def("Auto Prepare Min Usages", ignoreInt)
	def("Read Buffer Size", ignoreInt)
	def("Write Buffer Size", ignoreInt)
	def("Socket Receive Buffer Size", ignoreInt)
	def("Socket Send Buffer Size", ignoreInt)
	def("No Reset On Close", ignoreBool)
	def("Multiplexing", ignoreBool)
	def("Write Coalescing Buffer Threshold Bytes", ignoreInt)

	// Failover and load balancing.
	def("Target Session Attributes", applyTargetSession)
	def("Load Balance Hosts", func(s *npgsqlSettings, v string) error {
		b, err := parseBool(v)
		s.loadBalance = b
		return err
	})
	def("Host Recheck Seconds", ignoreInt)

	// Misc.
	def("Options", str("options"))
	def("Application Name", str("application_name"))
	def("Enlist", ignoreBool)
	def("Search Path", str("search_path"))
	def("Client Encoding", utf8Only("client_encoding"))
	def("Encoding", utf8Only(""))
	def("Timezone", str("timezone"))
	def("EF Template Database", ignore, "EntityTemplateDatabase")
	def("EF Admin Database", ignore, "EntityAdminDatabase")
	def("Load Table Composites", ignoreBool)
	def("Array Nullability Mode", func(s *npgsqlSettings, v string) error {
		switch strings.ToLower(v) {
		case "never", "always", "perinstance":
			return nil
		}
		return fmt.Errorf("%w: want Never, Always or PerInstance", ErrInvalidValue)
	})

	// Compatibility.
	def("Server Compatibility Mode", func(s *npgsqlSettings, v string) error {
		switch strings.ToLower(v) {
		case "none", "notypeloading": // pgx loads no types by itself
			return nil
		case "redshift":
			return fmt.Errorf("%w: Redshift compatibility", ErrUnsupported)
		}
		return fmt.Errorf("%w: want None, NoTypeLoading or Redshift", ErrInvalidValue)
	})
	def("Replication Mode", func(s *npgsqlSettings, v string) error {
		switch strings.ToLower(v) {
		case "off":
			return nil
		case "logical", "physical":
			return fmt.Errorf("%w: replication connections (use pgconn directly)", ErrUnsupported)
		}
		return fmt.Errorf("%w: want Off, Logical or Physical", ErrInvalidValue)
	})
}

func mustBeFalse(why string) func(*npgsqlSettings, string) error {
	return func(s *npgsqlSettings, v string) error {
		b, err := parseBool(v)
		if err != nil {
			return err
		}
		if b {
			return fmt.Errorf("%w: %s", ErrUnsupported, why)
		}
		return nil
	}
}

func utf8Only(libpq string) func(*npgsqlSettings, string) error {
	return func(s *npgsqlSettings, v string) error {
		switch strings.ToLower(strings.ReplaceAll(v, "-", "")) {
		case "utf8", "unicode":
			if libpq != "" {
				s.libpq[libpq] = "UTF8"
			}
			return nil
		}
		return fmt.Errorf("%w: pgx needs UTF8", ErrUnsupported)
	}
}

func parseInt(v string, min int) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil {
		return 0, fmt.Errorf("%w: want an integer", ErrInvalidValue)
	}
	if min >= 0 && n < min {
		return 0, fmt.Errorf("%w: want an integer of at least %d", ErrInvalidValue, min)
	}
	return n, nil
}

func parseBool(v string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "true", "yes", "1", "on":
		return true, nil
	case "false", "no", "0", "off":
		return false, nil
	}
	return false, fmt.Errorf("%w: want true or false", ErrInvalidValue)
}

func parsePort(v string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("%w: want a port number from 1 to 65535", ErrInvalidValue)
	}
	return n, nil
}

// applyHost parses Npgsql's host list: comma-separated entries, each a
// host name, an IPv4 address, "[IPv6]", an IPv6 address without port, or a
// Unix socket directory (starting with '/'), optionally followed by
// ":port".
func applyHost(s *npgsqlSettings, v string) error {
	s.hosts = s.hosts[:0]
	for _, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			return fmt.Errorf("%w: empty host in the list", ErrInvalidValue)
		}
		if strings.ContainsAny(item, " \t\r\n=") {
			return fmt.Errorf("%w: a host contains spaces or '=' (separate keyword=value pairs with ';')", ErrInvalidValue)
		}
		hp := hostPort{host: item}
		switch {
		case strings.HasPrefix(item, "/"):
			// Unix socket directory: taken whole.
		case strings.HasPrefix(item, "["):
			end := strings.IndexByte(item, ']')
			if end < 2 {
				return fmt.Errorf("%w: malformed [IPv6] host", ErrInvalidValue)
			}
			hp.host = item[1:end]
			rest := item[end+1:]
			if rest != "" {
				p, ok := strings.CutPrefix(rest, ":")
				if !ok {
					return fmt.Errorf("%w: malformed [IPv6]:port host", ErrInvalidValue)
				}
				n, err := parsePort(p)
				if err != nil {
					return err
				}
				hp.port = n
			}
		case strings.Count(item, ":") == 1:
			h, p, _ := strings.Cut(item, ":")
			if h == "" {
				return fmt.Errorf("%w: empty host before ':port'", ErrInvalidValue)
			}
			n, err := parsePort(p)
			if err != nil {
				return err
			}
			hp.host, hp.port = h, n
		case strings.Count(item, ":") > 1:
			if net.ParseIP(item) == nil {
				return fmt.Errorf("%w: write an IPv6 address with a port as [address]:port", ErrInvalidValue)
			}
		}
		s.hosts = append(s.hosts, hp)
	}
	return nil
}

func applySSLMode(s *npgsqlSettings, v string) error {
	switch strings.ToLower(strings.ReplaceAll(strings.TrimSpace(v), "-", "")) {
	case "disable":
		s.sslMode = "disable"
	case "allow":
		s.sslMode = "allow"
	case "prefer":
		s.sslMode = "prefer"
	case "require":
		s.sslMode = "require"
	case "verifyca":
		s.sslMode = "verify-ca"
	case "verifyfull":
		s.sslMode = "verify-full"
	default:
		return fmt.Errorf("%w: want Disable, Allow, Prefer, Require, VerifyCA or VerifyFull", ErrInvalidValue)
	}
	return nil
}

func applyTargetSession(s *npgsqlSettings, v string) error {
	t := strings.ToLower(strings.TrimSpace(v))
	switch t {
	case "any", "read-write", "read-only", "primary", "standby", "prefer-standby", "prefer-primary":
		s.targetSession = t
		return nil
	}
	return fmt.Errorf("%w: want any, primary, standby, prefer-primary, prefer-standby, read-write or read-only", ErrInvalidValue)
}

// applyRequireAuth maps Npgsql's RequireAuth names (Password, MD5, GSS,
// SSPI, ScramSHA256, None, each optionally negated with '!') to libpq's.
func applyRequireAuth(s *npgsqlSettings, v string) error {
	var out []string
	for _, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		neg := strings.HasPrefix(item, "!")
		name := strings.ToLower(strings.TrimPrefix(item, "!"))
		switch strings.ReplaceAll(name, "-", "") {
		case "password":
			name = "password"
		case "md5":
			name = "md5"
		case "gss":
			name = "gss"
		case "sspi":
			name = "sspi"
		case "scramsha256":
			name = "scram-sha-256"
		case "none":
			name = "none"
		default:
			return fmt.Errorf("%w: want a list of Password, MD5, GSS, SSPI, ScramSHA256, None", ErrInvalidValue)
		}
		if neg {
			name = "!" + name
		}
		out = append(out, name)
	}
	s.libpq["require_auth"] = strings.Join(out, ",")
	return nil
}

// parseKeywords parses the Npgsql keyword form.
func parseKeywords(raw string) (*pgxpool.Config, error) {
	s, err := parseSettings(raw)
	if err != nil {
		return nil, err
	}
	return s.build()
}

// commandTimeoutKeyword returns the Command Timeout of a connection string
// in Npgsql keyword form, when it sets one.
func commandTimeoutKeyword(raw string) (time.Duration, bool) {
	t := strings.TrimSpace(raw)
	if t == "" || isURL(t) {
		return 0, false
	}
	s, err := parseSettings(t)
	if err != nil || s.commandTimeout == nil {
		return 0, false
	}
	return *s.commandTimeout, true
}

// parseSettings parses a connection string in Npgsql keyword form.
func parseSettings(raw string) (*npgsqlSettings, error) {
	pairs, err := connstr.ParseKeyValue(raw)
	if err != nil {
		// connstr errors name pairs and keywords, never values.
		return nil, fmt.Errorf("cqrs: %w", err)
	}
	s := &npgsqlSettings{libpq: map[string]string{}}
	for i, p := range pairs {
		kw, ok := keywords[connstr.NormalizeKey(p.Key)]
		if !ok {
			if i > 0 && redact.IsSecretKey(pairs[i-1].Key) {
				// "Password=ab;cd=ef": the "keyword" is likely the rest of
				// a password with an unquoted ';'. Do not quote it.
				return nil, &KeywordError{Keyword: pairs[i-1].Key, Err: fmt.Errorf(
					"%w follows it: if the value contains ';', enclose it in double quotes", ErrUnknownKeyword)}
			}
			return nil, &KeywordError{Keyword: p.Key, Err: ErrUnknownKeyword}
		}
		if strings.IndexByte(p.Value, 0) >= 0 {
			return nil, &KeywordError{Keyword: p.Key, Err: fmt.Errorf("%w: contains a NUL byte", ErrInvalidValue)}
		}
		if err := kw.apply(s, p.Value); err != nil {
			return nil, &KeywordError{Keyword: p.Key, Err: err}
		}
	}
	return s, nil
}

// build turns parsed keywords into a pgx configuration.
func (s *npgsqlSettings) build() (*pgxpool.Config, error) {
	if len(s.hosts) == 0 {
		return nil, &KeywordError{Keyword: "Host", Err: fmt.Errorf("%w: Host is required", ErrInvalidValue)}
	}
	port := s.port
	if port == 0 {
		port = 5432
	}
	hosts := make([]string, len(s.hosts))
	ports := make([]string, len(s.hosts))
	for i, h := range s.hosts {
		hosts[i] = h.host
		p := h.port
		if p == 0 {
			p = port
		}
		ports[i] = strconv.Itoa(p)
	}
	s.libpq["host"] = strings.Join(hosts, ",")
	s.libpq["port"] = strings.Join(ports, ",")

	if s.sslMode != "" {
		s.libpq["sslmode"] = s.sslMode
	}
	if s.trustServer && (s.sslMode == "verify-ca" || s.sslMode == "verify-full") {
		return nil, &KeywordError{Keyword: "Trust Server Certificate", Err: fmt.Errorf("%w: cannot be true with SSL Mode=VerifyCA or VerifyFull", ErrInvalidValue)}
	}
	// Trust Server Certificate=true otherwise changes nothing: with
	// Prefer or Require, pgx (like libpq) validates the server certificate
	// only when a root certificate is given.

	switch s.targetSession {
	case "", "any":
	case "prefer-primary":
		// pgx has no prefer-primary. With one host it means "any": that
		// host is the best there is. With several it cannot be honoured.
		if len(s.hosts) > 1 {
			return nil, &KeywordError{Keyword: "Target Session Attributes", Err: fmt.Errorf("%w: prefer-primary with several hosts (use primary, or any with the primary listed first)", ErrUnsupported)}
		}
	default:
		s.libpq["target_session_attrs"] = s.targetSession
	}

	connectTimeout := defaultConnectTimeout
	if s.connectTimeout != nil {
		connectTimeout = *s.connectTimeout
	}
	s.libpq["connect_timeout"] = strconv.Itoa(int(connectTimeout / time.Second))
	if s.commandTimeout != nil && *s.commandTimeout > 0 {
		s.libpq["statement_timeout"] = strconv.FormatInt(s.commandTimeout.Milliseconds(), 10)
	}

	c, err := pgxpool.ParseConfig(libpqDSN(s.libpq))
	if err != nil {
		secrets := []string{s.libpq["sslpassword"]}
		if s.password != nil {
			secrets = append(secrets, *s.password)
		}
		return nil, pgxParseError(err, secrets)
	}
	if s.password != nil {
		c.ConnConfig.Password = *s.password
	}
	c.ConnConfig.ConnectTimeout = connectTimeout

	c.MaxConns = defaultMaxConns
	if s.maxConns != nil {
		c.MaxConns = int32(*s.maxConns)
	}
	c.MinConns = 0
	if s.minConns != nil {
		c.MinConns = int32(*s.minConns)
	}
	if c.MinConns > c.MaxConns {
		return nil, &KeywordError{Keyword: "Minimum Pool Size", Err: fmt.Errorf("%w: exceeds Maximum Pool Size", ErrInvalidValue)}
	}
	c.MaxConnIdleTime = defaultMaxConnIdleTime
	if s.idleLifetime != nil {
		c.MaxConnIdleTime = *s.idleLifetime
	}
	c.HealthCheckPeriod = defaultPruneInterval
	if s.pruneInterval != nil {
		if *s.pruneInterval <= 0 {
			return nil, &KeywordError{Keyword: "Connection Pruning Interval", Err: fmt.Errorf("%w: want at least 1 second", ErrInvalidValue)}
		}
		c.HealthCheckPeriod = *s.pruneInterval
	}
	if s.lifetime != nil {
		// Npgsql's 0 means no limit; pgx has no "no limit", so use a
		// century.
		c.MaxConnLifetime = *s.lifetime
		if c.MaxConnLifetime <= 0 {
			c.MaxConnLifetime = 100 * 365 * 24 * time.Hour
		}
	}

	if s.keepAlive != nil || s.tcpKeepAlive != nil || s.tcpKAIdle != nil || s.tcpKAInterval != nil {
		c.ConnConfig.DialFunc = s.dialer().DialContext
	}
	if s.loadBalance && len(c.ConnConfig.Fallbacks) > 0 {
		c.BeforeConnect = rotateHosts()
	}
	return c, nil
}

// dialer builds the TCP dialer for the keepalive keywords. Npgsql's
// Keepalive sends a query after that many idle seconds; the nearest pgx
// equivalent is the TCP keepalive idle time, which is what it sets. The
// connect timeout is pgx's, applied through the dial's context.
func (s *npgsqlSettings) dialer() *net.Dialer {
	d := &net.Dialer{KeepAlive: 5 * time.Minute}
	cfg := net.KeepAliveConfig{Enable: true}
	if s.tcpKeepAlive != nil && !*s.tcpKeepAlive && s.keepAlive == nil {
		cfg.Enable = false
	}
	if s.keepAlive != nil && *s.keepAlive > 0 {
		cfg.Idle = *s.keepAlive
	}
	if s.tcpKAIdle != nil && *s.tcpKAIdle > 0 {
		cfg.Idle = *s.tcpKAIdle
	}
	if s.tcpKAInterval != nil && *s.tcpKAInterval > 0 {
		cfg.Interval = *s.tcpKAInterval
	}
	if !cfg.Enable {
		d.KeepAlive = -1
	}
	d.KeepAliveConfig = cfg
	return d
}

// rotateHosts returns a BeforeConnect hook that starts each new connection
// at the next host of the list, so that connections spread over the hosts
// (Npgsql's Load Balance Hosts). The TLS fallbacks of one host stay
// together.
func rotateHosts() func(context.Context, *pgx.ConnConfig) error {
	var next atomic.Uint64
	return func(_ context.Context, c *pgx.ConnConfig) error {
		all := append([]*pgconn.FallbackConfig{{Host: c.Host, Port: c.Port, TLSConfig: c.TLSConfig}}, c.Fallbacks...)
		// Group consecutive entries of the same host:port.
		var groups [][]*pgconn.FallbackConfig
		for _, f := range all {
			if n := len(groups); n > 0 && groups[n-1][0].Host == f.Host && groups[n-1][0].Port == f.Port {
				groups[n-1] = append(groups[n-1], f)
				continue
			}
			groups = append(groups, []*pgconn.FallbackConfig{f})
		}
		if len(groups) < 2 {
			return nil
		}
		k := int((next.Add(1) - 1) % uint64(len(groups)))
		rotated := make([]*pgconn.FallbackConfig, 0, len(all))
		for i := range groups {
			rotated = append(rotated, groups[(k+i)%len(groups)]...)
		}
		c.Host, c.Port, c.TLSConfig = rotated[0].Host, rotated[0].Port, rotated[0].TLSConfig
		c.Fallbacks = rotated[1:]
		return nil
	}
}

// libpqDSN writes settings as a libpq keyword/value string, quoting every
// value.
func libpqDSN(m map[string]string) string {
	var b strings.Builder
	for _, k := range sortedKeys(m) {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(k)
		b.WriteString("='")
		v := m[k]
		for i := 0; i < len(v); i++ {
			if v[i] == '\'' || v[i] == '\\' {
				b.WriteByte('\\')
			}
			b.WriteByte(v[i])
		}
		b.WriteByte('\'')
	}
	return b.String()
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
