package cqrs

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// benchDB builds a DB over lazy pools (no server is contacted) with n
// replicas in rotation.
func benchDB(tb testing.TB, n int, mp metric.MeterProvider) *DB {
	tb.Helper()
	newPool := func() *Pool {
		c, err := ParseConnectionString("Host=127.0.0.1;Port=1;SSL Mode=Disable")
		if err != nil {
			tb.Fatal(err)
		}
		p, err := pgxpool.NewWithConfig(context.Background(), c)
		if err != nil {
			tb.Fatal(err)
		}
		return &Pool{Pool: p, cancel: func() {}}
	}
	db := &DB{name: "bench", log: quietLogger, primary: &node{name: "p", pool: newPool()}, kick: make(chan struct{}, 1)}
	for i := range n {
		r := &node{name: "r", pool: newPool(), replica: true, bit: 1 << i}
		r.inRotation.Store(true)
		r.replay.Store(1 << 40)
		db.replicas = append(db.replicas, r)
	}
	rs := append([]*node(nil), db.replicas...)
	db.rotation.Store(&rs)
	if err := db.initMetrics(mp.Meter(scopeName)); err != nil {
		tb.Fatal(err)
	}
	db.cancel = func() {}
	tb.Cleanup(db.Close)
	return db
}

// newSDKMeterProvider returns an SDK meter provider with a manual reader,
// so instruments record as in production without exporting.
func newSDKMeterProvider() metric.MeterProvider {
	return sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
}

// BenchmarkReplica measures the cost of choosing a read handle under
// parallel load, against a plain atomic round-robin over a slice of pools
// in the same run.
func BenchmarkReplica(b *testing.B) {
	const replicas = 3
	var sink atomic.Pointer[pgxpool.Pool]

	b.Run("baseline-atomic-round-robin", func(b *testing.B) {
		db := benchDB(b, replicas, metricnoop.NewMeterProvider())
		pools := make([]*pgxpool.Pool, replicas)
		for i, r := range db.replicas {
			pools[i] = r.pool.Pool
		}
		var next atomic.Uint64
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			var p *pgxpool.Pool
			for pb.Next() {
				p = pools[next.Add(1)%uint64(len(pools))]
			}
			sink.Store(p)
		})
	})
	for _, m := range []struct {
		name  string
		newMP func() metric.MeterProvider
	}{
		{"noop", func() metric.MeterProvider { return metricnoop.NewMeterProvider() }},
		{"sdk", newSDKMeterProvider},
	} {
		b.Run("Replica-"+m.name+"-meter", func(b *testing.B) {
			db := benchDB(b, replicas, m.newMP())
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				var p *pgxpool.Pool
				for pb.Next() {
					p = db.Replica()
				}
				sink.Store(p)
			})
		})
	}
	b.Run("ReplicaFor-session-sdk-meter", func(b *testing.B) {
		db := benchDB(b, replicas, newSDKMeterProvider())
		ctx := WithSessionLSN(context.Background(), 1<<39)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			var p *pgxpool.Pool
			for pb.Next() {
				p = db.ReplicaFor(ctx)
			}
			sink.Store(p)
		})
	})
}
