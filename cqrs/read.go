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

	"github.com/goaspire/goaspire/internal/deadline"
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

// need is what a read must see: a WAL position, and whether it was
// required by WithMinLSN (or a cache's loader) rather than by
// read-your-writes, which says how a read sent to the primary for it is
// counted.
type need struct {
	lsn   LSN
	given bool
}

// minLSN is the WAL position a read with ctx must see.
func (db *DB) minLSN(ctx context.Context) LSN { return db.needOf(routeFrom(ctx)).lsn }

// needOf is what a read with a context's route must see.
func (db *DB) needOf(r route) need {
	var l LSN
	if r.session != nil {
		l = LSN(r.session.lsn.Load())
	}
	if db.settings.readYourWrites {
		if f := LSN(db.floor.v.Load()); f > l {
			l = f
		}
	}
	if r.min > l {
		return need{lsn: r.min, given: true}
	}
	return need{lsn: l}
}

// records reports whether a write with route r must record its WAL
// position.
func (db *DB) records(r route) bool { return r.session != nil || db.settings.readYourWrites }

// mayHaveWritten reports whether a statement that ended with err may have
// changed the database: it succeeded, or it failed in a way that leaves
// that open (the connection broke after it was sent). A statement the
// server rejected rolled back; one that was never sent (no connection)
// did nothing.
func mayHaveWritten(err error) bool {
	if err == nil {
		return true
	}
	var pgErr *pgconn.PgError
	var connectErr *pgconn.ConnectError
	return !errors.As(err, &pgErr) && !errors.As(err, &connectErr) && !pgconn.SafeToRetry(err)
}

// Exec runs a statement on the primary. In a read-your-writes session (or
// with ReadYourWrites on) it then records the WAL position, so that later
// reads see the write.
func (db *DB) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	p := db.primary.pool
	tag, err := bounded(ctx, p.commandTimeout, p.cmdSlots, func(ctx context.Context) (pgconn.CommandTag, error) {
		return p.Exec(ctx, sql, args...)
	})
	if mayHaveWritten(err) {
		db.recordWrite(ctx)
	}
	return tag, err
}

// CopyFrom copies rows into a table on the primary with the COPY protocol
// (see pgx.Conn.CopyFrom), and records the write as Exec does.
func (db *DB) CopyFrom(ctx context.Context, tableName pgx.Identifier, columnNames []string, rowSrc pgx.CopyFromSource) (int64, error) {
	p := db.primary.pool
	n, err := bounded(ctx, p.commandTimeout, p.cmdSlots, func(ctx context.Context) (int64, error) {
		return p.CopyFrom(ctx, tableName, columnNames, rowSrc)
	})
	if mayHaveWritten(err) {
		db.recordWrite(ctx)
	}
	return n, err
}

// SendBatch sends a batch of statements to the primary (whatever they are:
// a batch is not classified), and records the write as Exec does when the
// results are closed.
func (db *DB) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	p := db.primary.pool
	bctx, cancel := withCommandTimeout(ctx, p.commandTimeout, p.cmdSlots)
	br := p.SendBatch(bctx, b)
	rec := db.records(routeFrom(ctx))
	if cancel == nil && !rec {
		return br
	}
	sb := &stmtBatch{BatchResults: br, parent: ctx, bctx: bctx, cancel: cancel, d: p.commandTimeout}
	if rec {
		sb.db = db
	}
	return sb
}

// Begin starts a transaction on the primary. Its Commit records the WAL
// position for read-your-writes, as Exec does.
func (db *DB) Begin(ctx context.Context) (pgx.Tx, error) {
	return db.BeginTx(ctx, pgx.TxOptions{})
}

// BeginTx is Begin with transaction options.
func (db *DB) BeginTx(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error) {
	p := db.primary.pool
	tx, err := bounded(ctx, p.commandTimeout, p.cmdSlots, func(ctx context.Context) (pgx.Tx, error) {
		return p.BeginTx(ctx, opts)
	})
	if err != nil {
		return nil, err
	}
	return &writeTx{Tx: tx, db: db, ctx: ctx, d: p.commandTimeout, slots: p.cmdSlots}, nil
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

// QueryRow runs a query and returns its first row. A statement known to be
// read-only (see Query) runs on a replica when Scan is called; if the
// replica fails with a connection error, Scan runs it again on another
// replica or the primary. Any other statement runs on the primary, as a
// write.
func (db *DB) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	r := routeFrom(ctx)
	if r.primary || !db.stmts.readOnly(sql) {
		return db.writeQueryRow(ctx, r, sql, args)
	}
	return db.readQueryRow(ctx, r, sql, args)
}

// Query runs a query. A statement known to be read-only runs on a replica
// in rotation, or on the primary when none is, or when ctx's
// read-your-writes session needs a write no replica has replayed. A
// connection error before the first row arrives takes the replica out of
// rotation and runs the query again elsewhere; an error after rows have
// started coming is returned as usual by Rows.Err.
//
// Any other statement, and every statement made with a context from
// WithPrimary, runs on the primary, as a write: it is never retried, and
// in a read-your-writes session (or with ReadYourWrites on) its WAL
// position is recorded when the rows are closed. sqlc sends ":one" and ":many" statements, INSERT ...
// RETURNING among them, through QueryRow and Query.
//
// A statement is known to be read-only when it starts (after comments)
// with SELECT, WITH, VALUES, SHOW or TABLE and, outside literals and
// comments, has no INSERT, UPDATE, DELETE, MERGE, INTO, FOR SHARE, FOR KEY
// SHARE, no second statement, and no call of nextval, setval, currval,
// lastval, pg_advisory_* or another function known to write. A SELECT of
// a function that writes looks read-only: the replica refuses it, and it
// runs again on the primary (see the package doc); make it with
// WithPrimary (or through Writer) to spare the round trip. The answer is cached per SQL text, so a repeated
// statement is classified once.
func (db *DB) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	r := routeFrom(ctx)
	if r.primary || !db.stmts.readOnly(sql) {
		return db.writeQuery(ctx, r, sql, args)
	}
	return db.readQuery(ctx, r, sql, args)
}

// writeQueryRow runs QueryRow on the primary, recording the write when
// the row is scanned.
func (db *DB) writeQueryRow(ctx context.Context, r route, sql string, args []any) pgx.Row {
	p := db.primary.pool
	rec := db.records(r)
	if !rec && !commandBound(ctx, p.commandTimeout) {
		return p.QueryRow(ctx, sql, args...)
	}
	sr := &stmtRow{parent: ctx, d: p.commandTimeout}
	bctx, cancel := commandContext(ctx, p.commandTimeout, p.cmdSlots, &sr.dctx)
	sr.Row = p.QueryRow(bctx, sql, args...)
	if cancel != nil {
		sr.bctx, sr.cancel = bctx, cancel
	}
	if rec {
		sr.db = db
	}
	return sr
}

// writeQuery runs Query on the primary, recording the write when the rows
// are closed.
func (db *DB) writeQuery(ctx context.Context, r route, sql string, args []any) (pgx.Rows, error) {
	p := db.primary.pool
	bctx, cancel := withCommandTimeout(ctx, p.commandTimeout, p.cmdSlots)
	rows, err := p.Query(bctx, sql, args...)
	rec := db.records(r)
	if err != nil {
		if cancel != nil {
			err = commandError(ctx, bctx, p.commandTimeout, err)
			cancel()
		}
		if rec && mayHaveWritten(err) {
			db.recordWrite(ctx)
		}
		return rows, err
	}
	if cancel == nil && !rec {
		return rows, nil
	}
	sr := &stmtRows{Rows: rows, parent: ctx, bctx: bctx, cancel: cancel, d: p.commandTimeout}
	if rec {
		sr.db = db
	}
	return sr, nil
}

// readQueryRow runs QueryRow on a replica, lazily, with failover.
func (db *DB) readQueryRow(ctx context.Context, r route, sql string, args []any) pgx.Row {
	return &row{db: db, ctx: ctx, min: db.needOf(r), sql: sql, args: args}
}

type row struct {
	db   *DB
	ctx  context.Context
	min  need
	sql  string
	args []any
	dest []any            // of Scan
	dctx deadline.Context // the first attempt's bound, when a deadline.Context
}

func (r *row) Scan(dest ...any) error {
	r.dest = dest
	err := r.db.read(r.ctx, r.min, r, &r.dctx)
	r.dest = nil
	return err
}

func (r *row) run(ctx context.Context, n *node) error {
	return n.pool.QueryRow(ctx, r.sql, r.args...).Scan(r.dest...)
}

// next chooses the server of a read's attempt: the primary once a replica
// refused the read as a write, else the next replica in rotation that was
// not tried (see choose). final says that no other server may take over;
// cmd is the server's command timeout, none when the caller's context has
// a deadline of its own.
func (db *DB) next(min need, tried uint64, refused bool, attempt int, hasDeadline bool) (n *node, final bool, cmd time.Duration) {
	n = db.primary
	if !refused {
		n = db.pick(min, tried)
	}
	if !hasDeadline {
		cmd = n.pool.commandTimeout
	}
	return n, db.final(n, attempt), cmd
}

// readQuery runs Query on a replica, with failover until the first row:
// ReadAttemptTimeout bounds an attempt until then, the command timeout
// (when ctx has no deadline) the whole statement.
func (db *DB) readQuery(ctx context.Context, r route, sql string, args []any) (pgx.Rows, error) {
	min := db.needOf(r)
	_, hasDeadline := ctx.Deadline()
	var tried uint64
	refused := false // a replica refused the read as a write: on the primary now
	for attempt := 0; ; attempt++ {
		n, final, cmd := db.next(min, tried, refused, attempt, hasDeadline)
		qctx, cancel := withCommandTimeout(ctx, cmd, n.pool.cmdSlots)
		var timer *time.Timer
		if a := db.settings.readAttempt; !final && a > 0 && (cmd <= 0 || a < cmd) {
			var cancelAttempt context.CancelCauseFunc
			qctx, cancelAttempt = context.WithCancelCause(qctx)
			timer = time.AfterFunc(a, func() { cancelAttempt(errAttemptTimeout) })
			if c := cancel; c != nil {
				cancel = func() { cancelAttempt(nil); c() }
			} else {
				cancel = func() { cancelAttempt(nil) }
			}
		}
		rows, err := n.pool.Query(qctx, sql, args...)
		first := false
		if err == nil {
			if first = rows.Next(); !first {
				err = rows.Err()
			}
		}
		if timer != nil && !timer.Stop() && err == nil {
			// The attempt ran out as the first row came: the rest
			// would fail.
			rows.Close()
			err = errAttemptTimeout
		}
		if err == nil {
			out := &peekedRows{Rows: rows, pending: true, first: first}
			wrote := refused && db.records(routeFrom(ctx))
			if cancel == nil && !wrote {
				return out, nil
			}
			sr := &stmtRows{Rows: out, parent: ctx, bctx: qctx, cancel: cancel, d: cmd}
			if wrote {
				sr.db = db // the statement wrote on the primary
			}
			return sr, nil
		}
		if rows != nil {
			rows.Close()
		}
		ours := cancel != nil && expired(ctx, qctx)
		if cancel != nil {
			cancel()
		}
		if db.refusedRead(ctx, n, err) {
			refused = true
			continue
		}
		if err = db.afterFailedRead(ctx, n, final, ours, cmd, err); err != nil {
			return errRows{err}, err
		}
		tried |= n.bit
	}
}

// errAttemptTimeout ends a read attempt that ran out of ReadAttemptTimeout;
// the read runs again elsewhere, so callers never see it.
var errAttemptTimeout = errors.New("cqrs: read attempt timeout")

// final reports whether the attempt'th try of a read, on n, is the last:
// a read fails over from a replica only.
func (db *DB) final(n *node, attempt int) bool {
	return n == db.primary || attempt >= len(db.replicas)
}

// read runs fn on a server that has replayed min, and again on others
// while it fails in a way that another server may not (and ctx lasts).
// Each try on a replica that another server could take over is bounded by
// ReadAttemptTimeout; each, when ctx has no deadline, by the server's
// command timeout.
//
// scratch, when not nil, is memory for the first attempt's bound (see
// commandContext); later attempts allocate theirs, so that nothing of an
// attempt that ended shares memory with the next.
func (db *DB) read(ctx context.Context, min need, a attempt, scratch *deadline.Context) error {
	var tried uint64
	_, hasDeadline := ctx.Deadline()
	refused := false // a replica refused the read as a write: on the primary now
	for attempt := 0; ; attempt++ {
		n, final, cmd := db.next(min, tried, refused, attempt, hasDeadline)
		d := cmd
		if a := db.settings.readAttempt; !final && a > 0 && (d <= 0 || a < d) {
			d = a
		}
		actx, cancel := ctx, context.CancelFunc(nil)
		if d > 0 {
			slots := n.pool.cmdSlots
			if d != cmd {
				slots = db.attemptSlots
			}
			actx, cancel = limitContext(ctx, d, slots, scratch)
			scratch = nil
		}
		err := a.run(actx, n)
		ours := false
		if cancel != nil {
			ours = err != nil && expired(ctx, actx)
			cancel()
		}
		if err == nil {
			if refused {
				db.recordWrite(ctx) // the statement wrote on the primary
			}
			return nil
		}
		if db.refusedRead(ctx, n, err) {
			refused = true
			continue
		}
		if err = db.afterFailedRead(ctx, n, final, ours, cmd, err); err != nil {
			return err
		}
		tried |= n.bit
	}
}

// refusedRead reports whether a read that failed with err on n runs
// again on the primary, and counts it then: n is a replica and refused
// the statement as a write (see refusedWrite), and ctx lasts. Once: the
// primary's answer is final.
func (db *DB) refusedRead(ctx context.Context, n *node, err error) bool {
	if n == db.primary || !refusedWrite(err) || ctx.Err() != nil {
		return false
	}
	db.reads[readRefused].Add(1)
	return true
}

// refusedWrite reports whether err is a standby's refusal of a statement
// that writes, or that needs the primary: SQLSTATE 25006
// (read_only_sql_transaction: "cannot execute INSERT in a read-only
// transaction", a function of the user's that writes) or 55000
// (object_not_in_prerequisite_state: "recovery is in progress", a
// built-in function that acts on the primary only). The statement failed
// before it changed anything, and a standby cannot change anything
// anyway, so running it on the primary runs it once.
func refusedWrite(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "25006" || pgErr.Code == "55000")
}

// attempt is one try of a read on a server, with a context bounded for it.
type attempt interface {
	run(ctx context.Context, n *node) error
}

// attemptFunc is a function as an attempt.
type attemptFunc func(ctx context.Context, n *node) error

func (f attemptFunc) run(ctx context.Context, n *node) error { return f(ctx, n) }

// afterFailedRead decides what follows a read attempt on n that failed
// with err: nil to try another server, else the read's error. ours says
// that a time limit of ours (ReadAttemptTimeout, or the command timeout
// cmd) ended the attempt.
func (db *DB) afterFailedRead(ctx context.Context, n *node, final, ours bool, cmd time.Duration, err error) error {
	switch {
	case ours && !final:
		// No answer in time: try elsewhere. The server may be silent or
		// the statement slow; the checker, kicked, finds out which.
		db.kickCheck()
		return nil
	case ours:
		return timeoutError(cmd, err)
	case final || !retryableRead(ctx, err):
		return err
	case serverFailure(err):
		db.markDown(n, err)
	}
	return nil
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
