package cache

import (
	"context"
	"testing"
	"time"

	"github.com/goaspire/goaspire/cqrs"
	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/testserver"
)

// TestInvalidationOverLaggingReplica is the catalog's code path on a real
// primary, a streaming replica whose replay is paused, and two instances
// of a cache on one Redis: a PUT on instance A writes on the primary and
// removes the key (every instance's L1, Redis); a GET on instance B then
// loads through cqrs, whose replica still has the old row. The load must
// read the new row, from the primary, because the removal carried the
// write's WAL position; once replay resumes and the replica has it, loads
// of the key go to the replica again.
func TestInvalidationOverLaggingReplica(t *testing.T) {
	db, replica := newReplicaDB(t)
	ctx := context.Background()
	caughtUp := func(l cqrs.LSN) func() bool { return func() bool { return replayed(db, l) } }

	srv := testserver.NewRedis(t)
	rdbA, rdbB := openClient(t, srv), openClient(t, srv)
	a := newCache[float64](t, rdbA, "product", Options{TTL: 10 * time.Minute})
	b := newCache[float64](t, rdbB, "product", Options{TTL: 10 * time.Minute})
	waitSubscribed(t, rdbA, a.channel, 2)

	// The catalog's loader: a read-only statement, which cqrs sends to
	// a replica unless the context requires a position it has not
	// replayed.
	load := func(ctx context.Context) (float64, error) {
		var price float64
		err := db.QueryRow(ctx, "SELECT price::float8 FROM products WHERE id = $1", 1).Scan(&price)
		return price, err
	}
	// A GET: a request of its own (cqrs.Middleware makes it a session).
	get := func(c *Cache[float64]) float64 {
		t.Helper()
		v, err := c.GetOrLoad(cqrs.WithSession(ctx), "1", load)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}

	if v := get(b); v != 10 {
		t.Fatalf("first GET on B = %v, want 10", v)
	}
	if st := db.ReadStats(); st.Replica != 1 || st.Primary() != 0 {
		t.Fatalf("the first load did not read the replica: %+v", st)
	}

	if err := replica.PauseReplay(ctx); err != nil {
		t.Fatal(err)
	}
	// The PUT on A: a write with RETURNING in the request's session,
	// then the invalidation.
	put := cqrs.WithSession(ctx)
	var price float64
	if err := db.QueryRow(put, "UPDATE products SET price = 20 WHERE id = $1 RETURNING price::float8", 1).Scan(&price); err != nil || price != 20 {
		t.Fatalf("update: %v, %v", price, err)
	}
	pos := cqrs.SessionLSN(put)
	if pos == 0 {
		t.Fatal("the session recorded no position")
	}
	received := b.Stats().InvalidationsReceived
	if err := a.Remove(put, "1"); err != nil {
		t.Fatal(err)
	}
	// B's L1 keeps the old price until A's message arrives (within
	// milliseconds): that window is L1's, not the load's.
	eventually(t, 10*time.Second, "B drops the key from L1", func() bool { return b.Stats().InvalidationsReceived > received })
	var onReplica float64
	if err := db.Replica().QueryRow(ctx, "SELECT price::float8 FROM products WHERE id = 1").Scan(&onReplica); err != nil || onReplica != 10 {
		t.Fatalf("the paused replica has %v (%v), want the old 10", onReplica, err)
	}
	if rs := db.Replicas(); !rs[0].InRotation || rs[0].ReplayLSN >= pos {
		t.Fatalf("the replica is out of rotation or past the write: %+v", rs[0])
	}

	// The GET on B, at once: the new price, from the primary.
	before := db.ReadStats()
	if v := get(b); v != 20 {
		t.Fatalf("GET on B after the PUT on A = %v, want 20 (the paused replica's old row was cached)", v)
	}
	after := db.ReadStats()
	if after.MinLSN != before.MinLSN+1 || after.Replica != before.Replica {
		t.Errorf("the load did not go to the primary for the write's position: before %+v, after %+v", before, after)
	}
	if s := b.Stats(); s.PositionLoads != 1 {
		t.Errorf("B's PositionLoads = %d, want 1", s.PositionLoads)
	}
	// Cached: later GETs on either instance serve 20 without loading.
	loads := b.Stats().Loads + a.Stats().Loads
	if get(b) != 20 || get(a) != 20 || b.Stats().Loads+a.Stats().Loads != loads {
		t.Error("the new price is not what both instances serve from the cache")
	}

	// Replay resumes; once the checker has seen the replica past the
	// write, loads of the key go to it again.
	if err := replica.ResumeReplay(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the checker sees the replica past the write", caughtUp(pos))
	before = db.ReadStats()
	received = b.Stats().InvalidationsReceived
	if err := a.Remove(ctx, "1"); err != nil { // no write: no new position
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "B drops the key from L1", func() bool { return b.Stats().InvalidationsReceived > received })
	if v := get(b); v != 20 {
		t.Fatalf("GET on B after replay resumed = %v, want 20", v)
	}
	after = db.ReadStats()
	if after.Replica != before.Replica+1 || after.Primary() != before.Primary() || after.MinLSNReplica != before.MinLSNReplica+1 {
		t.Errorf("the load after replay resumed did not go to the replica: before %+v, after %+v", before, after)
	}
}

// newReplicaDB opens a DB over a new primary and streaming replica, with a
// products table (product 1 at price 10) that the replica has replayed
// and the replica in rotation. The replica checker runs every 100 ms, and
// there is no lag bound: a paused replica stays in rotation however slow
// the machine, so that only a position can keep a read off it.
func newReplicaDB(tb testing.TB) (*cqrs.DB, *testserver.Postgres) {
	tb.Helper()
	primary := testserver.NewPostgres(tb)
	replica := primary.NewReplica(tb)
	ctx := context.Background()
	cfg, err := cqrs.LoadConfig(discovery.FromMap(map[string]string{
		"ConnectionStrings__db-primary":               primary.ConnectionString(),
		"ConnectionStrings__db-replica-east":          replica.ConnectionString(),
		"Aspire__Npgsql__db__Replicas__CheckInterval": "100ms",
	}), "db")
	if err != nil {
		tb.Fatal(err)
	}
	cfg.Logger = quietLogger()
	cfg.MaxLag = -1
	db, err := cqrs.New(ctx, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(db.Close)
	if _, err := db.Exec(ctx, `CREATE TABLE products (id bigint PRIMARY KEY, price numeric(12,2) NOT NULL);
		INSERT INTO products VALUES (1, 10)`); err != nil {
		tb.Fatal(err)
	}
	var text string
	if err := db.Primary().QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&text); err != nil {
		tb.Fatal(err)
	}
	created, err := cqrs.ParseLSN(text)
	if err != nil {
		tb.Fatal(err)
	}
	eventually(tb, 30*time.Second, "the replica in rotation with the table", func() bool { return replayed(db, created) })
	return db, replica
}

// replayed reports whether db's one replica is in rotation and its checker
// has seen it replay l.
func replayed(db *cqrs.DB, l cqrs.LSN) bool {
	rs := db.Replicas()
	return len(rs) == 1 && rs[0].InRotation && rs[0].ReplayLSN >= l
}
