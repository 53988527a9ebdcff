package cqrs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.opentelemetry.io/otel/attribute"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

func TestChooseRoundRobinAndFallback(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	db := benchDB(t, 3, sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)))
	db.settings = dbSettings{checkInterval: time.Second}
	count := map[*node]int{}
	for range 30 {
		count[db.choose(0, 0)]++
	}
	for _, r := range db.replicas {
		if count[r] != 10 {
			t.Errorf("replica got %d of 30 reads, want 10", count[r])
		}
	}
	if db.Replica() == db.Primary() {
		t.Error("Replica() returned the primary with replicas in rotation")
	}

	// Two replicas leave: the third takes every read.
	db.setState(db.replicas[0], errors.New("down"), db.replicas[0].gen.Load())
	db.setState(db.replicas[1], errors.New("down"), db.replicas[1].gen.Load())
	for range 5 {
		if n := db.choose(0, 0); n != db.replicas[2] {
			t.Fatalf("read went to %s", n.name)
		}
	}
	// The last one leaves: the primary takes reads, counted as fallback.
	db.setState(db.replicas[2], errors.New("down"), db.replicas[2].gen.Load())
	if db.Replica() != db.Primary() {
		t.Error("no replica in rotation, but Replica() is not the primary")
	}
	if got := sumCounter(t, reader, "goaspire.cqrs.reads", attribute.String("target", "primary"), attribute.Bool("fallback", true)); got != 1 {
		t.Errorf("fallback reads = %d, want 1", got)
	}
	if got := sumCounter(t, reader, "goaspire.cqrs.reads", attribute.String("target", "replica")); got != 36 {
		t.Errorf("replica reads = %d, want 36", got)
	}

	// A check that started before a read reported the replica down cannot
	// put it back; a later one can.
	r := db.replicas[0]
	gen := r.gen.Load()
	db.markDown(r, io.EOF)
	db.setState(r, nil, gen)
	if r.inRotation.Load() {
		t.Error("a stale check put a replica back")
	}
	db.setState(r, nil, r.gen.Load())
	if !r.inRotation.Load() || db.choose(0, 0) != r {
		t.Error("a fresh check did not put the replica back")
	}
}

func TestChooseReadYourWrites(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	db := benchDB(t, 2, sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)))
	db.replicas[0].replay.Store(100)
	db.replicas[1].replay.Store(200)
	for range 10 {
		if n := db.choose(150, 0); n != db.replicas[1] {
			t.Fatalf("read needing 150 went to %s (replay %d)", n.name, n.replay.Load())
		}
	}
	if n := db.choose(250, 0); n != db.primary {
		t.Fatalf("read needing 250 went to %s", n.name)
	}
	if got := sumCounter(t, reader, "goaspire.cqrs.reads", attribute.String("reason", "read_your_writes")); got != 1 {
		t.Errorf("read_your_writes reads = %d", got)
	}
	// The replica that is behind was skipped, not tried: with it excluded
	// the other still serves.
	if n := db.choose(150, db.replicas[1].bit); n != db.primary {
		t.Errorf("with the caught-up replica tried, read went to %s", n.name)
	}

	// Sessions and the DB-wide floor.
	ctx := WithSession(context.Background())
	if WithSession(ctx) != ctx {
		t.Error("WithSession replaced an existing session")
	}
	sessionFrom(ctx).observe(150)
	sessionFrom(ctx).observe(120)
	if db.minLSN(ctx) != 150 || SessionLSN(ctx) != 150 {
		t.Errorf("session LSN %v", SessionLSN(ctx))
	}
	if db.minLSN(context.Background()) != 0 {
		t.Error("no session, ReadYourWrites off: want no bound")
	}
	db.settings.readYourWrites = true
	db.floor.observe(180)
	if db.minLSN(ctx) != 180 || db.minLSN(context.Background()) != 180 {
		t.Errorf("floor not applied: %v", db.minLSN(ctx))
	}
	db.floor.observe(unknownLSN)
	if db.minLSN(context.Background()) != unknownLSN {
		t.Error("an unknown write position must send reads to the primary")
	}
	db.floor.observe(190) // a later known write is past the unknown one
	if db.minLSN(context.Background()) != 190 {
		t.Errorf("floor after a known write: %v", db.minLSN(context.Background()))
	}
	if got := SessionLSN(WithSessionLSN(context.Background(), 42)); got != 42 {
		t.Errorf("WithSessionLSN: %v", got)
	}
}

func TestLag(t *testing.T) {
	db := benchDB(t, 1, metricnoop.NewMeterProvider())
	db.settings = dbSettings{checkInterval: time.Second, maxLag: 10 * time.Second}
	t0 := time.Unix(1000, 0)
	if lag, b := db.lagOf(5, t0); lag != 0 || b != 0 {
		t.Errorf("no samples: %v %d", lag, b)
	}
	db.addSample(t0, 100)
	db.addSample(t0.Add(time.Second), 100) // idle primary: same position
	db.addSample(t0.Add(2*time.Second), 300)
	db.addSample(t0.Add(3*time.Second), 500)
	now := t0.Add(4 * time.Second)
	tests := []struct {
		replay LSN
		lag    time.Duration
		bytes  int64
	}{
		{500, 0, 0},
		{600, 0, 0},
		{300, time.Second, 200}, // the primary passed 300 at t0+3s
		{100, 2 * time.Second, 400},
		{50, 4 * time.Second, 450},
	}
	for _, tt := range tests {
		lag, b := db.lagOf(tt.replay, now)
		if lag != tt.lag || b != tt.bytes {
			t.Errorf("lagOf(%d) = %v, %d; want %v, %d", tt.replay, lag, b, tt.lag, tt.bytes)
		}
	}
	// Old samples go, but one old enough to show the bound is kept.
	db.addSample(t0.Add(60*time.Second), 900)
	if len(db.samples) != 1 {
		t.Errorf("samples after a minute: %d", len(db.samples))
	}
	// A primary that went back starts over.
	db.addSample(t0.Add(61*time.Second), 10)
	if len(db.samples) != 1 || db.samples[0].lsn != 10 {
		t.Errorf("samples after the primary went back: %+v", db.samples)
	}
}

func TestErrorClassification(t *testing.T) {
	ctx := context.Background()
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	tests := []struct {
		err            error
		failure, retry bool
	}{
		{io.ErrUnexpectedEOF, true, true},
		{fmt.Errorf("read: %w", syscall.ECONNRESET), true, true},
		{&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, true, true},
		{&pgconn.PgError{Code: "57P01"}, true, true},
		{&pgconn.PgError{Code: "08006"}, true, true},
		{&pgconn.PgError{Code: "40001"}, false, true},
		{&pgconn.PgError{Code: "42P01"}, false, false},
		{&pgconn.PgError{Code: "23505"}, false, false},
		{pgx.ErrNoRows, false, false},
		{errors.New("can't scan into dest[0]"), false, false},
	}
	for _, tt := range tests {
		if got := serverFailure(tt.err); got != tt.failure {
			t.Errorf("serverFailure(%v) = %v", tt.err, got)
		}
		if got := retryableRead(ctx, tt.err); got != tt.retry {
			t.Errorf("retryableRead(%v) = %v", tt.err, got)
		}
		if retryableRead(cancelled, tt.err) {
			t.Errorf("retryableRead with a cancelled context(%v)", tt.err)
		}
	}
}

func TestMiddleware(t *testing.T) {
	var got LSN = 1
	h := Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if sessionFrom(r.Context()) == nil {
			t.Error("no session in the request context")
		}
		got = SessionLSN(r.Context())
	}))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	if got != 0 {
		t.Errorf("fresh session LSN %v", got)
	}
}

// TestRouteContext checks that WithPrimary and the session functions keep
// each other's part of the context.
func TestRouteContext(t *testing.T) {
	ctx := context.Background()
	if r := routeFrom(ctx); r.primary || r.session != nil {
		t.Fatalf("empty context: %+v", r)
	}
	s := WithSession(ctx)
	p := WithPrimary(s)
	if r := routeFrom(p); !r.primary || r.session != sessionFrom(s) || r.session == nil {
		t.Errorf("WithPrimary(session): %+v", r)
	}
	if WithSession(p) != p {
		t.Error("WithSession of a session with WithPrimary made a new context")
	}
	ps := WithSession(WithPrimary(ctx))
	if r := routeFrom(ps); !r.primary || r.session == nil {
		t.Errorf("WithSession(WithPrimary): %+v", r)
	}
	pl := WithSessionLSN(WithPrimary(ctx), 7)
	if r := routeFrom(pl); !r.primary || SessionLSN(pl) != 7 {
		t.Errorf("WithSessionLSN(WithPrimary): %+v", r)
	}
	if routeFrom(s).primary {
		t.Error("WithPrimary changed its parent context")
	}
}

func TestMayHaveWritten(t *testing.T) {
	_, refused := pgconn.Connect(t.Context(), "host=127.0.0.1 port=1 connect_timeout=2 sslmode=disable")
	var connectErr *pgconn.ConnectError
	if !errors.As(refused, &connectErr) {
		t.Fatalf("connecting to port 1: %v, want a ConnectError", refused)
	}
	tests := []struct {
		err  error
		want bool
	}{
		{nil, true},
		{pgx.ErrNoRows, true}, // UPDATE ... RETURNING that matched nothing: ran
		{io.ErrUnexpectedEOF, true},
		{context.DeadlineExceeded, true},
		{fmt.Errorf("scan: %w", errors.New("can't scan into dest[0]")), true},
		{&pgconn.PgError{Code: "23505"}, false},
		{fmt.Errorf("wrapped: %w", &pgconn.PgError{Code: "25006"}), false},
		{refused, false},
	}
	for _, tt := range tests {
		if got := mayHaveWritten(tt.err); got != tt.want {
			t.Errorf("mayHaveWritten(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}
