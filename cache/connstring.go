package cache

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/goaspire/goaspire/internal/redact"
)

// ErrConnectionString is wrapped by every error about a Redis connection
// string or one of its options. The errors name the option or the position
// at fault and never quote a value, since any value may be a password.
var ErrConnectionString = errors.New("invalid redis connection string")

// Defaults taken from StackExchange.Redis, so a connection string means the
// same to a Go service as to a .NET one.
const (
	defaultPort         = 6379
	defaultTLSPort      = 6380
	defaultSentinelPort = 26379
	defaultConnectRetry = 3
	defaultTimeout      = 5 * time.Second // connectTimeout and syncTimeout
)

// endpoint is one server from a connection string; port 0 means "the
// default", which depends on ssl and serviceName and so is decided last.
type endpoint struct {
	host string
	port int
	unix bool
}

func (e endpoint) addr(defPort int) string {
	if e.unix {
		return e.host
	}
	p := e.port
	if p == 0 {
		p = defPort
	}
	return net.JoinHostPort(e.host, strconv.Itoa(p))
}

// redisConfig collects what a connection string, the per-property
// variables and the Aspire configuration say, before it becomes go-redis
// options.
type redisConfig struct {
	endpoints []endpoint

	user, password  string
	clientName      string
	db              int
	serviceName     string
	ssl             bool
	sslHost         string
	tlsMin, tlsMax  uint16
	abortConnect    bool
	connectRetry    int
	connectTimeout  time.Duration
	syncTimeout     time.Duration
	asyncTimeout    time.Duration
	protocol        int
	disableIdentity bool
	poolSize        int
	minIdleConns    int
	maxRetries      int

	// ignored lists options that were accepted but have no effect in Go,
	// for a debug log.
	ignored []string
	// warnings are accepted options whose meaning go-redis cannot give.
	warnings []string
}

func newRedisConfig() *redisConfig {
	return &redisConfig{
		connectRetry:   defaultConnectRetry,
		connectTimeout: defaultTimeout,
		syncTimeout:    defaultTimeout,
	}
}

// ParseConnectionString turns a Redis connection string into go-redis
// options. It accepts the StackExchange.Redis form Aspire injects
// ("host:port,password=p,ssl=true", several endpoints allowed) and
// redis:// or rediss:// URLs ("redis://user:pass@host:port/db"). Option
// names are case-insensitive; an unknown option is an error naming it. See
// the package documentation for what each option means here.
//
// With ssl=true or rediss:// the returned options carry a tls.Config that
// trusts the system roots; LoadRedisConfig also trusts SSL_CERT_FILE and
// SSL_CERT_DIR. Several endpoints without serviceName give cluster options
// (go-redis's UniversalOptions convention); with serviceName they are
// Sentinel servers, which the user and password authenticate to as well as
// to the primary they name (as in StackExchange.Redis).
//
// The result is meant for RedisConfig.Options (NewRedis adds the dial
// backoff and telemetry) or for redis.NewUniversalClient.
func ParseConnectionString(s string) (*redis.UniversalOptions, error) {
	c := newRedisConfig()
	if err := c.parse(s); err != nil {
		return nil, err
	}
	return c.options()
}

// parse reads a connection string in either form into c.
func (c *redisConfig) parse(s string) error {
	s = strings.TrimSpace(s)
	if s == "" {
		return fmt.Errorf("cache: %w: it is empty", ErrConnectionString)
	}
	if scheme, _, ok := strings.Cut(s, "://"); ok && isURLScheme(scheme) {
		return c.parseURL(s)
	}
	// Items in order: an endpoint or a key=value option. (internal/connstr
	// has the same lexing, but loses the order, which is needed to spot a
	// password cut by a comma.)
	afterSecret := false
	n := 0
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		n++
		key, value, isOption := strings.Cut(item, "=")
		key = strings.TrimSpace(key)
		switch {
		case afterSecret && (!isOption || !knownOption(key)):
			// StackExchange.Redis strings cannot quote a ',': what follows
			// a password here is most likely the rest of it.
			return fmt.Errorf("cache: %w: item %d follows %q and is not an option (not shown: a password containing ',' cannot be written in this form; use a redis:// URL or a separate password setting)",
				ErrConnectionString, n, "password")
		case !isOption:
			e, err := parseEndpoint(item)
			if err != nil {
				return fmt.Errorf("cache: %w: endpoint %d: %v", ErrConnectionString, n, err)
			}
			c.addEndpoint(e)
		case key == "":
			return fmt.Errorf("cache: %w: item %d has an empty option name", ErrConnectionString, n)
		case !knownOption(key):
			return fmt.Errorf("cache: %w: %s", ErrConnectionString, unknownOption(key, n))
		default:
			if err := c.set(key, strings.TrimSpace(value)); err != nil {
				return fmt.Errorf("cache: %w: %w", ErrConnectionString, err)
			}
		}
		afterSecret = isOption && redact.IsSecretKey(key)
	}
	return nil
}

// knownOption reports whether set understands key.
func knownOption(key string) bool {
	if strings.HasPrefix(key, "$") {
		return true
	}
	_, ok := optionNames[strings.ToLower(key)]
	return ok
}

// unknownOption describes an unknown option, naming it only when it looks
// like an option name (a value put in the wrong place must not be echoed).
func unknownOption(key string, item int) string {
	if len(key) <= 40 && isIdentifier(key) {
		return fmt.Sprintf("unknown option %q", key)
	}
	if item > 0 {
		return fmt.Sprintf("item %d is an unknown option (name not shown: it does not look like one)", item)
	}
	return "an unknown option (name not shown: it does not look like one)"
}

func isIdentifier(s string) bool {
	for i, r := range s {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || r == '_' || i > 0 && '0' <= r && r <= '9') {
			return false
		}
	}
	return s != ""
}

// optionNames are the StackExchange.Redis option names set understands,
// lower-cased.
var optionNames = func() map[string]struct{} {
	m := map[string]struct{}{}
	for _, k := range []string{
		"password", "user", "name", "ssl", "sslhost", "sslprotocols", "abortconnect", "connectretry",
		"connecttimeout", "synctimeout", "asynctimeout", "defaultdatabase", "servicename", "protocol",
		"setlib", "proxy", "channelprefix", "allowadmin", "resolvedns", "checkcertificaterevocation",
		"keepalive", "configcheckseconds", "version", "configchannel", "tiebreaker",
		"highprioritythreads", "highprioritysocketthreads", "preserveasyncorder", "responsetimeout",
		"writebuffer", "tunnel",
	} {
		m[k] = struct{}{}
	}
	return m
}()

func isURLScheme(s string) bool {
	for _, r := range s {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '+' || r == '-' || r == '.') {
			return false
		}
	}
	return s != ""
}

func (c *redisConfig) addEndpoint(e endpoint) {
	c.endpoints = append(c.endpoints, e)
}

// parseEndpoint reads "host", "host:port", "[v6]:port", a bare IPv6
// address, or a unix socket path starting with '/'.
func parseEndpoint(s string) (endpoint, error) {
	if strings.HasPrefix(s, "/") {
		return endpoint{host: s, unix: true}, nil
	}
	if strings.HasPrefix(s, "unix:") {
		p := strings.TrimPrefix(s, "unix:")
		if !strings.HasPrefix(p, "/") {
			return endpoint{}, errors.New("a unix socket path must be absolute")
		}
		return endpoint{host: p, unix: true}, nil
	}
	var host, port string
	switch {
	case strings.HasPrefix(s, "["):
		h, p, err := net.SplitHostPort(s)
		if err != nil {
			// "[::1]" without a port.
			if strings.HasSuffix(s, "]") {
				h, p = s[1:len(s)-1], ""
			} else {
				return endpoint{}, errors.New("malformed bracketed address")
			}
		}
		host, port = h, p
	case strings.Count(s, ":") > 1:
		host = s // bare IPv6 address
	case strings.Contains(s, ":"):
		host, port, _ = strings.Cut(s, ":")
	default:
		host = s
	}
	if host == "" {
		return endpoint{}, errors.New("empty host")
	}
	if strings.ContainsAny(host, " \t/@?#") {
		return endpoint{}, errors.New("malformed host")
	}
	e := endpoint{host: host}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return endpoint{}, errors.New("invalid port")
		}
		e.port = n
	}
	return e, nil
}

// parseURL reads redis://, rediss:// (TLS) and tcp:// (Aspire's generic
// endpoint scheme, read as redis://) URLs. The path is the database
// number; query parameters are the same options as in the
// StackExchange.Redis form.
func (c *redisConfig) parseURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		// url.Error quotes the whole input, password included.
		return fmt.Errorf("cache: %w: not a valid URL", ErrConnectionString)
	}
	switch strings.ToLower(u.Scheme) {
	case "redis", "tcp":
	case "rediss":
		c.ssl = true
	default:
		return fmt.Errorf("cache: %w: unsupported URL scheme %q (want redis or rediss)", ErrConnectionString, u.Scheme)
	}
	if u.Opaque != "" || u.Host == "" {
		return fmt.Errorf("cache: %w: the URL has no host", ErrConnectionString)
	}
	for i, h := range strings.Split(u.Host, ",") {
		e, err := parseEndpoint(h)
		if err != nil || e.unix {
			if err == nil {
				err = errors.New("malformed host")
			}
			return fmt.Errorf("cache: %w: URL host %d: %v", ErrConnectionString, i+1, err)
		}
		c.addEndpoint(e)
	}
	if u.User != nil {
		c.user = u.User.Username()
		if p, ok := u.User.Password(); ok {
			c.password = p
		} else if c.user != "" {
			// redis://password@host is common shorthand (as in go-redis
			// and redis-cli) when no user name is given.
			c.password, c.user = c.user, ""
		}
	}
	if p := strings.Trim(u.Path, "/"); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return fmt.Errorf("cache: %w: the URL path must be a database number", ErrConnectionString)
		}
		c.db = n
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return fmt.Errorf("cache: %w: malformed URL query", ErrConnectionString)
	}
	for k, vs := range q {
		key := k
		switch strings.ToLower(k) {
		case "db":
			key = "defaultDatabase"
		case "client_name":
			key = "name"
		}
		if !knownOption(key) || strings.HasPrefix(key, "$") {
			return fmt.Errorf("cache: %w: URL query: %s", ErrConnectionString, unknownOption(key, 0))
		}
		if err := c.set(key, vs[len(vs)-1]); err != nil {
			return fmt.Errorf("cache: %w: URL query: %w", ErrConnectionString, err)
		}
	}
	return nil
}

// optionError reports a bad option without its value.
func optionError(key, format string, args ...any) error {
	return fmt.Errorf("option %q: %s", key, fmt.Sprintf(format, args...))
}

// set applies one StackExchange.Redis option. Names are case-insensitive.
func (c *redisConfig) set(key, value string) error {
	v := strings.TrimSpace(value)
	if strings.HasPrefix(key, "$") {
		return c.setCommandMap(key, v)
	}
	switch strings.ToLower(key) {
	case "password":
		c.password = value
	case "user":
		c.user = v
	case "name":
		c.clientName = v
	case "ssl":
		b, err := parseBool(key, v)
		if err != nil {
			return err
		}
		c.ssl = b
	case "sslhost":
		c.sslHost = v
	case "sslprotocols":
		lo, hi, err := parseSSLProtocols(key, v)
		if err != nil {
			return err
		}
		c.tlsMin, c.tlsMax = lo, hi
	case "abortconnect":
		b, err := parseBool(key, v)
		if err != nil {
			return err
		}
		c.abortConnect = b
	case "connectretry":
		n, err := parseInt(key, v, 0)
		if err != nil {
			return err
		}
		c.connectRetry = n
	case "connecttimeout":
		d, err := parseMillis(key, v, 0)
		if err != nil {
			return err
		}
		c.connectTimeout = d
	case "synctimeout":
		d, err := parseMillis(key, v, 1)
		if err != nil {
			return err
		}
		c.syncTimeout = d
	case "asynctimeout":
		d, err := parseMillis(key, v, 1)
		if err != nil {
			return err
		}
		c.asyncTimeout = d
	case "defaultdatabase":
		n, err := parseInt(key, v, 0)
		if err != nil {
			return err
		}
		c.db = n
	case "servicename":
		c.serviceName = v
	case "protocol":
		switch strings.ToLower(v) {
		case "resp2", "2":
			c.protocol = 2
		case "resp3", "3":
			c.protocol = 3
		default:
			return optionError(key, "want resp2 or resp3")
		}
	case "setlib":
		b, err := parseBool(key, v)
		if err != nil {
			return err
		}
		c.disableIdentity = !b
	case "proxy":
		switch strings.ToLower(v) {
		case "none", "":
		case "twemproxy", "envoyproxy":
			c.warnings = append(c.warnings, "proxy: go-redis sends commands unchanged through a proxy; use only commands the proxy supports")
		default:
			return optionError(key, "want None, Twemproxy or Envoyproxy")
		}
	case "channelprefix":
		if v != "" {
			c.warnings = append(c.warnings, "channelPrefix: go-redis does not prefix Pub/Sub channels; the cache package's channels are not prefixed either")
		}
	case "allowadmin", "resolvedns", "checkcertificaterevocation":
		if _, err := parseBool(key, v); err != nil {
			return err
		}
		c.ignored = append(c.ignored, key)
	case "keepalive", "configcheckseconds":
		if _, err := parseInt(key, v, -1); err != nil {
			return err
		}
		c.ignored = append(c.ignored, key)
	case "version":
		if !isVersion(v) {
			return optionError(key, "want a version such as 7.2")
		}
		c.ignored = append(c.ignored, key)
	case "configchannel", "tiebreaker",
		// Options StackExchange.Redis itself accepts and ignores.
		"highprioritythreads", "highprioritysocketthreads", "preserveasyncorder", "responsetimeout", "writebuffer":
		c.ignored = append(c.ignored, key)
	case "tunnel":
		if v != "" {
			return optionError(key, "HTTP tunnels are not supported by go-redis")
		}
	default:
		return errors.New(unknownOption(key, 0))
	}
	return nil
}

// setCommandMap handles "$COMMAND=name" entries. Disabling a command
// ("$CLIENT=") is accepted, and disables what go-redis would send with it;
// renaming one cannot be honoured by go-redis and is an error.
func (c *redisConfig) setCommandMap(key, v string) error {
	cmd := strings.ToUpper(strings.TrimPrefix(key, "$"))
	if cmd == "" {
		return fmt.Errorf("option %q names no command", key)
	}
	if v != "" && !strings.EqualFold(v, cmd) {
		return optionError(key, "renaming commands is not supported by go-redis")
	}
	if v == "" {
		switch cmd {
		case "CLIENT":
			c.disableIdentity = true
		case "HELLO":
			c.protocol = 2
		}
	}
	c.ignored = append(c.ignored, key)
	return nil
}

func parseBool(key, v string) (bool, error) {
	switch strings.ToLower(v) {
	case "true", "yes", "on", "1":
		return true, nil
	case "false", "no", "off", "0":
		return false, nil
	}
	return false, optionError(key, "want true or false")
}

func parseInt(key, v string, min int) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, optionError(key, "want an integer")
	}
	if n < min {
		return 0, optionError(key, "must be at least %d", min)
	}
	return n, nil
}

func parseMillis(key, v string, min int) (time.Duration, error) {
	n, err := parseInt(key, v, min)
	if err != nil {
		return 0, err
	}
	return time.Duration(n) * time.Millisecond, nil
}

func isVersion(v string) bool {
	if v == "" {
		return false
	}
	for _, part := range strings.Split(v, ".") {
		if part == "" {
			return false
		}
		if _, err := strconv.Atoi(part); err != nil {
			return false
		}
	}
	return true
}

// parseSSLProtocols reads System.Security.Authentication.SslProtocols
// flags, separated by '|' (or ',' when bound from configuration), into a
// TLS version range. 0, 0 means Go's default.
func parseSSLProtocols(key, v string) (uint16, uint16, error) {
	var lo, hi uint16
	for _, f := range strings.FieldsFunc(v, func(r rune) bool { return r == '|' || r == ',' }) {
		var ver uint16
		switch strings.ToLower(strings.TrimSpace(f)) {
		case "none", "default":
			continue
		case "tls":
			ver = tls.VersionTLS10
		case "tls11":
			ver = tls.VersionTLS11
		case "tls12":
			ver = tls.VersionTLS12
		case "tls13":
			ver = tls.VersionTLS13
		case "ssl2", "ssl3":
			return 0, 0, optionError(key, "SSL 2 and 3 are not supported")
		default:
			return 0, 0, optionError(key, "want Tls12, Tls13 or several joined by '|'")
		}
		if lo == 0 || ver < lo {
			lo = ver
		}
		if ver > hi {
			hi = ver
		}
	}
	return lo, hi, nil
}

// options turns the collected settings into go-redis options.
func (c *redisConfig) options() (*redis.UniversalOptions, error) {
	if len(c.endpoints) == 0 {
		return nil, fmt.Errorf("cache: %w: no endpoint (host:port) given", ErrConnectionString)
	}
	defPort := defaultPort
	switch {
	case c.serviceName != "":
		defPort = defaultSentinelPort
	case c.ssl:
		defPort = defaultTLSPort
	}
	o := &redis.UniversalOptions{
		ClientName:      c.clientName,
		DB:              c.db,
		Protocol:        c.protocol,
		Username:        c.user,
		Password:        c.password,
		MasterName:      c.serviceName,
		DialTimeout:     c.connectTimeout,
		ReadTimeout:     max(c.syncTimeout, c.asyncTimeout),
		WriteTimeout:    max(c.syncTimeout, c.asyncTimeout),
		DialerRetries:   max(c.connectRetry, 1),
		DisableIdentity: c.disableIdentity,
		PoolSize:        c.poolSize,
		MinIdleConns:    c.minIdleConns,
		MaxRetries:      c.maxRetries,
		// Command deadlines come from the caller's context as well as
		// from syncTimeout.
		ContextTimeoutEnabled: true,
	}
	if c.serviceName != "" {
		// StackExchange.Redis uses the one user and password of a
		// connection string for the Sentinels as well as for the servers
		// they name.
		o.SentinelUsername, o.SentinelPassword = c.user, c.password
	}
	if c.connectTimeout == 0 {
		// connectTimeout=0 in StackExchange.Redis means no timeout;
		// go-redis reads 0 as "its default", so use a long one.
		o.DialTimeout = time.Hour
	}
	for _, e := range c.endpoints {
		if e.unix && len(c.endpoints) > 1 {
			return nil, fmt.Errorf("cache: %w: a unix socket must be the only endpoint", ErrConnectionString)
		}
		if a := e.addr(defPort); !slices.Contains(o.Addrs, a) {
			o.Addrs = append(o.Addrs, a)
		}
	}
	if o.DB != 0 && len(o.Addrs) > 1 && o.MasterName == "" {
		return nil, fmt.Errorf("cache: %w: option %q: a cluster (several endpoints) has only database 0", ErrConnectionString, "defaultDatabase")
	}
	if c.ssl {
		o.TLSConfig = &tls.Config{
			ServerName: c.sslHost, // empty: each node's own host name
			MinVersion: c.tlsMin,
			MaxVersion: c.tlsMax,
		}
		if o.TLSConfig.MinVersion == 0 {
			o.TLSConfig.MinVersion = tls.VersionTLS12
		}
	}
	return o, nil
}
