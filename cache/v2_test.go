package cache

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/goaspire/goaspire/testserver"
)

// keyedCounter counts loader calls per key.
type keyedCounter struct {
	mu    sync.Mutex
	calls map[string]int
}

func (k *keyedCounter) add(key string) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.calls == nil {
		k.calls = map[string]int{}
	}
	k.calls[key]++
	return k.calls[key]
}

func (k *keyedCounter) get(key string) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.calls[key]
}

// TestDistributedStampede: 100 concurrent misses per key on each of 1, 2
// and 4 instances (each with its own Redis client, as separate processes
// would have) make exactly one loader call per key; when that first call
// fails, exactly one more.
func TestDistributedStampede(t *testing.T) {
	tests := []struct {
		instances int
		failFirst bool
	}{
		{1, false}, {2, false}, {4, false},
		{2, true}, {4, true},
	}
	srv := testserver.NewRedis(t)
	for _, tt := range tests {
		t.Run(fmt.Sprintf("instances=%d/failFirst=%v", tt.instances, tt.failFirst), func(t *testing.T) {
			name := fmt.Sprintf("stampede-%d-%v", tt.instances, tt.failFirst)
			caches := make([]*Cache[product], tt.instances)
			for i := range caches {
				rdb := openClient(t, srv)
				caches[i] = newCache[product](t, rdb, name, Options{})
				waitSubscribed(t, rdb, caches[i].channel, int64(i+1))
			}
			var calls keyedCounter
			loader := func(key string) Loader[product] {
				return func(ctx context.Context) (product, error) {
					n := calls.add(key)
					time.Sleep(50 * time.Millisecond) // long enough for every instance to miss
					if tt.failFirst && n == 1 {
						return product{}, errors.New("database hiccup")
					}
					return sampleProduct(7), nil
				}
			}
			keys := []string{"a", "b"}
			const perKey = 100
			var wg sync.WaitGroup
			var ok, failed atomic.Int64
			start := make(chan struct{})
			for _, c := range caches {
				for _, key := range keys {
					for range perKey {
						wg.Add(1)
						go func() {
							defer wg.Done()
							<-start
							v, err := c.GetOrLoad(context.Background(), key, loader(key))
							switch {
							case err == nil && v.ID == 7:
								ok.Add(1)
							case err != nil && tt.failFirst:
								failed.Add(1)
							default:
								t.Errorf("GetOrLoad(%s) = %+v, %v", key, v, err)
							}
						}()
					}
				}
			}
			close(start)
			wg.Wait()
			want := 1
			if tt.failFirst {
				want = 2
			}
			for _, key := range keys {
				if got := calls.get(key); got != want {
					t.Errorf("key %s: %d loader calls across %d instances, want %d", key, got, tt.instances, want)
				}
			}
			t.Logf("%d instances: loader calls a=%d b=%d; %d callers got the value, %d the first load's error",
				tt.instances, calls.get("a"), calls.get("b"), ok.Load(), failed.Load())
		})
	}
}

// The lock holder process of TestLockHolderKilled: it takes the lock for
// a key by missing it, says so on stdout, and blocks in its loader until
// it is killed.
const holderEnv = "GOASPIRE_CACHE_TEST_LOCK_HOLDER"

func TestLockHolderProcess(t *testing.T) {
	cs := os.Getenv(holderEnv)
	if cs == "" {
		t.Skip("run by TestLockHolderKilled")
	}
	rdb := redis.NewClient(mustParseOptions(t, cs))
	c := newCache[product](t, rdb, "killed", Options{LockTimeout: 2 * time.Second})
	_, _ = c.GetOrLoad(context.Background(), "k", func(context.Context) (product, error) {
		fmt.Println("loading")
		select {}
	})
}

func mustParseOptions(t *testing.T, url string) *redis.Options {
	o, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// TestLockHolderKilled: another process takes the lock for a key and is
// killed with SIGKILL in the middle of its load. The instances waiting
// for it (two, 100 callers each) load exactly once, after the lock's lease
// expires.
func TestLockHolderKilled(t *testing.T) {
	srv := testserver.NewRedis(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockHolderProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), holderEnv+"="+srv.URL())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			_ = cmd.Process.Kill()
		}
		_ = cmd.Wait()
	})
	lines := bufio.NewScanner(out)
	for lines.Scan() && lines.Text() != "loading" {
	}
	if lines.Err() != nil {
		t.Fatal(lines.Err())
	}

	var calls atomic.Int64
	loader := func(context.Context) (product, error) {
		calls.Add(1)
		return sampleProduct(3), nil
	}
	caches := []*Cache[product]{
		newCache[product](t, openClient(t, srv), "killed", Options{LockTimeout: 2 * time.Second}),
		newCache[product](t, openClient(t, srv), "killed", Options{LockTimeout: 2 * time.Second}),
	}
	var wg sync.WaitGroup
	for _, c := range caches {
		for range 100 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				v, err := c.GetOrLoad(context.Background(), "k", loader)
				if err != nil || v.ID != 3 {
					t.Errorf("GetOrLoad = %+v, %v", v, err)
				}
			}()
		}
	}
	eventually(t, 5*time.Second, "both instances wait for the holder", func() bool {
		return caches[0].Stats().LockWaits == 1 && caches[1].Stats().LockWaits == 1
	})
	if calls.Load() != 0 {
		t.Fatalf("%d loads while the other process held the lock", calls.Load())
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed = true
	wg.Wait()
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d loads after the holder was killed, want 1", n)
	}
}

// TestLoadNeverOverwritesNewerWrite: a Set or Remove made while a load of
// the same key is in progress, on the loading instance or another one,
// wins over the load's older value, in L1 and in Redis.
func TestLoadNeverOverwritesNewerWrite(t *testing.T) {
	srv := testserver.NewRedis(t)
	tests := []struct {
		name   string
		other  bool // the write comes from another instance
		remove bool
		noLock bool // the load stores without the lock (SET NX on a key Redis did not have)
	}{
		{"Set here", false, false, false},
		{"Set elsewhere", true, false, false},
		{"Remove here", false, true, false},
		{"Remove elsewhere", true, true, false},
		{"Set here without lock", false, false, true},
		{"Set elsewhere without lock", true, false, true},
		{"Remove here without lock", false, true, true},
		{"Remove elsewhere without lock", true, true, true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := fmt.Sprint("race", i)
			rdbA := openClient(t, srv)
			a := newCache[product](t, rdbA, name, Options{})
			b := newCache[product](t, openClient(t, srv), name, Options{})
			waitSubscribed(t, rdbA, a.channel, 2)
			ctx := context.Background()
			started, release := make(chan struct{}), make(chan struct{})
			done := make(chan struct{})
			var opts []EntryOption
			if tt.noLock {
				opts = append(opts, WithoutDistributedLock())
			}
			go func() {
				defer close(done)
				_, _ = a.GetOrLoad(ctx, "k", func(context.Context) (product, error) {
					close(started)
					<-release
					return sampleProduct(1), nil // read from the database before the write
				}, opts...)
			}()
			<-started
			writer := a
			if tt.other {
				writer = b
			}
			if tt.remove {
				if err := writer.Remove(ctx, "k"); err != nil {
					t.Fatal(err)
				}
			} else if err := writer.Set(ctx, "k", sampleProduct(2)); err != nil {
				t.Fatal(err)
			}
			if tt.other {
				// Let the invalidation reach A first, or not: either way
				// Redis decides.
				time.Sleep(10 * time.Millisecond)
			}
			close(release)
			<-done

			fresh := newCache[product](t, openClient(t, srv), name, Options{})
			v, ok := fresh.Get(ctx, "k")
			switch {
			case tt.remove && ok:
				t.Errorf("Redis serves %+v after the Remove; the load brought the old value back", v)
			case !tt.remove && (!ok || v.ID != 2):
				t.Errorf("Redis serves %+v, %v; want the Set's value", v, ok)
			}
			if e := a.l1.get("k"); e != nil && e.value.ID == 1 {
				t.Errorf("A's L1 holds the load's older value")
			}
		})
	}
}

// TestRemoveByTagScales: 100 000 keys under one tag are expired by one
// RemoveByTag whose Redis work does not depend on their number (no
// SMEMBERS, no SCAN, no DEL), tagged writes leave no per-tag structure in
// Redis, and another instance stops serving the tagged entries from L1.
func TestRemoveByTagScales(t *testing.T) {
	srv := testserver.NewRedis(t)
	rdb := openClient(t, srv)
	a := newCache[int](t, rdb, "tags", Options{})
	rdbB := openClient(t, srv)
	b := newCache[int](t, rdbB, "tags", Options{})
	waitSubscribed(t, rdb, a.channel, 2)
	ctx := context.Background()

	// Tagged writes through the cache leave only their values in Redis.
	for i := range 100 {
		if err := a.Set(ctx, fmt.Sprint("s", i), i, WithTags("big")); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := rdb.DBSize(ctx).Result(); err != nil || n != 100 {
		t.Fatalf("DBSIZE = %d, %v after 100 tagged Sets; want 100 (values only)", n, err)
	}
	// The rest of the 100 000 entries, as the cache encodes them, written
	// in bulk.
	const total = 100_000
	for from := 100; from < total; from += 5000 {
		_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i := from; i < min(from+5000, total); i++ {
				key := fmt.Sprint("s", i)
				_, env := a.newEntry(key, i, false, entryOptions{tags: []string{"big"}}, clock.now(), time.Now(), time.Now().UnixMilli())
				p.Set(ctx, a.dataKey(key), env, time.Hour)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// B holds some of them in L1.
	var loads atomic.Int64
	load := func(context.Context) (int, error) { loads.Add(1); return -1, nil }
	for i := range 50 {
		if v, err := b.GetOrLoad(ctx, fmt.Sprint("s", i), load, WithTags("big")); err != nil || v != i {
			t.Fatalf("B read s%d = %d, %v", i, v, err)
		}
	}
	if loads.Load() != 0 {
		t.Fatalf("B loaded %d entries that were in Redis", loads.Load())
	}

	// Load the scripts (a first call after a Redis start does), so that
	// only the removal's own work is counted.
	if err := a.RemoveByTag(ctx, "warm-up"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Millisecond) // the removal comes strictly after the writes
	if err := rdb.ConfigResetStat(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := a.RemoveByTag(ctx, "big"); err != nil {
		t.Fatal(err)
	}
	stats, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	calls := 0
	for _, line := range strings.Split(stats, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":calls=")
		if !ok {
			continue
		}
		name = strings.TrimPrefix(name, "cmdstat_")
		n, _ := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
		switch name {
		case "info", "config|resetstat", "ping", "subscribe":
			continue
		case "smembers", "sscan", "scan", "del", "unlink", "keys":
			t.Errorf("RemoveByTag ran %s %d times", name, n)
		}
		calls += n
	}
	// EVALSHA (with the GET and SET it runs) and PUBLISH.
	if calls > 4 {
		t.Errorf("RemoveByTag of %d entries made %d Redis commands, want at most 4:\n%s", total, calls, stats)
	}
	if n, err := rdb.DBSize(ctx).Result(); err != nil || n != total+2 {
		t.Errorf("DBSIZE = %d, %v after RemoveByTag; want %d (the values and two tag times)", n, err, total+2)
	}

	// B stops serving them from L1, and a fresh instance finds them
	// expired in Redis.
	eventually(t, time.Second, "B drops the tagged entries from L1", func() bool {
		for i := range 50 {
			if b.l1.get(fmt.Sprint("s", i)) != nil {
				return false
			}
		}
		return true
	})
	c := newCache[int](t, openClient(t, srv), "tags", Options{})
	for range 200 {
		key := fmt.Sprint("s", rand.N(total))
		if v, ok := c.Get(ctx, key); ok {
			t.Fatalf("%s = %d is still fresh after RemoveByTag", key, v)
		}
	}
	// A value written after the removal is fresh.
	if err := a.Set(ctx, "s1", 1001, WithTags("big")); err != nil {
		t.Fatal(err)
	}
	if v, ok := c.Get(ctx, "s1"); !ok || v != 1001 {
		t.Errorf("s1 written after RemoveByTag = %d, %v; want 1001", v, ok)
	}
}

// TestClear: Clear expires every entry for every instance, and values
// written afterwards are served.
func TestClear(t *testing.T) {
	srv := testserver.NewRedis(t)
	rdbA := openClient(t, srv)
	a := newCache[int](t, rdbA, "clear", Options{})
	b := newCache[int](t, openClient(t, srv), "clear", Options{})
	waitSubscribed(t, rdbA, a.channel, 2)
	ctx := context.Background()
	for i := range 10 {
		_ = a.Set(ctx, fmt.Sprint(i), i)
		if v, ok := b.Get(ctx, fmt.Sprint(i)); !ok || v != i {
			t.Fatalf("B.Get(%d) = %d, %v", i, v, ok)
		}
	}
	time.Sleep(2 * time.Millisecond)
	if err := a.Clear(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Second, "B's L1 emptied", func() bool { return b.l1.len() == 0 })
	fresh := newCache[int](t, openClient(t, srv), "clear", Options{})
	for i := range 10 {
		if v, ok := fresh.Get(ctx, fmt.Sprint(i)); ok {
			t.Errorf("%d = %d still fresh after Clear", i, v)
		}
	}
	_ = a.Set(ctx, "after", 1)
	if v, ok := fresh.Get(ctx, "after"); !ok || v != 1 {
		t.Errorf("value set after Clear = %d, %v", v, ok)
	}
}

// TestReplayWithoutTraffic: a Set made while Redis is down reaches Redis
// after it returns even though the first replay fails (writes are paused
// on the server) and nothing else happens on the cache.
func TestReplayWithoutTraffic(t *testing.T) {
	srv := testserver.NewRedis(t)
	rdbA := openClient(t, srv)
	a := newCache[int](t, rdbA, "replay2", Options{BreakDuration: 50 * time.Millisecond, L2Timeout: 100 * time.Millisecond})
	ctx := context.Background()
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := a.Set(ctx, "k", 2); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	direct := redis.NewClient(mustParseOptions(t, srv.URL()))
	defer direct.Close()
	// The first replays time out; only a retry can get through.
	if err := direct.Do(ctx, "CLIENT", "PAUSE", "700", "WRITE").Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the Set reaches Redis", func() bool {
		data, err := direct.Get(ctx, a.dataKey("k")).Bytes()
		if err != nil {
			return false
		}
		env, err := parseEnvelope(data)
		return err == nil && string(env.payload) == "2"
	})
	// The replayer takes the write off its queue just after Redis took it.
	eventually(t, 5*time.Second, "nothing pending", func() bool { return a.Stats().PendingReplay == 0 })
}

// TestRecoveryQueueBounds: the queue holds at most its byte bound in
// values, turning the Sets that do not fit into Removes, and overflowing
// its count leads to a Clear as of the first dropped write.
func TestRecoveryQueueBounds(t *testing.T) {
	srv := testserver.NewRedis(t)
	px := newProxy(t, srv.Addr())
	rdbA := openClient(t, srv, "ConnectionStrings__cache", px.addr()+",password="+srv.Password())
	opts := Options{BreakDuration: 50 * time.Millisecond, L2Timeout: 50 * time.Millisecond, RecoveryQueueBytes: 8 << 10, RecoveryQueue: 6}
	a := newCache[string](t, rdbA, "bounds", opts)
	ctx := context.Background()
	big := strings.Repeat("x", 3<<10)
	for i := range 8 {
		if err := a.Set(ctx, fmt.Sprint("k", i), "old"); err != nil {
			t.Fatal(err)
		}
	}
	// Cut A off from Redis, which keeps the old values.
	px.hole.Store(true)
	for i := range 8 {
		if err := a.Set(ctx, fmt.Sprint("k", i), big); err != nil {
			t.Fatal(err)
		}
	}
	s := a.Stats()
	if s.PendingReplayBytes > opts.RecoveryQueueBytes {
		t.Errorf("%d bytes queued, bound %d", s.PendingReplayBytes, opts.RecoveryQueueBytes)
	}
	if s.PendingReplay != opts.RecoveryQueue+1 { // 6 operations and the overflow
		t.Errorf("%d operations pending, want %d", s.PendingReplay, opts.RecoveryQueue+1)
	}
	px.hole.Store(false)
	eventually(t, 15*time.Second, "replayed", func() bool { return a.Stats().PendingReplay == 0 })
	fresh := newCache[string](t, openClient(t, srv), "bounds", Options{})
	for i := range 8 {
		v, ok := fresh.Get(ctx, fmt.Sprint("k", i))
		if ok && v != big {
			t.Errorf("k%d = %.10q in Redis after the replay; the older value must not be served", i, v)
		}
	}
}

// TestBreakerSharedByClient: caches on one client share one breaker, which
// ClientBreaker returns to other users of the client.
func TestBreakerSharedByClient(t *testing.T) {
	srv := testserver.NewRedis(t)
	px := newProxy(t, srv.Addr())
	rdb := openClient(t, srv, "ConnectionStrings__cache", px.addr()+",password="+srv.Password())
	opts := Options{L2Timeout: 50 * time.Millisecond, BreakDuration: time.Hour}
	a := newCache[int](t, rdb, "brk-a", opts)
	b := newCache[int](t, rdb, "brk-b", opts)
	other := newCache[int](t, openClient(t, srv), "brk-a", opts)
	ctx := context.Background()
	if err := ping(rdb); err != nil {
		t.Fatal(err)
	}
	px.hole.Store(true)
	if v, err := a.GetOrLoad(ctx, "k", func(context.Context) (int, error) { return 1, nil }); err != nil || v != 1 {
		t.Fatal(v, err)
	}
	if v, err := b.GetOrLoad(ctx, "k", func(context.Context) (int, error) { return 2, nil }); err != nil || v != 2 {
		t.Fatal(v, err)
	}
	if s := b.Stats(); !s.BreakerOpen || s.L2Errors != 0 {
		t.Errorf("b stats %+v: want the breaker open from a's failure and no Redis attempt of its own", s)
	}
	if !ClientBreaker(rdb).Open() || ClientBreaker(rdb).Trips() != 1 {
		t.Errorf("ClientBreaker(rdb): open %v, trips %d; want open, 1", ClientBreaker(rdb).Open(), ClientBreaker(rdb).Trips())
	}
	if other.Stats().BreakerOpen {
		t.Error("a cache on another client sees the breaker open")
	}
}

// TestEagerRefresh: a key read continuously for 3 TTLs is refreshed in the
// background, so after the first load every read is an L1 hit and no
// caller waits for the loader.
func TestEagerRefresh(t *testing.T) {
	tests := []struct {
		name  string
		redis bool
	}{{"L1 only", false}, {"with Redis", true}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rdb redis.UniversalClient
			if tt.redis {
				rdb = openClient(t, testserver.NewRedis(t))
			}
			// The refresh starts half a TTL before expiry: long enough
			// for a 20 ms load on a loaded machine.
			const ttl = 400 * time.Millisecond
			c := newCache[int](t, rdb, "eager", Options{TTL: ttl, L1TTL: ttl, EagerRefreshThreshold: 0.5})
			var version atomic.Int64
			load := func(context.Context) (int, error) {
				time.Sleep(20 * time.Millisecond)
				return int(version.Add(1)), nil
			}
			ctx := context.Background()
			reads := 0
			for start := time.Now(); time.Since(start) < 3*ttl; reads++ {
				if _, err := c.GetOrLoad(ctx, "hot", load); err != nil {
					t.Fatal(err)
				}
				time.Sleep(2 * time.Millisecond)
			}
			s := c.Stats()
			t.Logf("%d reads, stats %+v", reads, s)
			if s.L1Misses != 1 || s.L1Hits != int64(reads-1) {
				t.Errorf("%d L1 misses and %d hits in %d reads: a caller waited for the loader after the first load", s.L1Misses, s.L1Hits, reads)
			}
			if s.EagerRefreshes < 3 || version.Load() < 4 {
				t.Errorf("%d eager refreshes, %d loads over 3 TTLs; want at least 3 refreshes", s.EagerRefreshes, version.Load())
			}
		})
	}
}

// TestClockParksWhenIdle: with a cache open and nobody reading, the
// coarse clock stops ticking, and the next read still gets the current
// time.
func TestClockParksWhenIdle(t *testing.T) {
	_ = newCache[int](t, nil, "idle", Options{})
	eventually(t, 5*time.Second, "the clock parks", func() bool { return clock.state.Load() == clockParked })
	before := int64(time.Since(clockBase))
	if now := clock.now(); now < before {
		t.Fatalf("parked clock read %v, behind the time %v", time.Duration(now), time.Duration(before))
	}
	if clock.state.Load() != clockUsed {
		t.Errorf("clock state %d after a read, want ticking", clock.state.Load())
	}
}

// TestBusIOOutsideLocks: making a cache on a client whose Redis does not
// answer waits on the network for the subscription, but holds neither the
// lock that makes caches on other clients nor the one that dispatches
// messages while it waits.
func TestBusIOOutsideLocks(t *testing.T) {
	defer func(d time.Duration) { busIdle = d }(busIdle)
	busIdle = 200 * time.Millisecond // Close waits for the silent connection's read
	srv := testserver.NewRedis(t)
	px := newProxy(t, srv.Addr())
	rdb := openClient(t, srv, "ConnectionStrings__cache", px.addr()+",password="+srv.Password())
	px.hole.Store(true)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = newCache[int](t, rdb, "io", Options{})
	}()
	checked := false
	for !checked {
		select {
		case <-done:
			t.Fatal("New returned before its subscription I/O was seen in progress")
		default:
		}
		if !buses.mu.TryLock() {
			continue
		}
		b := buses.m[rdb]
		buses.mu.Unlock()
		if b == nil {
			continue
		}
		if b.ioMu.TryLock() {
			b.ioMu.Unlock()
			continue // not subscribing yet
		}
		// The subscription's I/O is in progress (it waits for the
		// black-holed connection, up to subscribeTimeout): the client
		// registry (which making a cache on any client takes) and the
		// dispatch lock can be taken before it ends.
		buses.mu.Lock()
		_ = len(buses.m)
		buses.mu.Unlock()
		b.dispatch("no-such-channel", "")
		if b.ioMu.TryLock() {
			b.ioMu.Unlock()
			t.Fatal("the registry or dispatch lock was held until the subscription I/O ended")
		}
		checked = true
	}
	<-done
}

// TestClientBreakerForgetsCollectedClients: the breaker registry holds no
// reference to a client, and drops its entry once the client is gone.
func TestClientBreakerForgetsCollectedClients(t *testing.T) {
	entries := func() int {
		breakers.mu.Lock()
		defer breakers.mu.Unlock()
		return len(breakers.m)
	}
	before := entries()
	func() {
		rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
		defer rdb.Close()
		first := ClientBreaker(rdb)
		if again := ClientBreaker(rdb); again != first {
			t.Error("two breakers for one client")
		}
		if entries() != before+1 {
			t.Errorf("%d registry entries after one client, want %d", entries(), before+1)
		}
	}()
	eventually(t, 5*time.Second, "the collected client's entry dropped", func() bool {
		runtime.GC()
		return entries() <= before
	})
}
