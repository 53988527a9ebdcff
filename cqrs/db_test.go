package cqrs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/testserver"
)

// openDB is LoadConfig then New, with a quiet logger and mod applied to
// the Config between the two.
func openDB(ctx context.Context, cfg *discovery.Config, name string, mod ...func(*Config)) (*DB, error) {
	c, err := LoadConfig(cfg, name)
	if err != nil {
		return nil, err
	}
	c.Logger = quietLogger
	for _, m := range mod {
		m(c)
	}
	return New(ctx, c)
}

// openPool is LoadPoolConfig then NewPool, as openDB.
func openPool(ctx context.Context, cfg *discovery.Config, name string, mod ...func(*PoolConfig)) (*Pool, error) {
	c, err := LoadPoolConfig(cfg, name)
	if err != nil {
		return nil, err
	}
	c.Logger = quietLogger
	for _, m := range mod {
		m(c)
	}
	return NewPool(ctx, c)
}

func openTestDB(t *testing.T, cfg *discovery.Config, mod ...func(*Config)) *DB {
	t.Helper()
	db, err := openDB(t.Context(), cfg, "db", mod...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	return db
}

// TestDB covers the routing a healthy cluster sees, then replay lag, on one
// primary and replica.
func TestDB(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	ctx := t.Context()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	db := openTestDB(t, c.config(map[string]string{"Aspire__Npgsql__db__Replicas__MaxLag": "500ms"}), func(c *Config) { c.MeterProvider = mp })
	eventually(t, 10*time.Second, "the replica is in rotation", func() bool { return inRotation(db, "db-replica-east") })

	if _, err := db.Exec(ctx, "create table items (id int primary key, v text)"); err != nil {
		t.Fatal(err)
	}

	t.Run("write on the primary, read from the replica", func(t *testing.T) {
		if _, err := db.Exec(ctx, "insert into items values (1, 'one')"); err != nil {
			t.Fatal(err)
		}
		if err := c.replica.WaitCaughtUp(ctx); err != nil {
			t.Fatal(err)
		}
		var v string
		var standby bool
		if err := db.QueryRow(ctx, "select v, pg_is_in_recovery() from items where id = $1", 1).Scan(&v, &standby); err != nil {
			t.Fatal(err)
		}
		if v != "one" || !standby {
			t.Errorf("read %q, standby=%v; want one from the replica", v, standby)
		}
		rows, err := db.Query(ctx, "select id from items order by id")
		if err != nil {
			t.Fatal(err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int])
		if err != nil || len(ids) != 1 || ids[0] != 1 {
			t.Errorf("Query: %v %v", ids, err)
		}
		rows, err = db.Query(ctx, "select id from items where id < 0")
		if err != nil {
			t.Fatal(err)
		}
		if ids, err := pgx.CollectRows(rows, pgx.RowTo[int]); err != nil || len(ids) != 0 {
			t.Errorf("empty Query: %v %v", ids, err)
		}
		if err := db.QueryRow(ctx, "select v from items where id = 42").Scan(&v); !errors.Is(err, pgx.ErrNoRows) {
			t.Errorf("no row: %v", err)
		}
		if err := db.Replica().QueryRow(ctx, "select pg_is_in_recovery()").Scan(&standby); err != nil || !standby {
			t.Errorf("Replica(): standby=%v err=%v", standby, err)
		}
		if got := sumCounter(t, reader, "goaspire.cqrs.reads", attribute.String("target", "replica")); got < 4 {
			t.Errorf("goaspire.cqrs.reads{target=replica} = %d", got)
		}
		if rs := db.ReadStats(); rs.Replica < 4 || rs.Replica != sumCounter(t, reader, "goaspire.cqrs.reads", attribute.String("target", "replica")) {
			t.Errorf("ReadStats = %+v, disagrees with the metric", rs)
		}
	})

	t.Run("keyed handles", func(t *testing.T) {
		for key, wantStandby := range map[string]bool{"primary": false, "PRIMARY": false, "replica": true, "db-primary": false, "db-replica-east": true} {
			p, err := db.Keyed(key)
			if err != nil {
				t.Fatal(err)
			}
			var standby bool
			if err := p.QueryRow(ctx, "select pg_is_in_recovery()").Scan(&standby); err != nil || standby != wantStandby {
				t.Errorf("Keyed(%q): standby=%v err=%v", key, standby, err)
			}
		}
		if _, err := db.Keyed("db-replica-west"); !errors.Is(err, discovery.ErrNotFound) || !strings.Contains(err.Error(), "db-replica-east") {
			t.Errorf("unknown key: %v", err)
		}
	})

	t.Run("health checks", func(t *testing.T) {
		checks := db.HealthChecks()
		if len(checks) != 2 || checks[0].Name != "postgres:db-primary" || checks[0].FailureStatus != health.Unhealthy ||
			checks[1].Name != "postgres:db-replica-east" || checks[1].FailureStatus != health.Degraded {
			t.Fatalf("checks %+v", checks)
		}
		for _, ch := range checks {
			if err := ch.Check(ctx); err != nil {
				t.Errorf("%s: %v", ch.Name, err)
			}
		}
	})

	t.Run("read your writes", func(t *testing.T) {
		if _, err := db.Exec(ctx, "insert into items values (2, '0')"); err != nil {
			t.Fatal(err)
		}
		for i := 1; i <= 200; i++ {
			sctx := WithSession(ctx)
			if _, err := db.Exec(sctx, "update items set v = $1 where id = 2", fmt.Sprint(i)); err != nil {
				t.Fatal(err)
			}
			if SessionLSN(sctx) == 0 {
				t.Fatal("the write recorded no WAL position")
			}
			var v string
			if err := db.QueryRow(sctx, "select v from items where id = 2").Scan(&v); err != nil {
				t.Fatal(err)
			}
			if v != fmt.Sprint(i) {
				t.Fatalf("iteration %d: read %q: a stale row", i, v)
			}
		}
		// Transactions record their commit too.
		sctx := WithSession(ctx)
		err := pgx.BeginFunc(sctx, db, func(tx pgx.Tx) error {
			_, err := tx.Exec(sctx, "update items set v = 'tx' where id = 2")
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		var v string
		if err := db.QueryRow(sctx, "select v from items where id = 2").Scan(&v); err != nil || v != "tx" {
			t.Fatalf("after commit read %q, %v", v, err)
		}
	})

	t.Run("paused replica: sessions read the primary, lag takes it out", func(t *testing.T) {
		if err := c.replica.PauseReplay(ctx); err != nil {
			t.Fatal(err)
		}
		resumed := false
		resume := func() {
			if !resumed {
				resumed = true
				if err := c.replica.ResumeReplay(context.Background()); err != nil {
					t.Error(err)
				}
			}
		}
		defer resume()

		sctx := WithSession(ctx)
		if _, err := db.Exec(sctx, "update items set v = 'paused' where id = 2"); err != nil {
			t.Fatal(err)
		}
		var v string
		if err := db.QueryRow(sctx, "select v from items where id = 2").Scan(&v); err != nil || v != "paused" {
			t.Fatalf("session read %q, %v: stale", v, err)
		}
		// Outside the session the replica is still in rotation (for now)
		// and serves the old row: the test is not vacuous.
		if inRotation(db, "db-replica-east") {
			if err := db.ReplicaFor(ctx).QueryRow(ctx, "select v from items where id = 2").Scan(&v); err == nil && v == "paused" {
				t.Log("replica already had the row (replay paused late)")
			}
		}
		// Keep writing so the primary's position moves; the lag grows past
		// the bound.
		eventually(t, 10*time.Second, "the lagging replica leaves the rotation", func() bool {
			_, _ = db.Primary().Exec(ctx, "update items set v = v where id = 2")
			return !inRotation(db, "db-replica-east")
		})
		st := db.Replicas()[0]
		if !strings.Contains(st.Reason, "lagging") || st.Lag < 500*time.Millisecond || st.LagBytes <= 0 {
			t.Errorf("status %+v", st)
		}
		if err := db.HealthChecks()[1].Check(ctx); err == nil || !strings.Contains(err.Error(), "lagging") {
			t.Errorf("replica health: %v", err)
		}
		before := sumCounter(t, reader, "goaspire.cqrs.reads", attribute.String("target", "primary"), attribute.Bool("fallback", true))
		var standby bool
		if err := db.QueryRow(ctx, "select pg_is_in_recovery()").Scan(&standby); err != nil || standby {
			t.Errorf("read with no replica in rotation: standby=%v err=%v", standby, err)
		}
		if after := sumCounter(t, reader, "goaspire.cqrs.reads", attribute.String("target", "primary"), attribute.Bool("fallback", true)); after <= before {
			t.Errorf("fallback reads %d -> %d", before, after)
		}

		resume()
		eventually(t, 10*time.Second, "the replica comes back", func() bool { return inRotation(db, "db-replica-east") })
	})
}

// TestDBReplicaKilledUnderLoad kills the replica while readers run: no read
// fails, the primary serves them, and the restarted replica returns.
func TestDBReplicaKilledUnderLoad(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	ctx := t.Context()
	var logs syncBuffer
	db := openTestDB(t, c.config(nil), func(c *Config) { c.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	eventually(t, 10*time.Second, "the replica is in rotation", func() bool { return inRotation(db, "db-replica-east") })

	var (
		stop                  atomic.Bool
		fromReplica, fromPrim atomic.Int64
		errs                  = make(chan error, 100)
		wg                    sync.WaitGroup
	)
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				var standby bool
				var err error
				if i%2 == 0 {
					err = db.QueryRow(ctx, "select pg_is_in_recovery()").Scan(&standby)
				} else {
					var rows pgx.Rows
					rows, err = db.Query(ctx, "select pg_is_in_recovery() from generate_series(1, 3)")
					if err == nil {
						var all []bool
						all, err = pgx.CollectRows(rows, pgx.RowTo[bool])
						if err == nil {
							standby = all[0]
						}
					}
				}
				switch {
				case err != nil:
					select {
					case errs <- err:
					default:
					}
				case standby:
					fromReplica.Add(1)
				default:
					fromPrim.Add(1)
				}
			}
		}()
	}
	defer func() {
		stop.Store(true)
		wg.Wait()
	}()

	eventually(t, 10*time.Second, "reads reach the replica", func() bool { return fromReplica.Load() > 50 })
	if err := c.replica.Kill(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the killed replica leaves the rotation", func() bool { return !inRotation(db, "db-replica-east") })
	primBefore := fromPrim.Load()
	eventually(t, 10*time.Second, "the primary serves reads", func() bool { return fromPrim.Load() > primBefore+100 })

	if err := c.replica.Start(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the restarted replica rejoins", func() bool { return inRotation(db, "db-replica-east") })
	replicaBefore := fromReplica.Load()
	eventually(t, 10*time.Second, "reads reach the replica again", func() bool { return fromReplica.Load() > replicaBefore+50 })

	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("a read failed: %v", err)
	}
	t.Logf("reads: %d from the replica, %d from the primary", fromReplica.Load(), fromPrim.Load())
	out := logs.String()
	if !strings.Contains(out, "replica out of rotation") || !strings.Contains(out, "reads go to the primary") {
		t.Errorf("logs:\n%s", out)
	}
	if strings.Contains(out, c.replica.Password()) {
		t.Error("a log holds the password")
	}
}

// TestDBOnePrimary runs on a lone server: as a DB without replicas, and as
// a DB whose "replica" is that primary, which never enters the rotation.
func TestDBOnePrimary(t *testing.T) {
	t.Parallel()
	p := testserver.NewPostgres(t)
	ctx := t.Context()

	t.Run("no replicas", func(t *testing.T) {
		db := openTestDB(t, discovery.FromMap(map[string]string{"ConnectionStrings__db": p.ConnectionString()}))
		if db.Replica() != db.Primary() {
			t.Error("with no replicas, Replica() is not the primary")
		}
		var one int
		if err := db.QueryRow(ctx, "select 1").Scan(&one); err != nil || one != 1 {
			t.Fatalf("read: %v", err)
		}
		if len(db.HealthChecks()) != 1 || len(db.Replicas()) != 0 {
			t.Errorf("checks %d replicas %d", len(db.HealthChecks()), len(db.Replicas()))
		}
		if rs := db.ReadStats(); rs.NoReplicas < 2 || rs.Primary() != rs.NoReplicas || rs.Replica != 0 {
			t.Errorf("ReadStats = %+v, want only no-replica reads", rs)
		}
	})

	t.Run("replica not in recovery", func(t *testing.T) {
		db := openTestDB(t, discovery.FromMap(map[string]string{
			"ConnectionStrings__db-primary":               p.ConnectionString(),
			"ConnectionStrings__db-replica-east":          p.ConnectionString(),
			"Aspire__Npgsql__db__Replicas__CheckInterval": "100ms",
		}), func(c *Config) { c.ReadYourWrites = true })
		eventually(t, 10*time.Second, "the replica is checked", func() bool {
			return strings.Contains(db.Replicas()[0].Reason, "not in recovery")
		})
		// With ReadYourWrites on, writes without a session still count.
		if _, err := db.Exec(ctx, "create table t (id int)"); err != nil {
			t.Fatal(err)
		}
		if db.minLSN(ctx) == 0 {
			t.Error("ReadYourWrites: the write set no floor")
		}
	})
}

func TestOpenErrors(t *testing.T) {
	ctx := t.Context()
	cfg := discovery.FromMap(map[string]string{
		"ConnectionStrings__p":   "Host=127.0.0.1;Password=hunter2",
		"ConnectionStrings__bad": "Host=127.0.0.1;Password=hunter2;Port=1;Nope=1",
	})
	tests := []struct {
		primary  string
		replicas []string
		want     string
	}{
		{"missing", nil, "ConnectionStrings__missing"},
		{"p", []string{"bad"}, `keyword "Nope"`},
		{"p", []string{"p"}, "used twice"},
		{"p", []string{"replica"}, "reserved"},
	}
	for _, tt := range tests {
		// Through configuration (LoadConfig), and by hand (New's own
		// checks, for names LoadConfig would not find).
		env := map[string]string{
			"ConnectionStrings__p":               "Host=127.0.0.1;Password=hunter2",
			"ConnectionStrings__bad":             "Host=127.0.0.1;Password=hunter2;Port=1;Nope=1",
			"Aspire__Npgsql__x__Primary":         tt.primary,
			"Aspire__Npgsql__x__Replicas__Names": strings.Join(tt.replicas, ","),
		}
		_, err := openDB(ctx, discovery.FromMap(env), "x")
		if tt.want == "used twice" || tt.want == "reserved" {
			pc, perr := LoadPoolConfig(cfg, tt.primary)
			if perr != nil {
				t.Fatal(perr)
			}
			c := &Config{Primary: *pc, Logger: quietLogger}
			for _, r := range tt.replicas {
				rc := *pc
				rc.Name = r
				c.Replicas = append(c.Replicas, rc)
			}
			_, err = New(ctx, c)
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("open(%q, %q): %v, want %q", tt.primary, tt.replicas, err, tt.want)
		}
	}
}
