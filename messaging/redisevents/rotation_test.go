package redisevents_test

import (
	"context"
	"crypto/rand"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/goaspire/goaspire/cache"
	"github.com/goaspire/goaspire/internal/poll"
	"github.com/goaspire/goaspire/messaging/redisevents"
	"github.com/goaspire/goaspire/testserver"
)

// tokenUsers issues, on each call, a new ACL user app{n} with a new
// password valid for lifetime: a token issuer whose tokens name their
// generation, so CLIENT LIST shows which token a connection holds.
type tokenUsers struct {
	admin    *redis.Client
	lifetime time.Duration
	mu       sync.Mutex
	expires  []time.Time // by generation - 1
	// noChannels are the generations whose user may not use channels:
	// its connections cannot subscribe.
	noChannels map[int]bool
}

func (u *tokenUsers) fetch(ctx context.Context) (cache.RedisCredentials, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	gen := len(u.expires) + 1
	user, pw := "app"+strconv.Itoa(gen), "tok-"+rand.Text()
	channels := "&*"
	if u.noChannels[gen] {
		channels = "resetchannels"
	}
	if err := u.admin.Do(ctx, "ACL", "SETUSER", user, "reset", "on", ">"+pw, "~*", channels, "+@all").Err(); err != nil {
		return cache.RedisCredentials{}, err
	}
	exp := time.Now().Add(u.lifetime)
	u.expires = append(u.expires, exp)
	return cache.RedisCredentials{Username: user, Password: pw, ExpiresOn: exp}, nil
}

func (u *tokenUsers) generation() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.expires)
}

func (u *tokenUsers) expiresOn(gen int) time.Time {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.expires[gen-1]
}

// subscribers returns the users of the pub/sub connections of app users.
func (u *tokenUsers) subscribers(t *testing.T) []string {
	t.Helper()
	list, err := u.admin.ClientList(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	var users []string
	for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
		var user string
		pubsub := false
		for _, f := range strings.Fields(line) {
			k, v, _ := strings.Cut(f, "=")
			switch k {
			case "user":
				user = v
			case "flags":
				pubsub = strings.Contains(v, "P")
			}
		}
		if pubsub && strings.HasPrefix(user, "app") {
			users = append(users, user)
		}
	}
	return users
}

// credentialedClient opens a client of srv whose credentials src
// issues, logging at Debug level into logs.
func credentialedClient(t *testing.T, srv *testserver.Redis, src *tokenUsers) (redis.UniversalClient, *syncBuffer, *slog.Logger) {
	t.Helper()
	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	rdb, err := cache.NewRedis(context.Background(), &cache.RedisConfig{
		Name:        "events",
		Options:     &redis.UniversalOptions{Addrs: []string{srv.Addr()}},
		Credentials: src.fetch,
		Logger:      logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = rdb.Close()
		_ = cache.CredentialsProviderOf(rdb).Close()
	})
	return rdb, logs, logger
}

// TestSubscribeAcrossRotations publishes numbered messages without pause
// while the subscriber's credentials rotate three times, and after each
// rotation kills every connection of the previous token's user, as Azure
// does when a token expires. The subscription must have moved to a
// connection of the new user before the old token expired, and the
// handler must receive every message once and in order: a subscription
// left on its first connection would be killed, and go-redis's
// reconnection would lose what was published meanwhile.
func TestSubscribeAcrossRotations(t *testing.T) {
	srv := testserver.NewRedis(t)
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr(), Password: srv.Password()})
	t.Cleanup(func() { _ = admin.Close() })
	src := &tokenUsers{admin: admin, lifetime: 6 * time.Second} // refreshed after 4.5 s
	rdb, logs, logger := credentialedClient(t, srv, src)

	for _, kind := range []string{"subscribe", "psubscribe"} {
		t.Run(kind, func(t *testing.T) {
			ctx := context.Background()
			channel := "seq." + kind
			var mu sync.Mutex
			var got []int
			h := func(_ context.Context, ev redisevents.Event) error {
				n, err := strconv.Atoi(string(ev.Data))
				if err != nil {
					t.Errorf("event %q on %s", ev.Data, ev.Channel)
				}
				mu.Lock()
				got = append(got, n)
				mu.Unlock()
				return nil
			}
			var sub *redisevents.Subscription
			var err error
			if kind == "subscribe" {
				sub, err = redisevents.Subscribe(ctx, rdb, h, []string{channel}, redisevents.WithLogger(logger))
			} else {
				sub, err = redisevents.PSubscribe(ctx, rdb, h, []string{"seq.p*"}, redisevents.WithLogger(logger))
			}
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()

			// The publisher authenticates as the default user: the kills
			// below do not touch it.
			var sent atomic.Int64
			stop := make(chan struct{})
			pubDone := make(chan struct{})
			go func() {
				defer close(pubDone)
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := redisevents.Publish(ctx, admin, channel, []byte(strconv.Itoa(i)), redisevents.WithRawPayload()); err != nil {
						t.Errorf("publish %d: %v", i, err)
						return
					}
					sent.Store(int64(i + 1))
					time.Sleep(time.Millisecond)
				}
			}()

			start := src.generation()
			for gen := start + 1; gen <= start+3; gen++ {
				poll.Until(t, 30*time.Second, "credentials generation "+strconv.Itoa(gen), func() bool { return src.generation() >= gen })
				want := "app" + strconv.Itoa(gen)
				moved := false
				deadline := time.Now().Add(10 * time.Second)
				for time.Now().Before(deadline) {
					// A later generation counts too: the next rotation
					// may come first on a loaded machine.
					if users := src.subscribers(t); len(users) == 1 && userGen(users[0]) >= gen {
						moved = true
						break
					}
					time.Sleep(5 * time.Millisecond)
				}
				if !moved {
					t.Errorf("rotation to %s: subscriber connections are %v, want [%s]", want, src.subscribers(t), want)
				} else if exp := src.expiresOn(gen - 1); !time.Now().Before(exp) {
					// Checked only after the move was seen: a loaded
					// machine may see it late, never wrongly.
					t.Logf("rotation to %s seen after the previous token expired", want)
				}
				// The previous token "expires": Redis closes its connections.
				old := "app" + strconv.Itoa(gen-1)
				if err := admin.Do(ctx, "CLIENT", "KILL", "USER", old).Err(); err != nil && !strings.Contains(err.Error(), "No such user") {
					t.Fatalf("CLIENT KILL USER %s: %v", old, err)
				}
			}
			close(stop)
			<-pubDone
			n := int(sent.Load())
			poll.Until(t, 30*time.Second, "the last message", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(got) > 0 && got[len(got)-1] == n-1
			})
			mu.Lock()
			defer mu.Unlock()
			if len(got) != n {
				t.Fatalf("received %d messages, sent %d", len(got), n)
			}
			for i, v := range got {
				if v != i {
					t.Fatalf("message %d is %d (of %d sent): lost or repeated across a handover", i, v, n)
				}
			}
			t.Logf("%d messages across 3 rotations", n)
		})
	}
	if strings.Contains(logs.String(), "tok-") {
		t.Errorf("a token is in the logs:\n%s", logs.String())
	}
}

// TestSubscribeHandoverFails: when the connection made with new
// credentials cannot subscribe (here a user without channel permissions),
// the subscription stays on its old connection, delivering every event,
// logs the failure once without the token, and moves once the
// credentials allow it.
func TestSubscribeHandoverFails(t *testing.T) {
	srv := testserver.NewRedis(t)
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr(), Password: srv.Password()})
	t.Cleanup(func() { _ = admin.Close() })
	src := &tokenUsers{admin: admin, lifetime: 6 * time.Second, noChannels: map[int]bool{2: true}}
	rdb, logs, logger := credentialedClient(t, srv, src)
	ctx := context.Background()
	var mu sync.Mutex
	var got []int
	sub, err := redisevents.Subscribe(ctx, rdb, func(_ context.Context, ev redisevents.Event) error {
		n, _ := strconv.Atoi(string(ev.Data))
		mu.Lock()
		got = append(got, n)
		mu.Unlock()
		return nil
	}, []string{"seq"}, redisevents.WithLogger(logger))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	sent := 0
	publish := func() {
		t.Helper()
		if _, err := redisevents.Publish(ctx, admin, "seq", []byte(strconv.Itoa(sent)), redisevents.WithRawPayload()); err != nil {
			t.Fatal(err)
		}
		sent++
	}
	received := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) > 0 && got[len(got)-1] == sent-1
	}
	const warning = "could not move to a connection with the new credentials"
	poll.Until(t, 30*time.Second, "a failed handover", func() bool {
		publish()
		return strings.Contains(logs.String(), warning)
	})
	if users := src.subscribers(t); len(users) != 1 || users[0] != "app1" {
		t.Errorf("after the failed handover the subscription is on %v, want [app1]", users)
	}
	poll.Until(t, 30*time.Second, "the events published while the handover fails", received)
	poll.Until(t, 60*time.Second, "the move to app3", func() bool {
		publish()
		users := src.subscribers(t)
		return len(users) == 1 && users[0] == "app3"
	})
	publish()
	poll.Until(t, 30*time.Second, "the last event", received)
	mu.Lock()
	defer mu.Unlock()
	for i, v := range got {
		if v != i {
			t.Fatalf("event %d is %d (of %d sent)", i, v, sent)
		}
	}
	if n := strings.Count(logs.String(), warning); n != 1 {
		t.Errorf("the failure was logged %d times, want once:\n%s", n, logs.String())
	}
	if strings.Contains(logs.String(), "tok-") {
		t.Errorf("a token is in the logs:\n%s", logs.String())
	}
}

func userGen(user string) int {
	n, _ := strconv.Atoi(strings.TrimPrefix(user, "app"))
	return n
}
