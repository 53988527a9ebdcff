package cqrs

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/goaspire/goaspire/internal/walpos"
)

// A position required by WithMinLSN, or by a cache's loader context (a
// walpos.Floor), routes a read like a session's, on top of the session,
// and is counted apart: reason=min_lsn on either target.
func TestMinLSNRouting(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	db := benchDB(t, 2, sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)))
	db.replicas[0].replay.Store(100)
	db.replicas[1].replay.Store(200)
	bg := context.Background()

	ctx := WithMinLSN(bg, 150)
	if WithMinLSN(ctx, 120) != ctx {
		t.Error("WithMinLSN with a lower position made a new context")
	}
	if got := db.needOf(routeFrom(ctx)); got != (need{lsn: 150, given: true}) {
		t.Errorf("need = %+v", got)
	}
	if SessionLSN(ctx) != 0 || walpos.Written(ctx) != 0 {
		t.Error("WithMinLSN started a session, or says it wrote")
	}
	for range 4 {
		if p := db.ReplicaFor(ctx); p != db.replicas[1].pool.Pool {
			t.Fatal("a read needing 150 did not go to the replica that replayed 200")
		}
	}
	if p := db.ReplicaFor(WithMinLSN(bg, 250)); p != db.Primary() {
		t.Fatal("a read needing 250 did not go to the primary")
	}
	st := db.ReadStats()
	if st.MinLSN != 1 || st.MinLSNReplica != 4 || st.Replica != 4 || st.ReadYourWrites != 0 || st.Primary() != 1 {
		t.Errorf("ReadStats = %+v", st)
	}
	if got := sumCounter(t, reader, "goaspire.cqrs.reads", attribute.String("target", "primary"), attribute.String("reason", "min_lsn")); got != 1 {
		t.Errorf("primary min_lsn reads = %d, want 1", got)
	}
	if got := sumCounter(t, reader, "goaspire.cqrs.reads", attribute.String("target", "replica")); got != 4 {
		t.Errorf("replica reads = %d, want 4", got)
	}

	// A session further on decides, and is counted as read-your-writes.
	sess := WithSessionLSN(ctx, 300)
	if got := db.needOf(routeFrom(sess)); got != (need{lsn: 300}) {
		t.Errorf("need with a later session = %+v", got)
	}

	// The cache's loader context: the caller's route (its session and
	// WithPrimary) and the floor.
	caller := WithSessionLSN(bg, 120)
	floor := &walpos.Floor{Inner: caller.Value(walpos.Key{}), Position: 180}
	lctx := context.WithValue(bg, walpos.Key{}, floor)
	r := routeFrom(lctx)
	if r.session != sessionFrom(caller) || r.min != 180 {
		t.Errorf("route of a loader context = %+v", r)
	}
	if walpos.Written(lctx) != 120 {
		t.Errorf("a write from a loader carries %d, want the caller's 120", walpos.Written(lctx))
	}
	if got := db.needOf(routeFrom(WithSession(lctx))); got.lsn != 180 {
		t.Errorf("a session started in a loader lost the floor: %+v", got)
	}
	if !routeFrom(WithPrimary(lctx)).primary || routeFrom(WithPrimary(lctx)).min != 180 {
		t.Error("WithPrimary in a loader context")
	}
	if got := db.needOf(routeFrom(context.WithValue(bg, walpos.Key{}, &walpos.Floor{Position: 90}))); got != (need{lsn: 90, given: true}) {
		t.Errorf("a floor without a caller's route: %+v", got)
	}

	// What a cache's Set or Remove reads from a session's context.
	s := WithSession(bg)
	if walpos.Written(s) != 0 {
		t.Error("a session that has not written has a position")
	}
	sessionFrom(s).observe(77)
	if walpos.Written(s) != 77 || walpos.Written(bg) != 0 {
		t.Errorf("written = %d", walpos.Written(s))
	}
}
