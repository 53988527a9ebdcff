package aspireredis_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/goaspire/goaspire/cache"
	"github.com/goaspire/goaspire/integrations/aspireredis"
	"github.com/goaspire/goaspire/servicedefaults"
	"github.com/goaspire/goaspire/servicedefaults/servicedefaultstest"
	"github.com/goaspire/goaspire/testserver"
)

// blackHole is a TCP endpoint that accepts connections and never answers,
// as a server behind a dropped route does. accepted receives once per
// connection (while there is room).
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

func (b *blackHole) addr() string { return b.ln.Addr().String() }

// pingUntilAnswered makes Client's open ping the server first and keep
// trying, a second at most each time, until one answers or the open's
// context ends (abortConnect=true with endless retries).
func pingUntilAnswered(c *cache.RedisConfig) {
	c.AbortConnect = true
	c.ConnectRetry = 1 << 30
	c.Options.ReadTimeout = time.Second
	c.Options.WriteTimeout = time.Second
}

// TestOpenDoesNotBlockOtherOpens: while a Redis that never answers is
// being opened with abortConnect, the App still opens another Redis and
// makes a cache on it; a second caller of the silent Redis, or a NewCache
// on it, waits for the first open but only as long as its own context;
// the first caller's context bounds the open itself; Shutdown ends an
// open still in progress, and later opens fail, with ErrClosed.
func TestOpenDoesNotBlockOtherOpens(t *testing.T) {
	hole, stuckHole := newBlackHole(t), newBlackHole(t)
	rs := testserver.NewRedis(t)
	app := servicedefaultstest.NewUnstarted(t, nil, map[string]string{
		"ConnectionStrings:silent": hole.addr(),
		"ConnectionStrings:stuck":  stuckHole.addr(),
		"ConnectionStrings:cache":  rs.ConnectionString(),
	})
	bg := context.Background()

	// The open of "stuck", with no way to end it but Shutdown.
	stuck := make(chan error, 1)
	go func() {
		_, err := aspireredis.Client(bg, app, "stuck", pingUntilAnswered)
		stuck <- err
	}()
	<-stuckHole.accepted // its first ping is waiting

	type result struct {
		what string
		err  error
	}
	others := make(chan result, 2)
	go func() {
		rdb, err := aspireredis.Client(bg, app, "cache")
		if err == nil {
			err = rdb.Ping(bg).Err()
		}
		others <- result{"Client", err}
	}()
	go func() {
		_, err := aspireredis.NewCache[product](bg, app, "cache", "product")
		others <- result{"NewCache", err}
	}()
	for range 2 {
		select {
		case r := <-others:
			if r.err != nil {
				t.Errorf("%s: %v", r.what, r.err)
			}
		case <-time.After(hangGuard):
			t.Fatal("opening Redis waited for another Redis open in progress")
		}
	}

	// The open of "silent" is bounded by its caller's context, and so is
	// a second caller waiting for it.
	ctx, cancel := context.WithCancel(bg)
	defer cancel()
	leader := make(chan error, 1)
	go func() {
		_, err := aspireredis.Client(ctx, app, "silent", pingUntilAnswered)
		leader <- err
	}()
	<-hole.accepted
	wctx, wcancel := context.WithCancel(bg)
	waiter := make(chan error, 1)
	go func() {
		_, err := aspireredis.Client(wctx, app, "silent", func(*cache.RedisConfig) {
			t.Error("a second caller opened the client being opened")
		})
		waiter <- err
	}()
	cctx, ccancel := context.WithCancel(bg)
	cacheWaiter := make(chan error, 1)
	go func() {
		_, err := aspireredis.NewCache[product](cctx, app, "silent", "product")
		cacheWaiter <- err
	}()
	wcancel()
	ccancel()
	for _, c := range []struct {
		what string
		ch   chan error
	}{{"waiting caller", waiter}, {"waiting NewCache", cacheWaiter}, {"opening caller", leader}} {
		select {
		case err := <-c.ch:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("%s: Client = %v, want context.Canceled", c.what, err)
			}
		case <-time.After(hangGuard):
			t.Fatalf("%s: Client ignored its context's cancellation", c.what)
		}
		cancel() // now the opener's
	}

	sctx, scancel := context.WithTimeout(bg, 10*time.Second)
	defer scancel()
	if err := app.Shutdown(sctx); err != nil {
		t.Errorf("Shutdown = %v", err)
	}
	select {
	case err := <-stuck:
		if !errors.Is(err, servicedefaults.ErrClosed) {
			t.Errorf("Client(stuck) after Shutdown = %v, want ErrClosed", err)
		}
	case <-time.After(hangGuard):
		t.Fatal("Shutdown did not end the open in progress")
	}
	if _, err := aspireredis.Client(bg, app, "other"); !errors.Is(err, servicedefaults.ErrClosed) {
		t.Errorf("Client after Shutdown = %v, want ErrClosed", err)
	}
}

// TestOpenOnceConcurrently: concurrent callers of one name share one
// client, and of concurrent NewCache calls for one cache exactly one makes
// it, the others being told it is already made.
func TestOpenOnceConcurrently(t *testing.T) {
	rs := testserver.NewRedis(t)
	app := servicedefaultstest.NewUnstarted(t, nil, map[string]string{"ConnectionStrings:cache": rs.ConnectionString()})
	const n = 8
	clients := make([]redis.UniversalClient, n)
	caches := make([]*cache.Cache[product], n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			c, err := aspireredis.Client(context.Background(), app, "cache")
			if err != nil {
				t.Error(err)
			}
			clients[i] = c
		})
		wg.Go(func() {
			caches[i], errs[i] = aspireredis.NewCache[product](context.Background(), app, "cache", "product")
		})
	}
	wg.Wait()
	for i := 1; i < n; i++ {
		if clients[i] != clients[0] {
			t.Fatalf("caller %d got another client", i)
		}
	}
	made := 0
	for i := range n {
		switch {
		case errs[i] == nil && caches[i] != nil:
			made++
		case errs[i] == nil || !strings.Contains(errs[i].Error(), "already made"):
			t.Errorf("NewCache %d = %v, %v; want the cache or an \"already made\" error", i, caches[i], errs[i])
		}
	}
	if made != 1 {
		t.Errorf("%d of %d concurrent NewCache calls made the cache, want 1", made, n)
	}
}
