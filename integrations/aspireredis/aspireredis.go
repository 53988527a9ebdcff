// Package aspireredis is goaspire's Redis client integration, the
// counterpart of .NET Aspire's Aspire.StackExchange.Redis: it opens go-redis
// clients and two-tier caches (package cache) on a servicedefaults App,
// from the App's configuration, reporting through the App's telemetry and
// logger, checked by its health endpoints and closed by its Shutdown.
//
//	app, err := servicedefaults.Add(ctx, mux)
//	...
//	rdb, err := aspireredis.Client(ctx, app, "cache")
//	products, err := aspireredis.NewCache[Product](ctx, app, "cache", "product", func(o *cache.Options) {
//		o.TTL = 10 * time.Minute
//	})
//
// The connection called "cache" is ConnectionStrings:cache (a
// StackExchange.Redis string or a redis:// URL), or Aspire 13's CACHE_URI or
// CACHE_HOST, CACHE_PORT ...; the settings are read from
// Aspire:StackExchange:Redis and Aspire:StackExchange:Redis:cache (see
// cache.LoadRedisConfig).
//
// # Configuring in code
//
// Client and NewCache take optional configure functions, as .NET's
// AddRedisClient takes configureSettings: they run once, when the name is
// first opened, on the configuration already read and already carrying the
// App's telemetry and logger, and before the client or cache is made. They
// set what configuration cannot express: go-redis options
// (RedisConfig.Options: pool sizes, OnConnect, a Dialer ...), the cache's
// codec, a logger of your own. Later Client calls for the same name share
// the first client whatever they pass; a cache is made once (see
// NewCache).
//
// # Tokens instead of a password
//
// Set RedisConfig.Credentials in configure to authenticate with
// credentials that expire, such as Microsoft Entra ID tokens
// (integrations/aspireazure's RedisAuth sets it for Azure Managed Redis):
// the client fetches them before its first connection, refreshes them
// before they expire and re-authenticates its live connections with AUTH,
// without dropping them; the readiness check reports a failing refresh
// (Degraded while the credentials held are valid). The client, the caches
// made on it and the redisevents subscriptions on it all use them. The
// pub/sub connections (the caches' invalidation subscription,
// redisevents.Subscribe and PSubscribe), which go-redis does not
// re-authenticate, move at each refresh to a new connection made with the
// new credentials before the old one is closed, without losing or
// repeating a message (on a cluster client they reconnect when the server
// closes them instead). The App's Shutdown stops the refresh.
//
// # Health
//
// Each connection registers the readiness check "redis:{name}". When Redis
// does not answer it fails Degraded (/health still answers 200) while the
// connection is used only by caches made with NewCache, which keep serving
// from L1, fail-safe values and their loaders, and Unhealthy (503) once
// Client has returned it. Aspire:StackExchange:Redis[:{name}]:HealthCheckFailureStatus
// (Unhealthy or Degraded, any case) or RedisConfig.HealthCheckFailureStatus
// set in configure fixes the status whatever the uses.
//
// # go-redis's own logger
//
// go-redis logs failed dials and Sentinel failovers through one
// process-wide logger, to stderr. When an App that installs the globals
// (not made WithoutGlobals) opens a Redis client through this package, that
// logger is pointed at the App's logger (see cache.RedisLogger), under the
// instrumentation scope github.com/goaspire/goaspire/cache. go-redis reads
// its logger without synchronization, so it is replaced once per process,
// by the first such open, before that client exists; later opens only
// change where it forwards to (the App that opened a client last, as the
// OpenTelemetry globals follow the last App). An App made WithoutGlobals
// leaves it alone: to route it then, call
// redis.SetLogger(cache.RedisLogger{Logger: ...}) yourself, before any
// Redis client exists.
package aspireredis

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/redis/go-redis/v9"

	"github.com/goaspire/goaspire/cache"
	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/servicedefaults"
)

// scope is the instrumentation scope (the dashboard's Category) of the
// records of the clients and caches this package opens: package cache's.
const scope = "github.com/goaspire/goaspire/cache"

// Client returns the go-redis client of the connection called name on h,
// opened on first use and shared afterwards, so every cache made on it
// shares one pub/sub connection.
//
// The first call reads the connection with cache.LoadRedisConfig from
// h.Config(), sets the App's tracer and meter providers and its logger (scope
// github.com/goaspire/goaspire/cache) on it, runs configure in order, and
// opens the client with cache.NewRedis. Redis need not be up: the client
// reconnects with backoff, unless abortConnect=true (or
// RedisConfig.AbortConnect) makes the open ping it first. The client
// reports through the App's telemetry, registers its readiness check
// ("redis:{name}"; none with Aspire:StackExchange:Redis:DisableHealthChecks
// or RedisConfig.DisableHealthChecks) and is closed by the App's Shutdown,
// after the caches made on it.
//
// The check's status when Redis does not answer is
// Aspire:StackExchange:Redis[:{name}]:HealthCheckFailureStatus
// (RedisConfig.HealthCheckFailureStatus in configure): Unhealthy (/health
// answers 503) or Degraded (200). Unset, it is Unhealthy once Client has
// returned the connection, as a service that uses Redis directly cannot
// serve without it, and Degraded while the connection is used only by
// caches made with NewCache, which keep serving from their L1, their
// fail-safe values and their loaders: a Redis outage then does not take
// every instance out of rotation. Calling Client counts as a direct use,
// even to configure a client used only by caches: set the status to
// Degraded in configure then.
//
// Later calls, concurrent ones included, return that client and ignore
// their configure. ctx bounds the open, or the wait for another caller's
// open of the same name; opening one name never holds up opening another.
// Errors name the configuration key at fault (errors.As finds a
// *discovery.KeyError) and never hold the password; once Shutdown has
// closed the clients they match servicedefaults.ErrClosed.
func Client(ctx context.Context, h servicedefaults.Host, name string, configure ...func(*cache.RedisConfig)) (redis.UniversalClient, error) {
	c, err := open(ctx, h, name, configure)
	if err != nil {
		return nil, err
	}
	c.direct.Store(true)
	return c.rdb, nil
}

// conn is the client of one Redis connection of an App, with what its
// readiness check needs to know of its uses.
type conn struct {
	rdb redis.UniversalClient
	// direct is set once Client returned rdb: the service uses Redis
	// itself, not only through caches that survive its outage.
	direct atomic.Bool
}

// open opens the connection called name once per App (see Client).
func open(ctx context.Context, h servicedefaults.Host, name string, configure []func(*cache.RedisConfig)) (*conn, error) {
	return servicedefaults.OpenClient(ctx, h, "redis", name, func(ctx context.Context) (servicedefaults.Opened[*conn], error) {
		c, err := cache.LoadRedisConfig(h.Config(), name)
		if err != nil {
			return servicedefaults.Opened[*conn]{}, err
		}
		c.TracerProvider, c.MeterProvider, c.Logger = h.TracerProvider(), h.MeterProvider(), h.ComponentLogger(scope)
		for _, f := range configure {
			if f != nil {
				f(c)
			}
		}
		routeRedisLogger(h)
		rdb, err := cache.NewRedis(ctx, c)
		if err != nil {
			return servicedefaults.Opened[*conn]{}, err
		}
		cn := &conn{rdb: rdb}
		var checks []health.Check
		if !c.DisableHealthChecks {
			checks = append(checks, cn.healthCheck(c.Name, c.HealthCheckFailureStatus))
		}
		return servicedefaults.Opened[*conn]{
			Client: cn,
			Checks: checks,
			Close: func(context.Context) error {
				err := rdb.Close()
				if p := cache.CredentialsProviderOf(rdb); p != nil {
					_ = p.Close()
				}
				return err
			},
		}, nil
	})
}

// healthCheck is cache.HealthCheck reporting status when it fails, or,
// when status is empty, Degraded while only caches use the connection and
// Unhealthy once Client has returned it.
func (cn *conn) healthCheck(name string, status health.Status) health.Check {
	chk := cache.HealthCheck(name, cn.rdb)
	if status != "" {
		return health.WithFailureStatus(chk, status)
	}
	ping := chk.Check
	chk.FailureStatus = health.Unhealthy // also while no run has completed yet
	chk.Check = func(ctx context.Context) error {
		err := ping(ctx)
		if err != nil && !cn.direct.Load() {
			return health.WithStatus(health.Degraded, err)
		}
		return err
	}
	return chk
}

// NewCache makes the two-tier cache of T values called cacheName over the
// client of the Redis connection redisName (see Client, which opens it with
// no configure: to configure the client, call Client first), and has the
// App's Shutdown close it before that client.
//
// configure runs on Options already holding the App's tracer and meter
// providers and its logger (scope github.com/goaspire/goaspire/cache), so
// what it sets wins, those included; leave a field alone to keep the App's
// or the cache's default. Set the TTLs, L1 bounds, KeyPrefix or Codec there.
//
// Each cacheName may be made once per Redis connection: make the cache at
// startup and share it. A second call for the same pair, even with another
// T, returns an error; a call that failed may be made again. ctx bounds
// opening the Redis client; errors match servicedefaults.ErrClosed once
// Shutdown has closed the clients.
//
// NewCache is a function, not a method, because Go methods cannot have
// type parameters.
func NewCache[T any](ctx context.Context, h servicedefaults.Host, redisName, cacheName string, configure ...func(*cache.Options)) (*cache.Cache[T], error) {
	cn, err := open(ctx, h, redisName, nil)
	if err != nil {
		return nil, err
	}
	rdb := cn.rdb
	// The cache is a client of its own, once per name, closed at Shutdown
	// before rdb (opened after it). Being handed a cache another call made
	// means this one is a second call; typed as any, since that cache may
	// hold another T.
	made := false
	c, err := servicedefaults.OpenClient(ctx, h, "cache", redisName+"/"+cacheName, func(context.Context) (servicedefaults.Opened[any], error) {
		opts := cache.Options{TracerProvider: h.TracerProvider(), MeterProvider: h.MeterProvider(), Logger: h.ComponentLogger(scope)}
		for _, f := range configure {
			if f != nil {
				f(&opts)
			}
		}
		c, err := cache.New[T](rdb, cacheName, opts)
		if err != nil {
			return servicedefaults.Opened[any]{}, err
		}
		made = true
		return servicedefaults.Opened[any]{Client: c, Close: func(context.Context) error { return c.Close() }}, nil
	})
	if err != nil {
		return nil, err
	}
	if !made {
		return nil, fmt.Errorf("aspireredis: cache %q on redis %q already made: make it once and share it", cacheName, redisName)
	}
	return c.(*cache.Cache[T]), nil
}
