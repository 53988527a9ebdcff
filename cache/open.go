package cache

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/health"
)

// ConfigSection is the configuration section OpenRedis reads, as Aspire's
// StackExchange.Redis client integration does. Settings in
// "Aspire:StackExchange:Redis:{name}" override those in the section itself.
const ConfigSection = "Aspire:StackExchange:Redis"

// RedisOption configures OpenRedis.
type RedisOption func(*openOptions)

type openOptions struct {
	tp        trace.TracerProvider
	mp        metric.MeterProvider
	logger    *slog.Logger
	register  func(health.Check)
	configure []func(*redis.UniversalOptions)
}

// WithTracerProvider sets the tracer provider for command spans (default:
// the OpenTelemetry global).
func WithTracerProvider(tp trace.TracerProvider) RedisOption {
	return func(o *openOptions) { o.tp = tp }
}

// WithMeterProvider sets the meter provider for connection-pool and command
// metrics (default: the OpenTelemetry global).
func WithMeterProvider(mp metric.MeterProvider) RedisOption {
	return func(o *openOptions) { o.mp = mp }
}

// WithLogger sets the logger (default: slog.Default()).
func WithLogger(l *slog.Logger) RedisOption {
	return func(o *openOptions) { o.logger = l }
}

// WithHealthChecks makes OpenRedis hand the client's health check to
// register, unless DisableHealthChecks is set in configuration.
// servicedefaults passes its registry here.
func WithHealthChecks(register func(health.Check)) RedisOption {
	return func(o *openOptions) { o.register = register }
}

// WithUniversalOptions lets the caller adjust the go-redis options after
// they are read from configuration and before the client is made. Several
// are applied in order.
func WithUniversalOptions(f func(*redis.UniversalOptions)) RedisOption {
	return func(o *openOptions) { o.configure = append(o.configure, f) }
}

// redisSettings are the Aspire-level settings for one client.
type redisSettings struct {
	disableHealthChecks bool
	disableTracing      bool
	disableMetrics      bool
}

// OpenRedis makes a go-redis client for the Redis resource name from
// configuration:
//
//   - the connection: ConnectionStrings:{name}, else the Aspire 13
//     variables {NAME}_URI, else {NAME}_HOST/_PORT/_USERNAME/_PASSWORD,
//     else Aspire:StackExchange:Redis[:{name}]:ConnectionString;
//   - options from Aspire:StackExchange:Redis[:{name}]:ConfigurationOptions,
//     which override the connection string's, as in .NET;
//   - DisableHealthChecks, DisableTracing, DisableMetrics, PoolSize,
//     MinIdleConns and MaxRetries from the same sections.
//
// The client never aborts because Redis is down: it connects lazily,
// redials with exponential backoff and retries commands, so the service
// starts without Redis and recovers when it comes. Only an explicit
// abortConnect=true makes OpenRedis ping first and fail.
//
// With TLS it trusts the system roots plus the certificates in
// SSL_CERT_FILE and SSL_CERT_DIR (as read through cfg), which is how Aspire
// hands out its development certificate.
//
// The caller closes the client. Errors name the key or option at fault and
// never contain the password.
func OpenRedis(ctx context.Context, cfg *discovery.Config, name string, opts ...RedisOption) (redis.UniversalClient, error) {
	o := openOptions{}
	for _, opt := range opts {
		opt(&o)
	}
	if o.tp == nil {
		o.tp = otel.GetTracerProvider()
	}
	if o.mp == nil {
		o.mp = otel.GetMeterProvider()
	}
	if o.logger == nil {
		o.logger = slog.Default()
	}
	if strings.TrimSpace(name) == "" {
		return nil, errors.New("cache: OpenRedis: empty connection name")
	}

	rc, settings, err := readRedisConfig(cfg, name)
	if err != nil {
		return nil, err
	}
	uo, err := rc.options()
	if err != nil {
		return nil, fmt.Errorf("cache: redis %q: %w", name, err)
	}
	if uo.TLSConfig != nil {
		pool, err := rootCAs(cfg)
		if err != nil {
			return nil, fmt.Errorf("cache: redis %q: %w", name, err)
		}
		uo.TLSConfig.RootCAs = pool
	}
	for _, f := range o.configure {
		f(uo)
	}
	log := o.logger.With("redis", name)
	for _, w := range rc.warnings {
		log.Warn("redis option has no exact go-redis equivalent", "detail", w)
	}
	if len(rc.ignored) > 0 {
		log.Debug("redis options accepted without effect in go-redis", "options", rc.ignored)
	}

	rdb := newUniversalClient(uo, dialBackoff(uo.DialTimeout))
	if !settings.disableTracing {
		if err := instrumentTracing(rdb, o.tp); err != nil {
			_ = rdb.Close()
			return nil, fmt.Errorf("cache: redis %q: tracing: %w", name, err)
		}
	}
	if !settings.disableMetrics {
		// The pool statistics stay registered for the life of the meter
		// provider, as redisotel's do: go-redis has no close hook.
		if _, err := instrumentMetrics(rdb, uo, name, o.mp); err != nil {
			_ = rdb.Close()
			return nil, fmt.Errorf("cache: redis %q: metrics: %w", name, err)
		}
	}
	if rc.abortConnect {
		if err := connectOrAbort(ctx, rdb, rc); err != nil {
			_ = rdb.Close()
			return nil, fmt.Errorf("cache: redis %q: abortConnect=true and no server answered: %w", name, err)
		}
	}
	if o.register != nil && !settings.disableHealthChecks {
		o.register(HealthCheck(name, rdb))
	}
	log.Debug("redis client ready", "endpoints", uo.Addrs, "tls", uo.TLSConfig != nil)
	return rdb, nil
}

// readRedisConfig gathers the connection and settings for name.
func readRedisConfig(cfg *discovery.Config, name string) (*redisConfig, redisSettings, error) {
	var s redisSettings
	general := cfg.Section(ConfigSection)
	named := general.Section(name)
	sections := []*discovery.Config{general, named}

	rc := newRedisConfig()
	conn, connErr := cfg.Connection(name)
	switch {
	case connErr == nil && strings.TrimSpace(conn.ConnectionString) != "":
		if err := rc.parse(conn.ConnectionString); err != nil {
			return nil, s, fmt.Errorf("cache: %s: %w", conn.ConnectionStringKey, err)
		}
	case connErr == nil && conn.URI != "":
		if err := rc.parse(conn.URI); err != nil {
			return nil, s, fmt.Errorf("cache: %sURI: %w", conn.PropertyPrefix, err)
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
		if conn.Port != "" {
			ep += ":" + conn.Port
		}
		e, err := parseEndpoint(ep)
		if err != nil {
			return nil, s, fmt.Errorf("cache: %sHOST/%sPORT: %w: %v", p, p, ErrConnectionString, err)
		}
		rc.addEndpoint(e)
		rc.user, rc.password = conn.Username, conn.Password
	default:
		var cs, from string
		for _, sec := range sections {
			if v := strings.TrimSpace(sec.String("ConnectionString")); v != "" {
				cs, from = v, sec.Path()+":ConnectionString"
			}
		}
		if cs == "" {
			return nil, s, fmt.Errorf("cache: redis %q: %w: set %s, or %s:ConnectionString",
				name, discovery.ErrNotFound, strings.Join(discovery.ConnectionVariables(name), ", "), named.Path())
		}
		if err := rc.parse(cs); err != nil {
			return nil, s, fmt.Errorf("cache: %s: %w", from, err)
		}
	}

	for _, sec := range sections {
		if err := rc.applyConfigurationOptions(sec.Section("ConfigurationOptions")); err != nil {
			return nil, s, err
		}
		var err error
		if s.disableHealthChecks, err = sec.Bool("DisableHealthChecks", s.disableHealthChecks); err != nil {
			return nil, s, err
		}
		if s.disableTracing, err = sec.Bool("DisableTracing", s.disableTracing); err != nil {
			return nil, s, err
		}
		if s.disableMetrics, err = sec.Bool("DisableMetrics", s.disableMetrics); err != nil {
			return nil, s, err
		}
		if rc.poolSize, err = nonNegative(sec, "PoolSize", rc.poolSize); err != nil {
			return nil, s, err
		}
		if rc.minIdleConns, err = nonNegative(sec, "MinIdleConns", rc.minIdleConns); err != nil {
			return nil, s, err
		}
		n, err := sec.Int("MaxRetries", rc.maxRetries)
		if err != nil {
			return nil, s, err
		}
		if n < -1 {
			return nil, s, &discovery.KeyError{Key: sec.Path() + ":MaxRetries", Err: errors.New("must be -1 (no retries) or more")}
		}
		rc.maxRetries = n
	}
	return rc, s, nil
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

// rootCAs is the system pool plus the certificates in SSL_CERT_FILE and the
// files of the SSL_CERT_DIR directories, read through cfg. Go's own system
// pool reads those variables too, but only once per process and from the
// real environment; reading them here keeps configuration in one place.
func rootCAs(cfg *discovery.Config) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if f := strings.TrimSpace(cfg.String("SSL_CERT_FILE")); f != "" {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, &discovery.KeyError{Key: "SSL_CERT_FILE", Err: fmt.Errorf("reading the CA file: %w", err)}
		}
		if n := appendPEM(pool, data); n == 0 {
			return nil, &discovery.KeyError{Key: "SSL_CERT_FILE", Err: errors.New("the file holds no PEM certificate")}
		}
	}
	if dirs := strings.TrimSpace(cfg.String("SSL_CERT_DIR")); dirs != "" {
		for _, dir := range filepath.SplitList(dirs) {
			entries, err := os.ReadDir(dir)
			if err != nil {
				continue // as Go's loader does: a missing directory is not an error
			}
			for _, e := range entries {
				if e.IsDir() {
					continue
				}
				data, err := os.ReadFile(filepath.Join(dir, e.Name()))
				if err == nil {
					appendPEM(pool, data)
				}
			}
		}
	}
	return pool, nil
}

// appendPEM adds every certificate in data to pool and returns how many it
// added.
func appendPEM(pool *x509.CertPool, data []byte) int {
	n := 0
	for len(data) > 0 {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" || len(block.Headers) != 0 {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			continue
		}
		pool.AddCert(cert)
		n++
	}
	return n
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
// backoff, which UniversalOptions cannot carry.
func newUniversalClient(o *redis.UniversalOptions, backoff func(int) time.Duration) redis.UniversalClient {
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

// connectOrAbort pings until a server answers, trying connectRetry+1 times
// within connectTimeout each, as StackExchange.Redis does for
// abortConnect=true.
func connectOrAbort(ctx context.Context, rdb redis.UniversalClient, rc *redisConfig) error {
	var err error
	for attempt := 0; attempt <= rc.connectRetry; attempt++ {
		pctx := ctx
		cancel := context.CancelFunc(func() {})
		if rc.connectTimeout > 0 {
			pctx, cancel = context.WithTimeout(ctx, rc.connectTimeout)
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
// the client's own pool. It is tagged ready, not live, so that a Redis
// outage takes the instance out of rotation without restarting it. The
// probe's PING is neither traced nor measured by the client's
// instrumentation: probes run outside any request, and each would
// otherwise be a trace of its own.
func HealthCheck(name string, rdb redis.UniversalClient) health.Check {
	return health.Check{
		Name: "redis:" + name,
		Tags: []string{health.TagReady},
		Check: func(ctx context.Context) error {
			if err := rdb.Do(ctx, "ping", healthPing).Err(); err != nil {
				return fmt.Errorf("redis %q: %w", name, err)
			}
			return nil
		},
	}
}
