package cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/testserver"
)

// openRedis is LoadRedisConfig then NewRedis, with a quiet logger and mod
// applied to the RedisConfig between the two.
func openRedis(ctx context.Context, cfg *discovery.Config, name string, mod ...func(*RedisConfig)) (redis.UniversalClient, error) {
	c, err := LoadRedisConfig(cfg, name)
	if err != nil {
		return nil, err
	}
	c.Logger = quietLogger()
	for _, m := range mod {
		m(c)
	}
	return NewRedis(ctx, c)
}

func open(t *testing.T, values map[string]string, mod ...func(*RedisConfig)) (redis.UniversalClient, error) {
	t.Helper()
	rdb, err := openRedis(context.Background(), discovery.FromMap(values), "cache", mod...)
	if err == nil {
		t.Cleanup(func() { _ = rdb.Close() })
	}
	return rdb, err
}

func ping(rdb redis.UniversalClient) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return rdb.Ping(ctx).Err()
}

func TestOpenRedisSources(t *testing.T) {
	srv := testserver.NewRedis(t)
	port := strconv.Itoa(srv.Port())
	tests := []struct {
		name   string
		values map[string]string
	}{
		{"connection string", map[string]string{"ConnectionStrings__cache": srv.ConnectionString()}},
		{"url connection string", map[string]string{"ConnectionStrings__cache": srv.URL()}},
		{"aspire 13 uri", map[string]string{"CACHE_URI": srv.URL()}},
		{"aspire 13 uri without password", map[string]string{"CACHE_URI": "redis://" + srv.Addr(), "CACHE_PASSWORD": srv.Password()}},
		{"aspire 13 host and port", map[string]string{"CACHE_HOST": "127.0.0.1", "CACHE_PORT": port, "CACHE_PASSWORD": srv.Password()}},
		{"section connection string", map[string]string{"Aspire__StackExchange__Redis__ConnectionString": srv.ConnectionString()}},
		{"named section connection string", map[string]string{"Aspire__StackExchange__Redis__cache__ConnectionString": srv.ConnectionString()}},
		{"connection string wins over the section", map[string]string{
			"ConnectionStrings__cache":                       srv.ConnectionString(),
			"Aspire__StackExchange__Redis__ConnectionString": "127.0.0.1:1",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rdb, err := open(t, tt.values)
			if err != nil {
				t.Fatal(err)
			}
			if err := ping(rdb); err != nil {
				t.Fatalf("PING: %v", err)
			}
		})
	}
}

func TestOpenRedisSettings(t *testing.T) {
	srv := testserver.NewRedis(t)
	rdb, err := open(t, map[string]string{
		"ConnectionStrings__cache":                                         srv.ConnectionString() + ",name=fromstring,defaultDatabase=1",
		"Aspire:StackExchange:Redis:ConfigurationOptions:ClientName":       "general",
		"Aspire:StackExchange:Redis:cache:ConfigurationOptions:ClientName": "named",
		"Aspire:StackExchange:Redis:ConfigurationOptions:DefaultDatabase":  "2",
		"Aspire:StackExchange:Redis:ConfigurationOptions:SyncTimeout":      "1234",
		"Aspire:StackExchange:Redis:cache:PoolSize":                        "7",
	})
	if err != nil {
		t.Fatal(err)
	}
	o := rdb.(*redis.Client).Options()
	if o.ClientName != "named" || o.DB != 2 || o.ReadTimeout != 1234*time.Millisecond || o.PoolSize != 7 {
		t.Errorf("options: name %q db %d read timeout %v pool %d", o.ClientName, o.DB, o.ReadTimeout, o.PoolSize)
	}
	name, err := rdb.ClientGetName(context.Background()).Result()
	if err != nil || name != "named" {
		t.Errorf("CLIENT GETNAME = %q, %v", name, err)
	}
}

func TestOpenRedisErrors(t *testing.T) {
	tests := []struct {
		name   string
		values map[string]string
		want   []string
		is     error
	}{
		{"nothing configured", map[string]string{}, []string{"ConnectionStrings__cache", "CACHE_URI", "Aspire:StackExchange:Redis:cache:ConnectionString"}, discovery.ErrNotFound},
		{"bad connection string", map[string]string{"ConnectionStrings__cache": "h:1,password=" + secret + ",frob=1"},
			[]string{"ConnectionStrings:cache", `item 3 follows "password"`}, ErrConnectionString},
		{"unknown option", map[string]string{"ConnectionStrings__cache": "h:1,frob=1,password=" + secret},
			[]string{"ConnectionStrings:cache", `unknown option "frob"`}, ErrConnectionString},
		{"bad uri", map[string]string{"CACHE_URI": "http://:" + secret + "@h"}, []string{"CACHE_URI"}, ErrConnectionString},
		{"bad port property", map[string]string{"CACHE_HOST": "h", "CACHE_PORT": secret, "CACHE_PASSWORD": secret}, []string{"CACHE_HOST/CACHE_PORT"}, ErrConnectionString},
		{"unknown ConfigurationOptions property", map[string]string{
			"ConnectionStrings__cache":                                   "h:1",
			"Aspire:StackExchange:Redis:ConfigurationOptions:Frobnicate": "1",
		}, []string{"Aspire:StackExchange:Redis:ConfigurationOptions:Frobnicate"}, nil},
		{"bad ConfigurationOptions value", map[string]string{
			"ConnectionStrings__cache": "h:1",
			"Aspire:StackExchange:Redis:cache:ConfigurationOptions:ConnectTimeout": "soon",
		}, []string{"Aspire:StackExchange:Redis:cache:ConfigurationOptions:ConnectTimeout", "want an integer"}, nil},
		{"bad setting", map[string]string{"ConnectionStrings__cache": "h:1", "Aspire:StackExchange:Redis:DisableTracing": "perhaps"},
			[]string{"Aspire:StackExchange:Redis:DisableTracing"}, nil},
		{"negative pool size", map[string]string{"ConnectionStrings__cache": "h:1", "Aspire:StackExchange:Redis:PoolSize": "-1"},
			[]string{"Aspire:StackExchange:Redis:PoolSize"}, nil},
		{"unreadable SSL_CERT_FILE", map[string]string{"ConnectionStrings__cache": "h:1,ssl=true", "SSL_CERT_FILE": "/nonexistent/ca.pem"},
			[]string{"SSL_CERT_FILE"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := open(t, tt.values)
			if err == nil {
				t.Fatal("LoadRedisConfig and NewRedis succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v does not wrap %v", err, tt.is)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error %q leaks the secret", err)
			}
		})
	}
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

func TestOpenRedisDoesNotAbortWhenRedisIsDown(t *testing.T) {
	addr := closedPort(t)
	rdb, err := open(t, map[string]string{"ConnectionStrings__cache": addr + ",password=" + secret + ",abortConnect=false"})
	if err != nil {
		t.Fatalf("NewRedis with Redis down: %v", err)
	}
	if err := ping(rdb); err == nil {
		t.Fatal("PING to a closed port succeeded")
	}

	// abortConnect=true asks for a connection at start.
	_, err = open(t, map[string]string{"ConnectionStrings__cache": addr + ",password=" + secret + ",abortConnect=true,connectRetry=1,connectTimeout=200"})
	if err == nil || !strings.Contains(err.Error(), "abortConnect=true") {
		t.Fatalf("NewRedis with abortConnect=true and Redis down: %v", err)
	}
	if strings.Contains(err.Error(), secret) {
		t.Errorf("error %q leaks the password", err)
	}
}

func TestOpenRedisTLS(t *testing.T) {
	srv := testserver.NewRedis(t, testserver.WithRedisTLS())
	tests := []struct {
		name   string
		values map[string]string
		ok     bool
	}{
		{"ssl=true trusting SSL_CERT_FILE", map[string]string{"ConnectionStrings__cache": srv.ConnectionString(), "SSL_CERT_FILE": srv.CACertFile()}, true},
		{"ssl=true trusting SSL_CERT_DIR", map[string]string{"ConnectionStrings__cache": srv.ConnectionString(), "SSL_CERT_DIR": "/nonexistent" + string(filepath.ListSeparator) + filepath.Dir(srv.CACertFile())}, true},
		{"rediss url", map[string]string{"ConnectionStrings__cache": srv.URL(), "SSL_CERT_FILE": srv.CACertFile()}, true},
		{"aspire 13 uri", map[string]string{"CACHE_URI": srv.URL(), "SSL_CERT_FILE": srv.CACertFile()}, true},
		{"sslHost", map[string]string{"ConnectionStrings__cache": srv.ConnectionString() + ",sslHost=localhost", "SSL_CERT_FILE": srv.CACertFile()}, true},
		{"untrusted", map[string]string{"ConnectionStrings__cache": srv.ConnectionString()}, false},
		{"wrong host name", map[string]string{"ConnectionStrings__cache": srv.ConnectionString() + ",sslHost=redis.example", "SSL_CERT_FILE": srv.CACertFile()}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rdb, err := open(t, tt.values)
			if err != nil {
				t.Fatal(err)
			}
			err = ping(rdb)
			if tt.ok && err != nil {
				t.Fatalf("PING over TLS: %v", err)
			}
			if !tt.ok && err == nil {
				t.Fatal("PING succeeded with an untrusted certificate")
			}
		})
	}

	// The cache works over TLS, invalidation included.
	a := newCache[int](t, openClient(t, srv), "tls", Options{})
	b := newCache[int](t, openClient(t, srv), "tls", Options{})
	ctx := context.Background()
	_, _ = b.GetOrLoad(ctx, "k", func(context.Context) (int, error) { return 1, nil })
	waitSubscribed(t, a.rdb, a.channel, 2)
	_ = a.Set(ctx, "k", 2)
	eventually(t, 2*time.Second, "invalidation over TLS", func() bool { v, _ := b.Get(ctx, "k"); return v == 2 })
}

func TestHealthCheck(t *testing.T) {
	srv := testserver.NewRedis(t)
	var checks []health.Check
	// What integrations/aspireredis does: the client's check unless configuration
	// disables it.
	register := func(values map[string]string) {
		t.Helper()
		c, err := LoadRedisConfig(discovery.FromMap(values), "cache")
		if err != nil {
			t.Fatal(err)
		}
		c.Logger = quietLogger()
		rdb, err := NewRedis(context.Background(), c)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = rdb.Close() })
		if !c.DisableHealthChecks {
			checks = append(checks, HealthCheck(c.Name, rdb))
		}
	}
	register(map[string]string{"ConnectionStrings__cache": srv.ConnectionString()})
	if len(checks) != 1 || checks[0].Name != "redis:cache" || len(checks[0].Tags) != 1 || checks[0].Tags[0] != health.TagReady {
		t.Fatalf("registered %+v, want one ready check named redis:cache", checks)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := checks[0].Check(ctx); err != nil {
		t.Fatalf("healthy check failed: %v", err)
	}
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	err := checks[0].Check(ctx)
	if err == nil {
		t.Fatal("check passed with Redis down")
	}
	if strings.Contains(err.Error(), srv.Password()) {
		t.Errorf("check error leaks the password: %v", err)
	}

	checks = nil
	register(map[string]string{"ConnectionStrings__cache": srv.ConnectionString(), "Aspire:StackExchange:Redis:DisableHealthChecks": "true"})
	if len(checks) != 0 {
		t.Errorf("DisableHealthChecks=true still registered %d checks", len(checks))
	}
}

func TestTelemetryNeverShowsThePassword(t *testing.T) {
	srv := testserver.NewRedis(t, testserver.WithRedisSetting("user", "app", "on", ">"+secret, "~*", "&*", "+@all"))
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer func() { _ = mp.Shutdown(context.Background()) }()

	rdb, err := open(t, map[string]string{"ConnectionStrings__cache": srv.Addr() + ",user=app,password=" + secret},
		func(c *RedisConfig) { c.TracerProvider, c.MeterProvider = tp, mp })
	if err != nil {
		t.Fatal(err)
	}
	if err := ping(rdb); err != nil {
		t.Fatalf("PING as user app: %v", err)
	}
	c := newCache[product](t, rdb, "telemetry", Options{TracerProvider: tp, MeterProvider: mp})
	ctx := context.Background()
	for range 3 {
		if _, err := c.GetOrLoad(ctx, "p1", func(context.Context) (product, error) { return sampleProduct(1), nil }); err != nil {
			t.Fatal(err)
		}
	}
	_ = c.Set(ctx, "p2", sampleProduct(2), WithTags("t"))
	_ = rdb.ConfigGet(ctx, "maxmemory").Err()

	spans := rec.Ended()
	names := map[string]bool{}
	for _, s := range spans {
		names[s.Name()] = true
		check := func(where, v string) {
			if strings.Contains(v, secret) {
				t.Errorf("span %q %s contains the password", s.Name(), where)
			}
		}
		check("name", s.Name())
		for _, a := range s.Attributes() {
			check(string(a.Key), a.Value.String())
		}
		for _, e := range s.Events() {
			for _, a := range e.Attributes {
				check("event "+string(a.Key), a.Value.String())
			}
		}
	}
	t.Logf("span names: %v", names)
	for _, want := range []string{"cache.load", "set"} { // a SET NX GET reads (and locks), a SET GET stores the load
		if !names[want] {
			t.Errorf("no %q span among %v", want, names)
		}
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if sum, ok := m.Data.(metricdata.Sum[int64]); ok {
				for _, dp := range sum.DataPoints {
					tier, _ := dp.Attributes.Value(attribute.Key("cache.tier"))
					got[fmt.Sprint(m.Name, "/", tier.AsString())] += dp.Value
				}
			}
			if strings.HasPrefix(m.Name, "db.client") {
				got["redis pool metrics"] = 1
			}
		}
	}
	for key, want := range map[string]int64{
		"goaspire.cache.hits/l1":   2,
		"goaspire.cache.misses/l1": 1,
		"goaspire.cache.misses/l2": 1,
		"goaspire.cache.loads/":    1,
		"redis pool metrics":       1,
	} {
		if got[key] != want {
			t.Errorf("metric %s = %d, want %d (all: %v)", key, got[key], want, got)
		}
	}
}

// Aspire 13.6 deploy targets inject only the portable alias of a name
// (ConnectionStrings__my_cache for "my-cache"): LoadRedisConfig reads it after
// the logical name, and a missing connection names both.
func TestOpenRedisPortableAlias(t *testing.T) {
	tests := []struct {
		name   string
		values map[string]string
		want   []string
	}{
		{"alias read", map[string]string{"ConnectionStrings__my_cache": "h:1,frob=1"}, []string{"ConnectionStrings:my_cache", `unknown option "frob"`}},
		{"logical name first", map[string]string{"ConnectionStrings__my-cache": "h:1,nope=1", "ConnectionStrings__my_cache": "h:1,frob=1"}, []string{"ConnectionStrings:my-cache", `unknown option "nope"`}},
		{"alias properties", map[string]string{"MY_CACHE_HOST": "h", "MY_CACHE_PORT": "x"}, []string{"MY_CACHE_HOST/MY_CACHE_PORT"}},
		{"missing", map[string]string{}, []string{"ConnectionStrings__my-cache", "ConnectionStrings__my_cache", "MY_CACHE_URI"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rdb, err := openRedis(context.Background(), discovery.FromMap(tt.values), "my-cache")
			if err == nil {
				_ = rdb.Close()
				t.Fatal("LoadRedisConfig and NewRedis succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// TestNewRedisByHand opens RedisConfigs built without discovery: the zero
// value is a single client of 127.0.0.1:6379 (not contacted here), and
// several addresses make a cluster client.
func TestNewRedisByHand(t *testing.T) {
	rdb, err := NewRedis(context.Background(), &RedisConfig{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	if c, ok := rdb.(*redis.Client); !ok || c.Options().Addr != "127.0.0.1:6379" {
		t.Errorf("zero RedisConfig gave %T", rdb)
	}

	opts := &redis.UniversalOptions{Addrs: []string{closedPort(t), closedPort(t)}}
	rdb, err = NewRedis(context.Background(), &RedisConfig{Name: "c", Options: opts, Logger: quietLogger(), DisableMetrics: true})
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	if _, ok := rdb.(*redis.ClusterClient); !ok {
		t.Errorf("two addresses gave %T, want *redis.ClusterClient", rdb)
	}

	if _, err := NewRedis(context.Background(), nil); err == nil {
		t.Error("NewRedis(nil) succeeded")
	}
}

// TestRedisConfigNeverShowsThePassword prints and logs a loaded
// RedisConfig in every way.
func TestRedisConfigNeverShowsThePassword(t *testing.T) {
	c, err := LoadRedisConfig(discovery.FromMap(map[string]string{"ConnectionStrings__cache": "h:1,user=u,password=" + secret}), "cache")
	if err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("config", "c", c)
	slog.New(slog.NewTextHandler(&logs, nil)).Info("config", "c", *c)
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%v %+v %#v %s", *c, *c, *c, c), logs.String()} {
		if strings.Contains(s, secret) {
			t.Errorf("%s shows the password", s)
		}
		if !strings.Contains(s, "h:1") {
			t.Errorf("%s does not show the address", s)
		}
	}
}
