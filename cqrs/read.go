package cqrs

import (
	"context"
	"errors"
	"io"
	"math"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// unknownLSN stands for "a write whose position could not be read": reads
// that must see it go to the primary.
const unknownLSN = math.MaxUint64

// floor is the DB-wide read-your-writes position (ReadYourWrites on).
type floor struct{ v atomic.Uint64 }

// observe raises the floor to l. When the floor is unknown (a write's
// position could not be read), any later known position replaces it: it is
// past the unknown write.
func (f *floor) observe(l LSN) {
	for {
		cur := f.v.Load()
		if cur != unknownLSN && uint64(l) <= cur {
			return
		}
		if f.v.CompareAndSwap(cur, uint64(l)) {
			return
		}
	}
}

// minLSN is the WAL position a read with ctx must see.
func (db *DB) minLSN(ctx context.Context) LSN {
	l := SessionLSN(ctx)
	if db.settings.readYourWrites {
		if f := LSN(db.floor.v.Load()); f > l {
			l = f
		}
	}
	return l
}

// Exec runs a statement on the primary. In a read-your-writes session (or
// with ReadYourWrites on) it then records the WAL position, so that later
// reads see the write.
func (db *DB) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	tag, err := db.primary.pool.Exec(ctx, sql, args...)
	if err == nil {
		db.recordWrite(ctx)
	}
	return tag, err
}

// Begin starts a transaction on the primary. Its Commit records the WAL
// position for read-your-writes, as Exec does.
func (db *DB) Begin(ctx context.Context) (pgx.Tx, error) {
	return db.BeginTx(ctx, pgx.TxOptions{})
}

// BeginTx is Begin with transaction options.
func (db *DB) BeginTx(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error) {
	tx, err := db.primary.pool.BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	return &writeTx{Tx: tx, db: db, ctx: ctx}, nil
}

type writeTx struct {
	pgx.Tx
	db  *DB
	ctx context.Context // the Begin context, whose session the commit joins
}

func (t *writeTx) Commit(ctx context.Context) error {
	if err := t.Tx.Commit(ctx); err != nil {
		return err
	}
	t.db.recordWrite(t.ctx)
	return nil
}

// RecordWrite records the primary's current WAL position in ctx's
// read-your-writes session (and, with ReadYourWrites on, for the whole
// DB). Call it after writing through Primary() directly; Exec and Begin do
// it themselves.
func (db *DB) RecordWrite(ctx context.Context) {
	db.recordWrite(ctx)
}

// recordWrite costs one small query on the primary, and only in sessions
// or with ReadYourWrites on. pg_current_wal_insert_lsn is at or past the
// end of every committed transaction's commit record, even with
// synchronous_commit off, so a replica that has replayed it sees the
// write.
func (db *DB) recordWrite(ctx context.Context) {
	s := sessionFrom(ctx)
	if s == nil && !db.settings.readYourWrites {
		return
	}
	qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	var text string
	l := LSN(unknownLSN)
	if err := db.primary.pool.QueryRow(qctx, "select pg_current_wal_insert_lsn()::text").Scan(&text); err == nil {
		if p, err := ParseLSN(text); err == nil {
			l = p
		}
	}
	if s != nil {
		s.observe(l)
	}
	if db.settings.readYourWrites {
		db.floor.observe(l)
	}
}

// QueryRow runs a query on a replica (see Query) and returns its first row.
// The query runs when Scan is called; if the replica fails with a
// connection error, Scan runs it again on another replica or the primary.
func (db *DB) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return &row{db: db, ctx: ctx, sql: sql, args: args}
}

type row struct {
	db   *DB
	ctx  context.Context
	sql  string
	args []any
}

func (r *row) Scan(dest ...any) error {
	return r.db.read(r.ctx, func(n *node) error {
		return n.pool.QueryRow(r.ctx, r.sql, r.args...).Scan(dest...)
	})
}

// Query runs a query on a replica in rotation, or on the primary when none
// is, or when ctx's read-your-writes session needs a write no replica has
// replayed. A connection error before the first row arrives takes the
// replica out of rotation and runs the query again elsewhere; an error
// after rows have started coming is returned as usual by Rows.Err.
func (db *DB) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	var out pgx.Rows
	err := db.read(ctx, func(n *node) error {
		rows, err := n.pool.Query(ctx, sql, args...)
		if err != nil {
			return err
		}
		first := rows.Next()
		if !first {
			if err := rows.Err(); err != nil {
				rows.Close()
				return err
			}
		}
		out = &peekedRows{Rows: rows, pending: true, first: first}
		return nil
	})
	if err != nil {
		return errRows{err}, err
	}
	return out, nil
}

// read runs fn on the server chosen for ctx, and again on others while it
// fails in a way that another server may not.
func (db *DB) read(ctx context.Context, fn func(*node) error) error {
	min := db.minLSN(ctx)
	var tried uint64
	for attempt := 0; ; attempt++ {
		n := db.choose(min, tried)
		err := fn(n)
		if err == nil || n == db.primary || attempt >= len(db.replicas) || !retryableRead(ctx, err) {
			return err
		}
		if serverFailure(err) {
			db.markDown(n, err)
		}
		tried |= n.bit
	}
}

// retryableRead reports whether a read that failed with err may succeed on
// another server: the server or the connection failed, or the server
// cancelled the read because of a recovery conflict.
func retryableRead(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return serverFailure(err) || pgErr.Code == "40001" // serialization_failure: recovery conflict on a standby
	}
	return serverFailure(err)
}

// serverFailure reports whether err means the server or the connection to
// it failed (rather than the statement).
func serverFailure(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case len(pgErr.Code) == 5 && pgErr.Code[:2] == "08": // connection_exception
			return true
		case pgErr.Code == "57P01", pgErr.Code == "57P02", pgErr.Code == "57P03": // admin/crash shutdown, cannot connect now
			return true
		case pgErr.Code == "53300": // too_many_connections
			return true
		}
		return false
	}
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) || pgconn.SafeToRetry(err) {
		return true
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, pgconn.ErrConnClosed) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	var netErr net.Error
	return errors.As(err, &netErr)
}

// peekedRows is a result whose first row has been read to see whether the
// query failed; it hands that row out first.
type peekedRows struct {
	pgx.Rows
	pending bool
	first   bool
}

func (r *peekedRows) Next() bool {
	if r.pending {
		r.pending = false
		return r.first
	}
	return r.Rows.Next()
}

// errRows is the result of a query that failed before it started.
type errRows struct{ err error }

func (errRows) Close()                                       {}
func (r errRows) Err() error                                 { return r.err }
func (errRows) CommandTag() pgconn.CommandTag                { return pgconn.CommandTag{} }
func (errRows) FieldDescriptions() []pgconn.FieldDescription { return nil }
func (errRows) Next() bool                                   { return false }
func (r errRows) Scan(...any) error                          { return r.err }
func (r errRows) Values() ([]any, error)                     { return nil, r.err }
func (errRows) RawValues() [][]byte                          { return nil }
func (errRows) Conn() *pgx.Conn                              { return nil }
func (errRows) TypeMap() *pgtype.Map                         { return nil }
