package cqrs

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/goaspire/goaspire/internal/benchratio"
	"github.com/goaspire/goaspire/internal/deadline"
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

// sqlc-shaped statements for the benchmarks.
const (
	benchRead = `-- name: GetAuthor :one
SELECT id, name, bio FROM authors
WHERE id = $1 LIMIT 1
`
	benchWrite = `-- name: CreateAuthor :one
INSERT INTO authors (
  name, bio
) VALUES (
  $1, $2
)
RETURNING id, name, bio
`
)

// BenchmarkQueryRow measures DB.QueryRow against pgxpool.QueryRow on the
// same pool, on a real primary and streaming replica: a read (DB.QueryRow
// sends it to the replica, the baseline queries the replica's pool) and a
// ":one" INSERT ... RETURNING (both on the primary). The difference is the
// routing cost: classification (a cache hit), the context lookup, the
// replica choice and, for reads, the lazy row. The sides run in
// alternation, three rounds.
func BenchmarkQueryRow(b *testing.B) {
	c := newCluster(b)
	ctx := b.Context()
	if err := c.primary.Exec(ctx, "CREATE TABLE authors (id bigserial PRIMARY KEY, name text NOT NULL, bio text); INSERT INTO authors (name) VALUES ('a')"); err != nil {
		b.Fatal(err)
	}
	if err := c.replica.WaitCaughtUp(ctx); err != nil {
		b.Fatal(err)
	}
	db, err := openDB(ctx, c.config(map[string]string{"Aspire__Npgsql__db__Replicas__CheckInterval": "1s"}), "db")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(db.Close)
	deadline := time.Now().Add(20 * time.Second)
	for !inRotation(db, "db-replica-east") {
		if time.Now().After(deadline) {
			b.Fatal("the replica did not enter the rotation")
		}
		time.Sleep(20 * time.Millisecond)
	}
	replica, _ := db.Keyed("db-replica-east")
	primary := db.Primary()

	var id int64
	var name string
	var bio *string
	// A cancelable context without a deadline (an HTTP request's) and a
	// Background one take different paths through the command timeout.
	ctxs := []struct {
		name string
		ctx  context.Context
	}{{"cancelable", ctx}, {"background", context.Background()}}
	read := func(b *testing.B, ctx context.Context, q func(context.Context, string, ...any) pgx.Row) {
		b.ReportAllocs()
		for b.Loop() {
			if err := q(ctx, benchRead, 1).Scan(&id, &name, &bio); err != nil {
				b.Fatal(err)
			}
		}
	}
	write := func(b *testing.B, ctx context.Context, q func(context.Context, string, ...any) pgx.Row) {
		b.ReportAllocs()
		for b.Loop() {
			if err := q(ctx, benchWrite, "b", nil).Scan(&id, &name, &bio); err != nil {
				b.Fatal(err)
			}
		}
	}
	// -count repeats each sub-benchmark in place; rounds alternate the
	// sides, so that a change in the machine's load hits both.
	for range 3 {
		for _, c := range ctxs {
			b.Run(c.name+"/read/pgxpool.QueryRow", func(b *testing.B) { read(b, c.ctx, replica.QueryRow) })
			b.Run(c.name+"/read/DB.QueryRow", func(b *testing.B) {
				before := db.ReadStats().Replica
				read(b, c.ctx, db.QueryRow)
				if got := db.ReadStats().Replica - before; got < int64(b.N) {
					b.Fatalf("%d of %d reads reached the replica", got, b.N)
				}
			})
			b.Run(c.name+"/insert/pgxpool.QueryRow", func(b *testing.B) { write(b, c.ctx, primary.QueryRow) })
			b.Run(c.name+"/insert/DB.QueryRow", func(b *testing.B) { write(b, c.ctx, db.QueryRow) })
		}
	}
	// Under a changing load, alternating within each iteration compares the
	// sides best: each op runs one read through each, timed apart.
	for _, c := range ctxs {
		b.Run(c.name+"/read/alternating", func(b *testing.B) { alternating(b, c.ctx, replica, db) })
	}
}

// alternating runs, in each op, one read through pgxpool.QueryRow on
// the replica's pool and one through DB.QueryRow, timed apart, and reports
// the ratio of their times.
func alternating(b *testing.B, ctx context.Context, replica *pgxpool.Pool, db *DB) {
	var id int64
	var name string
	var bio *string
	var plain, routed time.Duration
	for b.Loop() {
		t0 := time.Now()
		if err := replica.QueryRow(ctx, benchRead, 1).Scan(&id, &name, &bio); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := db.QueryRow(ctx, benchRead, 1).Scan(&id, &name, &bio); err != nil {
			b.Fatal(err)
		}
		routed += time.Since(t1)
		plain += t1.Sub(t0)
	}
	b.ReportMetric(float64(plain.Nanoseconds())/float64(b.N), "pgxpool-ns/read")
	b.ReportMetric(float64(routed.Nanoseconds())/float64(b.N), "DB-ns/read")
	b.ReportMetric(float64(routed)/float64(plain), "DB/pgxpool")
}

// BenchmarkRoute measures what DB.QueryRow adds before any I/O, on lazy
// pools: the route of a read (classification, context lookup, replica
// choice, the lazy row) and of a write (classification, context lookup,
// then pgxpool.QueryRow, which fails at once here), against the
// classification alone.
func BenchmarkRoute(b *testing.B) {
	db := benchDB(b, 2, metricnoop.NewMeterProvider())
	ctx := WithSession(context.Background())
	b.Run("classify-hit", func(b *testing.B) {
		db.stmts.readOnly(benchRead)
		b.ReportAllocs()
		for b.Loop() {
			if !db.stmts.readOnly(benchRead) {
				b.Fatal("read classified as a write")
			}
		}
	})
	b.Run("classify-hit-parallel", func(b *testing.B) {
		db.stmts.readOnly(benchWrite)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if db.stmts.readOnly(benchWrite) {
					panic("write classified as a read")
				}
			}
		})
	})
	b.Run("classify-miss", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !readOnly(benchRead) {
				b.Fatal("read classified as a write")
			}
		}
	})
	b.Run("DB.QueryRow-read-no-scan", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = db.QueryRow(ctx, benchRead, 1)
		}
	})
}

// BenchmarkCommandContext measures the bound of a statement whose context
// can be canceled but has no deadline (an HTTP request's), as pgx uses it
// (context.AfterFunc to watch it, then stop): context.WithTimeout against
// a merge of the caller's cancellation with a shared deadline slot
// (context.WithCancel of a deadline.Context, canceled by
// context.AfterFunc on the caller's context). withCommandTimeout keeps
// the cheaper one (see there).
func BenchmarkCommandContext(b *testing.B) {
	const d = DefaultCommandTimeout
	parent, cancelParent := context.WithCancel(context.Background())
	defer cancelParent()
	watch := func(ctx context.Context) { context.AfterFunc(ctx, func() {})() }
	slots := newSlots(d)
	var dc deadline.Context
	benchratio.ComparePairs(b, 3,
		benchratio.Side{Name: "WithTimeout", Op: func(*testing.B) {
			ctx, cancel := context.WithTimeout(parent, d)
			watch(ctx)
			cancel()
		}},
		benchratio.Side{Name: "merge", Op: func(*testing.B) {
			slots.Init(&dc, parent, time.Now().Add(d))
			ctx, cancel := context.WithCancel(&dc)
			stop := context.AfterFunc(parent, cancel)
			watch(ctx)
			stop()
			cancel()
		}},
	)
}
