package aspireredis_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/goaspire/goaspire/integrations/aspireredis"
	"github.com/goaspire/goaspire/servicedefaults/servicedefaultstest"
	"github.com/goaspire/goaspire/testserver"
)

// TestTopologies: Client and NewCache work over a Sentinel-managed
// primary (also after the Sentinel has promoted the replica of a killed
// primary) and over a Redis Cluster, and the readiness check follows.
func TestTopologies(t *testing.T) {
	tests := []struct {
		name string
		// start returns the connection string and, for a topology that can
		// fail over, a function that kills the primary and waits until a
		// replica has replaced it.
		start func(t *testing.T) (cs string, failover func())
		want  string // the client type
	}{
		{"sentinel", func(t *testing.T) (string, func()) {
			primary := testserver.NewRedis(t)
			replica := primary.NewReplica(t)
			sentinel := primary.NewSentinel(t, "cache")
			sc := redis.NewSentinelClient(&redis.Options{Addr: sentinel.Addr(), Password: sentinel.Password(), MaxRetries: -1})
			t.Cleanup(func() { _ = sc.Close() })
			waitFor(t, "the sentinel knows the replica", func() bool {
				reps, err := sc.Replicas(context.Background(), "cache").Result()
				return err == nil && len(reps) == 1 && reps[0]["master-link-status"] == "ok"
			})
			return sentinel.ConnectionString(), func() {
				if err := primary.Kill(); err != nil {
					t.Fatal(err)
				}
				waitFor(t, "the sentinel promotes the replica", func() bool {
					addr, err := sc.GetMasterAddrByName(context.Background(), "cache").Result()
					return err == nil && len(addr) == 2 && addr[1] == strconv.Itoa(replica.Port())
				})
			}
		}, "*redis.Client"},
		{"cluster", func(t *testing.T) (string, func()) {
			return testserver.NewRedisCluster(t, 3).ConnectionString(), nil
		}, "*redis.ClusterClient"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs, failover := tt.start(t)
			ctx := context.Background()
			app := servicedefaultstest.NewUnstarted(t, http.NewServeMux(), map[string]string{"ConnectionStrings:cache": cs})
			rdb, err := aspireredis.Client(ctx, app, "cache")
			if err != nil {
				t.Fatal(err)
			}
			if got := typeName(rdb); got != tt.want {
				t.Errorf("Client made a %s, want %s", got, tt.want)
			}
			products, err := aspireredis.NewCache[product](ctx, app, "cache", "product")
			if err != nil {
				t.Fatal(err)
			}
			if err := products.Set(ctx, "1", product{Name: "espresso"}); err != nil {
				t.Fatal(err)
			}
			healthy := func() bool {
				rec := httptest.NewRecorder()
				app.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/health", nil))
				return rec.Code == http.StatusOK
			}
			waitFor(t, "/health is healthy", healthy)
			if failover != nil {
				if err := rdb.Do(ctx, "WAIT", 1, 10000).Err(); err != nil {
					t.Fatal(err)
				}
				failover()
				waitFor(t, "the client writes after the failover", func() bool {
					return rdb.Set(ctx, "probe", "x", 0).Err() == nil
				})
				waitFor(t, "/health is healthy after the failover", healthy)
			}
			// A second App (another instance of the service) reads the
			// value from Redis without loading it.
			other := servicedefaultstest.NewUnstarted(t, http.NewServeMux(), map[string]string{"ConnectionStrings:cache": cs})
			fromOther, err := aspireredis.NewCache[product](ctx, other, "cache", "product")
			if err != nil {
				t.Fatal(err)
			}
			p, err := fromOther.GetOrLoad(ctx, "1", func(context.Context) (product, error) {
				return product{Name: "loaded"}, nil
			})
			if err != nil || p.Name != "espresso" {
				t.Errorf("the other instance got %+v, %v; want the value from Redis", p, err)
			}
		})
	}
}

func typeName(v any) string {
	switch v.(type) {
	case *redis.Client:
		return "*redis.Client"
	case *redis.ClusterClient:
		return "*redis.ClusterClient"
	}
	return "something else"
}
