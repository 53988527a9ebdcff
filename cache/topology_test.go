package cache

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/testserver"
)

// topologyBound bounds the waits for a failover or a cluster to settle; it
// guards against hangs and is not a timing assertion.
const topologyBound = 30 * time.Second

// openConnectionString connects with a connection string the way a service
// under Aspire would (ConnectionStrings:cache), as aspireredis.Client does.
func openConnectionString(t testing.TB, cs string) redis.UniversalClient {
	t.Helper()
	rdb, err := openRedis(context.Background(), discovery.FromMap(map[string]string{"ConnectionStrings__cache": cs}), "cache")
	if err != nil {
		t.Fatalf("open redis: %v", err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// subscribers counts the subscribers of channel on every node: on a cluster
// PUBSUB NUMSUB counts only the node's own.
func subscribers(ctx context.Context, rdb redis.UniversalClient, channel string) (int64, error) {
	cc, ok := rdb.(*redis.ClusterClient)
	if !ok {
		m, err := rdb.PubSubNumSub(ctx, channel).Result()
		return m[channel], err
	}
	var mu sync.Mutex
	var n int64
	err := cc.ForEachShard(ctx, func(ctx context.Context, node *redis.Client) error {
		m, err := node.PubSubNumSub(ctx, channel).Result()
		mu.Lock()
		n += m[channel]
		mu.Unlock()
		return err
	})
	return n, err
}

func waitSubscribers(t testing.TB, rdb redis.UniversalClient, channel string, want int64) {
	t.Helper()
	eventually(t, topologyBound, "subscribers on "+channel, func() bool {
		n, err := subscribers(context.Background(), rdb, channel)
		return err == nil && n >= want
	})
}

// serverPort is the port of the server the client's commands reach.
func serverPort(ctx context.Context, rdb redis.UniversalClient) (string, error) {
	info, err := rdb.Info(ctx, "server").Result()
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(info, "\n") {
		if p, ok := strings.CutPrefix(strings.TrimSpace(line), "tcp_port:"); ok {
			return p, nil
		}
	}
	return "", fmt.Errorf("no tcp_port in INFO server")
}

// TestSentinelFailover: a connection string with serviceName reaches the
// primary through a Sentinel; when the primary is killed and the Sentinel
// promotes the replica, the client (what aspireredis.Client returns) and
// two caches on it keep working: writes reach the new primary,
// invalidations still travel, and values written before the failover are
// still served.
func TestSentinelFailover(t *testing.T) {
	ctx := context.Background()
	primary := testserver.NewRedis(t)
	replica := primary.NewReplica(t)
	sentinel := primary.NewSentinel(t, "cache")

	sc := redis.NewSentinelClient(&redis.Options{Addr: sentinel.Addr(), Password: sentinel.Password(), MaxRetries: -1})
	defer sc.Close()
	eventually(t, topologyBound, "the sentinel knows the replica", func() bool {
		reps, err := sc.Replicas(ctx, "cache").Result()
		return err == nil && len(reps) == 1 && reps[0]["master-link-status"] == "ok"
	})

	rdbA := openConnectionString(t, sentinel.ConnectionString())
	rdbB := openConnectionString(t, sentinel.ConnectionString())
	if _, ok := rdbA.(*redis.Client); !ok {
		t.Fatalf("NewRedis with serviceName made a %T, want a failover *redis.Client", rdbA)
	}
	if port, err := serverPort(ctx, rdbA); err != nil || port != strconv.Itoa(primary.Port()) {
		t.Fatalf("the client reaches port %s (%v), want the primary's %d", port, err, primary.Port())
	}
	a := newCache[product](t, rdbA, "catalog", Options{})
	b := newCache[product](t, rdbB, "catalog", Options{})
	waitSubscribers(t, rdbA, a.channel, 2)

	var n counter
	get := func(c *Cache[product], key string) (product, error) {
		return c.GetOrLoad(ctx, key, n.loader(product{ID: -1}, nil, 0))
	}
	p := sampleProduct(1)
	if err := a.Set(ctx, "p1", p); err != nil {
		t.Fatal(err)
	}
	if v, err := get(b, "p1"); err != nil || v.ID != 1 {
		t.Fatalf("B.GetOrLoad(p1) = %+v, %v before the failover", v, err)
	}
	// The replica has everything before the primary dies.
	if err := rdbA.Do(ctx, "WAIT", 1, 10000).Err(); err != nil {
		t.Fatal(err)
	}

	if err := primary.Kill(); err != nil {
		t.Fatal(err)
	}
	eventually(t, topologyBound, "the sentinel promotes the replica", func() bool {
		addr, err := sc.GetMasterAddrByName(ctx, "cache").Result()
		return err == nil && len(addr) == 2 && addr[1] == strconv.Itoa(replica.Port())
	})

	// The client follows: bounded retries while it redials.
	eventually(t, topologyBound, "the client writes to the new primary", func() bool {
		return rdbA.Set(ctx, "probe", "x", 0).Err() == nil
	})
	if port, err := serverPort(ctx, rdbA); err != nil || port != strconv.Itoa(replica.Port()) {
		t.Fatalf("after the failover the client reaches port %s (%v), want the promoted replica's %d", port, err, replica.Port())
	}

	// A fresh instance reads what was written before the failover from
	// the new primary, without loading.
	fresh := newCache[product](t, openConnectionString(t, sentinel.ConnectionString()), "catalog", Options{})
	if v, ok := fresh.Get(ctx, "p1"); !ok || v.ID != 1 {
		t.Errorf("after the failover a fresh instance gets p1 = %+v, %v; want it from Redis", v, ok)
	}

	// A Set on A reaches B's L1 through the new primary's pub/sub.
	p.Price = 2
	if err := a.Set(ctx, "p1", p); err != nil {
		t.Fatal(err)
	}
	eventually(t, topologyBound, "B sees A's Set after the failover", func() bool {
		v, err := get(b, "p1")
		return err == nil && v.Price == 2
	})
	// And the write is in Redis, not only in the L1s.
	later := newCache[product](t, openConnectionString(t, sentinel.ConnectionString()), "catalog", Options{})
	if v, ok := later.Get(ctx, "p1"); !ok || v.Price != 2 {
		t.Errorf("a fresh instance gets p1 = %+v, %v; want A's Set from the new primary", v, ok)
	}
	if calls := n.calls.Load(); calls != 0 {
		t.Errorf("%d loader calls; every read should have come from a tier", calls)
	}
}

// TestCluster runs the client and the cache against one private 3-node
// Redis Cluster: several endpoints without serviceName make a cluster
// client, and the cache's scripts, locks and invalidation bus work across
// nodes.
func TestCluster(t *testing.T) {
	cl := testserver.NewRedisCluster(t, 3)
	ctx := context.Background()

	t.Run("client", func(t *testing.T) {
		rdb := openConnectionString(t, cl.ConnectionString())
		if _, ok := rdb.(*redis.ClusterClient); !ok {
			t.Fatalf("NewRedis with several endpoints made a %T, want *redis.ClusterClient", rdb)
		}
		for i := range 50 {
			if err := rdb.Set(ctx, "client:"+strconv.Itoa(i), i, 0).Err(); err != nil {
				t.Fatal(err)
			}
		}
		var shards, withKeys atomic.Int64
		err := rdb.(*redis.ClusterClient).ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			shards.Add(1)
			n, err := node.DBSize(ctx).Result()
			if n > 0 {
				withKeys.Add(1)
			}
			return err
		})
		if err != nil || shards.Load() != 3 || withKeys.Load() != 3 {
			t.Errorf("%d shards, %d with keys (%v); want the keys spread over 3", shards.Load(), withKeys.Load(), err)
		}
	})

	t.Run("invalidation", func(t *testing.T) {
		rdbA := openConnectionString(t, cl.ConnectionString())
		a := newCache[product](t, rdbA, "cluster-inv", Options{})
		b := newCache[product](t, openConnectionString(t, cl.ConnectionString()), "cluster-inv", Options{})
		waitSubscribers(t, rdbA, a.channel, 2)
		var n counter
		get := func(c *Cache[product], key string) product {
			v, err := c.GetOrLoad(ctx, key, n.loader(product{ID: -1}, nil, 0))
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
		keys := []string{"p1", "p2", "p3", "p4", "p5", "p6"} // spread over the slots
		for i, key := range keys {
			if _, err := b.GetOrLoad(ctx, key, n.loader(sampleProduct(i), nil, 0), WithTags("all")); err != nil {
				t.Fatal(err)
			}
		}
		for _, key := range keys {
			p := sampleProduct(1)
			p.Price = 99
			if err := a.Set(ctx, key, p); err != nil {
				t.Fatal(err)
			}
			eventually(t, topologyBound, "B sees A's Set of "+key, func() bool { return get(b, key).Price == 99 })
		}
		if err := a.Remove(ctx, "p1"); err != nil {
			t.Fatal(err)
		}
		eventually(t, topologyBound, "B sees A's Remove", func() bool { return get(b, "p1").ID == -1 })

		for i := range 3 {
			if _, err := b.GetOrLoad(ctx, fmt.Sprint("shoe", i), n.loader(sampleProduct(i), nil, 0), WithTags("shoes")); err != nil {
				t.Fatal(err)
			}
		}
		if err := a.RemoveByTag(ctx, "shoes"); err != nil {
			t.Fatal(err)
		}
		eventually(t, topologyBound, "B drops the tagged entries", func() bool {
			return b.l1.get("shoe0") == nil && b.l1.get("shoe1") == nil && b.l1.get("shoe2") == nil
		})
		third := newCache[product](t, openConnectionString(t, cl.ConnectionString()), "cluster-inv", Options{})
		if _, ok := third.Get(ctx, "shoe1"); ok {
			t.Error("shoe1 still fresh in Redis after RemoveByTag")
		}
		if v, ok := third.Get(ctx, "p4"); !ok || v.Price != 99 {
			t.Errorf("p4 = %+v, %v in Redis; want A's Set", v, ok)
		}

		if err := a.Clear(ctx); err != nil {
			t.Fatal(err)
		}
		eventually(t, topologyBound, "B's L1 emptied by Clear", func() bool { return b.l1.len() == 0 })
		// third read the Clear time from Redis before the Clear and trusts
		// it for L1TTL, so it sees the Clear once the bus tells it.
		eventually(t, topologyBound, "p5 expired in Redis by Clear", func() bool {
			_, ok := third.Get(ctx, "p5")
			return !ok
		})
		for _, c := range []*Cache[product]{a, b, third} {
			if s := c.Stats(); s.L2Errors != 0 || s.Replayed != 0 {
				t.Errorf("%d Redis errors, %d replays on the cluster; want none", s.L2Errors, s.Replayed)
			}
		}
	})

	t.Run("distributed lock", func(t *testing.T) {
		caches := make([]*Cache[product], 2)
		for i := range caches {
			rdb := openConnectionString(t, cl.ConnectionString())
			caches[i] = newCache[product](t, rdb, "cluster-lock", Options{})
			waitSubscribers(t, rdb, caches[i].channel, int64(i+1))
		}
		var calls keyedCounter
		loader := func(key string) Loader[product] {
			return func(ctx context.Context) (product, error) {
				calls.add(key)
				time.Sleep(50 * time.Millisecond) // long enough for every instance to miss
				return sampleProduct(7), nil
			}
		}
		keys := []string{"a", "b", "c"}
		var wg sync.WaitGroup
		start := make(chan struct{})
		for _, c := range caches {
			for _, key := range keys {
				for range 20 {
					wg.Go(func() {
						<-start
						if v, err := c.GetOrLoad(ctx, key, loader(key)); err != nil || v.ID != 7 {
							t.Errorf("GetOrLoad(%s) = %+v, %v", key, v, err)
						}
					})
				}
			}
		}
		close(start)
		wg.Wait()
		for _, key := range keys {
			if got := calls.get(key); got != 1 {
				t.Errorf("key %s: %d loader calls across 2 instances on the cluster, want 1", key, got)
			}
		}
		for _, c := range caches {
			if s := c.Stats(); s.L2Errors != 0 {
				t.Errorf("%d Redis errors on the cluster; want none", s.L2Errors)
			}
		}
	})

	// Last, as it restarts nodes: the nodes that carry the invalidation
	// channel's subscriptions die and come back; the buses resubscribe and
	// invalidations travel again.
	t.Run("subscription node restarts", func(t *testing.T) {
		rdbA := openConnectionString(t, cl.ConnectionString())
		rdbB := openConnectionString(t, cl.ConnectionString())
		a := newCache[product](t, rdbA, "cluster-restart", Options{})
		b := newCache[product](t, rdbB, "cluster-restart", Options{})
		waitSubscribers(t, rdbA, a.channel, 2)
		// A subscription may live on any node (pub/sub reaches every node
		// of a cluster): restart each node that has one.
		var hosts []*testserver.Redis
		for _, node := range cl.Nodes() {
			nc := redis.NewClient(&redis.Options{Addr: node.Addr(), Password: cl.Password()})
			m, err := nc.PubSubNumSub(ctx, a.channel).Result()
			_ = nc.Close()
			if err != nil {
				t.Fatal(err)
			}
			if m[a.channel] > 0 {
				hosts = append(hosts, node)
			}
		}
		if len(hosts) == 0 {
			t.Fatal("no node has a subscriber")
		}
		var n counter
		get := func(key string) product {
			v, err := b.GetOrLoad(ctx, key, n.loader(product{ID: -1}, nil, 0))
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
		if err := a.Set(ctx, "p1", sampleProduct(1)); err != nil {
			t.Fatal(err)
		}
		if v := get("p1"); v.ID != 1 {
			t.Fatalf("B got %+v", v)
		}

		for _, node := range hosts {
			if err := node.Kill(); err != nil {
				t.Fatal(err)
			}
			if err := node.Start(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if err := cl.WaitOK(ctx); err != nil {
			t.Fatal(err)
		}
		eventually(t, topologyBound, "B's bus is back", func() bool { return b.Stats().Reconnects > 0 })
		waitSubscribers(t, rdbA, a.channel, 2)
		p := sampleProduct(1)
		p.Price = 5
		get("p1") // B's L1 holds p1 again (the old value, or none if the restart lost it)
		if err := a.Set(ctx, "p1", p); err != nil {
			t.Fatal(err)
		}
		eventually(t, topologyBound, "B sees A's Set after the restart", func() bool { return get("p1").Price == 5 })
	})
}
