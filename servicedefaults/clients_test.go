package servicedefaults_test

import (
	"context"
	"strings"
	"testing"

	"github.com/goaspire/goaspire/cache"
	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/servicedefaults"
	"github.com/goaspire/goaspire/testserver"
)

func checkNames(checks []health.Check) string {
	var names []string
	for _, c := range checks {
		names = append(names, c.Name)
	}
	return strings.Join(names, ",")
}

type product struct {
	Name string `json:"name"`
}

func TestRedisAndCache(t *testing.T) {
	srv := testserver.NewRedis(t)
	app, _ := newApp(t, map[string]string{"ConnectionStrings__cache": srv.ConnectionString()}, nil)

	rdb, err := app.Redis("cache")
	if err != nil {
		t.Fatal(err)
	}
	again, _ := app.Redis("cache")
	if again != rdb {
		t.Error("second Redis(cache) made another client")
	}
	products, err := servicedefaults.NewCache[product](app, "cache", "product", cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := servicedefaults.NewCache[product](app, "cache", "product", cache.Options{}); err == nil {
		t.Error("a second cache of the same name was made")
	}
	ctx := context.Background()
	loads := 0
	for i := 0; i < 3; i++ {
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
	if names := checkNames(app.Health().Checks()); !strings.Contains(names, "cache") {
		t.Errorf("health checks %q lack the Redis check", names)
	}
	if err := app.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Ping(ctx).Err(); err == nil {
		t.Error("the Redis client still works after Shutdown")
	}
}

func TestRedisErrors(t *testing.T) {
	app, _ := newApp(t, map[string]string{"ConnectionStrings__cache": "localhost:6379,bogus=1,password=hunter2"}, nil)
	_, err := app.Redis("cache")
	if err == nil || !strings.Contains(err.Error(), "bogus") || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("Redis error = %v, want one naming the option and not the password", err)
	}
}
