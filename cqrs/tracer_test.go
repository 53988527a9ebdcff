package cqrs

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/testserver"
)

// TestStatementSpans runs statements on a real Postgres and checks the
// spans a pool's tracer makes: one per statement, with db.system and
// db.system.name, whose implicit prepare (the first run of a statement on
// a connection) is an event on it rather than a second span; an explicit
// Prepare is a span named "prepare ...".
func TestStatementSpans(t *testing.T) {
	t.Parallel()
	srv := testserver.NewPostgres(t)
	tests := []struct {
		name      string
		run       func(t *testing.T, p *Pool, ctx context.Context)
		wantNames []string // spans under the request, in start order
		wantEvent []bool   // whether each has a prepare event
	}{
		{
			name: "query run twice",
			run: func(t *testing.T, p *Pool, ctx context.Context) {
				for range 2 {
					var n int
					if err := p.QueryRow(ctx, "select 1 + $1::int", 1).Scan(&n); err != nil {
						t.Fatal(err)
					}
				}
			},
			wantNames: []string{"select", "select"},
			wantEvent: []bool{true, false},
		},
		{
			name: "exec",
			run: func(t *testing.T, p *Pool, ctx context.Context) {
				if _, err := p.Exec(ctx, "select $1::text", "x"); err != nil {
					t.Fatal(err)
				}
			},
			wantNames: []string{"select"},
			wantEvent: []bool{true},
		},
		{
			name: "explicit prepare",
			run: func(t *testing.T, p *Pool, ctx context.Context) {
				c, err := p.Acquire(ctx)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Release()
				if _, err := c.Conn().Prepare(ctx, "stmt1", "select 2"); err != nil {
					t.Fatal(err)
				}
			},
			wantNames: []string{"prepare select"},
			wantEvent: []bool{false},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spans := tracetest.NewSpanRecorder()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
			cfg := discovery.FromMap(map[string]string{"ConnectionStrings__pg": srv.ConnectionString(), "Aspire__Npgsql__pg__MaxConnections": "1"})
			p, err := openPool(t.Context(), cfg, "pg", func(c *PoolConfig) { c.TracerProvider, c.WaitOnOpen = tp, 10*time.Second })
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			ctx, parent := tp.Tracer("test").Start(t.Context(), "request")
			tt.run(t, p, ctx)
			parent.End()

			// Every span of the trace but the request's, in start order: a
			// prepare span nested in its statement's counts too.
			var children []sdktrace.ReadOnlySpan
			for _, s := range spans.Ended() {
				if s.SpanContext().TraceID() == parent.SpanContext().TraceID() && s.SpanContext().SpanID() != parent.SpanContext().SpanID() {
					children = append(children, s)
				}
			}
			slices.SortFunc(children, func(a, b sdktrace.ReadOnlySpan) int { return a.StartTime().Compare(b.StartTime()) })
			if len(children) != len(tt.wantNames) {
				var names []string
				for _, s := range spans.Ended() {
					names = append(names, s.Name())
				}
				t.Fatalf("%d spans under the request, want %d: %q", len(children), len(tt.wantNames), names)
			}
			for i, s := range children {
				if got := s.Name(); !strings.EqualFold(got, tt.wantNames[i]) {
					t.Errorf("span %d named %q, want %q", i, got, tt.wantNames[i])
				}
				attrs := map[string]string{}
				for _, kv := range s.Attributes() {
					attrs[string(kv.Key)] = kv.Value.String()
				}
				if attrs["db.system"] != "postgresql" || attrs["db.system.name"] != "postgresql" {
					t.Errorf("span %q: db.system %q, db.system.name %q", s.Name(), attrs["db.system"], attrs["db.system.name"])
				}
				if attrs["db.client.connection.pool.name"] != "pg" {
					t.Errorf("span %q: pool name %q", s.Name(), attrs["db.client.connection.pool.name"])
				}
				hasEvent := false
				for _, e := range s.Events() {
					hasEvent = hasEvent || e.Name == prepareEvent
				}
				if hasEvent != tt.wantEvent[i] {
					t.Errorf("span %d (%q): prepare event %v, want %v", i, s.Name(), hasEvent, tt.wantEvent[i])
				}
			}
		})
	}
}
