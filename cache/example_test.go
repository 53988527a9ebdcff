package cache_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/logging"

	"github.com/goaspire/goaspire/cache"
	"github.com/goaspire/goaspire/cqrs"
	"github.com/goaspire/goaspire/discovery"
)

type Product struct {
	ID    string  `json:"id"`
	Name  string  `json:"name"`
	Price float64 `json:"price"`
}

func ExampleParseConnectionString() {
	// The form an Aspire AppHost injects as ConnectionStrings__cache.
	o, err := cache.ParseConnectionString("cache.internal:6380,password=secret,ssl=true,connectTimeout=2000")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(o.Addrs, o.TLSConfig != nil, o.DialTimeout)

	_, err = cache.ParseConnectionString("cache.internal,frobnicate=1,password=secret")
	fmt.Println(err)
	// Output:
	// [cache.internal:6380] true 2s
	// cache: invalid redis connection string: unknown option "frobnicate"
}

func ExampleLoadRedisConfig() {
	// In a service, cfg comes from discovery.Load(); here it is built by hand.
	cfg := discovery.FromMap(map[string]string{
		"ConnectionStrings__cache": "redis.internal:6379,password=secret,abortConnect=false",
		"Aspire__StackExchange__Redis__ConfigurationOptions__ConnectTimeout": "2000",
	})
	c, err := cache.LoadRedisConfig(cfg, "cache")
	if err != nil {
		log.Fatal(err) // names the key at fault, never the password
	}
	fmt.Println(c.Name, c.Options.Addrs, c.Options.DialTimeout, c.AbortConnect)

	// Code may adjust the options before NewRedis opens them.
	c.Options.PoolSize = 20
	rdb, err := cache.NewRedis(context.Background(), c)
	if err != nil {
		log.Fatal(err)
	}
	defer rdb.Close()
	// rdb connects lazily and reconnects by itself: no Redis is needed to
	// get this far.
	fmt.Printf("%T\n", rdb)

	// A bad key is a *discovery.KeyError naming it, without the password.
	_, err = cache.LoadRedisConfig(discovery.FromMap(map[string]string{
		"ConnectionStrings__cache": "redis.internal:6379,password=secret,frobnicate=1",
	}), "cache")
	var keyErr *discovery.KeyError
	if errors.As(err, &keyErr) {
		fmt.Println(keyErr.Key, errors.Is(err, cache.ErrConnectionString))
	}
	// Output:
	// cache [redis.internal:6379] 2s false
	// *redis.Client
	// ConnectionStrings:cache true
}

func ExampleNewRedis() {
	// Without discovery: a RedisConfig built by hand; zero fields take
	// their defaults.
	opts, err := cache.ParseConnectionString("redis.internal:6379,password=secret")
	if err != nil {
		log.Fatal(err)
	}
	rdb, err := cache.NewRedis(context.Background(), &cache.RedisConfig{Name: "cache", Options: opts})
	if err != nil {
		log.Fatal(err)
	}
	defer rdb.Close()
	// Pass rdb to cache.New for a two-tier cache; HealthCheck makes its
	// readiness check.
	fmt.Println(cache.HealthCheck("cache", rdb).Name)
	// Output: redis:cache
}

func ExampleNew() {
	// A nil client gives an L1-only cache, handy in tests; pass the client
	// from NewRedis for the two-tier cache.
	products, err := cache.New[Product](nil, "product", cache.Options{
		TTL:         10 * time.Minute,
		NegativeTTL: 30 * time.Second,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer products.Close()

	loads := 0
	load := func(id string) cache.Loader[Product] {
		return func(ctx context.Context) (Product, error) {
			loads++
			if id == "missing" {
				return Product{}, cache.ErrNotFound
			}
			return Product{ID: id, Name: "Trail Runner", Price: 129.5}, nil
		}
	}
	ctx := context.Background()
	for range 3 {
		p, _ := products.GetOrLoad(ctx, "p1", load("p1"), cache.WithTags("shoes"))
		fmt.Println(p.Name)
	}
	_, err = products.GetOrLoad(ctx, "missing", load("missing"))
	fmt.Println(errors.Is(err, cache.ErrNotFound), loads)

	_ = products.RemoveByTag(ctx, "shoes")
	_, _ = products.GetOrLoad(ctx, "p1", load("p1"))
	fmt.Println(loads)
	// Output:
	// Trail Runner
	// Trail Runner
	// Trail Runner
	// true 2
	// 3
}

func ExampleClientBreaker() {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer rdb.Close()
	// The caches made on rdb share this breaker; code using rdb directly
	// can check it before calling Redis, and report what it saw.
	brk := cache.ClientBreaker(rdb)
	fmt.Println(brk.Open(), brk == cache.ClientBreaker(rdb))
	// Output: false true
}

func ExampleRedisLogger() {
	// Without an App (servicedefaults.Add does this itself), send go-redis's
	// own log lines to slog instead of stderr.
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{} // a steady output for the example
			}
			return a
		},
	}))
	redis.SetLogger(cache.RedisLogger{Logger: logger})
	defer logging.Enable() // back to go-redis's own logger

	// What go-redis prints when it cannot reach a server:
	cache.RedisLogger{Logger: logger}.Printf(context.Background(),
		"redis: connection pool: failed to dial after %d attempts: %v", 5, "connection refused")
	// Output:
	// level=WARN msg="redis: connection pool: failed to dial after 5 attempts: connection refused" component=go-redis
}

// A cache over read replicas: the write's position travels with the
// invalidation, so no instance reloads the old row from a replica that
// has not replayed the write.
func ExampleCache_Remove() {
	ctx := context.Background()
	cfg, err := discovery.Load()
	if err != nil {
		log.Fatal(err)
	}
	dc, err := cqrs.LoadConfig(cfg, "db")
	if err != nil {
		log.Fatal(err)
	}
	db, err := cqrs.New(ctx, dc)
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	rc, err := cache.LoadRedisConfig(cfg, "cache")
	if err != nil {
		log.Fatal(err)
	}
	rdb, err := cache.NewRedis(ctx, rc)
	if err != nil {
		log.Fatal(err)
	}
	defer rdb.Close()
	prices, err := cache.New[float64](rdb, "price", cache.Options{TTL: 10 * time.Minute})
	if err != nil {
		log.Fatal(err)
	}
	defer prices.Close()

	// A PUT: the write, in a read-your-writes session (cqrs.Middleware
	// makes one per request), records its position; Remove carries it.
	put := cqrs.WithSession(ctx)
	if _, err := db.Exec(put, "update products set price = $2 where id = $1", 7, 19.5); err != nil {
		log.Fatal(err)
	}
	if err := prices.Remove(put, "7"); err != nil {
		log.Fatal(err)
	}

	// A GET, on this instance or any other: the load reads a replica only
	// once it has replayed the write, else the primary.
	price, err := prices.GetOrLoad(ctx, "7", func(ctx context.Context) (float64, error) {
		var p float64
		err := db.QueryRow(ctx, "select price::float8 from products where id = $1", 7).Scan(&p)
		return p, err
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(price)
}

func ExampleRedisConfig_credentials() {
	ctx := context.Background()
	rc := &cache.RedisConfig{
		Name:    "cache",
		Options: &redis.UniversalOptions{Addrs: []string{"cache.internal:6380"}},
		// Called before the first connection and again before the
		// credentials expire; live connections are re-authenticated.
		Credentials: func(ctx context.Context) (cache.RedisCredentials, error) {
			token, expires, err := fetchToken(ctx) // your identity provider
			if err != nil {
				return cache.RedisCredentials{}, err
			}
			return cache.RedisCredentials{Username: "app", Password: token, ExpiresOn: expires}, nil
		},
	}
	rdb, err := cache.NewRedis(ctx, rc)
	if err != nil {
		log.Fatal(err)
	}
	defer cache.CredentialsProviderOf(rdb).Close()
	defer rdb.Close()
	// cache.HealthCheck("cache", rdb) also reports failing refreshes.
}

// fetchToken stands for an identity provider's client.
func fetchToken(context.Context) (string, time.Time, error) {
	return "token", time.Now().Add(time.Hour), nil
}
