package cqrs

import (
	"context"
	"errors"
	"time"

	"github.com/exaring/otelpgx"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// dbSystemKey is the pre-1.26 database attribute. otelpgx emits only the
// current db.system.name; the Aspire dashboard labels a database span from
// db.system, so both are set.
const dbSystemKey = attribute.Key("db.system")

// prepareEvent names the span event that stands for the implicit prepare
// of a statement run for the first time on a connection.
const prepareEvent = "prepare"

// pgxTracer is otelpgx's tracer with one span per statement: the prepare
// pgx runs inside a query, batch or copy (its statement cache's implicit
// prepare, or the describe of QueryExecModeCacheDescribe) becomes an event
// on that statement's span instead of a second child span with the same
// name and SQL. An explicit Conn.Prepare, outside any statement, gets a
// span of its own named "prepare {operation}" ("prepare SELECT"), so it is
// never mistaken for the statement.
//
// Metrics are untouched: otelpgx still measures every prepare.
type pgxTracer struct {
	*otelpgx.Tracer
	tracer trace.Tracer // for explicit prepares
	attrs  []attribute.KeyValue
}

// inStatementKey marks a context inside a statement's span.
type inStatementKey struct{}

// prepareState carries a nested prepare from TracePrepareStart to
// TracePrepareEnd.
type prepareState struct {
	span  trace.Span // the statement's span, or the explicit prepare's own
	start time.Time
	name  string
	own   bool // span is ours to end (an explicit prepare)
}

type prepareKey struct{}

// nonRecording hides the statement's span from otelpgx's prepare hooks, so
// they record their metrics but start no span.
var nonRecording = tracenoop.Span{}

func newPGXTracer(tp trace.TracerProvider, inner *otelpgx.Tracer, attrs []attribute.KeyValue) *pgxTracer {
	return &pgxTracer{Tracer: inner, tracer: tp.Tracer(scopeName), attrs: attrs}
}

func markStatement(ctx context.Context) context.Context {
	if !trace.SpanFromContext(ctx).IsRecording() {
		return ctx
	}
	return context.WithValue(ctx, inStatementKey{}, true)
}

// TraceQueryStart starts the statement's span (otelpgx) and marks the
// context as inside it.
func (t *pgxTracer) TraceQueryStart(ctx context.Context, conn *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	return markStatement(t.Tracer.TraceQueryStart(ctx, conn, data))
}

// TraceBatchStart starts the batch's span and marks the context.
func (t *pgxTracer) TraceBatchStart(ctx context.Context, conn *pgx.Conn, data pgx.TraceBatchStartData) context.Context {
	return markStatement(t.Tracer.TraceBatchStart(ctx, conn, data))
}

// TraceCopyFromStart starts the copy's span and marks the context.
func (t *pgxTracer) TraceCopyFromStart(ctx context.Context, conn *pgx.Conn, data pgx.TraceCopyFromStartData) context.Context {
	return markStatement(t.Tracer.TraceCopyFromStart(ctx, conn, data))
}

// TracePrepareStart records a prepare: as an event on the enclosing
// statement's span when there is one, else as a span of its own named
// "prepare {operation}".
func (t *pgxTracer) TracePrepareStart(ctx context.Context, conn *pgx.Conn, data pgx.TracePrepareStartData) context.Context {
	parent := trace.SpanFromContext(ctx)
	if !parent.IsRecording() {
		return t.Tracer.TracePrepareStart(ctx, conn, data) // metrics only
	}
	st := &prepareState{span: parent, start: time.Now(), name: data.Name}
	if ctx.Value(inStatementKey{}) == nil {
		attrs := append([]attribute.KeyValue{}, t.attrs...)
		attrs = append(attrs, attribute.String("db.system.name", "postgresql"), attribute.String("db.query.text", data.SQL))
		if data.Name != "" {
			attrs = append(attrs, otelpgx.PrepareStmtNameKey.String(data.Name))
		}
		op := otelpgx.SQLOperationName(ctx, data.SQL)
		if op != "" {
			attrs = append(attrs, attribute.String("db.operation.name", op))
		}
		ctx, st.span = t.tracer.Start(ctx, "prepare "+op, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
		st.own = true
	}
	ctx = context.WithValue(ctx, prepareKey{}, st)
	// otelpgx's hook, with no recording span in sight, measures only.
	return t.Tracer.TracePrepareStart(trace.ContextWithSpan(ctx, nonRecording), conn, data)
}

// TracePrepareEnd ends what TracePrepareStart began.
func (t *pgxTracer) TracePrepareEnd(ctx context.Context, conn *pgx.Conn, data pgx.TracePrepareEndData) {
	t.Tracer.TracePrepareEnd(ctx, conn, data)
	st, _ := ctx.Value(prepareKey{}).(*prepareState)
	if st == nil {
		return
	}
	if st.own {
		if data.Err != nil {
			st.span.RecordError(data.Err)
			st.span.SetStatus(codes.Error, data.Err.Error())
		}
		st.span.End()
		return
	}
	attrs := []attribute.KeyValue{attribute.Float64("duration", time.Since(st.start).Seconds())}
	if st.name != "" {
		attrs = append(attrs, otelpgx.PrepareStmtNameKey.String(st.name))
	}
	var pgErr *pgconn.PgError
	if errors.As(data.Err, &pgErr) {
		// The statement's span records the error itself.
		attrs = append(attrs, attribute.String("db.response.status_code", pgErr.Code))
	}
	st.span.AddEvent(prepareEvent, trace.WithTimestamp(st.start), trace.WithAttributes(attrs...))
}
