package cache

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/auth"

	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/testserver"
)

// rotatingUsers is a credentials source that makes, on each call, a new
// ACL user app{n} with a new password on srv (through admin, the default
// user), valid for lifetime: a token issuer whose tokens name the
// generation that issued them. Connections re-authenticated with a later
// generation show its user in CLIENT LIST.
type rotatingUsers struct {
	admin    *redis.Client
	lifetime time.Duration
	mu       sync.Mutex
	gen      int
	secrets  []string
	fail     atomic.Pointer[error]
}

func newRotatingUsers(t *testing.T, srv *testserver.Redis, lifetime time.Duration) *rotatingUsers {
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr(), Password: srv.Password(), TLSConfig: srv.TLSConfig()})
	t.Cleanup(func() { _ = admin.Close() })
	return &rotatingUsers{admin: admin, lifetime: lifetime}
}

func (r *rotatingUsers) fetch(ctx context.Context) (RedisCredentials, error) {
	if e := r.fail.Load(); e != nil {
		return RedisCredentials{}, *e
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.gen + 1
	user, pw := "app"+strconv.Itoa(n), "tok-"+rand.Text()
	if err := r.admin.Do(ctx, "ACL", "SETUSER", user, "on", ">"+pw, "~*", "&*", "+@all").Err(); err != nil {
		return RedisCredentials{}, err
	}
	r.gen = n
	r.secrets = append(r.secrets, pw)
	return RedisCredentials{Username: user, Password: pw, ExpiresOn: time.Now().Add(r.lifetime)}, nil
}

func (r *rotatingUsers) generation() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gen
}

// appClients returns the users of the connections of app{n} users, by
// client ID, as CLIENT LIST shows them; a pub/sub connection's user is
// suffixed with "/pubsub".
func (r *rotatingUsers) appClients(t *testing.T) map[int64]string {
	t.Helper()
	list, err := r.admin.ClientList(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[int64]string{}
	for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
		var id int64
		var user string
		pubsub := false
		for _, f := range strings.Fields(line) {
			k, v, _ := strings.Cut(f, "=")
			switch k {
			case "id":
				id, _ = strconv.ParseInt(v, 10, 64)
			case "user":
				user = v
			case "flags":
				pubsub = strings.Contains(v, "P")
			}
		}
		if pubsub {
			user += "/pubsub"
		}
		if strings.HasPrefix(user, "app") {
			out[id] = user
		}
	}
	return out
}

// authStats returns cmdstat_auth's calls and failed_calls.
func (r *rotatingUsers) authStats(t *testing.T) (calls, failed int) {
	t.Helper()
	info, err := r.admin.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_auth:")
		if !ok {
			continue
		}
		for _, f := range strings.Split(rest, ",") {
			k, v, _ := strings.Cut(f, "=")
			n, _ := strconv.Atoi(v)
			switch k {
			case "calls":
				calls = n
			case "failed_calls":
				failed = n
			}
		}
	}
	return calls, failed
}

func genOf(user string) int {
	n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(user, "app"), "/pubsub"))
	return n
}

func newCredentialedClient(t *testing.T, srv *testserver.Redis, fetch CredentialsFunc, poolSize int) redis.UniversalClient {
	t.Helper()
	rdb, err := NewRedis(context.Background(), &RedisConfig{
		Name:        "cache",
		Options:     &redis.UniversalOptions{Addrs: []string{srv.Addr()}, TLSConfig: srv.TLSConfig(), PoolSize: poolSize},
		Credentials: fetch,
		Logger:      quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = rdb.Close()
		_ = CredentialsProviderOf(rdb).Close()
	})
	return rdb
}

// TestCredentialsReauthenticateLiveConnections rotates the credentials
// several times while the client is used and a subscriber listens, and
// checks that go-redis re-authenticates the pooled connections in place:
// their client IDs stay, CLIENT LIST shows them under the latest user,
// AUTH is called and never fails, no pooled connection is dropped, the
// subscriber receives throughout, and new connections use the latest
// credentials.
func TestCredentialsReauthenticateLiveConnections(t *testing.T) {
	for _, tt := range []struct {
		name string
		tls  bool
	}{{"plain", false}, {"tls", true}} {
		t.Run(tt.name, func(t *testing.T) {
			var opts []testserver.RedisOption
			if tt.tls {
				opts = append(opts, testserver.WithRedisTLS())
			}
			srv := testserver.NewRedis(t, opts...)
			src := newRotatingUsers(t, srv, 3*time.Second) // refreshed every 2.25 s
			rdb := newCredentialedClient(t, srv, src.fetch, 3)
			ctx := context.Background()

			// Warm the pool: three connections in use at once.
			var wg sync.WaitGroup
			for i := range 3 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := rdb.BLPop(ctx, 200*time.Millisecond, "nothing").Err(); err != nil && !errors.Is(err, redis.Nil) {
						t.Errorf("warm-up %d: %v", i, err)
					}
				}()
			}
			wg.Wait()

			ps := rdb.Subscribe(ctx, "events")
			defer ps.Close()
			if _, err := ps.Receive(ctx); err != nil {
				t.Fatal(err)
			}
			msgs := ps.Channel()

			pooled := src.appClients(t)
			if len(pooled) != 4 { // 3 pooled + 1 pub/sub
				t.Fatalf("connections before rotation: %v, want 4 (3 pooled, 1 pub/sub)", pooled)
			}
			for id, user := range pooled {
				if genOf(user) != 1 {
					t.Fatalf("connection %d authenticated as %s, want app1", id, user)
				}
			}
			authBefore, _ := src.authStats(t)
			statsBefore := rdb.PoolStats()

			// Use the client across three rotations; every message
			// published reaches the subscriber.
			sent := 0
			deadline := time.Now().Add(2 * time.Minute)
			for src.generation() < 4 {
				if time.Now().After(deadline) {
					t.Fatalf("only %d generations after 2 minutes", src.generation())
				}
				for range 3 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						if err := rdb.Incr(ctx, "n").Err(); err != nil {
							t.Errorf("INCR during rotation: %v", err)
						}
					}()
				}
				wg.Wait()
				sent++
				if err := rdb.Publish(ctx, "events", strconv.Itoa(sent)).Err(); err != nil {
					t.Fatal(err)
				}
				select {
				case m := <-msgs:
					if m.Payload != strconv.Itoa(sent) {
						t.Fatalf("subscriber got %q, want %d", m.Payload, sent)
					}
				case <-time.After(hangGuardCache):
					t.Fatalf("subscriber missed message %d (generation %d)", sent, src.generation())
				}
				time.Sleep(50 * time.Millisecond)
			}
			latest := src.generation()

			// The pooled connections are those of before, re-authenticated
			// as a later generation (they are re-authenticated when the pool
			// next hands them out, so keep using them until all are).
			var after map[int64]string
			eventually(t, time.Minute, "every pooled connection re-authenticated", func() bool {
				for range 3 {
					wg.Add(1)
					go func() { defer wg.Done(); _ = rdb.BLPop(ctx, 50*time.Millisecond, "nothing").Err() }()
				}
				wg.Wait()
				// go-redis may close a connection whose background
				// re-authentication could not take it in time (a busy
				// pool): the pool is kept if some of the connections of
				// before are, and all of those re-authenticated.
				after = src.appClients(t)
				kept := 0
				for id, user := range pooled {
					if after[id] == "" || strings.HasSuffix(user, "/pubsub") {
						continue
					}
					kept++
					if genOf(after[id]) < 2 {
						return false
					}
				}
				if kept == 0 {
					t.Fatalf("every pooled connection was dropped: before %v, now %v", pooled, after)
				}
				return true
			})
			authAfter, failed := src.authStats(t)
			statsAfter := rdb.PoolStats()
			t.Logf("generations %d; connections before %v, after %v; AUTH calls %d -> %d (failed %d); pool misses %d -> %d, total %d -> %d, stale %d",
				latest, pooled, after, authBefore, authAfter, failed, statsBefore.Misses, statsAfter.Misses, statsBefore.TotalConns, statsAfter.TotalConns, statsAfter.StaleConns)
			if authAfter <= authBefore || failed != 0 {
				t.Errorf("AUTH calls %d -> %d, failed %d: want more calls, none failed", authBefore, authAfter, failed)
			}
			if statsAfter.TotalConns > 3 {
				t.Errorf("pool holds %d connections, more than its size 3", statsAfter.TotalConns)
			}

			// go-redis does not re-authenticate the pub/sub connection: it
			// is not pooled, and go-redis re-authenticates a connection as
			// the pool takes it back. A server that enforces expiry (Azure
			// closes connections not re-authenticated in time) drops it:
			// the subscriber reconnects with the latest credentials and
			// keeps receiving.
			var psConn int64
			for id, user := range pooled {
				if strings.HasSuffix(user, "/pubsub") {
					psConn = id
				}
			}
			if genOf(after[psConn]) != 1 {
				t.Logf("the pub/sub connection was re-authenticated (%s): go-redis now does it", after[psConn])
			}
			if err := src.admin.ClientKillByFilter(ctx, "ID", strconv.FormatInt(psConn, 10)).Err(); err != nil {
				t.Fatal(err)
			}
			eventually(t, time.Minute, "the subscriber to receive after its connection was closed", func() bool {
				sent++
				if err := rdb.Publish(ctx, "events", strconv.Itoa(sent)).Err(); err != nil {
					t.Fatal(err)
				}
				select {
				case m := <-msgs:
					return m.Payload == strconv.Itoa(sent)
				case <-time.After(100 * time.Millisecond):
					return false
				}
			})
			now := src.appClients(t)
			for id, user := range now {
				if strings.HasSuffix(user, "/pubsub") && (id == psConn || genOf(user) < latest) {
					t.Errorf("subscriber reconnected as %d %s, want a new connection as app%d or later", id, user, latest)
				}
			}
		})
	}
}

const hangGuardCache = 30 * time.Second

// TestCredentialsFailing checks the errors of a client whose credentials
// cannot be fetched: commands and the health check fail with
// ErrCredentials and the source's error, naming the client.
func TestCredentialsFailing(t *testing.T) {
	srv := testserver.NewRedis(t)
	boom := errors.New("identity endpoint unreachable")
	rdb := newCredentialedClient(t, srv, func(context.Context) (RedisCredentials, error) {
		return RedisCredentials{}, boom
	}, 2)
	err := rdb.Ping(context.Background()).Err()
	if !errors.Is(err, ErrCredentials) || !errors.Is(err, boom) || !strings.Contains(err.Error(), `"cache"`) {
		t.Fatalf("PING: %v; want ErrCredentials wrapping the source's error, naming the client", err)
	}
	herr := HealthCheck("cache", rdb).Check(context.Background())
	if !errors.Is(herr, ErrCredentials) {
		t.Fatalf("health: %v; want ErrCredentials", herr)
	}
	var se *health.StatusError
	if errors.As(herr, &se) {
		t.Fatalf("health: %v reported as %s; want the check's failure status", herr, se.Status)
	}
	t.Logf("PING: %v\nhealth: %v", err, herr)
}

// TestCredentialsRefreshFailure checks that a refresh that fails keeps the
// connections on the credentials held, reports Degraded health while they
// are valid, retries, and recovers.
func TestCredentialsRefreshFailure(t *testing.T) {
	srv := testserver.NewRedis(t)
	src := newRotatingUsers(t, srv, 3*time.Second)
	rdb := newCredentialedClient(t, srv, src.fetch, 2)
	ctx := context.Background()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("token endpoint returned 503")
	src.fail.Store(&boom)
	chk := HealthCheck("cache", rdb)
	var herr error
	eventually(t, time.Minute, "the health check to report the failed refresh", func() bool {
		herr = chk.Check(ctx)
		return herr != nil
	})
	var se *health.StatusError
	if !errors.Is(herr, ErrCredentials) || !errors.Is(herr, boom) || !errors.As(herr, &se) || se.Status != health.Degraded {
		t.Fatalf("health: %v; want Degraded, ErrCredentials wrapping the source's error", herr)
	}
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING on the connection authenticated before the failure: %v", err)
	}
	src.fail.Store(nil)
	eventually(t, time.Minute, "the health check to recover", func() bool { return chk.Check(ctx) == nil })
	if g := src.generation(); g < 2 {
		t.Fatalf("generation %d after recovery, want 2 or more", g)
	}
}

// recordingListener is an auth.CredentialsListener recording what it is given.
type recordingListener struct {
	mu   sync.Mutex
	next []string
}

func (l *recordingListener) OnNext(c auth.Credentials) {
	_, pw := c.BasicAuth()
	l.mu.Lock()
	l.next = append(l.next, pw)
	l.mu.Unlock()
}

func (l *recordingListener) OnError(error) {}

func (l *recordingListener) received() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.next...)
}

// TestCredentialsProviderCachingSource stands for azidentity, which returns
// the token it holds until the token is within a margin of its expiry:
// the provider asks again (after half the time left) until it gets a new
// token, hands each new token to its listeners once, and stops when the
// last one unsubscribes.
func TestCredentialsProviderCachingSource(t *testing.T) {
	const lifetime, margin = 3 * time.Second, time.Second
	var mu sync.Mutex
	var calls, issued int
	var cur RedisCredentials
	source := func(context.Context) (RedisCredentials, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if issued == 0 || time.Until(cur.ExpiresOn) < margin {
			issued++
			cur = RedisCredentials{Username: "app", Password: "tok" + strconv.Itoa(issued), ExpiresOn: time.Now().Add(lifetime)}
		}
		return cur, nil
	}
	p := NewCredentialsProvider(source, CredentialsProviderOptions{MinRetry: 50 * time.Millisecond, RefreshRatio: 0.5})
	defer p.Close()
	l := &recordingListener{}
	first, unsubscribe, err := p.Subscribe(l)
	if err != nil {
		t.Fatal(err)
	}
	if u, pw := first.BasicAuth(); u != "app" || pw != "tok1" {
		t.Fatalf("first credentials %s/%s, want app/tok1", u, pw)
	}
	eventually(t, time.Minute, "three new tokens", func() bool { return len(l.received()) >= 3 })
	got := l.received()
	for i, pw := range got[:3] {
		if want := "tok" + strconv.Itoa(i+2); pw != want {
			t.Fatalf("listener got %v, want tok2, tok3, tok4 in order, each once", got)
		}
	}
	mu.Lock()
	c, n := calls, issued
	mu.Unlock()
	if c <= n {
		t.Errorf("%d calls for %d tokens: the provider never asked again after getting the token it held", c, n)
	}
	t.Logf("%d source calls for %d tokens", c, n)
	if err := unsubscribe(); err != nil {
		t.Fatal(err)
	}
	if err := unsubscribe(); err != nil { // a no-op
		t.Fatal(err)
	}
	mu.Lock()
	c = calls
	mu.Unlock()
	// goleak (TestMain) checks that the refresher stopped; the source is
	// not called once nothing is subscribed.
	time.Sleep(200 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if calls > c+1 { // one fetch may have been under way
		t.Errorf("source called %d times after the last unsubscribe", calls-c)
	}
}

// TestRedisCredentialsRedacted: the password never shows in String,
// GoString, %v, %+v or slog.
func TestRedisCredentialsRedacted(t *testing.T) {
	c := RedisCredentials{Username: "app", Password: "S3cretTok3n", ExpiresOn: time.Unix(1700000000, 0)}
	var buf strings.Builder
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "c", c)
	for _, s := range []string{c.String(), c.GoString(), fmt.Sprintf("%v %+v %#v %s", c, c, c, c), buf.String()} {
		if strings.Contains(s, c.Password) || !strings.Contains(s, "app") {
			t.Errorf("%q shows the password or lacks the user", s)
		}
	}
}

// TestCredentialsCluster: a cluster client authenticates with the
// credentials on every node and re-authenticates there after a rotation.
func TestCredentialsCluster(t *testing.T) {
	cl := testserver.NewRedisCluster(t, 3)
	var admins []*redis.Client
	var addrs []string
	for _, n := range cl.Nodes() {
		a := redis.NewClient(&redis.Options{Addr: n.Addr(), Password: cl.Password()})
		t.Cleanup(func() { _ = a.Close() })
		admins = append(admins, a)
		addrs = append(addrs, n.Addr())
	}
	var mu sync.Mutex
	gen := 0
	fetch := func(ctx context.Context) (RedisCredentials, error) {
		mu.Lock()
		defer mu.Unlock()
		pw := "tok-" + rand.Text()
		for _, a := range admins {
			if err := a.Do(ctx, "ACL", "SETUSER", "app", "on", ">"+pw, "~*", "&*", "+@all").Err(); err != nil {
				return RedisCredentials{}, err
			}
		}
		gen++
		return RedisCredentials{Username: "app", Password: pw, ExpiresOn: time.Now().Add(3 * time.Second)}, nil
	}
	generation := func() int { mu.Lock(); defer mu.Unlock(); return gen }
	rdb, err := NewRedis(context.Background(), &RedisConfig{
		Name:        "cluster",
		Options:     &redis.UniversalOptions{Addrs: addrs},
		Credentials: fetch,
		Logger:      quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = rdb.Close()
		_ = CredentialsProviderOf(rdb).Close()
	})
	if _, ok := rdb.(*redis.ClusterClient); !ok {
		t.Fatalf("client %T, want a cluster client", rdb)
	}
	ctx := context.Background()
	authCalls := func() (calls, failed int) {
		for _, a := range admins {
			src := &rotatingUsers{admin: a}
			c, f := src.authStats(t)
			calls, failed = calls+c, failed+f
		}
		return calls, failed
	}
	before, _ := authCalls()
	deadline := time.Now().Add(2 * time.Minute)
	for i := 0; ; i++ {
		if err := rdb.Set(ctx, "k"+strconv.Itoa(i%30), "v", 0).Err(); err != nil { // keys on every node
			t.Fatalf("SET after %d generations: %v", generation(), err)
		}
		if calls, _ := authCalls(); generation() >= 3 && calls > before {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d generations and no AUTH after 2 minutes", generation())
		}
		time.Sleep(20 * time.Millisecond)
	}
	calls, failed := authCalls()
	t.Logf("generations %d; AUTH calls over the nodes %d -> %d, failed %d", generation(), before, calls, failed)
	if failed != 0 {
		t.Errorf("%d AUTH calls failed", failed)
	}
}
