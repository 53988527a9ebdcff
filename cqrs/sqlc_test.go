package cqrs_test

// This file mirrors, by hand, the code sqlc v1.31 generates for pgx/v5
// (sql_package: "pgx/v5") from a schema and query file like:
//
//	-- name: CreateAuthor :one
//	INSERT INTO authors (name, bio) VALUES ($1, $2) RETURNING id, name, bio;
//	-- name: GetAuthor :one
//	SELECT id, name, bio, pg_is_in_recovery() AS on_replica FROM authors WHERE id = $1 LIMIT 1;
//	...
//
// The DBTX interface, the Queries struct, New, the "-- name:" comment at the
// head of each statement and the method bodies have sqlc's shapes: ":one"
// through QueryRow, ":many" through Query, ":exec" and ":execrows" through
// Exec, ":copyfrom" through CopyFrom. The test below runs them through a DB
// with a streaming replica in rotation.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/goaspire/goaspire/cqrs"
	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/internal/poll"
	"github.com/goaspire/goaspire/testserver"
)

// ---- db.go, as sqlc writes it ----

type DBTX interface {
	Exec(context.Context, string, ...interface{}) (pgconn.CommandTag, error)
	Query(context.Context, string, ...interface{}) (pgx.Rows, error)
	QueryRow(context.Context, string, ...interface{}) pgx.Row
	CopyFrom(ctx context.Context, tableName pgx.Identifier, columnNames []string, rowSrc pgx.CopyFromSource) (int64, error)
}

func New(db DBTX) *Queries {
	return &Queries{db: db}
}

type Queries struct {
	db DBTX
}

func (q *Queries) WithTx(tx pgx.Tx) *Queries {
	return &Queries{
		db: tx,
	}
}

// ---- models.go ----

type Author struct {
	ID   int64
	Name string
	Bio  pgtype.Text
}

// ---- query.sql.go ----

const createAuthor = `-- name: CreateAuthor :one
INSERT INTO authors (
  name, bio
) VALUES (
  $1, $2
)
RETURNING id, name, bio
`

type CreateAuthorParams struct {
	Name string
	Bio  pgtype.Text
}

func (q *Queries) CreateAuthor(ctx context.Context, arg CreateAuthorParams) (Author, error) {
	row := q.db.QueryRow(ctx, createAuthor, arg.Name, arg.Bio)
	var i Author
	err := row.Scan(&i.ID, &i.Name, &i.Bio)
	return i, err
}

const getAuthor = `-- name: GetAuthor :one
SELECT id, name, bio, pg_is_in_recovery() AS on_replica FROM authors
WHERE id = $1 LIMIT 1
`

type GetAuthorRow struct {
	ID        int64
	Name      string
	Bio       pgtype.Text
	OnReplica bool
}

func (q *Queries) GetAuthor(ctx context.Context, id int64) (GetAuthorRow, error) {
	row := q.db.QueryRow(ctx, getAuthor, id)
	var i GetAuthorRow
	err := row.Scan(
		&i.ID,
		&i.Name,
		&i.Bio,
		&i.OnReplica,
	)
	return i, err
}

const listAuthors = `-- name: ListAuthors :many
SELECT id, name, bio, pg_is_in_recovery() AS on_replica FROM authors
ORDER BY name
`

type ListAuthorsRow struct {
	ID        int64
	Name      string
	Bio       pgtype.Text
	OnReplica bool
}

func (q *Queries) ListAuthors(ctx context.Context) ([]ListAuthorsRow, error) {
	rows, err := q.db.Query(ctx, listAuthors)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var items []ListAuthorsRow
	for rows.Next() {
		var i ListAuthorsRow
		if err := rows.Scan(
			&i.ID,
			&i.Name,
			&i.Bio,
			&i.OnReplica,
		); err != nil {
			return nil, err
		}
		items = append(items, i)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return items, nil
}

const updateAuthorBio = `-- name: UpdateAuthorBio :exec
UPDATE authors SET bio = $2
WHERE id = $1
`

type UpdateAuthorBioParams struct {
	ID  int64
	Bio pgtype.Text
}

func (q *Queries) UpdateAuthorBio(ctx context.Context, arg UpdateAuthorBioParams) error {
	_, err := q.db.Exec(ctx, updateAuthorBio, arg.ID, arg.Bio)
	return err
}

const deleteAuthorsByBio = `-- name: DeleteAuthorsByBio :execrows
DELETE FROM authors
WHERE bio = $1
`

func (q *Queries) DeleteAuthorsByBio(ctx context.Context, bio pgtype.Text) (int64, error) {
	result, err := q.db.Exec(ctx, deleteAuthorsByBio, bio)
	if err != nil {
		return 0, err
	}
	return result.RowsAffected(), nil
}

const renameAuthor = `-- name: RenameAuthor :one
UPDATE authors SET name = $2
WHERE id = $1
RETURNING id, name, bio
`

type RenameAuthorParams struct {
	ID   int64
	Name string
}

func (q *Queries) RenameAuthor(ctx context.Context, arg RenameAuthorParams) (Author, error) {
	row := q.db.QueryRow(ctx, renameAuthor, arg.ID, arg.Name)
	var i Author
	err := row.Scan(&i.ID, &i.Name, &i.Bio)
	return i, err
}

const deleteAuthorsReturning = `-- name: DeleteAuthorsReturning :many
DELETE FROM authors
WHERE name LIKE $1
RETURNING id
`

func (q *Queries) DeleteAuthorsReturning(ctx context.Context, name string) ([]int64, error) {
	rows, err := q.db.Query(ctx, deleteAuthorsReturning, name)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var items []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		items = append(items, id)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return items, nil
}

const archiveAuthor = `-- name: ArchiveAuthor :one
WITH moved AS (
  DELETE FROM authors WHERE id = $1 RETURNING id, name
)
INSERT INTO archived_authors (id, name)
SELECT id, name FROM moved
RETURNING id
`

func (q *Queries) ArchiveAuthor(ctx context.Context, id int64) (int64, error) {
	row := q.db.QueryRow(ctx, archiveAuthor, id)
	var archivedID int64
	err := row.Scan(&archivedID)
	return archivedID, err
}

const nextTicket = `-- name: NextTicket :one
SELECT nextval('tickets')::bigint
`

func (q *Queries) NextTicket(ctx context.Context) (int64, error) {
	row := q.db.QueryRow(ctx, nextTicket)
	var column_1 int64
	err := row.Scan(&column_1)
	return column_1, err
}

const lockAuthor = `-- name: LockAuthor :one
SELECT id FROM authors WHERE id = $1 FOR UPDATE
`

func (q *Queries) LockAuthor(ctx context.Context, id int64) (int64, error) {
	row := q.db.QueryRow(ctx, lockAuthor, id)
	var id_2 int64
	err := row.Scan(&id_2)
	return id_2, err
}

const bumpCounter = `-- name: BumpCounter :one
SELECT bump_counter()::bigint
`

func (q *Queries) BumpCounter(ctx context.Context) (int64, error) {
	row := q.db.QueryRow(ctx, bumpCounter)
	var bump_counter int64
	err := row.Scan(&bump_counter)
	return bump_counter, err
}

type CopyAuthorsParams struct {
	Name string
	Bio  pgtype.Text
}

// iteratorForCopyAuthors implements pgx.CopyFromSource.
type iteratorForCopyAuthors struct {
	rows                 []CopyAuthorsParams
	skippedFirstNextCall bool
}

func (r *iteratorForCopyAuthors) Next() bool {
	if len(r.rows) == 0 {
		return false
	}
	if !r.skippedFirstNextCall {
		r.skippedFirstNextCall = true
		return true
	}
	r.rows = r.rows[1:]
	return len(r.rows) > 0
}

func (r iteratorForCopyAuthors) Values() ([]interface{}, error) {
	return []interface{}{
		r.rows[0].Name,
		r.rows[0].Bio,
	}, nil
}

func (r iteratorForCopyAuthors) Err() error {
	return nil
}

func (q *Queries) CopyAuthors(ctx context.Context, arg []CopyAuthorsParams) (int64, error) {
	return q.db.CopyFrom(ctx, []string{"authors"}, []string{"name", "bio"}, &iteratorForCopyAuthors{rows: arg})
}

// ---- the test ----

var (
	_ DBTX = (*cqrs.DB)(nil)
	_ DBTX = cqrs.Reader{}
	_ DBTX = cqrs.Writer{}
)

const schema = `
CREATE TABLE authors (id bigserial PRIMARY KEY, name text NOT NULL, bio text);
CREATE TABLE archived_authors (id bigint PRIMARY KEY, name text NOT NULL);
CREATE SEQUENCE tickets;
CREATE TABLE counter (n bigint NOT NULL);
INSERT INTO counter VALUES (0);
CREATE FUNCTION bump_counter() RETURNS bigint LANGUAGE sql VOLATILE
  AS 'UPDATE counter SET n = n + 1 RETURNING n';
`

// TestSQLCQueries runs sqlc-shaped queries through a DB whose replica is in
// rotation: every write reaches the primary and succeeds, every read is
// served by the replica, and in a read-your-writes session a read after a
// ":one" INSERT sees the row even while the replica is behind.
func TestSQLCQueries(t *testing.T) {
	t.Parallel()
	primary := testserver.NewPostgres(t)
	replica := primary.NewReplica(t)
	ctx := t.Context()
	if err := primary.Exec(ctx, schema); err != nil {
		t.Fatal(err)
	}
	if err := replica.WaitCaughtUp(ctx); err != nil {
		t.Fatal(err)
	}
	db, err := openDB(ctx, discovery.FromMap(map[string]string{
		"ConnectionStrings__db-primary":               primary.ConnectionString(),
		"ConnectionStrings__db-replica-east":          replica.ConnectionString(),
		"Aspire__Npgsql__db__Replicas__CheckInterval": "100ms",
		"Aspire__Npgsql__db__Replicas__MaxLag":        "1m", // a paused replica stays in rotation
	}), "db")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	waitFor(t, "the replica is in rotation", func() bool { return db.Replicas()[0].InRotation })
	q := New(db)

	t.Run("writes reach the primary, reads the replica", func(t *testing.T) {
		before := db.ReadStats()
		var ids []int64
		for i := range 10 {
			a, err := q.CreateAuthor(ctx, CreateAuthorParams{Name: fmt.Sprintf("author %02d", i), Bio: text("draft")})
			if err != nil {
				t.Fatalf("CreateAuthor (:one INSERT ... RETURNING through QueryRow): %v", err)
			}
			ids = append(ids, a.ID)
		}
		if err := q.UpdateAuthorBio(ctx, UpdateAuthorBioParams{ID: ids[0], Bio: text("final")}); err != nil {
			t.Fatalf("UpdateAuthorBio (:exec): %v", err)
		}
		a, err := q.RenameAuthor(ctx, RenameAuthorParams{ID: ids[1], Name: "renamed"})
		if err != nil || a.Name != "renamed" {
			t.Fatalf("RenameAuthor (:one UPDATE ... RETURNING): %+v, %v", a, err)
		}
		if n, err := q.CopyAuthors(ctx, []CopyAuthorsParams{{Name: "copied 1"}, {Name: "copied 2"}}); err != nil || n != 2 {
			t.Fatalf("CopyAuthors (:copyfrom): %d, %v", n, err)
		}
		deleted, err := q.DeleteAuthorsReturning(ctx, "copied%")
		if err != nil || len(deleted) != 2 {
			t.Fatalf("DeleteAuthorsReturning (:many DELETE ... RETURNING through Query): %v, %v", deleted, err)
		}
		if id, err := q.ArchiveAuthor(ctx, ids[9]); err != nil || id != ids[9] {
			t.Fatalf("ArchiveAuthor (a WITH ... DELETE ... INSERT through QueryRow): %d, %v", id, err)
		}
		if n, err := q.DeleteAuthorsByBio(ctx, text("draft")); err != nil || n != 8 {
			t.Fatalf("DeleteAuthorsByBio (:execrows): %d, %v; want 8", n, err)
		}
		if n, err := q.NextTicket(ctx); err != nil || n != 1 {
			t.Fatalf("NextTicket (SELECT nextval): %d, %v", n, err)
		}
		if _, err := q.LockAuthor(ctx, ids[0]); err != nil {
			t.Fatalf("LockAuthor (SELECT ... FOR UPDATE): %v", err)
		}
		if got := db.ReadStats(); got != before {
			t.Errorf("writes were counted as reads: ReadStats %+v -> %+v", before, got)
		}

		if err := replica.WaitCaughtUp(ctx); err != nil {
			t.Fatal(err)
		}
		list, err := q.ListAuthors(ctx)
		if err != nil {
			t.Fatalf("ListAuthors (:many): %v", err)
		}
		if len(list) != 1 || list[0].ID != ids[0] || list[0].Bio.String != "final" || !list[0].OnReplica {
			t.Errorf("ListAuthors = %+v, want author %d with bio final, from the replica", list, ids[0])
		}
		got, err := q.GetAuthor(ctx, ids[0])
		if err != nil || !got.OnReplica {
			t.Errorf("GetAuthor = %+v, %v; want it from the replica", got, err)
		}
		if _, err := q.GetAuthor(ctx, ids[1]); !errors.Is(err, pgx.ErrNoRows) {
			t.Errorf("GetAuthor of a deleted author: %v", err)
		}
		after := db.ReadStats()
		if after.Replica-before.Replica != 3 || after.Primary() != before.Primary() {
			t.Errorf("ReadStats %+v -> %+v: want exactly the 3 reads, all on the replica", before, after)
		}
	})

	t.Run("read your writes after a :one INSERT", func(t *testing.T) {
		if err := replica.PauseReplay(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := replica.ResumeReplay(context.Background()); err != nil {
				t.Error(err)
			}
		})
		sctx := cqrs.WithSession(ctx)
		a, err := q.CreateAuthor(sctx, CreateAuthorParams{Name: "fresh"})
		if err != nil {
			t.Fatal(err)
		}
		if cqrs.SessionLSN(sctx) == 0 {
			t.Error("the INSERT through QueryRow recorded no WAL position in the session")
		}
		// The replica is in rotation but has not replayed the insert: a
		// read outside the session does not see it.
		if !db.Replicas()[0].InRotation {
			t.Fatal("the paused replica left the rotation: the check below would prove nothing")
		}
		if _, err := q.GetAuthor(ctx, a.ID); !errors.Is(err, pgx.ErrNoRows) {
			t.Fatalf("outside the session, GetAuthor: %v; want no row from the paused replica", err)
		}
		before := db.ReadStats()
		got, err := q.GetAuthor(sctx, a.ID)
		if err != nil || got.Name != "fresh" || got.OnReplica {
			t.Fatalf("in the session, GetAuthor = %+v, %v; want the new row, from the primary", got, err)
		}
		rows, err := q.ListAuthors(sctx)
		if err != nil || !containsAuthor(rows, a.ID) {
			t.Fatalf("in the session, ListAuthors = %+v, %v; want the new row", rows, err)
		}
		if d := db.ReadStats().ReadYourWrites - before.ReadYourWrites; d != 2 {
			t.Errorf("ReadYourWrites reads: +%d, want +2", d)
		}
	})

	t.Run("Reader, Writer and WithPrimary", func(t *testing.T) {
		if err := replica.WaitCaughtUp(ctx); err != nil {
			t.Fatal(err)
		}
		qw, qr := New(db.Writer()), New(db.Reader())
		a, err := qw.CreateAuthor(ctx, CreateAuthorParams{Name: "by writer"})
		if err != nil {
			t.Fatal(err)
		}
		if err := replica.WaitCaughtUp(ctx); err != nil {
			t.Fatal(err)
		}
		if got, err := qr.GetAuthor(ctx, a.ID); err != nil || !got.OnReplica {
			t.Errorf("Reader GetAuthor = %+v, %v; want it from the replica", got, err)
		}
		if got, err := qw.GetAuthor(ctx, a.ID); err != nil || got.OnReplica {
			t.Errorf("Writer GetAuthor = %+v, %v; want it from the primary", got, err)
		}
		// A write through the Reader is refused by the replica (SQLSTATE
		// 25006), then runs on the primary, counted.
		refused := db.ReadStats().Refused
		if _, err := qr.CreateAuthor(ctx, CreateAuthorParams{Name: "by reader"}); err != nil {
			t.Errorf("a write through the Reader: %v; want it refused by the replica, then run on the primary", err)
		}
		if got := db.ReadStats().Refused - refused; got != 1 {
			t.Errorf("ReadStats.Refused grew by %d after a write through the Reader, want 1", got)
		}
		if _, err := qr.CopyAuthors(ctx, []CopyAuthorsParams{{Name: "x"}}); !errors.Is(err, cqrs.ErrReadOnly) {
			t.Errorf("CopyFrom through the Reader: %v", err)
		}

		// A SELECT of a function that writes looks like a read: the replica
		// refuses it and it runs on the primary; WithPrimary sends it there
		// at once.
		refused = db.ReadStats().Refused
		if _, err := q.BumpCounter(ctx); err != nil {
			t.Errorf("SELECT bump_counter() without WithPrimary: %v; want it refused by the replica, then run on the primary", err)
		}
		if got := db.ReadStats().Refused - refused; got != 1 {
			t.Errorf("ReadStats.Refused grew by %d after SELECT bump_counter(), want 1", got)
		}
		refused = db.ReadStats().Refused
		pctx := cqrs.WithPrimary(cqrs.WithSession(ctx))
		for _, qq := range []*Queries{q, qr} {
			n, err := qq.BumpCounter(pctx)
			if err != nil || n < 1 {
				t.Errorf("SELECT bump_counter() with WithPrimary: %d, %v", n, err)
			}
			if got, err := qq.GetAuthor(pctx, a.ID); err != nil || got.OnReplica {
				t.Errorf("GetAuthor with WithPrimary = %+v, %v; want it from the primary", got, err)
			}
		}
		if cqrs.SessionLSN(pctx) == 0 {
			t.Error("a statement sent to the primary by WithPrimary was not recorded as a write")
		}
		if got := db.ReadStats().Refused - refused; got != 0 {
			t.Errorf("ReadStats.Refused grew by %d with WithPrimary, want 0: it goes to the primary at once", got)
		}
		if cqrs.WithPrimary(pctx) != pctx {
			t.Error("WithPrimary of a WithPrimary context made a new context")
		}
	})

	t.Run("transactions through WithTx", func(t *testing.T) {
		sctx := cqrs.WithSession(ctx)
		var id int64
		err := pgx.BeginFunc(sctx, db.Writer(), func(tx pgx.Tx) error {
			a, err := New(db).WithTx(tx).CreateAuthor(sctx, CreateAuthorParams{Name: "in tx"})
			id = a.ID
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if got, err := q.GetAuthor(sctx, id); err != nil || got.Name != "in tx" {
			t.Fatalf("after commit GetAuthor = %+v, %v", got, err)
		}
	})
}

// TestSendBatch sends a batch through the DB: it runs on the primary and
// counts as a write.
func TestSendBatch(t *testing.T) {
	t.Parallel()
	primary := testserver.NewPostgres(t)
	replica := primary.NewReplica(t)
	ctx := t.Context()
	if err := primary.Exec(ctx, "CREATE TABLE kv (k text PRIMARY KEY, v text)"); err != nil {
		t.Fatal(err)
	}
	if err := replica.WaitCaughtUp(ctx); err != nil {
		t.Fatal(err)
	}
	db, err := openDB(ctx, discovery.FromMap(map[string]string{
		"ConnectionStrings__db-primary":               primary.ConnectionString(),
		"ConnectionStrings__db-replica-east":          replica.ConnectionString(),
		"Aspire__Npgsql__db__Replicas__CheckInterval": "100ms",
	}), "db")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	waitFor(t, "the replica is in rotation", func() bool { return db.Replicas()[0].InRotation })

	for _, h := range []struct {
		name string
		send func(context.Context, *pgx.Batch) pgx.BatchResults
	}{{"DB", db.SendBatch}, {"Writer", db.Writer().SendBatch}} {
		sctx := cqrs.WithSession(ctx)
		b := &pgx.Batch{}
		b.Queue("INSERT INTO kv VALUES ($1, 'a')", h.name)
		b.Queue("SELECT v FROM kv WHERE k = $1", h.name)
		br := h.send(sctx, b)
		if _, err := br.Exec(); err != nil {
			t.Fatalf("%s: batch insert: %v", h.name, err)
		}
		var v string
		if err := br.QueryRow().Scan(&v); err != nil || v != "a" {
			t.Fatalf("%s: batch select: %q %v", h.name, v, err)
		}
		if err := br.Close(); err != nil {
			t.Fatal(err)
		}
		if cqrs.SessionLSN(sctx) == 0 {
			t.Errorf("%s: the batch was not recorded as a write", h.name)
		}
	}
	br := db.Reader().SendBatch(ctx, batchOf("SELECT pg_is_in_recovery()"))
	var standby bool
	if err := br.QueryRow().Scan(&standby); err != nil || !standby {
		t.Errorf("Reader batch: standby=%v %v", standby, err)
	}
	if err := br.Close(); err != nil {
		t.Error(err)
	}
}

func batchOf(sql string) *pgx.Batch {
	b := &pgx.Batch{}
	b.Queue(sql)
	return b
}

func text(s string) pgtype.Text { return pgtype.Text{String: s, Valid: true} }

func containsAuthor(rows []ListAuthorsRow, id int64) bool {
	for _, r := range rows {
		if r.ID == id {
			return true
		}
	}
	return false
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, 20*time.Second, what, cond)
}

var quietLogger = slog.New(slog.NewTextHandler(io.Discard, nil))

// openDB is cqrs.LoadConfig then cqrs.New, with a quiet logger.
func openDB(ctx context.Context, cfg *discovery.Config, name string) (*cqrs.DB, error) {
	c, err := cqrs.LoadConfig(cfg, name)
	if err != nil {
		return nil, err
	}
	c.Logger = quietLogger
	return cqrs.New(ctx, c)
}
