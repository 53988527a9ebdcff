package servicedefaults

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"

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
	client any // what an integration's open returned (see OpenClient)
	err    error
	// retry is set when the open failed because the opener's context
	// ended: a caller still waiting with a live context tries again.
	retry bool
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
// Errors are prefixed with kind and name, unless they name the connection
// (quoted) already, as the client packages' own errors do: a name appears
// once in an error.
func openOnce(ctx context.Context, a *App, kind, name string, open func(context.Context) (Opened[any], error)) (any, error) {
	id := kind + "/" + name
	wrap := func(err error) error {
		if strings.Contains(err.Error(), strconv.Quote(name)) {
			return err // the client's package named the connection already
		}
		return fmt.Errorf("servicedefaults: %s %q: %w", kind, name, err)
	}
	for {
		if a.opening.Err() != nil {
			return nil, wrap(errShutDown{})
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
				return nil, wrap(err)
			}
			return c, nil
		}
		a.res.mu.Unlock()
		select {
		case <-o.done:
			if o.err == nil {
				return o.client, nil
			}
			if o.retry && ctx.Err() == nil {
				continue
			}
			return nil, wrap(o.err)
		case <-ctx.Done():
			return nil, wrap(ctx.Err())
		}
	}
}

// openClient runs open for the opening o, publishes the outcome to the
// callers waiting on o, and returns it.
func openClient(ctx context.Context, a *App, kind, name string, o *opening, open func(context.Context) (Opened[any], error)) (client any, err error) {
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
		return nil, err
	}
	// Shutdown runs Close with its own context; an open that cannot be
	// kept (its checks refused, or Shutdown already past the hooks)
	// closes the client at once.
	hook := func(context.Context) error { return nil }
	if res.Close != nil {
		hook = res.Close
	}
	if err := a.registerChecks(res.Checks); err != nil {
		_ = hook(context.Background())
		return nil, err
	}
	if !a.addHook(fmt.Sprintf("closing %s %q", kind, name), hook) {
		_ = hook(context.Background())
		return nil, errShutDown{}
	}
	return res.Client, nil
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
