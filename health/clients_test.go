package health_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/testserver"
)

func TestPgxPoolCheck(t *testing.T) {
	pg := testserver.NewPostgres(t)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()

	check := health.PgxPool("db", pool)
	if check.Name != "db" || len(check.Tags) != 1 || check.Tags[0] != health.TagReady {
		t.Fatalf("check = %+v", check)
	}
	for range 5 {
		if err := check.Check(ctx); err != nil {
			t.Fatalf("check against a running server: %v", err)
		}
	}
	if n := pool.Stat().NewConnsCount(); n != 1 {
		t.Errorf("5 checks opened %d connections, want 1 reused from the pool", n)
	}

	if err := pg.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	reg := health.NewRegistry(health.WithDefaultTimeout(2*time.Second), health.WithLogger(discardLogger()))
	if err := reg.Register(check); err != nil {
		t.Fatal(err)
	}
	rep := reg.Run(ctx, nil)
	if rep.Status != health.Unhealthy || rep.Entries[0].Error == "" {
		t.Fatalf("report with the server down = %+v", rep)
	}
	if strings.Contains(rep.Entries[0].Error, pg.Password()) {
		t.Fatalf("password in the report: %q", rep.Entries[0].Error)
	}

	if err := pg.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if rep := reg.Run(ctx, nil); rep.Status != health.Healthy {
		t.Fatalf("report after restart = %+v", rep)
	}
}

func TestRedisCheck(t *testing.T) {
	srv := testserver.NewRedis(t)
	ctx := context.Background()
	client := redis.NewClient(&redis.Options{Addr: srv.Addr(), Password: srv.Password(), MaxRetries: -1})
	defer client.Close()

	check := health.Redis("cache", client)
	if check.Tags[0] != health.TagReady {
		t.Fatalf("check = %+v", check)
	}
	for range 5 {
		if err := check.Check(ctx); err != nil {
			t.Fatalf("check against a running server: %v", err)
		}
	}
	if n := client.PoolStats().Misses; n != 1 {
		t.Errorf("5 checks dialled %d connections, want 1 reused from the pool", n)
	}

	if err := srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	reg := health.NewRegistry(health.WithDefaultTimeout(2*time.Second), health.WithLogger(discardLogger()))
	if err := reg.Register(check); err != nil {
		t.Fatal(err)
	}
	rep := reg.Run(ctx, nil)
	if rep.Status != health.Unhealthy || strings.Contains(rep.Entries[0].Error, srv.Password()) {
		t.Fatalf("report with the server down = %+v", rep)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if rep := reg.Run(ctx, nil); rep.Status != health.Healthy {
		t.Fatalf("report after restart = %+v", rep)
	}
}
