package aspireredis_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/goaspire/goaspire/cache"
	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/integrations/aspireredis"
	"github.com/goaspire/goaspire/servicedefaults"
)

func ExampleClient() {
	ctx := context.Background()
	// A service calls servicedefaults.Add(ctx, mux), which reads
	// ConnectionStrings__cache from the environment the AppHost injects.
	// Here the configuration is given explicitly, and the example leaves
	// the process-wide state of the tests it runs with alone.
	cfg := discovery.FromMap(map[string]string{
		"ConnectionStrings:cache":                   "localhost:6379,password=secret",
		"Aspire:StackExchange:Redis:cache:PoolSize": "20",
	})
	app, err := servicedefaults.Add(ctx, http.NewServeMux(), servicedefaults.WithConfig(cfg),
		servicedefaults.WithLogWriter(io.Discard), servicedefaults.WithoutGlobals())
	if err != nil {
		log.Fatal(err)
	}
	defer app.Shutdown(context.Background())

	// The client connects lazily: Redis need not be up yet. configure
	// adjusts go-redis's options before the client is made.
	rdb, err := aspireredis.Client(ctx, app, "cache", func(c *cache.RedisConfig) {
		c.Options.OnConnect = func(ctx context.Context, cn *redis.Conn) error {
			return cn.ClientSetName(ctx, "orders").Err()
		}
	})
	if err != nil {
		log.Fatal(err)
	}
	// Every later call for "cache" returns the same client.
	again, _ := aspireredis.Client(ctx, app, "cache")
	fmt.Println(rdb.(*redis.Client).Options().PoolSize, again == rdb)
	// Output: 20 true
}

func ExampleNewCache() {
	type Product struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	}
	ctx := context.Background()
	mux := http.NewServeMux()
	app, err := servicedefaults.Add(ctx, mux)
	if err != nil {
		log.Fatal(err)
	}
	// Made once, at startup, and shared by the handlers: L1 in the
	// process, L2 in the Redis of the connection "cache", invalidations
	// across instances through it. configure starts from the App's
	// telemetry and logger.
	products, err := aspireredis.NewCache[Product](ctx, app, "cache", "product", func(o *cache.Options) {
		o.TTL = 10 * time.Minute
		o.L1TTL = time.Minute
		o.SoftTimeout = 200 * time.Millisecond
	})
	if err != nil {
		log.Fatal(err)
	}
	mux.HandleFunc("GET /products/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		p, err := products.GetOrLoad(r.Context(), id, func(ctx context.Context) (Product, error) {
			return Product{ID: id, Name: "espresso"}, nil // from the database
		})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		_ = json.NewEncoder(w).Encode(p)
	})
	// Run serves until SIGTERM, then closes the cache, then the client.
	if err := app.Run(ctx); err != nil {
		log.Fatal(err)
	}
}
