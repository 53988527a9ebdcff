package aspirepostgres_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/goaspire/goaspire/integrations/aspirepostgres"
	"github.com/goaspire/goaspire/servicedefaults"
	"github.com/goaspire/goaspire/servicedefaults/servicedefaultstest"
	"github.com/goaspire/goaspire/testserver"
)

// TestOpenDoesNotBlockOtherOpens: while a database that never answers is
// being opened with WaitOnOpen, the App still opens a Pool and a DB of
// another name; a second caller of the same database waits for the first
// open but only as long as its own context; the first caller's context
// bounds the open itself; Shutdown ends an open still in progress.
func TestOpenDoesNotBlockOtherOpens(t *testing.T) {
	pg := testserver.NewPostgres(t)
	// Proxies that accept connections and never answer, as a database
	// host behind a dropped route does.
	hole := testserver.NewFaultProxy(t, "127.0.0.1:1")
	hole.Set(testserver.Blackhole)
	stuckHole := testserver.NewFaultProxy(t, "127.0.0.1:1")
	stuckHole.Set(testserver.Blackhole)
	app := servicedefaultstest.NewUnstarted(t, nil, map[string]string{
		"ConnectionStrings__db":                    "Host=127.0.0.1;Port=" + itoa(hole.Port()) + ";Username=u;Password=p;Database=d;Timeout=60",
		"ConnectionStrings__stuck":                 "Host=127.0.0.1;Port=" + itoa(stuckHole.Port()) + ";Username=u;Password=p;Database=d;Timeout=60",
		"ConnectionStrings__ok":                    pg.ConnectionString(),
		"Aspire__Npgsql__ConnectRetry__WaitOnOpen": "10m",
	})

	// The open of "stuck", with no way to cancel it but Shutdown.
	stuck := make(chan error, 1)
	go func() {
		_, err := aspirepostgres.DB(context.Background(), app, "stuck")
		stuck <- err
	}()
	waitFor(t, "the stuck pool to connect", func() bool { return stuckHole.Conns() > 0 })

	type result struct {
		what string
		err  error
	}
	others := make(chan result, 2)
	go func() {
		p, err := aspirepostgres.Pool(context.Background(), app, "ok")
		if err == nil {
			err = p.Ping(context.Background())
		}
		others <- result{"Pool", err}
	}()
	go func() {
		db, err := aspirepostgres.DB(context.Background(), app, "ok")
		if err == nil {
			_, err = db.Exec(context.Background(), "SELECT 1")
		}
		others <- result{"DB", err}
	}()
	for range 2 {
		select {
		case r := <-others:
			if r.err != nil {
				t.Errorf("%s: %v", r.what, r.err)
			}
		case <-time.After(hangGuard):
			t.Fatal("opening another name waited for the database open in progress")
		}
	}

	// The open of "db" is bounded by its caller's context, and so is a
	// second caller waiting for it.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	leader := make(chan error, 1)
	go func() {
		_, err := aspirepostgres.DB(ctx, app, "db")
		leader <- err
	}()
	waitFor(t, "the db pool to connect", func() bool { return hole.Conns() > 0 })
	wctx, wcancel := context.WithCancel(context.Background())
	waiter := make(chan error, 1)
	go func() {
		_, err := aspirepostgres.DB(wctx, app, "db")
		waiter <- err
	}()
	wcancel()
	for _, c := range []struct {
		what string
		ch   chan error
	}{{"waiting caller", waiter}, {"opening caller", leader}} {
		select {
		case err := <-c.ch:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("%s: DB = %v, want context.Canceled", c.what, err)
			}
		case <-time.After(hangGuard):
			t.Fatalf("%s: DB ignored its context's cancellation", c.what)
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
			t.Errorf("DB(stuck) after Shutdown = %v, want ErrClosed", err)
		}
	case <-time.After(hangGuard):
		t.Fatal("Shutdown did not end the open in progress")
	}
}
