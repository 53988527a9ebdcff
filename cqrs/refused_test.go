package cqrs

import (
	"context"
	"testing"
	"time"

	"github.com/goaspire/goaspire/testserver"
)

// openRotating opens the DB "db" over c, with its replica in rotation.
func openRotating(t *testing.T, c cluster) *DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	db, err := openDB(ctx, c.config(nil), "db")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	eventually(t, 20*time.Second, "the replica in rotation", func() bool { return inRotation(db, "db-replica-east") })
	return db
}

// TestServerFunctionsRunOnPrimary: a SELECT of a built-in function that
// writes, or acts on the server it runs on, goes through DB.QueryRow to the
// primary, as a write: pg_is_in_recovery() beside it is false, no read is
// counted (none reached a replica, none was refused by one), and what the
// function did is there on the primary.
func TestServerFunctionsRunOnPrimary(t *testing.T) {
	p := testserver.NewPostgres(t, testserver.WithPostgresSetting("wal_level", "logical"))
	c := cluster{primary: p, replica: p.NewReplica(t)}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	setup := []string{
		"CREATE TABLE brin_t (a int); INSERT INTO brin_t SELECT generate_series(1, 1000); CREATE INDEX brin_i ON brin_t USING brin (a)",
		"CREATE TABLE gin_t (a int[]); CREATE INDEX gin_i ON gin_t USING gin (a) WITH (fastupdate = on); INSERT INTO gin_t VALUES ('{1,2}')",
		"SELECT pg_create_logical_replication_slot('l1', 'test_decoding')",
	}
	for _, sql := range setup {
		if err := c.primary.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	if err := c.replica.WaitCaughtUp(ctx); err != nil {
		t.Fatal(err)
	}
	db := openRotating(t, c)

	// In order: a slot is created, copied, advanced and dropped.
	tests := []struct{ name, expr string }{
		{"pg_reload_conf", "pg_reload_conf()"},
		{"pg_create_physical_replication_slot", "pg_create_physical_replication_slot('t1', true)"},
		{"pg_copy_physical_replication_slot", "pg_copy_physical_replication_slot('t1', 't2')"},
		{"pg_replication_slot_advance", "pg_replication_slot_advance('t2', pg_current_wal_lsn())"},
		{"pg_drop_replication_slot", "pg_drop_replication_slot('t2')"},
		{"pg_logical_slot_peek_changes", "(SELECT count(*) FROM pg_logical_slot_peek_changes('l1', NULL, NULL))"},
		{"pg_logical_slot_get_changes", "(SELECT count(*) FROM pg_logical_slot_get_changes('l1', NULL, NULL))"},
		{"pg_stat_reset", "pg_stat_reset()"},
		{"pg_stat_reset_shared", "pg_stat_reset_shared('bgwriter')"},
		{"pg_cancel_backend", "pg_cancel_backend(0)"},
		{"pg_terminate_backend", "pg_terminate_backend(0)"},
		{"brin_summarize_new_values", "brin_summarize_new_values('brin_i'::regclass)"},
		{"brin_summarize_range", "brin_summarize_range('brin_i'::regclass, 0)"},
		{"brin_desummarize_range", "brin_desummarize_range('brin_i'::regclass, 0)"},
		{"gin_clean_pending_list", "gin_clean_pending_list('gin_i'::regclass)"},
		{"pg_import_system_collations", "pg_import_system_collations('public')"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := db.ReadStats()
			sql := "SELECT pg_is_in_recovery(), (" + tt.expr + ")::text"
			var inRecovery bool
			var out *string
			if err := db.QueryRow(ctx, sql).Scan(&inRecovery, &out); err != nil {
				t.Fatalf("%s: %v", sql, err)
			}
			if inRecovery {
				t.Errorf("%s ran on the replica", sql)
			}
			if after := db.ReadStats(); after != before {
				t.Errorf("%s counted as a read: %+v, then %+v; want it sent to the primary as a write", sql, before, after)
			}
		})
	}
	var slots int
	if err := db.Primary().QueryRow(ctx, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 't1'").Scan(&slots); err != nil {
		t.Fatal(err)
	}
	if slots != 1 {
		t.Errorf("%d slots t1 on the primary, want 1", slots)
	}
}

// TestWritingFunctionFallsBackToPrimary: a SELECT of a function of the
// user's that writes looks read-only and goes to the replica, which refuses
// it (SQLSTATE 25006); it then runs once on the primary, and the read counts
// in ReadStats.Refused. A read-your-writes session sees the write.
func TestWritingFunctionFallsBackToPrimary(t *testing.T) {
	c := newCluster(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := c.primary.Exec(ctx, `CREATE TABLE hits (n int);
		CREATE FUNCTION bump() RETURNS int AS $$ BEGIN INSERT INTO hits VALUES (1); RETURN 1; END $$ LANGUAGE plpgsql`); err != nil {
		t.Fatal(err)
	}
	if err := c.replica.WaitCaughtUp(ctx); err != nil {
		t.Fatal(err)
	}
	db := openRotating(t, c)
	hits := func() int {
		t.Helper()
		var n int
		if err := db.Primary().QueryRow(ctx, "SELECT count(*) FROM hits").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	tests := []struct {
		name string
		run  func(ctx context.Context) (int, error)
	}{
		{"DB.QueryRow", func(ctx context.Context) (int, error) {
			var v int
			err := db.QueryRow(ctx, "SELECT bump()").Scan(&v)
			return v, err
		}},
		{"DB.Query", func(ctx context.Context) (int, error) {
			rows, err := db.Query(ctx, "SELECT bump()")
			if err != nil {
				return 0, err
			}
			defer rows.Close()
			var v int
			for rows.Next() {
				if err := rows.Scan(&v); err != nil {
					return 0, err
				}
			}
			return v, rows.Err()
		}},
		{"Reader.QueryRow", func(ctx context.Context) (int, error) {
			var v int
			err := db.Reader().QueryRow(ctx, "SELECT bump()").Scan(&v)
			return v, err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, bg := range []bool{false, true} {
				sctx := WithSession(ctx)
				if bg {
					sctx = WithSession(context.Background()) // the deadline.Context path
				}
				before, n0 := db.ReadStats(), hits()
				v, err := tt.run(sctx)
				if err != nil || v != 1 {
					t.Fatalf("SELECT bump() = %d, %v; want 1, nil", v, err)
				}
				after := db.ReadStats()
				if got := after.Refused - before.Refused; got != 1 {
					t.Errorf("ReadStats.Refused grew by %d, want 1 (%+v, then %+v)", got, before, after)
				}
				if n := hits() - n0; n != 1 {
					t.Errorf("the function ran %d times on the primary, want once", n)
				}
				// The session's next read sees the write: on a replica that
				// replayed it, or on the primary.
				var seen int
				if err := db.QueryRow(sctx, "SELECT count(*) FROM hits").Scan(&seen); err != nil {
					t.Fatal(err)
				}
				if seen < n0+1 {
					t.Errorf("the session read %d hits after its write, want at least %d", seen, n0+1)
				}
			}
		})
	}
}
