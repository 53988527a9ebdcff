package servicedefaults

import (
	"context"
	"fmt"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/goaspire/goaspire/cache"
	"github.com/goaspire/goaspire/health"
)

// resources holds the clients the App opened by name, each opened once.
type resources struct {
	mu     sync.Mutex
	opened map[string]*opening // "{kind}/{name}"
	caches map[string]bool     // "{redis}/{cache}" names made by NewCache

	checksMu sync.Mutex // serializes registerChecks
}

// opening is one client being opened, or opened. done is closed once
// client or err is set.
type opening struct {
	done   chan struct{}
	client any // *cqrs.DB, *cqrs.Pool or redis.UniversalClient
	err    error
	// retry is set when the open failed because the opener's context
	// ended: a caller still waiting with a live context tries again.
	retry bool
}

// opened is what openOnce needs from a freshly opened client.
type opened[T any] struct {
	client T
	checks []health.Check
	close  func() error
	// drain, if set, is what Shutdown calls instead of close: a close
	// that takes Shutdown's context (draining pending work within it).
	drain func(context.Context) error
}

// errShutDown is the error of an open asked for or finished once
// Shutdown has closed the clients.
type errShutDown struct{}

func (errShutDown) Error() string { return "the app is shut down" }

func (errShutDown) Is(target error) bool { return target == ErrClosed }

// openOnce returns the client of kind called name, opening it with open
// on first use: its health checks are registered and its close runs at
// Shutdown. Each name is opened once, by the first caller, without holding
// a lock shared with other names; concurrent callers of the same name
// wait for that open or for their own ctx. A failed open is not
// remembered: the next call tries again.
//
// The opener's context ends with ctx or when Shutdown closes the clients.
func openOnce[T any](ctx context.Context, a *App, kind, name string, open func(context.Context) (opened[T], error)) (T, error) {
	id := kind + "/" + name
	var zero T
	wrap := func(err error) error { return fmt.Errorf("servicedefaults: %s %q: %w", kind, name, err) }
	for {
		if a.opening.Err() != nil {
			return zero, wrap(errShutDown{})
		}
		a.res.mu.Lock()
		o, ok := a.res.opened[id]
		if !ok {
			o = &opening{done: make(chan struct{})}
			if a.res.opened == nil {
				a.res.opened = map[string]*opening{}
			}
			a.res.opened[id] = o
			a.res.mu.Unlock()
			c, err := openClient(ctx, a, kind, name, o, open)
			if err != nil {
				return zero, wrap(err)
			}
			return c, nil
		}
		a.res.mu.Unlock()
		select {
		case <-o.done:
			if o.err == nil {
				return o.client.(T), nil
			}
			if o.retry && ctx.Err() == nil {
				continue
			}
			return zero, wrap(o.err)
		case <-ctx.Done():
			return zero, wrap(ctx.Err())
		}
	}
}

// openClient runs open for the opening o, publishes the outcome to the
// callers waiting on o, and returns it.
func openClient[T any](ctx context.Context, a *App, kind, name string, o *opening, open func(context.Context) (opened[T], error)) (client T, err error) {
	octx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(a.opening, cancel)
	finished := false
	defer func() {
		stop()
		cancel()
		p := recover()
		if p != nil || !finished {
			err = fmt.Errorf("panic opening: %v", p) // for the waiters; p goes on up
		}
		a.res.mu.Lock()
		if err != nil {
			delete(a.res.opened, kind+"/"+name)
			o.err, o.retry = err, ctx.Err() != nil
		} else {
			o.client = client
		}
		a.res.mu.Unlock()
		close(o.done)
		if p != nil {
			panic(p)
		}
	}()

	res, err := open(octx)
	finished = true
	if err != nil {
		if a.opening.Err() != nil {
			err = errShutDown{}
		}
		return client, err
	}
	if err := a.registerChecks(res.checks); err != nil {
		_ = res.close()
		return client, err
	}
	closeName := fmt.Sprintf("closing %s %q", kind, name)
	hook := func(context.Context) error { return res.close() }
	if res.drain != nil {
		hook = res.drain
	}
	if !a.addHook(closeName, hook) {
		_ = res.close()
		return client, errShutDown{}
	}
	return res.client, nil
}

// registerChecks registers the checks whose names are not registered yet:
// a connection used both by a DB and as a plain pool is checked once.
func (a *App) registerChecks(checks []health.Check) error {
	a.res.checksMu.Lock()
	defer a.res.checksMu.Unlock()
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

// Redis is RedisContext with a background context.
func (a *App) Redis(name string) (redis.UniversalClient, error) {
	return a.RedisContext(context.Background(), name)
}

// RedisContext returns the go-redis client of the connection called name
// (ConnectionStrings:name in StackExchange.Redis form or a redis:// URL,
// or Aspire 13's NAME_URI / NAME_HOST ...; settings from
// Aspire:StackExchange:Redis and Aspire:StackExchange:Redis:{name}),
// opened on first use and shared afterwards, so every cache on it shares
// one pub/sub connection. Redis need not be up: the client reconnects with
// backoff, unless abortConnect=true makes the open ping it first. It
// reports through the App's telemetry, registers its health check (off
// with Aspire:StackExchange:Redis:DisableHealthChecks) and is closed by
// Shutdown, after the caches made on it. ctx bounds the open as for
// DBContext.
func (a *App) RedisContext(ctx context.Context, name string) (redis.UniversalClient, error) {
	return openOnce(ctx, a, "redis", name, func(ctx context.Context) (opened[redis.UniversalClient], error) {
		c, err := cache.LoadRedisConfig(a.cfg, name)
		if err != nil {
			return opened[redis.UniversalClient]{}, err
		}
		c.TracerProvider, c.MeterProvider, c.Logger = a.tel.tp, a.tel.mp, a.componentLogger(scopeCache)
		rdb, err := cache.NewRedis(ctx, c)
		if err != nil {
			return opened[redis.UniversalClient]{}, err
		}
		var checks []health.Check
		if !c.DisableHealthChecks {
			checks = append(checks, cache.HealthCheck(c.Name, rdb))
		}
		return opened[redis.UniversalClient]{client: rdb, checks: checks, close: rdb.Close}, nil
	})
}

// NewCache is NewCacheContext with a background context.
func NewCache[T any](app *App, redisName, cacheName string, opts cache.Options) (*cache.Cache[T], error) {
	return NewCacheContext[T](context.Background(), app, redisName, cacheName, opts)
}

// NewCacheContext makes a two-tier cache of T values called cacheName over
// the App's Redis client redisName (see App.RedisContext; ctx bounds
// opening it), reporting through the App's telemetry and logger unless
// opts names its own, and closed by Shutdown before the client.
//
// It is a function, not a method, because Go methods cannot have type
// parameters. Each cacheName may be made once per Redis connection.
func NewCacheContext[T any](ctx context.Context, app *App, redisName, cacheName string, opts cache.Options) (*cache.Cache[T], error) {
	rdb, err := app.RedisContext(ctx, redisName)
	if err != nil {
		return nil, err
	}
	id := redisName + "/" + cacheName
	app.res.mu.Lock()
	if app.res.caches[id] {
		app.res.mu.Unlock()
		return nil, fmt.Errorf("servicedefaults: cache %q on redis %q already made: make it once and share it", cacheName, redisName)
	}
	if app.res.caches == nil {
		app.res.caches = map[string]bool{}
	}
	app.res.caches[id] = true
	app.res.mu.Unlock()
	forget := func() {
		app.res.mu.Lock()
		delete(app.res.caches, id)
		app.res.mu.Unlock()
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
		forget()
		return nil, fmt.Errorf("servicedefaults: cache %q: %w", cacheName, err)
	}
	if !app.addHook(fmt.Sprintf("closing cache %q", cacheName), func(context.Context) error { return c.Close() }) {
		_ = c.Close()
		return nil, fmt.Errorf("servicedefaults: cache %q: %w", cacheName, errShutDown{})
	}
	return c, nil
}
