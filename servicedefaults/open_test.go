package servicedefaults_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/goaspire/goaspire/cache"
	"github.com/goaspire/goaspire/servicedefaults"
	"github.com/goaspire/goaspire/testserver"
)

// blackHole is a TCP endpoint that accepts connections and never answers,
// as a database host behind a dropped route does. accepted receives once
// per connection.
type blackHole struct {
	ln       net.Listener
	accepted chan struct{}
	mu       sync.Mutex
	conns    []net.Conn
}

func newBlackHole(t *testing.T) *blackHole {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &blackHole{ln: ln, accepted: make(chan struct{}, 100)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.conns = append(b.conns, c)
			b.mu.Unlock()
			select {
			case b.accepted <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, c := range b.conns {
			c.Close()
		}
	})
	return b
}

func (b *blackHole) port() int { return b.ln.Addr().(*net.TCPAddr).Port }

// TestOpenDoesNotBlockOtherOpens: while a database that never answers is
// being opened with WaitOnOpen, the App still opens Redis and makes a
// cache on it; a second caller of the same database waits for the first
// open but only as long as its own context; the first caller's context
// bounds the open itself; Shutdown ends an open still in progress.
func TestOpenDoesNotBlockOtherOpens(t *testing.T) {
	hole, stuckHole := newBlackHole(t), newBlackHole(t)
	rs := testserver.NewRedis(t)
	app, _ := newApp(t, map[string]string{
		"ConnectionStrings__db":                    fmt.Sprintf("Host=127.0.0.1;Port=%d;Username=u;Password=p;Database=d;Timeout=60", hole.port()),
		"ConnectionStrings__stuck":                 fmt.Sprintf("Host=127.0.0.1;Port=%d;Username=u;Password=p;Database=d;Timeout=60", stuckHole.port()),
		"Aspire__Npgsql__ConnectRetry__WaitOnOpen": "10m",
		"ConnectionStrings__cache":                 rs.ConnectionString(),
	}, nil)

	// The open of "stuck", with no way to cancel it but Shutdown.
	stuck := make(chan error, 1)
	go func() {
		_, err := app.DB("stuck")
		stuck <- err
	}()
	<-stuckHole.accepted // its pool is connecting

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
			t.Fatal("opening Redis waited for the database open in progress")
		}
	}

	// The open of "db" is bounded by its caller's context, and so is a
	// second caller waiting for it.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	leader := make(chan error, 1)
	go func() {
		_, err := app.DBContext(ctx, "db")
		leader <- err
	}()
	<-hole.accepted
	wctx, wcancel := context.WithCancel(context.Background())
	waiter := make(chan error, 1)
	go func() {
		_, err := app.DBContext(wctx, "db")
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
				t.Errorf("%s: DBContext = %v, want context.Canceled", c.what, err)
			}
		case <-time.After(hangGuard):
			t.Fatalf("%s: DBContext ignored its context's cancellation", c.what)
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
