package cqrs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/goaspire/goaspire/internal/deadline"
)

// Defaults of the client-side time limits, applied to zero settings.
const (
	// DefaultCommandTimeout bounds a statement whose context has no
	// deadline, as Npgsql's Command Timeout does (30 s).
	DefaultCommandTimeout = 30 * time.Second
	// DefaultReadAttemptTimeout bounds one attempt of a read on a replica
	// before it runs again on another replica or the primary.
	DefaultReadAttemptTimeout = 2 * time.Second
)

// ErrCommandTimeout is wrapped by the error of a statement that ran into
// its command timeout (CommandTimeout, or the connection string's Command
// Timeout): its context had no deadline, and the server did not finish it
// in time (a silent server, a partition, or a slow statement). The same
// error also wraps context.DeadlineExceeded, so errors.Is(err,
// context.DeadlineExceeded) holds as for a caller's own deadline; a
// caller's own deadline never gives ErrCommandTimeout.
var ErrCommandTimeout = errors.New("cqrs: command timeout")

// withCommandTimeout returns ctx bounded by d, with its cancel, when ctx
// has no deadline of its own and d is positive; else ctx and a nil cancel.
//
// A context that cannot be canceled (Done is nil: context.Background and
// its values) gets a deadline.Context from slots, d's deadline slots: one
// allocation where context.WithTimeout costs five, and a Done channel that
// closes at most a slot width (10 ms) after the deadline, which is what
// pgx waits on. Its cancel does nothing: it holds no timer. A context that
// can be canceled (a request's) gets context.WithTimeout, which keeps
// that cancellation: a context merging the caller's cancellation with a
// shared deadline costs as much (see BenchmarkCommandContext).
func withCommandTimeout(ctx context.Context, d time.Duration, slots *deadline.Slots) (context.Context, context.CancelFunc) {
	return commandContext(ctx, d, slots, nil)
}

// commandContext is withCommandTimeout, making the deadline.Context in
// scratch when it is not nil: a statement's wrapper holds it, so that the
// bound costs no allocation of its own.
func commandContext(ctx context.Context, d time.Duration, slots *deadline.Slots, scratch *deadline.Context) (context.Context, context.CancelFunc) {
	if !commandBound(ctx, d) {
		return ctx, nil
	}
	return limitContext(ctx, d, slots, scratch)
}

// commandBound reports whether a statement with ctx is bounded by the
// command timeout d: d is positive and ctx has no deadline.
func commandBound(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return false
	}
	_, ok := ctx.Deadline()
	return !ok
}

// limitContext returns ctx bounded by d (positive) from now, with its
// cancel: a deadline.Context from slots (made in scratch when not nil)
// when ctx cannot be canceled and has no deadline, else
// context.WithTimeout (see withCommandTimeout).
func limitContext(ctx context.Context, d time.Duration, slots *deadline.Slots, scratch *deadline.Context) (context.Context, context.CancelFunc) {
	if slots != nil && ctx.Done() == nil {
		if _, ok := ctx.Deadline(); !ok {
			if scratch == nil {
				return slots.New(ctx, time.Now().Add(d)), noCancel
			}
			slots.Init(scratch, ctx, time.Now().Add(d))
			return scratch, noCancel
		}
	}
	return context.WithTimeout(ctx, d)
}

func noCancel() {}

// newSlots returns the deadline slots of a time limit d, nil when d is
// not positive (no limit).
func newSlots(d time.Duration) *deadline.Slots {
	if d <= 0 {
		return nil
	}
	return deadline.NewSlots(deadline.WidthFor(d))
}

// expired reports whether bctx, derived from ctx with a deadline of ours,
// ran out while ctx did not: the deadline that ended a statement was ours.
func expired(ctx, bctx context.Context) bool {
	return bctx != ctx && bctx.Err() != nil && ctx.Err() == nil
}

// commandError wraps err in ErrCommandTimeout when the statement ran with
// bctx, ctx bounded by the command timeout d, and that timeout ended it.
// Call it before cancelling bctx.
func commandError(ctx, bctx context.Context, d time.Duration, err error) error {
	if err == nil || !expired(ctx, bctx) {
		return err
	}
	return timeoutError(d, err)
}

func timeoutError(d time.Duration, err error) error {
	return fmt.Errorf("%w after %v (CommandTimeout; give the context a deadline to choose another): %w", ErrCommandTimeout, d, err)
}

// bounded runs f with ctx bounded by the command timeout d (when ctx has no
// deadline), wrapping its error in ErrCommandTimeout when that ended it.
func bounded[T any](ctx context.Context, d time.Duration, slots *deadline.Slots, f func(context.Context) (T, error)) (T, error) {
	bctx, cancel := withCommandTimeout(ctx, d, slots)
	if cancel == nil {
		return f(ctx)
	}
	v, err := f(bctx)
	err = commandError(ctx, bctx, d, err)
	cancel()
	return v, err
}

// stmtRows are the rows of a statement that holds resources until they
// are done (Next returns false, or Close): the command timeout's context,
// cancelled then, and, in a read-your-writes session, the write's WAL
// position, recorded then (db non-nil).
type stmtRows struct {
	pgx.Rows
	parent context.Context // the caller's context, for recording the write
	bctx   context.Context // the statement's context
	cancel context.CancelFunc
	d      time.Duration // command timeout, for the error
	db     *DB           // records the write when done, when non-nil
	done   bool
	err    error // Rows.Err when done, wrapped
}

func (r *stmtRows) Next() bool {
	if r.Rows.Next() {
		return true
	}
	r.finish()
	return false
}

func (r *stmtRows) Close() {
	r.Rows.Close()
	r.finish()
}

func (r *stmtRows) Err() error {
	if r.done {
		return r.err
	}
	return commandError(r.parent, r.bctx, r.d, r.Rows.Err())
}

func (r *stmtRows) finish() {
	if r.done {
		return
	}
	r.done = true
	r.err = commandError(r.parent, r.bctx, r.d, r.Rows.Err())
	if r.cancel != nil {
		r.cancel()
	}
	if r.db != nil && mayHaveWritten(r.Rows.Err()) {
		r.db.recordWrite(r.parent)
	}
}

// stmtRow is the row of a statement that holds resources until Scan, as
// stmtRows.
type stmtRow struct {
	pgx.Row
	parent context.Context
	bctx   context.Context
	cancel context.CancelFunc
	d      time.Duration
	db     *DB
	dctx   deadline.Context // bctx's memory, when it is a deadline.Context
}

func (r *stmtRow) Scan(dest ...any) error {
	err := r.Row.Scan(dest...)
	if r.bctx != nil {
		err = commandError(r.parent, r.bctx, r.d, err)
	}
	if r.cancel != nil {
		r.cancel()
	}
	if r.db != nil && mayHaveWritten(err) {
		r.db.recordWrite(r.parent)
	}
	return err
}

// stmtBatch are the results of a batch that hold its command timeout's
// context until Close and, in a read-your-writes session, record the
// write then (db non-nil).
type stmtBatch struct {
	pgx.BatchResults
	parent context.Context
	bctx   context.Context
	cancel context.CancelFunc
	d      time.Duration
	db     *DB
	closed bool
}

func (b *stmtBatch) wrap(err error) error { return commandError(b.parent, b.bctx, b.d, err) }

func (b *stmtBatch) Exec() (pgconn.CommandTag, error) {
	tag, err := b.BatchResults.Exec()
	return tag, b.wrap(err)
}

func (b *stmtBatch) Query() (pgx.Rows, error) {
	rows, err := b.BatchResults.Query()
	return rows, b.wrap(err)
}

func (b *stmtBatch) QueryRow() pgx.Row {
	return &stmtRow{Row: b.BatchResults.QueryRow(), parent: b.parent, bctx: b.bctx, d: b.d}
}

func (b *stmtBatch) Close() error {
	err := b.BatchResults.Close()
	if b.closed {
		return err
	}
	b.closed = true
	if b.cancel != nil {
		err = b.wrap(err)
		b.cancel()
	}
	if b.db != nil && mayHaveWritten(err) {
		b.db.recordWrite(b.parent)
	}
	return err
}

// writeTx is a transaction on the primary: each of its statements whose
// context has no deadline is bounded by the command timeout, and its
// Commit records the WAL position for read-your-writes (not that of a
// nested transaction, a savepoint).
type writeTx struct {
	pgx.Tx
	db     *DB
	ctx    context.Context // the Begin context, whose session the commit joins
	d      time.Duration   // command timeout
	slots  *deadline.Slots // d's deadline slots
	nested bool
}

func (t *writeTx) Begin(ctx context.Context) (pgx.Tx, error) {
	tx, err := bounded(ctx, t.d, t.slots, t.Tx.Begin)
	if err != nil {
		return nil, err
	}
	return &writeTx{Tx: tx, db: t.db, ctx: t.ctx, d: t.d, slots: t.slots, nested: true}, nil
}

func (t *writeTx) Commit(ctx context.Context) error {
	_, err := bounded(ctx, t.d, t.slots, func(ctx context.Context) (struct{}, error) { return struct{}{}, t.Tx.Commit(ctx) })
	if err != nil {
		return err
	}
	if !t.nested {
		t.db.recordWrite(t.ctx)
	}
	return nil
}

func (t *writeTx) Rollback(ctx context.Context) error {
	_, err := bounded(ctx, t.d, t.slots, func(ctx context.Context) (struct{}, error) { return struct{}{}, t.Tx.Rollback(ctx) })
	return err
}

func (t *writeTx) CopyFrom(ctx context.Context, tableName pgx.Identifier, columnNames []string, rowSrc pgx.CopyFromSource) (int64, error) {
	return bounded(ctx, t.d, t.slots, func(ctx context.Context) (int64, error) {
		return t.Tx.CopyFrom(ctx, tableName, columnNames, rowSrc)
	})
}

func (t *writeTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	bctx, cancel := withCommandTimeout(ctx, t.d, t.slots)
	br := t.Tx.SendBatch(bctx, b)
	if cancel == nil {
		return br
	}
	return &stmtBatch{BatchResults: br, parent: ctx, bctx: bctx, cancel: cancel, d: t.d}
}

func (t *writeTx) Prepare(ctx context.Context, name, sql string) (*pgconn.StatementDescription, error) {
	return bounded(ctx, t.d, t.slots, func(ctx context.Context) (*pgconn.StatementDescription, error) {
		return t.Tx.Prepare(ctx, name, sql)
	})
}

func (t *writeTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	return bounded(ctx, t.d, t.slots, func(ctx context.Context) (pgconn.CommandTag, error) {
		return t.Tx.Exec(ctx, sql, args...)
	})
}

func (t *writeTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	bctx, cancel := withCommandTimeout(ctx, t.d, t.slots)
	rows, err := t.Tx.Query(bctx, sql, args...)
	if cancel == nil {
		return rows, err
	}
	if err != nil {
		err = commandError(ctx, bctx, t.d, err)
		cancel()
		return rows, err
	}
	return &stmtRows{Rows: rows, parent: ctx, bctx: bctx, cancel: cancel, d: t.d}, nil
}

func (t *writeTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if !commandBound(ctx, t.d) {
		return t.Tx.QueryRow(ctx, sql, args...)
	}
	sr := &stmtRow{parent: ctx, d: t.d}
	sr.bctx, sr.cancel = commandContext(ctx, t.d, t.slots, &sr.dctx)
	sr.Row = t.Tx.QueryRow(sr.bctx, sql, args...)
	return sr
}
