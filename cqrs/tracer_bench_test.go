package cqrs

import (
	"context"
	"testing"

	"github.com/exaring/otelpgx"
	"github.com/jackc/pgx/v5"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// BenchmarkStatementTracer measures tracing one statement under a
// recording span, without a database: "otelpgx" is otelpgx's tracer,
// "goaspire" the pool's (which marks the statement's context so a nested
// prepare becomes an event), each for a statement run before on the
// connection ("cached") and one run for the first time ("prepared").
//
//	go test -run '^$' -bench BenchmarkStatementTracer -benchmem ./cqrs
func BenchmarkStatementTracer(b *testing.B) {
	tp := sdktrace.NewTracerProvider() // spans record, nothing exports
	defer func() { _ = tp.Shutdown(context.Background()) }()
	ctx, parent := tp.Tracer("bench").Start(context.Background(), "request")
	defer parent.End()
	inner := func() *otelpgx.Tracer { return otelpgx.NewTracer(otelpgx.WithTracerProvider(tp)) }
	type tracer interface {
		pgx.QueryTracer
		pgx.PrepareTracer
	}
	sql := "select name from products where id = $1"
	for _, prepared := range []bool{false, true} {
		name := "cached"
		if prepared {
			name = "prepared"
		}
		for _, side := range []struct {
			name string
			t    tracer
		}{{"otelpgx", inner()}, {"goaspire", newPGXTracer(tp, inner(), nil)}} {
			b.Run(name+"/"+side.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					qctx := side.t.TraceQueryStart(ctx, nil, pgx.TraceQueryStartData{SQL: sql})
					if prepared {
						pctx := side.t.TracePrepareStart(qctx, nil, pgx.TracePrepareStartData{Name: "stmt", SQL: sql})
						side.t.TracePrepareEnd(pctx, nil, pgx.TracePrepareEndData{})
					}
					side.t.TraceQueryEnd(qctx, nil, pgx.TraceQueryEndData{})
				}
			})
		}
	}
}
