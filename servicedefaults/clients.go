package servicedefaults

import (
	"context"
	"fmt"
	"sync"

	"github.com/goaspire/goaspire/cqrs"
	"github.com/goaspire/goaspire/health"
)

// resources holds the clients the App opened by name, each opened once.
type resources struct {
	mu     sync.Mutex
	opened map[string]*opening // "{kind}/{name}"

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

// DB is DBContext with a background context: with
// Aspire:Npgsql:ConnectRetry:WaitOnOpen set, it waits for the database up
// to that long.
func (a *App) DB(name string) (*cqrs.DB, error) {
	return a.DBContext(context.Background(), name)
}

// DBContext returns the primary/replica database called name, opened on
// first use and shared afterwards: its primary is the connection
// Aspire:Npgsql:{name}:Primary, else the one called name, else
// "{name}-primary"; its replicas are Aspire:Npgsql:{name}:Replicas:Names,
// else every connection named "{name}-replica*" (see cqrs.LoadConfig). Reads
// through it go to healthy replicas, writes to the primary.
//
// The DB reports through the App's telemetry, registers a health check per
// node (primary down is Unhealthy, a replica down is Degraded; off with
// Aspire:Npgsql:DisableHealthChecks) and is closed by Shutdown. The
// database need not be up yet: the pools connect lazily and retry, unless
// Aspire:Npgsql:ConnectRetry:WaitOnOpen makes the open wait for it.
//
// ctx bounds the open, or the wait for another caller's open of the same
// name; opening one name never holds up opening another. Errors name the
// configuration key or connection at fault; once Shutdown has closed the
// clients they match ErrClosed.
func (a *App) DBContext(ctx context.Context, name string) (*cqrs.DB, error) {
	return openOnce(ctx, a, "database", name, func(ctx context.Context) (opened[*cqrs.DB], error) {
		c, err := cqrs.LoadConfig(a.cfg, name)
		if err != nil {
			return opened[*cqrs.DB]{}, err
		}
		c.TracerProvider, c.MeterProvider, c.Logger = a.tel.tp, a.tel.mp, a.componentLogger(scopeCQRS)
		db, err := cqrs.New(ctx, c)
		if err != nil {
			return opened[*cqrs.DB]{}, err
		}
		return opened[*cqrs.DB]{client: db, checks: db.HealthChecks(), close: func() error { db.Close(); return nil }}, nil
	})
}

// Postgres is PostgresContext with a background context.
func (a *App) Postgres(name string) (*cqrs.Pool, error) {
	return a.PostgresContext(context.Background(), name)
}

// PostgresContext returns the single pgx pool of the connection called
// name (ConnectionStrings:name, or Aspire 13's NAME_URI / NAME_HOST ...),
// opened on first use and shared afterwards, for a service with no
// read/write split. It reports through the App's telemetry, registers its
// health check and is closed by Shutdown. Use p.Pool where a
// *pgxpool.Pool is wanted. ctx bounds the open as for DBContext.
func (a *App) PostgresContext(ctx context.Context, name string) (*cqrs.Pool, error) {
	return openOnce(ctx, a, "postgres", name, func(ctx context.Context) (opened[*cqrs.Pool], error) {
		c, err := cqrs.LoadPoolConfig(a.cfg, name)
		if err != nil {
			return opened[*cqrs.Pool]{}, err
		}
		c.TracerProvider, c.MeterProvider, c.Logger = a.tel.tp, a.tel.mp, a.componentLogger(scopeCQRS)
		p, err := cqrs.NewPool(ctx, c)
		if err != nil {
			return opened[*cqrs.Pool]{}, err
		}
		return opened[*cqrs.Pool]{client: p, checks: p.HealthChecks(), close: func() error { p.Close(); return nil }}, nil
	})
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
