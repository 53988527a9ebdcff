package cqrs

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Reader is a handle of a DB that sends every statement to a replica, as
// a read, whatever its text: to a replica in rotation that has replayed
// the context's read-your-writes session, else to the primary. Query,
// QueryRow and Exec fail over as DB.Query does. Do not write through a
// Reader: a replica refuses a write with SQLSTATE 25006
// (read_only_sql_transaction), and the statement then runs on the
// primary, as a read a replica refused (ReadStats.Refused), a round trip
// late. A context from WithPrimary sends statements to the primary
// instead, as writes.
//
// Reader satisfies sqlc's DBTX, for code that wants the split between
// reads and writes in its types (Aspire's production patterns'
// [FromKeyedServices("replica")]): queries.New(db.Reader()). CopyFrom is
// there so that a DBTX that includes it is satisfied, and always fails
// with ErrReadOnly. Get a Reader from DB.Reader; it is a small value, safe
// for concurrent use.
type Reader struct{ db *DB }

// ErrReadOnly is the error of Reader.CopyFrom: a copy writes.
var ErrReadOnly = errors.New("cqrs: a Reader does not write")

// Writer is a handle of a DB that sends every statement to the primary, as
// a write: in a read-your-writes session (or with ReadYourWrites on) each
// statement's WAL position is recorded once it has finished, as DB.Exec
// does. Writer satisfies sqlc's DBTX (Aspire's production patterns'
// [FromKeyedServices("primary")]): queries.New(db.Writer()). Get a Writer
// from DB.Writer; it is a small value, safe for concurrent use.
type Writer struct{ db *DB }

// Reader returns the DB's read handle.
func (db *DB) Reader() Reader { return Reader{db: db} }

// Writer returns the DB's write handle.
func (db *DB) Writer() Writer { return Writer{db: db} }

// Exec runs a statement on a replica, retrying on another server after a
// connection error.
func (h Reader) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	r := routeFrom(ctx)
	if r.primary {
		return h.db.Exec(ctx, sql, args...)
	}
	var tag pgconn.CommandTag
	err := h.db.read(ctx, h.db.needOf(r), attemptFunc(func(ctx context.Context, n *node) error {
		var err error
		tag, err = n.pool.Exec(ctx, sql, args...)
		return err
	}), nil)
	return tag, err
}

// Query runs a query on a replica, as DB.Query runs a read.
func (h Reader) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	r := routeFrom(ctx)
	if r.primary {
		return h.db.writeQuery(ctx, r, sql, args)
	}
	return h.db.readQuery(ctx, r, sql, args)
}

// QueryRow runs a query on a replica when Scan is called, as DB.QueryRow
// runs a read.
func (h Reader) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	r := routeFrom(ctx)
	if r.primary {
		return h.db.writeQueryRow(ctx, r, sql, args)
	}
	return h.db.readQueryRow(ctx, r, sql, args)
}

// CopyFrom returns an error wrapping ErrReadOnly, in every environment
// (with a context from WithPrimary it copies, on the primary). It exists so
// that Reader satisfies a DBTX that has it; copy through Writer or DB.
func (h Reader) CopyFrom(ctx context.Context, tableName pgx.Identifier, columnNames []string, rowSrc pgx.CopyFromSource) (int64, error) {
	if routeFrom(ctx).primary {
		return h.db.CopyFrom(ctx, tableName, columnNames, rowSrc)
	}
	return 0, fmt.Errorf("cqrs: CopyFrom into %s: %w; use DB.Writer", tableName.Sanitize(), ErrReadOnly)
}

// SendBatch sends a batch to one replica chosen as for a read (without
// failover).
func (h Reader) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	r := routeFrom(ctx)
	if r.primary {
		return h.db.SendBatch(ctx, b)
	}
	p := h.db.pick(h.db.needOf(r), 0).pool
	bctx, cancel := withCommandTimeout(ctx, p.commandTimeout, p.cmdSlots)
	br := p.SendBatch(bctx, b)
	if cancel == nil {
		return br
	}
	return &stmtBatch{BatchResults: br, parent: ctx, bctx: bctx, cancel: cancel, d: p.commandTimeout}
}

// Exec runs a statement on the primary (DB.Exec).
func (h Writer) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	return h.db.Exec(ctx, sql, args...)
}

// Query runs a query on the primary, recording the write when the rows are
// closed.
func (h Writer) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	return h.db.writeQuery(ctx, routeFrom(ctx), sql, args)
}

// QueryRow runs a query on the primary, recording the write when the row
// is scanned.
func (h Writer) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return h.db.writeQueryRow(ctx, routeFrom(ctx), sql, args)
}

// CopyFrom copies rows into a table on the primary (DB.CopyFrom).
func (h Writer) CopyFrom(ctx context.Context, tableName pgx.Identifier, columnNames []string, rowSrc pgx.CopyFromSource) (int64, error) {
	return h.db.CopyFrom(ctx, tableName, columnNames, rowSrc)
}

// SendBatch sends a batch to the primary (DB.SendBatch).
func (h Writer) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	return h.db.SendBatch(ctx, b)
}

// Begin starts a transaction on the primary (DB.Begin), so that
// pgx.BeginFunc and sqlc's WithTx work with a Writer.
func (h Writer) Begin(ctx context.Context) (pgx.Tx, error) { return h.db.Begin(ctx) }

// BeginTx is Begin with transaction options.
func (h Writer) BeginTx(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error) {
	return h.db.BeginTx(ctx, opts)
}
