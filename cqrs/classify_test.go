package cqrs

import (
	"strings"
	"sync"
	"testing"
)

func TestReadOnly(t *testing.T) {
	tests := []struct {
		sql  string
		want bool
	}{
		// Reads.
		{"SELECT 1", true},
		{"select id, name from authors where id = $1", true},
		{"  \t\n SELECT 1;", true},
		{"SELECT 1 ;  -- done\n", true},
		{"WITH t AS (SELECT 1) SELECT * FROM t", true},
		{"WITH RECURSIVE r(n) AS (VALUES (1) UNION ALL SELECT n+1 FROM r WHERE n < 5) SELECT n FROM r", true},
		{"VALUES (1, 'a'), (2, 'b')", true},
		{"SHOW server_version", true},
		{"TABLE authors", true},
		{"-- name: GetAuthor :one\nSELECT id, name, bio FROM authors\nWHERE id = $1 LIMIT 1\n", true},
		{"-- name: ListAuthors :many\r\nSELECT id FROM authors ORDER BY name", true},
		{"/* leading */ SELECT 1", true},
		{"/* outer /* nested */ still comment */ SELECT 1", true},
		{"SELECT 1 /* insert into t */", true},
		{"SELECT 1 -- delete from t", true},
		{"SELECT 'insert into t values (1)'", true},
		// Functions that write or act on the server they run on.
		{"SELECT brin_summarize_new_values('i')", false},
		{"SELECT brin_summarize_range('i', 0)", false},
		{"SELECT brin_desummarize_range('i', 0)", false},
		{"SELECT gin_clean_pending_list('i')", false},
		{"SELECT pg_import_system_collations('pg_catalog')", false},
		{"SELECT * FROM pg_create_physical_replication_slot('s')", false},
		{"SELECT * FROM PG_CREATE_LOGICAL_REPLICATION_SLOT('s', 'test_decoding')", false},
		{"SELECT pg_drop_replication_slot('s')", false},
		{"SELECT pg_copy_physical_replication_slot('a', 'b')", false},
		{"SELECT pg_copy_logical_replication_slot('a', 'b')", false},
		{"SELECT pg_replication_slot_advance('s', '0/0')", false},
		{"SELECT * FROM pg_logical_slot_get_changes('s', NULL, NULL)", false},
		{"SELECT * FROM pg_logical_slot_peek_changes('s', NULL, NULL)", false},
		{"SELECT pg_terminate_backend($1)", false},
		{"SELECT pg_cancel_backend(pid) FROM pg_stat_activity", false},
		{"SELECT pg_reload_conf()", false},
		{"SELECT pg_stat_reset()", false},
		{"SELECT pg_stat_reset_shared('bgwriter')", false},
		{"SELECT pg_backup_start('l')", false},
		{"SELECT * FROM pg_backup_stop()", false},
		{`SELECT "pg_terminate_backend"(1)`, false},
		// Look-alikes that read.
		{"SELECT * FROM pg_replication_slots", true},
		{"SELECT pg_stat_get_numscans(1)", true},
		{"SELECT * FROM pg_backend_memory_contexts", true},
		{"SELECT 'it''s an update'", true},
		{"SELECT E'a\\'b update'", true},
		{"SELECT e'\\\\' , 'x'", true},
		{"SELECT $$ delete from t $$", true},
		{"SELECT $fn$ update t set x = 1 $fn$, $1", true},
		{"SELECT $a$ $b$ insert $b$ $a$", true},
		{`SELECT "update", "insert" FROM "into"`, true},
		{`SELECT "a""b" FROM t`, true},
		{"SELECT * FROM t WHERE note LIKE '%for share%'", true},
		{"SELECT x FROM t ORDER BY x FOR READ ONLY", true}, // not a lock
		{"SELECT substring(s FOR 2) FROM t", true},
		{"SELECT updated_at, inserted_by, deleted, into_x FROM t", true},
		{"SELECT pg_is_in_recovery(), inet_server_port()", true},
		{"SELECT f$1 FROM t", true}, // $ inside an identifier
		{"SELECT 1 FROM t WHERE a = $1 AND b = $12", true},
		{"SELECT 'a' -- 'unterminated in a comment\n", true},
		{"SELECT currval_history FROM t", true},

		// Writes and locks.
		{"INSERT INTO authors (name) VALUES ($1) RETURNING id", false},
		{"-- name: CreateAuthor :one\nINSERT INTO authors (name, bio) VALUES ($1, $2)\nRETURNING id, name, bio\n", false},
		{"UPDATE t SET x = 1", false},
		{"DELETE FROM t", false},
		{"MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", false},
		{"WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", false},
		{"WITH i AS (INSERT INTO t VALUES (1) RETURNING id) SELECT id FROM i", false},
		{"with u as (update t set x = 2 returning x) select x from u", false},
		{"SELECT * FROM t FOR UPDATE", false},
		{"SELECT * FROM t FOR UPDATE SKIP LOCKED", false},
		{"SELECT * FROM t FOR NO KEY UPDATE", false},
		{"SELECT * FROM t FOR SHARE", false},
		{"SELECT * FROM t for /* sneaky */ share", false},
		{"SELECT * FROM t FOR KEY SHARE NOWAIT", false},
		{"SELECT * INTO new_t FROM t", false},
		{"SELECT nextval('s')", false},
		{"SELECT NEXTVAL('s')", false},
		{`SELECT "nextval"('s')`, false},
		{"SELECT setval('s', 10)", false},
		{"SELECT currval('s'), lastval()", false},
		{"SELECT pg_advisory_lock(1)", false},
		{"SELECT pg_advisory_xact_lock(1)", false},
		{"SELECT pg_try_advisory_lock(1)", false},
		{"SELECT pg_advisory_unlock_all()", false},
		{"SELECT pg_notify('ch', 'x')", false},
		{"SELECT txid_current()", false},
		{"SELECT pg_current_wal_lsn()", false},
		{"SELECT lo_create(0)", false},
		{"SELECT pg_promote()", false},
		{"SELECT pg_wal_replay_pause()", false},
		{"SELECT pg_replication_origin_advance('o', '0/1')", false},
		{`SELECT U&"nextva\006C"('s')`, false},
		{`SELECT U&'\0069nsert'`, false},
		{"VALUES (nextval('s'))", false},
		{"SELECT 1; DELETE FROM t", false},
		{"SELECT 1; SELECT 2", false}, // a second statement: unknown
		{"SELECT 1 /* c */ ; /* c */ SELECT 2", false},
		{"SELECT 1into t", false}, // "1into" is 1 INTO before PostgreSQL 15
		{"SELECT $1into t", false},

		// Comments and literals do not hide a write.
		{"/* select */ INSERT INTO t VALUES (1)", false},
		{"-- SELECT\nDELETE FROM t", false},
		{"/* a /* nested */ SELECT 1 */ DELETE FROM t", false},
		{"SELECT '' || (DELETE)", false},
		{"SELECT $$x$$ || nextval('s')", false},
		{"SELECT 'a' 'b', nextval('s')", false},
		{"SELECT E'\\'' , nextval('s') -- '", false},

		// Unknown: the primary.
		{"", false},
		{"   ", false},
		{"-- only a comment", false},
		{"/* unterminated SELECT 1", false},
		{"SELECT '/* unterminated", false},
		{`SELECT "unterminated`, false},
		{"SELECT $tag$ unterminated", false},
		{"SELECT $ 1", false},
		{"SELECT 'a\\' , nextval('s') -- '", false}, // the end depends on standard_conforming_strings
		{"SELECT 'C:\\dir'", false},
		{"EXPLAIN SELECT 1", false},
		{"EXPLAIN ANALYZE INSERT INTO t VALUES (1)", false},
		{"(SELECT 1) UNION (SELECT 2)", false},
		{"CREATE TABLE t (id int)", false},
		{"SET search_path = x", false},
		{"CALL p()", false},
		{"LOCK TABLE t", false},
		{"COPY t TO STDOUT", false},
		{"DO $$ BEGIN END $$", false},
		{"get_author", false}, // a prepared statement's name
		{"'SELECT 1'", false},
		{`"select" 1`, false},
		{"E'x'", false},
		{"$$SELECT$$", false},
		{"; SELECT 1", false},
	}
	for _, tt := range tests {
		if got := readOnly(tt.sql); got != tt.want {
			t.Errorf("readOnly(%q) = %v, want %v", tt.sql, got, tt.want)
		}
	}
}

// TestReadOnlyPrefixes feeds every prefix of some statements to the
// classifier: none may panic, and no prefix of a write that includes its
// writing keyword looks like a read.
func TestReadOnlyPrefixes(t *testing.T) {
	for _, tt := range []struct{ sql, write string }{
		{"/* c /* n */ */ SELECT E'\\'' , $t$ x $t$, \"q\"\"\", 'a''b', nextval('s') FROM t -- x\n;", "nextval"},
		{"WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d FOR UPDATE", "DELETE"},
	} {
		from := strings.Index(tt.sql, tt.write) + len(tt.write)
		for i := range len(tt.sql) + 1 {
			if readOnly(tt.sql[:i]) && i >= from {
				t.Errorf("readOnly(%q) = true", tt.sql[:i])
			}
		}
	}
}

func TestStmtCache(t *testing.T) {
	var c stmtCache
	read, write := "SELECT 1", "INSERT INTO t VALUES (1)"
	for range 3 {
		if !c.readOnly(read) || c.readOnly(write) {
			t.Fatal("cached answers differ from readOnly")
		}
	}
	// A hit allocates nothing, for a string the cache did not store
	// either (as a statement built at run time).
	key := strings.Clone(read)
	if a := testing.AllocsPerRun(100, func() { c.readOnly(key) }); a != 0 {
		t.Errorf("a cache hit allocates %v times", a)
	}
	if v, ok := c.m.Load(read); !ok || v != true {
		t.Errorf("read not cached: %v %v", v, ok)
	}
	if v, ok := c.m.Load(write); !ok || v != false {
		t.Errorf("write not cached: %v %v", v, ok)
	}

	// A long statement is classified, not kept.
	long := "SELECT " + strings.Repeat("1+", maxCachedSQL) + "1"
	if !c.readOnly(long) {
		t.Error("long read")
	}
	if _, ok := c.m.Load(long); ok {
		t.Error("a statement longer than maxCachedSQL was cached")
	}

	// The cache stays bounded: filling it empties it.
	before := c.size.Load()
	stmt := func(i int) string {
		return "SELECT " + strings.Repeat("x", 1000) + " FROM t" + strings.Repeat(" ", i%7) + itoa(i)
	}
	limit := maxCachedBytes / (1000 + cacheEntryCost)
	for i := range 2 * limit {
		if !c.readOnly(stmt(i)) {
			t.Fatal("read classified as write")
		}
		if s := c.size.Load(); s > maxCachedBytes || s < 0 {
			t.Fatalf("cache size %d out of bounds", s)
		}
	}
	entries := 0
	c.m.Range(func(any, any) bool { entries++; return true })
	if entries == 0 || entries > limit+1 {
		t.Errorf("cache holds %d entries, want 1..%d (size before %d)", entries, limit+1, before)
	}

	// Concurrent use (run with -race).
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				s := stmt(g*10000 + i%300)
				if !c.readOnly(s) || c.readOnly(write) {
					t.Error("wrong answer under concurrency")
					return
				}
			}
		}()
	}
	wg.Wait()
}

func itoa(i int) string {
	var b [20]byte
	n := len(b)
	for {
		n--
		b[n] = byte('0' + i%10)
		i /= 10
		if i == 0 {
			return string(b[n:])
		}
	}
}

// FuzzReadOnly checks that the classifier never panics, and that a
// statement it calls read-only stays read-only behind a comment and stops
// being so when a write follows it.
func FuzzReadOnly(f *testing.F) {
	for _, s := range []string{"SELECT 1", "WITH x AS (SELECT $1) SELECT * FROM x", "SELECT 'a''b', E'\\'', $q$x$q$ -- c", "/* /* */ */ VALUES (1)"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		ro := readOnly(sql)
		if !ro {
			return
		}
		if !readOnly("/* x */ " + sql) {
			t.Errorf("readOnly(%q) but not behind a comment", sql)
		}
		if readOnly(sql + "\nDELETE FROM t") {
			t.Errorf("readOnly(%q) with a DELETE after it", sql)
		}
	})
}
