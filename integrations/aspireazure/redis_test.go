package aspireazure_test

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/goaspire/goaspire/cache"
	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/integrations/aspireazure"
	"github.com/goaspire/goaspire/integrations/aspireredis"
	"github.com/goaspire/goaspire/internal/leaktest"
	"github.com/goaspire/goaspire/internal/otlptest"
	"github.com/goaspire/goaspire/messaging/redisevents"
	"github.com/goaspire/goaspire/servicedefaults/servicedefaultstest"
	"github.com/goaspire/goaspire/testserver"
)

const redisResource = "https://redis.azure.com"

// entraRedis is a TLS Redis standing in for Azure Managed Redis in Entra
// mode, and the managed identity stand-in whose every Redis token becomes
// a password of the ACL user named after the identity's object ID.
type entraRedis struct {
	srv    *testserver.Redis
	admin  *redis.Client
	mi     *testserver.ManagedIdentity
	mu     sync.Mutex
	tokens []string
	refuse bool // tokens issued while set are not added to the user
}

func startEntraRedis(t *testing.T, lifetime time.Duration) *entraRedis {
	t.Helper()
	e := &entraRedis{srv: testserver.NewRedis(t, testserver.WithRedisTLS())}
	e.admin = redis.NewClient(&redis.Options{Addr: e.srv.Addr(), Password: e.srv.Password(), TLSConfig: e.srv.TLSConfig()})
	t.Cleanup(func() { _ = e.admin.Close() })
	e.mi = testserver.NewManagedIdentity(t, testserver.ManagedIdentityConfig{
		Lifetime: lifetime,
		OnToken: func(tok testserver.ManagedIdentityToken) error {
			if tok.Resource != redisResource {
				return nil
			}
			e.mu.Lock()
			defer e.mu.Unlock()
			e.tokens = append(e.tokens, tok.AccessToken)
			if e.refuse {
				return nil
			}
			return e.admin.Do(context.Background(), "ACL", "SETUSER", tok.ObjectID, "on", ">"+tok.AccessToken, "~*", "&*", "+@all").Err()
		},
	})
	e.mi.Setenv(t)
	return e
}

// config is the configuration Aspire's Azure deployment gives a service
// referencing the cache in Entra mode (host:port,ssl=true, no password;
// the managed identity's variables), plus the test CA.
func (e *entraRedis) config(kv ...string) map[string]string {
	m := e.mi.Env()
	m["ConnectionStrings:cache"] = "127.0.0.1:" + strconv.Itoa(e.srv.Port()) + ",ssl=true"
	m["SSL_CERT_FILE"] = e.srv.CACertFile()
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func (e *entraRedis) issued() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.tokens...)
}

// normalConns returns the IDs of the connections that are not pub/sub
// ones, other than the admin's.
func (e *entraRedis) normalConns(t *testing.T) map[int64]bool {
	t.Helper()
	list, err := e.admin.ClientList(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[int64]bool{}
	for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
		if !strings.Contains(line, " user="+e.mi.ObjectID()+" ") || strings.Contains(line, " cmd=subscribe") || strings.Contains(line, "flags=P") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "id="); ok {
				id, _ := strconv.ParseInt(v, 10, 64)
				out[id] = true
			}
		}
	}
	return out
}

// authCalls returns how many AUTHs the server ran, and how many failed.
func (e *entraRedis) authCalls(t *testing.T) (calls, failed int) {
	t.Helper()
	calls, failed, err := e.srv.CommandCalls(context.Background(), "auth")
	if err != nil {
		t.Fatal(err)
	}
	return calls, failed
}

// TestRedisAuthEndToEnd configures a service exactly as Aspire's Azure
// deployment does and checks that the client, a cache and a redisevents
// subscriber work across several token rotations: every connection is the
// identity's object ID, tokens are re-sent with AUTH on the live
// connections (none failing, none dropped from the pool), and the health
// check stays healthy.
func TestRedisAuthEndToEnd(t *testing.T) {
	// Tokens of 4 s: below azidentity's five-minute margin, so each
	// GetToken reaches the stand-in; refreshed after 3 s (0.75).
	e := startEntraRedis(t, 4*time.Second)
	app := servicedefaultstest.NewUnstarted(t, nil, e.config())
	ctx := context.Background()
	rdb, err := aspireredis.Client(ctx, app, "cache", aspireazure.RedisAuth(app))
	if err != nil {
		t.Fatal(err)
	}
	who, err := rdb.Do(ctx, "ACL", "WHOAMI").Text()
	if err != nil {
		t.Fatal(err)
	}
	if who != e.mi.ObjectID() {
		t.Fatalf("connected as %q, want the identity's object ID %s", who, e.mi.ObjectID())
	}
	products, err := aspireredis.NewCache[string](ctx, app, "cache", "product")
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
	authBefore, _ := e.authCalls(t)
	before := *rdb.PoolStats()
	initial := e.normalConns(t)

	deadline := time.Now().Add(3 * time.Minute)
	for i := 0; len(e.issued()) < 4; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("only %d tokens issued after 3 minutes", len(e.issued()))
		}
		key := strconv.Itoa(i % 5)
		if _, err := products.GetOrLoad(ctx, key, func(context.Context) (string, error) { return "p" + key, nil }); err != nil {
			t.Fatalf("cache after %d tokens: %v", len(e.issued()), err)
		}
		if err := products.Remove(ctx, key); err != nil {
			t.Fatalf("cache remove after %d tokens: %v", len(e.issued()), err)
		}
		if _, err := redisevents.Publish(ctx, rdb, "orders", []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-got:
			if m != strconv.Itoa(i) {
				t.Fatalf("subscriber got %q, want %d", m, i)
			}
		case <-time.After(time.Minute):
			t.Fatalf("subscriber missed event %d after %d tokens", i, len(e.issued()))
		}
		time.Sleep(50 * time.Millisecond)
	}
	// go-redis re-authenticates a connection in the background once the
	// pool has skipped it or taken it back: keep using the client until
	// it has.
	var authAfter, failed int
	for {
		if authAfter, failed = e.authCalls(t); authAfter > authBefore {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no AUTH after %d tokens", len(e.issued()))
		}
		if err := rdb.Ping(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	after := *rdb.PoolStats()
	t.Logf("%d tokens (%d identity requests); AUTH calls %d -> %d (failed %d); pool misses %d -> %d, conns %d -> %d, removed %d -> %d",
		len(e.issued()), len(e.mi.Requests()), authBefore, authAfter, failed, before.Misses, after.Misses, before.TotalConns, after.TotalConns, before.StaleConns, after.StaleConns)
	if authAfter <= authBefore || failed != 0 {
		t.Errorf("AUTH calls %d -> %d, %d failed: want more, none failed", authBefore, authAfter, failed)
	}
	// The pool is not dropped: the connections of before are still
	// there. (go-redis may close one whose background re-authentication
	// could not take it within PoolTimeout.)
	kept := 0
	now := e.normalConns(t)
	for id := range initial {
		if now[id] {
			kept++
		}
	}
	t.Logf("connections before the rotations %v, after %v", initial, now)
	if kept == 0 {
		t.Errorf("none of the connections of before the rotations is left: before %v, after %v", initial, now)
	}
	if who, err := rdb.Do(ctx, "ACL", "WHOAMI").Text(); err != nil || who != e.mi.ObjectID() {
		t.Errorf("after the rotations: %q, %v", who, err)
	}
	if r := app.Health().Run(ctx, nil); r.Status != health.Healthy {
		t.Errorf("health after rotations: %+v", r)
	}

	// A pub/sub connection closed by the server (a network failure, a
	// token that expired on a cluster client) reconnects with the current
	// token and receives again.
	if err := e.admin.ClientKillByFilter(ctx, "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		if time.Now().After(deadline) {
			t.Fatal("the subscriber did not receive again after its connection was closed")
		}
		if _, err := redisevents.Publish(ctx, rdb, "orders", []byte("again")); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-got:
			if m != "again" {
				continue
			}
		case <-time.After(100 * time.Millisecond):
			continue
		}
		break
	}
}

// TestRedisAuthPassword: a connection string with a password (an access
// key, or a local Redis) is left to it.
func TestRedisAuthPassword(t *testing.T) {
	srv := testserver.NewRedis(t)
	app := servicedefaultstest.NewUnstarted(t, nil, map[string]string{"ConnectionStrings:cache": srv.ConnectionString()})
	rdb, err := aspireredis.Client(context.Background(), app, "cache", aspireazure.RedisAuth(app))
	if err != nil {
		t.Fatal(err)
	}
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	if p := cache.CredentialsProviderOf(rdb); p != nil {
		t.Error("a connection with a password got token credentials")
	}
}

// TestRedisAuthFailures: the identity endpoint failing at the first
// connection gives an error naming the credential, matching
// cache.ErrCredentials; a failed refresh makes the health check Degraded;
// and no token, nor the identity header, leaves the App.
func TestRedisAuthFailures(t *testing.T) {
	e := startEntraRedis(t, 4*time.Second)
	rcv := otlptest.Start(t)
	app := servicedefaultstest.NewUnstarted(t, http.NewServeMux(), e.config(
		"DOTNET_ENVIRONMENT", "Development",
		"OTEL_TRACES_SAMPLER", "always_on",
		"Logging:LogLevel:Default", "Debug",
		"OTEL_EXPORTER_OTLP_ENDPOINT", rcv.HTTPEndpoint,
		"OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf",
	))
	s := leaktest.New(t, app.App, app.Logs, rcv)
	ctx := context.Background()
	rdb, err := aspireredis.Client(ctx, app, "cache", aspireazure.RedisAuth(app))
	if err != nil {
		t.Fatal(err)
	}
	e.mi.Fail(http.StatusBadRequest, 1) // 400: not retried by azcore
	perr := rdb.Ping(ctx).Err()
	if !errors.Is(perr, cache.ErrCredentials) || !strings.Contains(perr.Error(), "ManagedIdentityCredential") {
		t.Errorf("PING with the endpoint failing: %v; want cache.ErrCredentials naming the credential", perr)
	}
	s.Err(perr)
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING once the endpoint answers: %v", err)
	}
	// Tokens the server refuses, then an endpoint that fails.
	e.mu.Lock()
	e.refuse = true
	e.mu.Unlock()
	eventually := func(what string, cond func() bool) {
		deadline := time.Now().Add(2 * time.Minute)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			s.Err(rdb.Set(ctx, "k", "v", 0).Err())
			time.Sleep(50 * time.Millisecond)
		}
	}
	eventually("a refused re-authentication", func() bool { _, failed := e.authCalls(t); return failed > 0 })
	e.mi.Fail(http.StatusBadRequest, 1000)
	var healthOut string
	eventually("the health check to report the failed refresh", func() bool {
		healthOut = s.Health()
		return strings.Contains(healthOut, "credentials unavailable")
	})
	s.Check(healthOut, append(e.issued(), e.mi.Header(), e.srv.Password())...)
}
