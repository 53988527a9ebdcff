package aspirepostgres_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/goaspire/goaspire/cqrs"
	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/integrations/aspirepostgres"
	"github.com/goaspire/goaspire/internal/poll"
	"github.com/goaspire/goaspire/servicedefaults"
	"github.com/goaspire/goaspire/servicedefaults/servicedefaultstest"
	"github.com/goaspire/goaspire/testserver"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// hangGuard bounds waits for something that must happen on its own; it is
// far above any deadline the tests set, so it only catches hangs.
const hangGuard = 60 * time.Second

// waitFor polls cond until it holds or hangGuard passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, hangGuard, what, cond)
}

// countChecks returns how many of checks are called name.
func countChecks(checks []health.Check, name string) int {
	n := 0
	for _, c := range checks {
		if c.Name == name {
			n++
		}
	}
	return n
}

// refusedPort returns a loopback port nothing listens on.
// itoa formats a port.
func itoa(n int) string { return strconv.Itoa(n) }

func refusedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	return port
}

// setApplicationName is an AfterConnect hook that marks each new
// connection with name, which current_setting('application_name') reads.
func setApplicationName(name string) func(context.Context, *pgx.Conn) error {
	return func(ctx context.Context, conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, "SET application_name = '"+name+"'")
		return err
	}
}

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func applicationName(t *testing.T, q querier) string {
	t.Helper()
	var name string
	if err := q.QueryRow(context.Background(), "SELECT current_setting('application_name')").Scan(&name); err != nil {
		t.Fatal(err)
	}
	return name
}

// TestDB opens Aspire's primary/replica database through the App and
// checks that it is shared, health-checked once per connection (also when
// a Pool uses one of its connections) and closed by Shutdown, after which
// opens fail with ErrClosed.
func TestDB(t *testing.T) {
	primary := testserver.NewPostgres(t)
	replica := primary.NewReplica(t)
	app := servicedefaultstest.NewUnstarted(t, nil, map[string]string{
		"ConnectionStrings__db-primary":            primary.ConnectionString(),
		"ConnectionStrings__db-replica-east":       replica.ConnectionString(),
		"Aspire__Npgsql__ConnectRetry__WaitOnOpen": "10s",
	})
	ctx := context.Background()

	db, err := aspirepostgres.DB(ctx, app, "db")
	if err != nil {
		t.Fatal(err)
	}
	again, err := aspirepostgres.DB(ctx, app, "db")
	if err != nil || again != db {
		t.Fatalf("second DB(db) = %p, %v; want the same %p", again, err, db)
	}
	if _, err := db.Exec(ctx, "CREATE TABLE t (id int)"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Keyed("replica"); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"postgres:db-primary", "postgres:db-replica-east"} {
		if n := countChecks(app.Health().Checks(), name); n != 1 {
			t.Errorf("%d health checks %q, want 1", n, name)
		}
	}

	// A Pool of the primary's connection is another client, whose check
	// the DB already registered.
	pool, err := aspirepostgres.Pool(ctx, app, "db-primary")
	if err != nil {
		t.Fatal(err)
	}
	if pool.Pool == db.Primary() {
		t.Error("Pool(db-primary) is the DB's primary pool; want a client of its own")
	}
	if err := pool.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if n := countChecks(app.Health().Checks(), "postgres:db-primary"); n != 1 {
		t.Errorf("%d health checks postgres:db-primary once a Pool shares the connection, want 1", n)
	}

	if err := app.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pool.Ping(ctx); err == nil {
		t.Error("the pool still works after Shutdown")
	}
	if _, err := db.Exec(ctx, "SELECT 1"); err == nil {
		t.Error("the DB still works after Shutdown")
	}
	if _, err := aspirepostgres.DB(ctx, app, "db"); !errors.Is(err, servicedefaults.ErrClosed) {
		t.Errorf("DB after Shutdown = %v, want ErrClosed", err)
	}
	if _, err := aspirepostgres.Pool(ctx, app, "other"); !errors.Is(err, servicedefaults.ErrClosed) {
		t.Errorf("Pool after Shutdown = %v, want ErrClosed", err)
	}
}

// TestPoolAndDBOfOneConnection: a DB and a Pool both called "db" on the
// connection "db" are two clients with one health check.
func TestPoolAndDBOfOneConnection(t *testing.T) {
	pg := testserver.NewPostgres(t)
	app := servicedefaultstest.NewUnstarted(t, nil, map[string]string{"ConnectionStrings__db": pg.ConnectionString()})
	ctx := context.Background()
	pool, err := aspirepostgres.Pool(ctx, app, "db")
	if err != nil {
		t.Fatal(err)
	}
	db, err := aspirepostgres.DB(ctx, app, "db")
	if err != nil {
		t.Fatal(err)
	}
	if db.Primary() == pool.Pool {
		t.Error("DB(db) and Pool(db) share a pool; want two clients")
	}
	if n := countChecks(app.Health().Checks(), "postgres:db"); n != 1 {
		t.Errorf("%d health checks postgres:db, want 1", n)
	}
	if err := pool.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
}

func TestDBErrors(t *testing.T) {
	tests := []struct {
		name   string
		values map[string]string
		want   string
	}{
		{"missing", nil, "db"},
		{"unknown keyword", map[string]string{"ConnectionStrings__db": "Host=h;Pasword=hunter2"}, "Pasword"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app := servicedefaultstest.NewUnstarted(t, nil, tt.values)
			_, dbErr := aspirepostgres.DB(context.Background(), app, "db")
			_, poolErr := aspirepostgres.Pool(context.Background(), app, "db")
			for what, err := range map[string]error{"DB": dbErr, "Pool": poolErr} {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("%s error = %v, want one naming %q", what, err, tt.want)
				}
				if strings.Contains(err.Error(), "hunter2") {
					t.Fatalf("%s error leaks the password: %v", what, err)
				}
			}
		})
	}
}

// TestConfigureDB: configure sees the loaded configuration with the App's
// telemetry and logger already set, runs once, and what it sets is what
// the DB opens with: AfterConnect on the primary (c.Primary.Config) and
// on each replica (c.Replicas[i].Config), pool sizes, ReadYourWrites.
func TestConfigureDB(t *testing.T) {
	primary := testserver.NewPostgres(t)
	replica := primary.NewReplica(t)
	app := servicedefaultstest.NewUnstarted(t, nil, map[string]string{
		"ConnectionStrings__db-primary":            primary.ConnectionString(),
		"ConnectionStrings__db-replica-east":       replica.ConnectionString(),
		"Aspire__Npgsql__ConnectRetry__WaitOnOpen": "10s",
		"Aspire__Npgsql__MaxConnections":           "7",
		"Aspire__Npgsql__Replicas__CheckInterval":  "200ms",
		"Aspire__Npgsql__Replicas__MaxLag":         "0", // no bound: a paused replica stays in rotation
		// "plain" is the same database without configure.
		"Aspire__Npgsql__plain__Primary":         "db-primary",
		"Aspire__Npgsql__plain__Replicas__Names": "db-replica-east",
	})
	ctx := context.Background()

	calls := 0
	db, err := aspirepostgres.DB(ctx, app, "db", func(c *cqrs.Config) {
		calls++
		if c.Name != "db" || c.Primary.Name != "db-primary" || len(c.Replicas) != 1 || c.Replicas[0].Name != "db-replica-east" {
			t.Errorf("configure got DB %q, primary %q, replicas %+v; want the loaded configuration", c.Name, c.Primary.Name, c.Replicas)
		}
		if c.Primary.Config.MaxConns != 7 || c.WaitOnOpen != 10*time.Second {
			t.Errorf("configure got MaxConns %d, WaitOnOpen %v; want the configured 7 and 10s", c.Primary.Config.MaxConns, c.WaitOnOpen)
		}
		if c.TracerProvider != app.TracerProvider() || c.MeterProvider != app.MeterProvider() || c.Logger == nil {
			t.Errorf("configure ran before the App's telemetry and logger were set: %v, %v, %v", c.TracerProvider, c.MeterProvider, c.Logger)
		}
		c.Primary.Config.AfterConnect = setApplicationName("configured-primary")
		for i := range c.Replicas {
			c.Replicas[i].Config.AfterConnect = setApplicationName("configured-" + c.Replicas[i].Name)
			c.Replicas[i].Config.MaxConns = 2
		}
		c.Primary.Config.MaxConns = 3
		c.ReadYourWrites = true
	})
	if err != nil {
		t.Fatal(err)
	}
	plain, err := aspirepostgres.DB(ctx, app, "plain")
	if err != nil {
		t.Fatal(err)
	}
	again, err := aspirepostgres.DB(ctx, app, "db", func(*cqrs.Config) { t.Error("configure ran for a DB already open") })
	if err != nil || again != db {
		t.Fatalf("second DB(db) = %p, %v; want the same %p", again, err, db)
	}
	if calls != 1 {
		t.Errorf("configure ran %d times, want 1", calls)
	}

	east, err := db.Keyed("db-replica-east")
	if err != nil {
		t.Fatal(err)
	}
	if got := applicationName(t, db.Primary()); got != "configured-primary" {
		t.Errorf("primary connection's application_name = %q, want the AfterConnect's", got)
	}
	if got := applicationName(t, east); got != "configured-db-replica-east" {
		t.Errorf("replica connection's application_name = %q, want the AfterConnect's", got)
	}
	if got := db.Primary().Config().MaxConns; got != 3 {
		t.Errorf("primary MaxConns = %d, want 3", got)
	}
	if got := east.Config().MaxConns; got != 2 {
		t.Errorf("replica MaxConns = %d, want 2", got)
	}
	if got := plain.Primary().Config().MaxConns; got != 7 {
		t.Errorf("unconfigured DB's MaxConns = %d, want the configured 7", got)
	}

	// ReadYourWrites: with the replica's replay paused, a read after a
	// write through db goes to the primary and sees it; through plain it
	// goes to the replica and does not.
	if _, err := db.Exec(ctx, "CREATE TABLE ryw (id int)"); err != nil {
		t.Fatal(err)
	}
	if err := replica.WaitCaughtUp(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the replica in both DBs' rotation", func() bool {
		return db.Replicas()[0].InRotation && plain.Replicas()[0].InRotation
	})
	if err := replica.PauseReplay(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(ctx, "INSERT INTO ryw VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	count := func(d *cqrs.DB) int {
		var n int
		if err := d.QueryRow(ctx, "SELECT count(*) FROM ryw").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(db); n != 1 {
		t.Errorf("read after write with ReadYourWrites set by configure saw %d rows, want 1", n)
	}
	if st := db.ReadStats(); st.ReadYourWrites == 0 {
		t.Errorf("ReadStats = %+v, want a read sent to the primary for read-your-writes", st)
	}
	if n := count(plain); n != 0 {
		t.Errorf("read through the DB without ReadYourWrites saw %d rows, want 0 (from the paused replica)", n)
	}
}

// TestConfigurePool: configure sees the loaded configuration with the
// App's telemetry and logger set, runs once, and sets the pool's
// AfterConnect (c.Config) and size.
func TestConfigurePool(t *testing.T) {
	pg := testserver.NewPostgres(t)
	app := servicedefaultstest.NewUnstarted(t, nil, map[string]string{
		"ConnectionStrings__jobs":        pg.ConnectionString(),
		"Aspire__Npgsql__MaxConnections": "7",
	})
	ctx := context.Background()
	calls := 0
	pool, err := aspirepostgres.Pool(ctx, app, "jobs", nil, func(c *cqrs.PoolConfig) {
		calls++
		if c.Name != "jobs" || c.Config.MaxConns != 7 {
			t.Errorf("configure got pool %q with MaxConns %d; want the loaded jobs with 7", c.Name, c.Config.MaxConns)
		}
		if c.TracerProvider != app.TracerProvider() || c.MeterProvider != app.MeterProvider() || c.Logger == nil {
			t.Errorf("configure ran before the App's telemetry and logger were set: %v, %v, %v", c.TracerProvider, c.MeterProvider, c.Logger)
		}
		c.Config.AfterConnect = setApplicationName("configured-jobs")
		c.Config.MaxConns = 3
	})
	if err != nil {
		t.Fatal(err)
	}
	again, err := aspirepostgres.Pool(ctx, app, "jobs", func(*cqrs.PoolConfig) { t.Error("configure ran for a Pool already open") })
	if err != nil || again != pool {
		t.Fatalf("second Pool(jobs) = %p, %v; want the same %p", again, err, pool)
	}
	if calls != 1 {
		t.Errorf("configure ran %d times, want 1", calls)
	}
	if got := applicationName(t, pool); got != "configured-jobs" {
		t.Errorf("application_name = %q, want the AfterConnect's", got)
	}
	if got := pool.Config().MaxConns; got != 3 {
		t.Errorf("MaxConns = %d, want 3", got)
	}
}

// TestConfigureWaitOnOpen: WaitOnOpen set by configure wins over the
// configuration's, both ways, for a DB (Config.WaitOnOpen) and a Pool
// (PoolConfig.WaitOnOpen), against a port nothing listens on.
func TestConfigureWaitOnOpen(t *testing.T) {
	cs := "Host=127.0.0.1;Port=" + refusedPort(t) + ";Username=u;Password=p;Database=d"
	app := servicedefaultstest.NewUnstarted(t, nil, map[string]string{
		"ConnectionStrings__lazy":                         cs,
		"ConnectionStrings__eager":                        cs,
		"Aspire__Npgsql__ConnectRetry__WaitOnOpen":        "10m",
		"Aspire__Npgsql__eager__ConnectRetry__WaitOnOpen": "0s",
	})
	// ctx only turns a wait configure failed to remove into a failure.
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()

	if _, err := aspirepostgres.DB(ctx, app, "lazy", func(c *cqrs.Config) {
		if c.WaitOnOpen != 10*time.Minute {
			t.Errorf("configure got WaitOnOpen %v, want the configured 10m", c.WaitOnOpen)
		}
		c.WaitOnOpen = 0
	}); err != nil {
		t.Errorf("DB with WaitOnOpen cleared by configure = %v, want a lazy open", err)
	}
	if _, err := aspirepostgres.Pool(ctx, app, "lazy", func(c *cqrs.PoolConfig) { c.WaitOnOpen = 0 }); err != nil {
		t.Errorf("Pool with WaitOnOpen cleared by configure = %v, want a lazy open", err)
	}
	if _, err := aspirepostgres.DB(ctx, app, "eager", func(c *cqrs.Config) { c.WaitOnOpen = 50 * time.Millisecond }); !errors.Is(err, cqrs.ErrNotReady) {
		t.Errorf("DB with WaitOnOpen set by configure = %v, want ErrNotReady", err)
	}
	if _, err := aspirepostgres.Pool(ctx, app, "eager", func(c *cqrs.PoolConfig) { c.WaitOnOpen = 50 * time.Millisecond }); !errors.Is(err, cqrs.ErrNotReady) {
		t.Errorf("Pool with WaitOnOpen set by configure = %v, want ErrNotReady", err)
	}
}
