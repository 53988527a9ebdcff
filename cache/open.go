package cache

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/internal/fallback"
	"github.com/goaspire/goaspire/internal/roots"
)

// ConfigSection is the configuration section LoadRedisConfig reads, as Aspire's
// StackExchange.Redis client integration does. Settings in
// "Aspire:StackExchange:Redis:{name}" override those in the section itself.
const ConfigSection = "Aspire:StackExchange:Redis"

// DefaultConnectRetry is how many times NewRedis retries its first PING
// when RedisConfig.AbortConnect is set and ConnectRetry is zero, as
// StackExchange.Redis does.
const DefaultConnectRetry = defaultConnectRetry

// RedisConfig configures a go-redis client: what [LoadRedisConfig] reads
// from configuration, and what [NewRedis] opens. It can be built by hand:
// every zero field takes the default named in its comment.
//
// Options holds the password: String, GoString and LogValue show only
// what is not secret, so a RedisConfig can be logged or printed.
type RedisConfig struct {
	// Name names the client in its health check ("redis:{Name}"), logs and
	// metrics. LoadRedisConfig sets the connection name; empty means
	// "redis".
	Name string
	// Options are the go-redis options, from [ParseConnectionString] or
	// written by hand; code may adjust them before NewRedis. Several Addrs
	// without MasterName make a cluster client, MasterName a Sentinel
	// (failover) client. Nil means a single server at 127.0.0.1:6379 with
	// go-redis's defaults.
	Options *redis.UniversalOptions
	// AbortConnect makes NewRedis PING the server first and fail when no
	// server answers (StackExchange.Redis's abortConnect=true). By default
	// the client connects lazily and redials with backoff, so the service
	// starts without Redis.
	AbortConnect bool
	// ConnectRetry is how many times that first PING is retried
	// (DefaultConnectRetry, 3); negative means none. Each try is bounded
	// by Options.DialTimeout.
	ConnectRetry int

	// Credentials, when not nil, authenticates every connection of the
	// client with what it returns instead of Options' user name and
	// password: the pooled connections, the pub/sub ones (cache
	// invalidation, messaging/redisevents), each node of a cluster, the
	// master and replicas of a Sentinel set (Sentinel itself keeps
	// SentinelUsername/SentinelPassword). NewRedis wraps it in a
	// [CredentialsProvider], which fetches before the first connection,
	// refreshes before the credentials expire, and has go-redis
	// re-authenticate the live connections in place (AUTH on the same
	// connection; the pool is not dropped). HealthCheck then reports a
	// failing refresh. A StreamingCredentialsProvider already set in
	// Options wins over it.
	Credentials CredentialsFunc

	// DisableHealthChecks tells the caller (integrations/aspireredis) to
	// leave the client's HealthCheck out; NewRedis itself registers
	// nothing.
	DisableHealthChecks bool
	// HealthCheckFailureStatus is the status the caller's readiness
	// check reports when Redis does not answer: health.Unhealthy or
	// health.Degraded. Empty lets the caller decide: integrations/aspireredis
	// reports Degraded while the connection is used only by caches (they
	// keep serving from L1 and their loaders) and Unhealthy once it is used
	// directly. LoadRedisConfig reads it from HealthCheckFailureStatus.
	HealthCheckFailureStatus health.Status
	// DisableTracing turns off command spans.
	DisableTracing bool
	// DisableMetrics turns off connection-pool and command metrics.
	DisableMetrics bool

	// TracerProvider and MeterProvider receive command spans and metrics
	// (default: the OpenTelemetry globals); Logger reports options
	// go-redis cannot honour exactly (default: slog.Default()).
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	Logger         *slog.Logger

	// warnings and ignored are what LoadRedisConfig noticed about the
	// options, logged by NewRedis.
	warnings, ignored []string
}

// String describes the configuration without its credentials.
func (c RedisConfig) String() string {
	var addrs []string
	var tls bool
	var master string
	if c.Options != nil {
		addrs, tls, master = c.Options.Addrs, c.Options.TLSConfig != nil, c.Options.MasterName
	}
	return fmt.Sprintf("cache.RedisConfig{Name: %q, Addrs: %q, MasterName: %q, TLS: %t, AbortConnect: %t}",
		c.Name, addrs, master, tls, c.AbortConnect)
}

// GoString is String, for %#v.
func (c RedisConfig) GoString() string { return c.String() }

// LogValue implements slog.LogValuer without the credentials.
func (c RedisConfig) LogValue() slog.Value {
	var addrs []string
	if c.Options != nil {
		addrs = c.Options.Addrs
	}
	return slog.GroupValue(
		slog.String("name", c.Name),
		slog.Any("addrs", addrs),
		slog.Bool("abort_connect", c.AbortConnect),
		slog.Bool("disable_health_checks", c.DisableHealthChecks),
		slog.Bool("disable_tracing", c.DisableTracing),
		slog.Bool("disable_metrics", c.DisableMetrics),
	)
}

// LoadRedisConfig reads the Redis connection called name from cfg, in one
// pass:
//
//   - the connection: ConnectionStrings:{name}, else the Aspire 13
//     variables {NAME}_URI, else {NAME}_HOST/_PORT/_USERNAME/_PASSWORD,
//     else Aspire:StackExchange:Redis[:{name}]:ConnectionString;
//   - options from Aspire:StackExchange:Redis[:{name}]:ConfigurationOptions,
//     which override the connection string's, as in .NET;
//   - DisableHealthChecks, DisableTracing, DisableMetrics, PoolSize,
//     MinIdleConns and MaxRetries from the same sections.
//
// With TLS the options trust the system roots plus the certificates in
// SSL_CERT_FILE and SSL_CERT_DIR (as read through cfg), which is how Aspire
// hands out its development certificate. The telemetry fields are left
// nil; set them before calling NewRedis.
//
// Errors name the key or variable at fault (errors.As gives a
// *discovery.KeyError; a connection string's errors also wrap
// ErrConnectionString) and never contain the password.
func LoadRedisConfig(cfg *discovery.Config, name string) (*RedisConfig, error) {
	if strings.TrimSpace(name) == "" {
		return nil, errors.New("cache: LoadRedisConfig: empty connection name")
	}
	if cfg == nil {
		cfg = discovery.FromMap(nil)
	}
	rc, settings, from, err := readRedisConfig(cfg, name)
	if err != nil {
		return nil, err
	}
	uo, err := rc.options()
	if err != nil {
		return nil, fmt.Errorf("cache: redis %q: %w", name, &discovery.KeyError{Key: from, Err: err})
	}
	if uo.TLSConfig != nil {
		pool, err := rootCAs(cfg)
		if err != nil {
			return nil, fmt.Errorf("cache: redis %q: %w", name, err)
		}
		uo.TLSConfig.RootCAs = pool
	}
	c := &RedisConfig{
		Name:                     name,
		Options:                  uo,
		AbortConnect:             rc.abortConnect,
		ConnectRetry:             rc.connectRetry,
		DisableHealthChecks:      settings.disableHealthChecks,
		HealthCheckFailureStatus: settings.failureStatus,
		DisableTracing:           settings.disableTracing,
		DisableMetrics:           settings.disableMetrics,
		warnings:                 rc.warnings,
		ignored:                  rc.ignored,
	}
	if c.ConnectRetry == 0 {
		c.ConnectRetry = -1 // connectRetry=0: no retry
	}
	return c, nil
}

// NewRedis makes the go-redis client c describes: a single-server,
// cluster or Sentinel client, traced and measured unless c disables it.
//
// The client never aborts because Redis is down: it connects lazily,
// redials with exponential backoff and retries commands, so the service
// starts without Redis and recovers when it comes. Only c.AbortConnect
// makes NewRedis ping first and fail.
//
// The caller closes the client, then, with RedisConfig.Credentials, its
// [CredentialsProviderOf]; [HealthCheck] makes its readiness check.
func NewRedis(ctx context.Context, c *RedisConfig) (redis.UniversalClient, error) {
	if c == nil {
		return nil, errors.New("cache: NewRedis: nil RedisConfig")
	}
	name := c.Name
	if strings.TrimSpace(name) == "" {
		name = "redis"
	}
	var uo redis.UniversalOptions
	if c.Options != nil {
		uo = *c.Options
	}
	tp, mp, logger := fallback.TracerProvider(c.TracerProvider), fallback.MeterProvider(c.MeterProvider), fallback.Logger(c.Logger)
	log := logger.With("redis", name)
	for _, w := range c.warnings {
		log.Warn("redis option has no exact go-redis equivalent", "detail", w)
	}
	if len(c.ignored) > 0 {
		log.Debug("redis options accepted without effect in go-redis", "options", c.ignored)
	}

	if c.Credentials != nil && uo.StreamingCredentialsProvider == nil {
		uo.StreamingCredentialsProvider = NewCredentialsProvider(c.Credentials, CredentialsProviderOptions{Name: name, Logger: logger})
	}
	rdb := newUniversalClient(&uo, dialBackoff(uo.DialTimeout))
	if !c.DisableTracing {
		if err := instrumentTracing(rdb, tp); err != nil {
			_ = rdb.Close()
			return nil, fmt.Errorf("cache: redis %q: tracing: %w", name, err)
		}
	}
	if !c.DisableMetrics {
		// The pool statistics stay registered for the life of the meter
		// provider, as redisotel's do: go-redis has no close hook.
		if _, err := instrumentMetrics(rdb, &uo, name, mp); err != nil {
			_ = rdb.Close()
			return nil, fmt.Errorf("cache: redis %q: metrics: %w", name, err)
		}
	}
	if c.AbortConnect {
		retries := c.ConnectRetry
		switch {
		case retries == 0:
			retries = DefaultConnectRetry
		case retries < 0:
			retries = 0
		}
		if err := connectOrAbort(ctx, rdb, retries, uo.DialTimeout); err != nil {
			_ = rdb.Close()
			return nil, fmt.Errorf("cache: redis %q: abortConnect=true and no server answered: %w", name, err)
		}
	}
	log.Debug("redis client ready", "endpoints", uo.Addrs, "tls", uo.TLSConfig != nil)
	return rdb, nil
}

// redisSettings are the Aspire-level settings for one client.
type redisSettings struct {
	disableHealthChecks bool
	failureStatus       health.Status
	disableTracing      bool
	disableMetrics      bool
}

// readRedisConfig gathers the connection and settings for name, and
// names the key or variable the connection came from.
func readRedisConfig(cfg *discovery.Config, name string) (*redisConfig, redisSettings, string, error) {
	var s redisSettings
	general := cfg.Section(ConfigSection)
	named := general.Section(name)
	sections := []*discovery.Config{general, named}

	rc := newRedisConfig()
	var from string
	bad := func(err error) (*redisConfig, redisSettings, string, error) {
		// err says "cache: ..." already.
		return nil, s, from, &discovery.KeyError{Key: from, Err: err}
	}
	conn, connErr := cfg.Connection(name)
	switch {
	case connErr == nil && strings.TrimSpace(conn.ConnectionString) != "":
		from = conn.ConnectionStringKey
		if err := rc.parse(conn.ConnectionString); err != nil {
			return bad(err)
		}
	case connErr == nil && conn.URI != "":
		from = conn.PropertyPrefix + "URI"
		if err := rc.parse(conn.URI); err != nil {
			return bad(err)
		}
		if rc.password == "" && conn.Password != "" {
			rc.password = conn.Password
		}
		if rc.user == "" && conn.Username != "" {
			rc.user = conn.Username
		}
	case connErr == nil && conn.Host != "":
		p := conn.PropertyPrefix
		host := conn.Host
		if strings.Contains(host, ":") && !strings.HasPrefix(host, "[") {
			host = "[" + host + "]" // a bare IPv6 address
		}
		ep := host
		from = p + "HOST"
		if conn.Port != "" {
			ep += ":" + conn.Port
			if n, err := strconv.Atoi(conn.Port); err != nil || n < 1 || n > 65535 {
				from = p + "PORT"
			}
		}
		e, err := parseEndpoint(ep)
		if err != nil {
			return bad(fmt.Errorf("cache: %w: %sHOST/%sPORT: %v", ErrConnectionString, p, p, err))
		}
		rc.addEndpoint(e)
		rc.user, rc.password = conn.Username, conn.Password
	default:
		var cs string
		for _, sec := range sections {
			if v := strings.TrimSpace(sec.String("ConnectionString")); v != "" {
				cs, from = v, sec.Path()+":ConnectionString"
			}
		}
		if cs == "" {
			return nil, s, "", fmt.Errorf("cache: redis %q: %w: set %s, or %s:ConnectionString",
				name, discovery.ErrNotFound, strings.Join(discovery.ConnectionVariables(name), ", "), named.Path())
		}
		if err := rc.parse(cs); err != nil {
			return bad(err)
		}
	}

	for _, sec := range sections {
		if err := rc.applyConfigurationOptions(sec.Section("ConfigurationOptions")); err != nil {
			return nil, s, from, err
		}
		var err error
		if s.disableHealthChecks, err = sec.Bool("DisableHealthChecks", s.disableHealthChecks); err != nil {
			return nil, s, from, err
		}
		if v := strings.TrimSpace(sec.String("HealthCheckFailureStatus")); v != "" {
			if s.failureStatus, err = health.ParseFailureStatus(v); err != nil {
				return nil, s, from, &discovery.KeyError{Key: sec.Path() + ":HealthCheckFailureStatus", Err: err}
			}
		}
		if s.disableTracing, err = sec.Bool("DisableTracing", s.disableTracing); err != nil {
			return nil, s, from, err
		}
		if s.disableMetrics, err = sec.Bool("DisableMetrics", s.disableMetrics); err != nil {
			return nil, s, from, err
		}
		if rc.poolSize, err = nonNegative(sec, "PoolSize", rc.poolSize); err != nil {
			return nil, s, from, err
		}
		if rc.minIdleConns, err = nonNegative(sec, "MinIdleConns", rc.minIdleConns); err != nil {
			return nil, s, from, err
		}
		n, err := sec.Int("MaxRetries", rc.maxRetries)
		if err != nil {
			return nil, s, from, err
		}
		if n < -1 {
			return nil, s, from, &discovery.KeyError{Key: sec.Path() + ":MaxRetries", Err: errors.New("must be -1 (no retries) or more")}
		}
		rc.maxRetries = n
	}
	return rc, s, from, nil
}

func nonNegative(sec *discovery.Config, key string, def int) (int, error) {
	n, err := sec.Int(key, def)
	if err != nil {
		return def, err
	}
	if n < 0 {
		return def, &discovery.KeyError{Key: sec.Path() + ":" + key, Err: errors.New("must not be negative")}
	}
	return n, nil
}

// configurationOptionNames maps the properties of StackExchange.Redis's
// ConfigurationOptions, as Aspire binds them from
// "Aspire:StackExchange:Redis:ConfigurationOptions", to connection-string
// option names. An empty name means the property is accepted and has no
// effect in Go.
var configurationOptionNames = map[string]string{
	"abortonconnectfail":                     "abortConnect",
	"allowadmin":                             "allowAdmin",
	"asynctimeout":                           "asyncTimeout",
	"channelprefix":                          "channelPrefix",
	"checkcertificaterevocation":             "checkCertificateRevocation",
	"clientname":                             "name",
	"configcheckseconds":                     "configCheckSeconds",
	"configurationchannel":                   "configChannel",
	"connectretry":                           "connectRetry",
	"connecttimeout":                         "connectTimeout",
	"defaultdatabase":                        "defaultDatabase",
	"defaultversion":                         "version",
	"keepalive":                              "keepAlive",
	"password":                               "password",
	"protocol":                               "protocol",
	"proxy":                                  "proxy",
	"resolvedns":                             "resolveDns",
	"responsetimeout":                        "responseTimeout",
	"servicename":                            "serviceName",
	"setclientlibrary":                       "setlib",
	"ssl":                                    "ssl",
	"usessl":                                 "ssl",
	"sslhost":                                "sslHost",
	"sslprotocols":                           "sslProtocols",
	"synctimeout":                            "syncTimeout",
	"tiebreaker":                             "tiebreaker",
	"user":                                   "user",
	"heartbeatinterval":                      "",
	"heartbeatconsistencychecks":             "",
	"highintegrity":                          "",
	"highprioritysocketthreads":              "",
	"includedetailinexceptions":              "",
	"includeperformancecountersinexceptions": "",
	"libraryname":                            "",
}

// applyConfigurationOptions applies a ConfigurationOptions section. An
// unknown property is an error naming its key.
func (c *redisConfig) applyConfigurationOptions(sec *discovery.Config) error {
	for _, child := range sec.Children() {
		key := sec.Path() + ":" + child
		opt, known := configurationOptionNames[strings.ToLower(child)]
		if !known {
			return &discovery.KeyError{Key: key, Err: errors.New("not a StackExchange.Redis ConfigurationOptions property that goaspire knows")}
		}
		if opt == "" {
			c.ignored = append(c.ignored, child)
			continue
		}
		v, _ := sec.Lookup(child)
		if err := c.set(opt, v); err != nil {
			return &discovery.KeyError{Key: key, Err: err}
		}
	}
	return nil
}

// rootCAs returns the roots a TLS connection to Redis trusts: the system
// roots plus the certificates in SSL_CERT_FILE and the files of the
// SSL_CERT_DIR directories, read through cfg (package internal/roots, the
// one implementation the App uses too: read once per process, and not at
// all when the values are the process environment's, which Go's system
// roots hold; nil then means the system roots). An SSL_CERT_FILE that
// cannot be read or holds no certificate is an error naming it.
func rootCAs(cfg *discovery.Config) (*x509.CertPool, error) {
	file, dirs := strings.TrimSpace(cfg.String("SSL_CERT_FILE")), strings.TrimSpace(cfg.String("SSL_CERT_DIR"))
	if file != "" {
		if err := roots.CheckFile(file); err != nil {
			return nil, &discovery.KeyError{Key: "SSL_CERT_FILE", Err: fmt.Errorf("reading the CA file: %w", err)}
		}
	}
	return roots.Pool(file, dirs)
}

// dialBackoff is the delay before dial attempt n+1: exponential from 50 ms,
// with full jitter, capped at the dial timeout and at 2 s.
func dialBackoff(dialTimeout time.Duration) func(int) time.Duration {
	ceiling := min(2*time.Second, max(dialTimeout, 50*time.Millisecond))
	return func(attempt int) time.Duration {
		d := 50 * time.Millisecond << min(attempt, 10)
		d = min(d, ceiling)
		return d/2 + rand.N(d/2+1)
	}
}

// newUniversalClient is redis.NewUniversalClient with an exponential dial
// backoff, which UniversalOptions cannot carry, and, unless o has a Dialer,
// a dialer that honours the context of the dial (see contextDialer).
func newUniversalClient(o *redis.UniversalOptions, backoff func(int) time.Duration) redis.UniversalClient {
	if o.Dialer == nil {
		o.Dialer = contextDialer(o.DialTimeout, o.TLSConfig)
	}
	switch {
	case o.MasterName != "" && (o.RouteByLatency || o.RouteRandomly || o.IsClusterMode):
		fo := o.Failover()
		fo.DialerRetryBackoff = backoff
		return redis.NewFailoverClusterClient(fo)
	case o.MasterName != "":
		fo := o.Failover()
		fo.DialerRetryBackoff = backoff
		return redis.NewFailoverClient(fo)
	case len(o.Addrs) > 1 || o.IsClusterMode:
		co := o.Cluster()
		co.DialerRetryBackoff = backoff
		return redis.NewClusterClient(co)
	default:
		so := o.Simple()
		so.DialerRetryBackoff = backoff
		return redis.NewClient(so)
	}
}

// dialKeepAlive is the TCP keep-alive of the connections contextDialer
// makes, go-redis's own: probes after 30 s idle, then every 5 s, and the
// peer is dead after 3 unanswered ones.
var dialKeepAlive = net.KeepAliveConfig{Enable: true, Idle: 30 * time.Second, Interval: 5 * time.Second, Count: 3}

// defaultDialTimeout is go-redis's DialTimeout when Options leave it zero.
const defaultDialTimeout = 5 * time.Second

// contextDialer dials as go-redis's default dialer does (TCP, or a unix
// socket, within timeout, then TLS with cfg when not nil), except that a
// TLS dial, its TCP connection and its handshake, ends with ctx too:
// go-redis's default TLS dial ignores the context, so a Pub/Sub
// subscription given a short deadline, or a dial canceled at Close, would
// wait for the whole DialTimeout on a silent network.
func contextDialer(timeout time.Duration, cfg *tls.Config) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if timeout <= 0 {
		timeout = defaultDialTimeout
	}
	nd := &net.Dialer{Timeout: timeout, KeepAliveConfig: dialKeepAlive}
	if cfg == nil {
		return nd.DialContext
	}
	td := &tls.Dialer{NetDialer: nd, Config: cfg}
	return td.DialContext
}

// connectOrAbort pings until a server answers, trying retries+1 times
// within timeout each (no bound when zero), as StackExchange.Redis does
// for abortConnect=true.
func connectOrAbort(ctx context.Context, rdb redis.UniversalClient, retries int, timeout time.Duration) error {
	var err error
	for attempt := 0; attempt <= retries; attempt++ {
		pctx := ctx
		cancel := context.CancelFunc(func() {})
		if timeout > 0 {
			pctx, cancel = context.WithTimeout(ctx, timeout)
		}
		err = rdb.Ping(pctx).Err()
		cancel()
		if err == nil || ctx.Err() != nil {
			break
		}
	}
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// HealthCheck is the readiness check for a Redis client: a PING through
// the client's own pool. When the client authenticates with a
// [CredentialsProvider] (RedisConfig.Credentials) whose last refresh
// failed, the check fails too, with an error matching ErrCredentials:
// Degraded while the PING answers, with the check's failure status when
// it does not. It is tagged ready, not live, so that a Redis
// outage takes the instance out of rotation without restarting it. The
// probe's PING is neither traced nor measured by the client's
// instrumentation: probes run outside any request, and each would
// otherwise be a trace of its own.
func HealthCheck(name string, rdb redis.UniversalClient) health.Check {
	return health.Check{
		Name: "redis:" + name,
		Tags: []string{health.TagReady},
		Check: func(ctx context.Context) error {
			var credErr error
			if p := CredentialsProviderOf(rdb); p != nil {
				credErr = p.Err()
			}
			if err := rdb.Do(ctx, "ping", healthPing).Err(); err != nil {
				if errors.Is(err, ErrCredentials) {
					return err // names the client already
				}
				if credErr != nil {
					return fmt.Errorf("redis %q: %w; last credentials refresh: %w", name, err, credErr)
				}
				return fmt.Errorf("redis %q: %w", name, err)
			}
			if credErr != nil {
				return health.WithStatus(health.Degraded, credErr)
			}
			return nil
		},
	}
}
