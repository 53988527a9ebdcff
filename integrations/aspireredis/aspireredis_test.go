package aspireredis_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/goaspire/goaspire/cache"
	"github.com/goaspire/goaspire/integrations/aspireredis"
	"github.com/goaspire/goaspire/internal/syncbuf"
	"github.com/goaspire/goaspire/servicedefaults"
	"github.com/goaspire/goaspire/servicedefaults/servicedefaultstest"
	"github.com/goaspire/goaspire/testserver"
)

// TestClientAndCache: the client of a name is shared and health-checked,
// a cache is made once per name over it and works through Redis, and
// Shutdown closes both; afterwards opening fails with ErrClosed.
func TestClientAndCache(t *testing.T) {
	srv := testserver.NewRedis(t)
	app := servicedefaultstest.NewUnstarted(t, nil, map[string]string{
		"ConnectionStrings:cache":  srv.ConnectionString(),
		"ConnectionStrings:second": srv.ConnectionString(),
	})
	ctx := context.Background()

	rdb, err := aspireredis.Client(ctx, app, "cache")
	if err != nil {
		t.Fatal(err)
	}
	again, err := aspireredis.Client(ctx, app, "cache")
	if err != nil || again != rdb {
		t.Errorf("second Client(cache) = %v, %v; want the same client", again, err)
	}
	products, err := aspireredis.NewCache[product](ctx, app, "cache", "product")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := aspireredis.NewCache[product](ctx, app, "cache", "product"); err == nil || !strings.Contains(err.Error(), "already made") {
		t.Errorf("a second cache of the same name: %v, want an \"already made\" error", err)
	}
	if _, err := aspireredis.NewCache[string](ctx, app, "cache", "product"); err == nil || !strings.Contains(err.Error(), "already made") {
		t.Errorf("a second cache of the same name and another type: %v, want an \"already made\" error", err)
	}
	// The name is per Redis connection.
	if _, err := aspireredis.NewCache[product](ctx, app, "second", "product"); err != nil {
		t.Errorf("the same cache name on another connection: %v", err)
	}

	loads := 0
	for range 3 {
		p, err := products.GetOrLoad(ctx, "1", func(context.Context) (product, error) {
			loads++
			return product{Name: "espresso"}, nil
		})
		if err != nil || p.Name != "espresso" {
			t.Fatalf("GetOrLoad = %+v, %v", p, err)
		}
	}
	if loads != 1 {
		t.Errorf("loader ran %d times, want 1", loads)
	}
	if n, err := rdb.Exists(ctx, "goaspire:cache:product:v:1").Result(); err != nil || n != 1 {
		t.Errorf("value not in Redis: %d, %v", n, err)
	}
	if names := checkNames(app.Health().Checks()); !strings.Contains(names, "redis:cache") {
		t.Errorf("health checks %q lack the Redis check", names)
	}

	if err := app.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Ping(ctx).Err(); err == nil {
		t.Error("the Redis client still works after Shutdown")
	}
	if err := products.Set(ctx, "1", product{}); !errors.Is(err, cache.ErrClosed) {
		t.Errorf("cache Set after Shutdown = %v, want cache.ErrClosed", err)
	}
	if _, err := aspireredis.Client(ctx, app, "cache"); !errors.Is(err, servicedefaults.ErrClosed) {
		t.Errorf("Client after Shutdown = %v, want ErrClosed", err)
	}
	if _, err := aspireredis.NewCache[product](ctx, app, "cache", "other"); !errors.Is(err, servicedefaults.ErrClosed) {
		t.Errorf("NewCache after Shutdown = %v, want ErrClosed", err)
	}
}

// closeRecorder is a Host that records the order in which the App's
// Shutdown closes what was opened through it, and runs before (when set)
// just before each Close.
type closeRecorder struct {
	*servicedefaults.App
	before func(id string)

	mu     sync.Mutex
	closed []string
}

func (h *closeRecorder) OpenClient(ctx context.Context, kind, name string, open func(context.Context) (servicedefaults.Opened[any], error)) (any, error) {
	return h.App.OpenClient(ctx, kind, name, func(ctx context.Context) (servicedefaults.Opened[any], error) {
		o, err := open(ctx)
		if err != nil {
			return o, err
		}
		id, inner := kind+"/"+name, o.Close
		o.Close = func(ctx context.Context) error {
			if h.before != nil {
				h.before(id)
			}
			h.mu.Lock()
			h.closed = append(h.closed, id)
			h.mu.Unlock()
			if inner == nil {
				return nil
			}
			return inner(ctx)
		}
		return o, nil
	})
}

// TestCachesCloseBeforeTheirClient: Shutdown closes every cache before
// the Redis client under it, also when NewCache opened the client.
func TestCachesCloseBeforeTheirClient(t *testing.T) {
	srv := testserver.NewRedis(t)
	app := servicedefaultstest.NewUnstarted(t, nil, map[string]string{"ConnectionStrings:cache": srv.ConnectionString()})
	h := &closeRecorder{App: app.App}
	ctx := context.Background()
	products, err := aspireredis.NewCache[product](ctx, h, "cache", "product")
	if err != nil {
		t.Fatal(err)
	}
	prices, err := aspireredis.NewCache[float64](ctx, h, "cache", "price")
	if err != nil {
		t.Fatal(err)
	}
	rdb, err := aspireredis.Client(ctx, h, "cache")
	if err != nil {
		t.Fatal(err)
	}
	h.before = func(id string) {
		if id != "redis/cache" {
			return
		}
		// The client is still open, and the caches on it are closed.
		if err := rdb.Ping(ctx).Err(); err != nil {
			t.Errorf("the client was closed before its turn: %v", err)
		}
		if err := products.Set(ctx, "1", product{}); !errors.Is(err, cache.ErrClosed) {
			t.Errorf("cache product still open when its client closes: Set = %v", err)
		}
		if err := prices.Set(ctx, "1", 1); !errors.Is(err, cache.ErrClosed) {
			t.Errorf("cache price still open when its client closes: Set = %v", err)
		}
	}
	if err := app.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if want := []string{"cache/cache/price", "cache/cache/product", "redis/cache"}; !slices.Equal(h.closed, want) {
		t.Errorf("closed %v, want %v", h.closed, want)
	}
}

// TestConfigureClient: Client's configure functions run in order, once,
// on the configuration read from the App and carrying its telemetry and
// logger, before the client opens: they change go-redis's options (pool
// size, an OnConnect hook), the logger and the health check.
func TestConfigureClient(t *testing.T) {
	srv := testserver.NewRedis(t)
	app := servicedefaultstest.NewUnstarted(t, nil, map[string]string{
		"ConnectionStrings:cache":                   srv.ConnectionString(),
		"Aspire:StackExchange:Redis:cache:PoolSize": "3",
		// Options go-redis cannot honour exactly: the client warns.
		"ConnectionStrings:warned":   "127.0.0.1:1,proxy=twemproxy",
		"ConnectionStrings:rerouted": "127.0.0.1:1,proxy=twemproxy",
	})
	ctx := context.Background()
	var connects atomic.Int32
	var ran []string
	rdb, err := aspireredis.Client(ctx, app, "cache", func(c *cache.RedisConfig) {
		ran = append(ran, "first")
		if c.Options == nil {
			t.Fatal("configure got a RedisConfig without Options")
		}
		if c.Name != "cache" || c.Options.PoolSize != 3 {
			t.Errorf("configure got %v with PoolSize %d; want the configuration read (PoolSize 3)", c, c.Options.PoolSize)
		}
		if c.TracerProvider != app.TracerProvider() || c.MeterProvider != app.MeterProvider() || c.Logger == nil {
			t.Error("configure got a RedisConfig without the App's telemetry and logger")
		}
		c.Options.PoolSize = 7
		c.Options.OnConnect = func(context.Context, *redis.Conn) error {
			connects.Add(1)
			return nil
		}
		c.DisableHealthChecks = true
	}, nil, func(c *cache.RedisConfig) {
		ran = append(ran, "second")
		if c.Options.PoolSize != 7 {
			t.Errorf("the second configure saw PoolSize %d, want the first's 7", c.Options.PoolSize)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ran, []string{"first", "second"}) {
		t.Errorf("configure functions ran %v", ran)
	}
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if got := rdb.(*redis.Client).Options().PoolSize; got != 7 {
		t.Errorf("client PoolSize = %d, want 7", got)
	}
	if connects.Load() == 0 {
		t.Error("the OnConnect hook set by configure did not run")
	}
	if names := checkNames(app.Health().Checks()); strings.Contains(names, "redis:cache") {
		t.Errorf("health checks %q: configure disabled the Redis check", names)
	}

	again, err := aspireredis.Client(ctx, app, "cache", func(*cache.RedisConfig) { t.Error("configure ran for a client already open") })
	if err != nil || again != rdb {
		t.Errorf("second Client(cache) = %v, %v; want the first client", again, err)
	}

	// The client's own warnings go to the App's logger, or to the one
	// configure sets.
	const warning = "redis option has no exact go-redis equivalent"
	if _, err := aspireredis.Client(ctx, app, "warned"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(app.Logs.String(), warning) {
		t.Errorf("the App's log lacks the client's warning: %s", app.Logs.String())
	}
	var own syncbuf.Buffer
	if _, err := aspireredis.Client(ctx, app, "rerouted", func(c *cache.RedisConfig) {
		c.Logger = slog.New(slog.NewTextHandler(&own, nil))
	}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(own.String(), warning) || !strings.Contains(own.String(), "redis=rerouted") {
		t.Errorf("the logger set by configure lacks the client's warning: %s", own.String())
	}
	if strings.Contains(app.Logs.String(), "rerouted") {
		t.Errorf("the App's log has the warning of a client configured with its own logger: %s", app.Logs.String())
	}
}

// prefixCodec is JSON behind a version prefix, to tell it apart in Redis.
type prefixCodec struct{ marshals *atomic.Int32 }

const codecPrefix = "v1:"

func (c prefixCodec) Marshal(v any) ([]byte, error) {
	c.marshals.Add(1)
	b, err := json.Marshal(v)
	return append([]byte(codecPrefix), b...), err
}

func (prefixCodec) Unmarshal(data []byte, v any) error {
	rest, ok := bytes.CutPrefix(data, []byte(codecPrefix))
	if !ok {
		return errors.New("prefixCodec: no prefix")
	}
	return json.Unmarshal(rest, v)
}

// TestConfigureCache: NewCache's configure gets Options already holding
// the App's telemetry and logger, and what it sets (a codec, a tracer
// provider, a logger) is what the cache uses.
func TestConfigureCache(t *testing.T) {
	srv := testserver.NewRedis(t)
	app := servicedefaultstest.NewUnstarted(t, nil, map[string]string{"ConnectionStrings:cache": srv.ConnectionString()})
	ctx := context.Background()
	// A client without context deadlines makes every cache on it warn.
	rdb, err := aspireredis.Client(ctx, app, "cache", func(c *cache.RedisConfig) { c.Options.ContextTimeoutEnabled = false })
	if err != nil {
		t.Fatal(err)
	}
	const warning = "does not take deadlines from contexts"

	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	var own syncbuf.Buffer
	var marshals atomic.Int32
	products, err := aspireredis.NewCache[product](ctx, app, "cache", "product", func(o *cache.Options) {
		if o.TracerProvider != app.TracerProvider() || o.MeterProvider != app.MeterProvider() || o.Logger == nil {
			t.Error("configure got Options without the App's telemetry and logger")
		}
		o.Codec = prefixCodec{&marshals}
		o.TracerProvider = tp
		o.Logger = slog.New(slog.NewTextHandler(&own, nil))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := products.Set(ctx, "1", product{Name: "espresso"}); err != nil {
		t.Fatal(err)
	}
	raw, err := rdb.Get(ctx, "goaspire:cache:product:v:1").Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if marshals.Load() == 0 || !bytes.Contains(raw, []byte(codecPrefix+`{"name":"espresso"}`)) {
		t.Errorf("Redis holds %q (codec called %d times); want the value encoded by the configured codec", raw, marshals.Load())
	}
	if _, err := products.GetOrLoad(ctx, "2", func(context.Context) (product, error) { return product{Name: "ristretto"}, nil }); err != nil {
		t.Fatal(err)
	}
	if got := spans.GetSpans(); len(got) != 1 || got[0].Name != "cache.load" {
		t.Errorf("spans at the tracer provider set by configure: %v, want the cache.load span", got.Snapshots())
	}
	if !strings.Contains(own.String(), warning) {
		t.Errorf("the logger set by configure lacks the cache's warning: %q", own.String())
	}
	if strings.Contains(app.Logs.String(), warning) {
		t.Errorf("the App's log has the warning of a cache configured with its own logger: %s", app.Logs.String())
	}

	// Without configure, the cache warns through the App's logger.
	if _, err := aspireredis.NewCache[product](ctx, app, "cache", "plain"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(app.Logs.String(), warning) {
		t.Errorf("the App's log lacks the cache's warning: %s", app.Logs.String())
	}
}

// TestClientErrors: a bad option is named, the password is not.
func TestClientErrors(t *testing.T) {
	app := servicedefaultstest.NewUnstarted(t, nil, map[string]string{"ConnectionStrings:cache": "localhost:6379,bogus=1,password=hunter2"})
	_, err := aspireredis.Client(context.Background(), app, "cache")
	if err == nil || !strings.Contains(err.Error(), "bogus") || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("Client error = %v, want one naming the option and not the password", err)
	}
	if _, err := aspireredis.NewCache[product](context.Background(), app, "cache", "product"); err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Fatalf("NewCache error = %v, want the Redis client's", err)
	}
}

// TestNewCacheErrors: invalid Options fail NewCache, naming the field and
// the cache, and are not remembered: the name can be made again.
func TestNewCacheErrors(t *testing.T) {
	srv := testserver.NewRedis(t)
	app := servicedefaultstest.NewUnstarted(t, nil, map[string]string{"ConnectionStrings:cache": srv.ConnectionString()})
	ctx := context.Background()
	_, err := aspireredis.NewCache[product](ctx, app, "cache", "product", func(o *cache.Options) { o.TTL = -1 })
	if err == nil || !strings.Contains(err.Error(), "TTL") || !strings.Contains(err.Error(), `"product"`) {
		t.Fatalf("NewCache with a negative TTL = %v, want an error naming TTL and the cache", err)
	}
	if _, err := aspireredis.NewCache[product](ctx, app, "cache", "product"); err != nil {
		t.Fatalf("NewCache after a failed one = %v", err)
	}
}
