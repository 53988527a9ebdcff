package servicedefaults_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/goaspire/goaspire/cache"
	"github.com/goaspire/goaspire/servicedefaults"
	"github.com/goaspire/goaspire/testserver"
)

// openStuck opens the client of kind "stuck" called name through
// OpenClient with an open that never finishes on its own, as a database
// behind a dropped route with WaitOnOpen: it signals started, then
// returns when its context ends.
func openStuck(ctx context.Context, app *servicedefaults.App, name string, started chan<- struct{}) error {
	_, err := servicedefaults.OpenClient(ctx, app, "stuck", name, func(ctx context.Context) (servicedefaults.Opened[int], error) {
		started <- struct{}{}
		<-ctx.Done()
		return servicedefaults.Opened[int]{}, ctx.Err()
	})
	return err
}

// TestOpenDoesNotBlockOtherOpens: while a client that never answers is
// being opened, the App still opens Redis and makes a cache on it; a
// second caller of the same client waits for the first open but only as
// long as its own context; the first caller's context bounds the open
// itself; Shutdown ends an open still in progress.
func TestOpenDoesNotBlockOtherOpens(t *testing.T) {
	rs := testserver.NewRedis(t)
	app, _ := newApp(t, map[string]string{
		"ConnectionStrings__cache": rs.ConnectionString(),
	}, nil)

	// The open of "stuck", with no way to cancel it but Shutdown.
	stuck := make(chan error, 1)
	stuckStarted := make(chan struct{}, 1)
	go func() { stuck <- openStuck(context.Background(), app, "stuck", stuckStarted) }()
	<-stuckStarted

	type result struct {
		what string
		err  error
	}
	others := make(chan result, 2)
	go func() {
		rdb, err := app.Redis("cache")
		if err == nil {
			err = rdb.Ping(context.Background()).Err()
		}
		others <- result{"Redis", err}
	}()
	go func() {
		_, err := servicedefaults.NewCache[product](app, "cache", "product", cache.Options{})
		others <- result{"NewCache", err}
	}()
	for range 2 {
		select {
		case r := <-others:
			if r.err != nil {
				t.Errorf("%s: %v", r.what, r.err)
			}
		case <-time.After(hangGuard):
			t.Fatal("opening Redis waited for the open in progress")
		}
	}

	// The open of "db" is bounded by its caller's context, and so is a
	// second caller waiting for it (whose open never starts).
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	leader := make(chan error, 1)
	started := make(chan struct{}, 2)
	go func() { leader <- openStuck(ctx, app, "db", started) }()
	<-started
	wctx, wcancel := context.WithCancel(context.Background())
	waiter := make(chan error, 1)
	go func() { waiter <- openStuck(wctx, app, "db", started) }()
	wcancel()
	for _, c := range []struct {
		what string
		ch   chan error
	}{{"waiting caller", waiter}, {"opening caller", leader}} {
		select {
		case err := <-c.ch:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("%s: OpenClient = %v, want context.Canceled", c.what, err)
			}
		case <-time.After(hangGuard):
			t.Fatalf("%s: OpenClient ignored its context's cancellation", c.what)
		}
		cancel() // now the opener's
	}

	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	if err := app.Shutdown(sctx); err != nil {
		t.Errorf("Shutdown = %v", err)
	}
	select {
	case err := <-stuck:
		if !errors.Is(err, servicedefaults.ErrClosed) {
			t.Errorf("OpenClient(stuck) after Shutdown = %v, want ErrClosed", err)
		}
	case <-time.After(hangGuard):
		t.Fatal("Shutdown did not end the open in progress")
	}
	if _, err := app.Redis("other"); !errors.Is(err, servicedefaults.ErrClosed) {
		t.Errorf("Redis after Shutdown = %v, want ErrClosed", err)
	}
}

// TestOpenOnceConcurrently: concurrent callers of one name share one
// client.
func TestOpenOnceConcurrently(t *testing.T) {
	rs := testserver.NewRedis(t)
	app, _ := newApp(t, map[string]string{"ConnectionStrings__cache": rs.ConnectionString()}, nil)
	const n = 8
	clients := make([]any, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			c, err := app.Redis("cache")
			if err != nil {
				t.Error(err)
			}
			clients[i] = c
		})
	}
	wg.Wait()
	for i := 1; i < n; i++ {
		if clients[i] != clients[0] {
			t.Fatalf("caller %d got another client", i)
		}
	}
}
