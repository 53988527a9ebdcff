package servicedefaults

import (
	"context"
	"fmt"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/goaspire/goaspire/cache"
	"github.com/goaspire/goaspire/cqrs"
	"github.com/goaspire/goaspire/health"
)

// resources holds the clients the App opened by name, each opened once.
type resources struct {
	mu     sync.Mutex
	opened map[string]any  // "{kind}/{name}" -> *cqrs.DB, *cqrs.Pool or redis.UniversalClient
	caches map[string]bool // "{redis}/{cache}" names made by NewCache
}

// opened is what openOnce needs from a freshly opened client.
type opened[T any] struct {
	client T
	checks []health.Check
	close  func() error
}

// openOnce returns the client of kind called name, opening it with open
// on first use: its health checks are registered and its close runs at
// Shutdown. The caller holds a.res.mu.
func openOnce[T any](a *App, kind, name string, open func() (opened[T], error)) (T, error) {
	id := kind + "/" + name
	if c, ok := a.res.opened[id]; ok {
		return c.(T), nil
	}
	var zero T
	o, err := open()
	if err != nil {
		return zero, fmt.Errorf("servicedefaults: %s %q: %w", kind, name, err)
	}
	if err := a.registerChecks(o.checks); err != nil {
		o.close()
		return zero, fmt.Errorf("servicedefaults: %s %q: %w", kind, name, err)
	}
	if a.res.opened == nil {
		a.res.opened = map[string]any{}
	}
	a.res.opened[id] = o.client
	a.OnShutdown(func(context.Context) error { return o.close() })
	return o.client, nil
}

// DB returns the primary/replica database called name, opened on first use
// and shared afterwards: its primary is the connection
// Aspire:Npgsql:{name}:Primary, else the one called name, else
// "{name}-primary"; its replicas are Aspire:Npgsql:{name}:Replicas:Names,
// else every connection named "{name}-replica*" (see cqrs.OpenDB). Reads
// through it go to healthy replicas, writes to the primary.
//
// The DB reports through the App's telemetry, registers a health check per
// node (primary down is Unhealthy, a replica down is Degraded; off with
// Aspire:Npgsql:DisableHealthChecks) and is closed by Shutdown. The
// database need not be up yet: the pools connect lazily and retry.
// Errors name the configuration key or connection at fault.
func (a *App) DB(name string) (*cqrs.DB, error) {
	a.res.mu.Lock()
	defer a.res.mu.Unlock()
	return openOnce(a, "database", name, func() (opened[*cqrs.DB], error) {
		db, err := cqrs.OpenDB(context.Background(), a.cfg, name, a.cqrsOptions()...)
		if err != nil {
			return opened[*cqrs.DB]{}, err
		}
		return opened[*cqrs.DB]{db, db.HealthChecks(), func() error { db.Close(); return nil }}, nil
	})
}

// Postgres returns the single pgx pool of the connection called name
// (ConnectionStrings:name, or Aspire 13's NAME_URI / NAME_HOST ...),
// opened on first use and shared afterwards, for a service with no
// read/write split. It reports through the App's telemetry, registers its
// health check and is closed by Shutdown. Use p.Pool where a
// *pgxpool.Pool is wanted.
func (a *App) Postgres(name string) (*cqrs.Pool, error) {
	a.res.mu.Lock()
	defer a.res.mu.Unlock()
	return openOnce(a, "postgres", name, func() (opened[*cqrs.Pool], error) {
		p, err := cqrs.OpenPool(context.Background(), a.cfg, name, a.cqrsOptions()...)
		if err != nil {
			return opened[*cqrs.Pool]{}, err
		}
		return opened[*cqrs.Pool]{p, p.HealthChecks(), func() error { p.Close(); return nil }}, nil
	})
}

// registerChecks registers the checks whose names are not registered yet:
// a connection used both by a DB and as a plain pool is checked once.
func (a *App) registerChecks(checks []health.Check) error {
	have := map[string]bool{}
	for _, c := range a.health.Checks() {
		have[c.Name] = true
	}
	var add []health.Check
	for _, c := range checks {
		if !have[c.Name] {
			add = append(add, c)
		}
	}
	return a.health.Register(add...)
}

func (a *App) cqrsOptions() []cqrs.Option {
	return []cqrs.Option{
		cqrs.WithTracerProvider(a.tel.tp),
		cqrs.WithMeterProvider(a.tel.mp),
		cqrs.WithLogger(a.componentLogger(scopeCQRS)),
	}
}

// Redis returns the go-redis client of the connection called name
// (ConnectionStrings:name in StackExchange.Redis form or a redis:// URL,
// or Aspire 13's NAME_URI / NAME_HOST ...; settings from
// Aspire:StackExchange:Redis and Aspire:StackExchange:Redis:{name}),
// opened on first use and shared afterwards, so every cache on it shares
// one pub/sub connection. Redis need not be up: the client reconnects with
// backoff. It reports through the App's telemetry, registers its health
// check (off with Aspire:StackExchange:Redis:DisableHealthChecks) and is
// closed by Shutdown, after the caches made on it.
func (a *App) Redis(name string) (redis.UniversalClient, error) {
	a.res.mu.Lock()
	defer a.res.mu.Unlock()
	return a.redisLocked(name)
}

func (a *App) redisLocked(name string) (redis.UniversalClient, error) {
	return openOnce(a, "redis", name, func() (opened[redis.UniversalClient], error) {
		var checks []health.Check
		c, err := cache.OpenRedis(context.Background(), a.cfg, name,
			cache.WithTracerProvider(a.tel.tp),
			cache.WithMeterProvider(a.tel.mp),
			cache.WithLogger(a.componentLogger(scopeCache)),
			cache.WithHealthChecks(func(c health.Check) { checks = append(checks, c) }),
		)
		if err != nil {
			return opened[redis.UniversalClient]{}, err
		}
		return opened[redis.UniversalClient]{c, checks, c.Close}, nil
	})
}

// NewCache makes a two-tier cache of T values called cacheName over the
// App's Redis client redisName (see App.Redis), reporting through the
// App's telemetry and logger unless opts names its own, and closed by
// Shutdown before the client (so writes queued during a Redis outage
// still get their chance to reach it). See package cache for the options.
//
// It is a function, not a method, because Go methods cannot have type
// parameters. Each cacheName may be made once per Redis connection.
func NewCache[T any](app *App, redisName, cacheName string, opts cache.Options) (*cache.Cache[T], error) {
	app.res.mu.Lock()
	defer app.res.mu.Unlock()
	rdb, err := app.redisLocked(redisName)
	if err != nil {
		return nil, err
	}
	id := redisName + "/" + cacheName
	if app.res.caches[id] {
		return nil, fmt.Errorf("servicedefaults: cache %q on redis %q already made: make it once and share it", cacheName, redisName)
	}
	if opts.TracerProvider == nil {
		opts.TracerProvider = app.tel.tp
	}
	if opts.MeterProvider == nil {
		opts.MeterProvider = app.tel.mp
	}
	if opts.Logger == nil {
		opts.Logger = app.componentLogger(scopeCache)
	}
	c, err := cache.New[T](rdb, cacheName, opts)
	if err != nil {
		return nil, fmt.Errorf("servicedefaults: cache %q: %w", cacheName, err)
	}
	if app.res.caches == nil {
		app.res.caches = map[string]bool{}
	}
	app.res.caches[id] = true
	app.OnShutdown(func(context.Context) error { return c.Close() })
	return c, nil
}
