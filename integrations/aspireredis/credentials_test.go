package aspireredis_test

import (
	"context"
	"crypto/rand"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/goaspire/goaspire/cache"
	"github.com/goaspire/goaspire/integrations/aspireredis"
	"github.com/goaspire/goaspire/messaging/redisevents"
	"github.com/goaspire/goaspire/servicedefaults/servicedefaultstest"
	"github.com/goaspire/goaspire/testserver"
)

// tokenIssuer stands for an identity provider: each call issues a new
// token for the ACL user "app" of srv, valid for lifetime, and adds it to
// the user's passwords (through admin, the default user), as Azure's
// Redis accepts any valid token of the identity. wrongFrom, when set,
// makes calls from that number on return tokens the server does not know.
type tokenIssuer struct {
	srv       *testserver.Redis
	admin     *redis.Client
	lifetime  time.Duration
	wrongFrom int
	mu        sync.Mutex
	issued    []string
	fail      atomic.Bool
}

func newTokenIssuer(t *testing.T, srv *testserver.Redis, lifetime time.Duration) *tokenIssuer {
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr(), Password: srv.Password(), TLSConfig: srv.TLSConfig()})
	t.Cleanup(func() { _ = admin.Close() })
	return &tokenIssuer{srv: srv, admin: admin, lifetime: lifetime}
}

func (ti *tokenIssuer) fetch(ctx context.Context) (cache.RedisCredentials, error) {
	if ti.fail.Load() {
		return cache.RedisCredentials{}, errors.New("identity endpoint: 503 Service Unavailable")
	}
	ti.mu.Lock()
	defer ti.mu.Unlock()
	tok := "RedisTok3n" + strconv.Itoa(len(ti.issued)+1) + "Leak" + rand.Text()
	if ti.wrongFrom == 0 || len(ti.issued)+1 < ti.wrongFrom {
		if err := ti.admin.Do(ctx, "ACL", "SETUSER", "app", "on", ">"+tok, "~*", "&*", "+@all").Err(); err != nil {
			return cache.RedisCredentials{}, err
		}
	}
	ti.issued = append(ti.issued, tok)
	return cache.RedisCredentials{Username: "app", Password: tok, ExpiresOn: time.Now().Add(ti.lifetime)}, nil
}

func (ti *tokenIssuer) count() int {
	ti.mu.Lock()
	defer ti.mu.Unlock()
	return len(ti.issued)
}

func (ti *tokenIssuer) tokens() []string {
	ti.mu.Lock()
	defer ti.mu.Unlock()
	return append([]string(nil), ti.issued...)
}

// authCalls returns how many AUTHs the server ran, and how many failed.
func (ti *tokenIssuer) authCalls(t *testing.T) (calls, failed int) {
	t.Helper()
	calls, failed, err := ti.srv.CommandCalls(context.Background(), "auth")
	if err != nil {
		t.Fatal(err)
	}
	return calls, failed
}

// TestCredentialsAcrossRotations opens a client, a cache and a
// redisevents subscriber on a connection whose credentials come from
// RedisConfig.Credentials, rotates them several times, and checks that all
// keep working, that AUTH is sent and never fails, and that the client's
// connections are re-authenticated, not replaced.
func TestCredentialsAcrossRotations(t *testing.T) {
	srv := testserver.NewRedis(t)
	ti := newTokenIssuer(t, srv, 3*time.Second)
	app := servicedefaultstest.NewUnstarted(t, nil, map[string]string{"ConnectionStrings:cache": srv.Addr()})
	ctx := context.Background()
	rdb, err := aspireredis.Client(ctx, app, "cache", func(c *cache.RedisConfig) { c.Credentials = ti.fetch })
	if err != nil {
		t.Fatal(err)
	}
	products, err := aspireredis.NewCache[product](ctx, app, "cache", "product")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 100)
	sub, err := redisevents.Subscribe(ctx, rdb, func(_ context.Context, ev redisevents.Event) error {
		got <- string(ev.Data)
		return nil
	}, []string{"orders"})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	authBefore, _ := ti.authCalls(t)
	stats := rdb.PoolStats()

	deadline := time.Now().Add(2 * time.Minute)
	for i := 0; ti.count() < 4; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("only %d tokens issued after 2 minutes", ti.count())
		}
		key := strconv.Itoa(i % 5)
		if _, err := products.GetOrLoad(ctx, key, func(context.Context) (product, error) { return product{Name: key}, nil }); err != nil {
			t.Fatalf("cache after %d tokens: %v", ti.count(), err)
		}
		if err := products.Remove(ctx, key); err != nil { // through Redis and the invalidation channel
			t.Fatalf("cache remove after %d tokens: %v", ti.count(), err)
		}
		if _, err := redisevents.Publish(ctx, rdb, "orders", []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-got:
			if m != strconv.Itoa(i) {
				t.Fatalf("subscriber got %q, want %d", m, i)
			}
		case <-time.After(hangGuard):
			t.Fatalf("subscriber missed event %d after %d tokens", i, ti.count())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// go-redis re-authenticates a connection in the background once the
	// pool has skipped it or taken it back: keep using the client until
	// it has.
	var authAfter, failed int
	for {
		if authAfter, failed = ti.authCalls(t); authAfter > authBefore {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no AUTH after %d tokens", ti.count())
		}
		if err := rdb.Ping(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	after := rdb.PoolStats()
	t.Logf("%d tokens; AUTH calls %d -> %d (failed %d); pool %+v -> %+v", ti.count(), authBefore, authAfter, failed, *stats, *after)
	if authAfter <= authBefore || failed != 0 {
		t.Errorf("AUTH calls %d -> %d, %d failed: want more, none failed", authBefore, authAfter, failed)
	}
	if removed := after.StaleConns - stats.StaleConns; removed >= after.TotalConns {
		t.Errorf("%d connections removed from the pool during the rotations, %d left", removed, after.TotalConns)
	}
	if r := app.Health().Run(ctx, nil); r.Status != "Healthy" {
		t.Errorf("health after rotations: %+v", r)
	}
}

// TestSecretsRedisCredentials rotates tokens, then hands out a token the
// server refuses, then fails to fetch, and checks that no token left the
// App: errors, logs (go-redis's re-authentication failures included),
// spans, metrics and the health report.
func TestSecretsRedisCredentials(t *testing.T) {
	srv := testserver.NewRedis(t)
	ti := newTokenIssuer(t, srv, 2*time.Second)
	ti.wrongFrom = 3
	s := newLeakApp(t, map[string]string{"ConnectionStrings:cache": srv.Addr(), "ConnectionStrings:other": srv.Addr()})
	rdb, err := aspireredis.Client(context.Background(), s.App, "cache", func(c *cache.RedisConfig) { c.Credentials = ti.fetch })
	if err != nil {
		t.Fatal(err)
	}
	ctx, span := s.App.Tracer("test").Start(context.Background(), "request")
	waitFor := func(what string, cond func() bool) {
		deadline := time.Now().Add(2 * time.Minute)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			s.Err(rdb.Set(ctx, "k", "v", 0).Err())
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitFor("a refused token", func() bool { _, failed := ti.authCalls(t); return failed > 0 })
	ti.fail.Store(true)
	var healthOut string
	waitFor("the health check to report the failed refresh", func() bool {
		healthOut = s.Health()
		return strings.Contains(healthOut, "credentials unavailable")
	})
	span.End()
	if !strings.Contains(healthOut, "503 Service Unavailable") {
		t.Errorf("health %s lacks the fetch error", healthOut)
	}
	// A client whose first fetch fails.
	rdb2, err := aspireredis.Client(context.Background(), s.App, "other", func(c *cache.RedisConfig) { c.Credentials = ti.fetch })
	if err != nil {
		t.Fatal(err)
	}
	perr := rdb2.Ping(context.Background()).Err()
	if !errors.Is(perr, cache.ErrCredentials) {
		t.Errorf("PING with no credentials: %v, want cache.ErrCredentials", perr)
	}
	s.Err(perr)
	s.Check(healthOut, append(ti.tokens(), srv.Password())...)
}
