package cache

import (
	"context"
	"fmt"
	"math"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/goaspire/goaspire/cqrs"
	"github.com/goaspire/goaspire/internal/benchratio"
	"github.com/goaspire/goaspire/testserver"
)

// The cost of the position check on a miss: GetOrLoad of a new key whose
// loader routes a read through cqrs (DB.ReplicaFor: the routing decision,
// without the query), plain against one that follows an invalidation
// carrying a write's position (the position lookup, the loader context's
// floor, and cqrs comparing it with the replica's replay position; the
// replica has replayed it, so both read the replica). Once without Redis
// (L1 only), where the miss itself is cheap, and once over Redis.
//
// Run: go test -run XXX -bench InterleavedMissPosition -benchtime 20000x ./cache/
func BenchmarkInterleavedMissPositionL1Only(b *testing.B) { benchMissPosition(b, nil, 1000) }

func BenchmarkInterleavedMissPositionRedis(b *testing.B) {
	benchMissPosition(b, openClient(b, testserver.NewRedis(b)), 100)
}

func benchMissPosition(b *testing.B, rdb redis.UniversalClient, round int) {
	db, _ := newReplicaDB(b)
	plain := newCache[product](b, rdb, "bench-plain", Options{})
	withPos := newCache[product](b, rdb, "bench-position", Options{})
	// Every key of withPos was invalidated by a write at position 1,
	// which the replica has replayed.
	withPos.positions.all = posEntry{pos: 1, until: math.MaxInt64}
	withPos.positions.live.Store(true)
	load := func(ctx context.Context) (product, error) {
		if db.ReplicaFor(ctx) == db.Primary() {
			return product{}, fmt.Errorf("routed to the primary")
		}
		return sampleProduct(1), nil
	}
	// A request's context: cancellable, a read-your-writes session.
	ctx, cancel := context.WithCancel(cqrs.WithSession(context.Background()))
	defer cancel()
	run := b.N
	miss := func(name string, c *Cache[product]) benchratio.Step {
		return benchratio.Step{Name: name, Op: func(b *testing.B, i int) {
			if _, err := c.GetOrLoad(ctx, fmt.Sprint("m", run, i), load); err != nil {
				b.Fatal(err)
			}
		}}
	}
	benchratio.Interleave(b, round, 0, miss("plain", plain), miss("position", withPos))
	if s := withPos.Stats(); s.PositionLoads != int64(b.N) {
		b.Fatalf("%d position loads, want %d", s.PositionLoads, b.N)
	}
	if s := db.ReadStats(); s.MinLSNReplica != int64(b.N) || s.Primary() != 0 {
		b.Fatalf("read stats %+v", s)
	}
}
