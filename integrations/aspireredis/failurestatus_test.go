package aspireredis_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/goaspire/goaspire/cache"
	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/integrations/aspireredis"
	"github.com/goaspire/goaspire/servicedefaults/servicedefaultstest"
	"github.com/goaspire/goaspire/testserver"
)

// getHealth returns the status code and body of GET /health.
func getHealth(t *testing.T, base string) (int, string) {
	t.Helper()
	resp, err := http.Get(base + "/health")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, strings.TrimSpace(string(body))
}

// TestHealthCheckFailureStatus: with Redis killed, the check "redis:cache"
// fails with the status its uses and settings call for, and /health answers
// accordingly; a cache-only service keeps serving from its cache.
func TestHealthCheckFailureStatus(t *testing.T) {
	degradedInCode := func(c *cache.RedisConfig) { c.HealthCheckFailureStatus = health.Degraded }
	for _, tc := range []struct {
		name     string
		settings map[string]string
		direct   []func(*cache.RedisConfig) // nil: no direct Client call
		want     health.Status
		code     int
	}{
		{name: "cache only: Degraded", want: health.Degraded, code: http.StatusOK},
		{name: "cache only, configured Unhealthy", settings: map[string]string{
			"Aspire:StackExchange:Redis:cache:HealthCheckFailureStatus": "unhealthy",
		}, want: health.Unhealthy, code: http.StatusServiceUnavailable},
		{name: "cache only, general section Unhealthy", settings: map[string]string{
			"Aspire:StackExchange:Redis:HealthCheckFailureStatus": "Unhealthy",
		}, want: health.Unhealthy, code: http.StatusServiceUnavailable},
		{name: "used directly: Unhealthy", direct: []func(*cache.RedisConfig){}, want: health.Unhealthy, code: http.StatusServiceUnavailable},
		{name: "used directly, configured Degraded", direct: []func(*cache.RedisConfig){}, settings: map[string]string{
			"Aspire:StackExchange:Redis:cache:HealthCheckFailureStatus": "DEGRADED",
		}, want: health.Degraded, code: http.StatusOK},
		{name: "used directly, Degraded in code", direct: []func(*cache.RedisConfig){degradedInCode}, want: health.Degraded, code: http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := testserver.NewRedis(t)
			values := map[string]string{
				"ConnectionStrings:cache": srv.ConnectionString(),
				// Every probe runs the checks.
				"Aspire:ServiceDefaults:HealthChecks:CacheDuration": "0s",
			}
			for k, v := range tc.settings {
				values[k] = v
			}
			app := servicedefaultstest.New(t, nil, values)
			ctx := context.Background()
			if tc.direct != nil {
				if _, err := aspireredis.Client(ctx, app, "cache", tc.direct...); err != nil {
					t.Fatal(err)
				}
			}
			products, err := aspireredis.NewCache[product](ctx, app, "cache", "product")
			if err != nil {
				t.Fatal(err)
			}
			load := func(name string) func(context.Context) (product, error) {
				return func(context.Context) (product, error) { return product{Name: name}, nil }
			}
			if _, err := products.GetOrLoad(ctx, "1", load("espresso")); err != nil {
				t.Fatal(err)
			}
			if code, body := getHealth(t, app.URL); code != http.StatusOK || body != string(health.Healthy) {
				t.Fatalf("GET /health with Redis up = %d %q, want 200 Healthy", code, body)
			}

			if err := srv.Kill(); err != nil {
				t.Fatal(err)
			}
			var code int
			var body string
			waitFor(t, "/health to notice Redis is down", func() bool {
				code, body = getHealth(t, app.URL)
				return body != string(health.Healthy)
			})
			if code != tc.code || body != string(tc.want) {
				t.Errorf("GET /health with Redis down = %d %q, want %d %q", code, body, tc.code, tc.want)
			}
			rep := app.Health().Run(ctx, nil)
			for _, e := range rep.Entries {
				if e.Name == "redis:cache" && (e.Status != tc.want || !strings.Contains(e.Error, `redis "cache"`)) {
					t.Errorf("entry redis:cache = %s %q, want %s and an error naming the connection", e.Status, e.Error, tc.want)
				}
			}

			// The cache keeps serving: what L1 holds, and new keys through
			// the loader.
			for key, name := range map[string]string{"1": "espresso", "2": "ristretto"} {
				p, err := products.GetOrLoad(ctx, key, load(name))
				if err != nil || p.Name != name {
					t.Errorf("GetOrLoad(%s) with Redis down = %+v, %v; want %s", key, p, err, name)
				}
			}
		})
	}
}

// TestHealthCheckFailureStatusBadValue: a value other than Unhealthy or
// Degraded fails the open with an error naming the key.
func TestHealthCheckFailureStatusBadValue(t *testing.T) {
	srv := testserver.NewRedis(t)
	key := "Aspire:StackExchange:Redis:cache:HealthCheckFailureStatus"
	app := servicedefaultstest.NewUnstarted(t, nil, map[string]string{
		"ConnectionStrings:cache": srv.ConnectionString(),
		key:                       "Healthy",
	})
	_, err := aspireredis.NewCache[product](context.Background(), app, "cache", "product")
	if err == nil || !strings.Contains(err.Error(), key) {
		t.Fatalf("NewCache with %s=Healthy: %v, want an error naming the key", key, err)
	}
}
