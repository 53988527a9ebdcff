package cache

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/goaspire/goaspire/internal/deadline"
	"github.com/goaspire/goaspire/testserver"
)

// callTime is one timed cache call of a partition test.
type callTime struct {
	start time.Time
	took  time.Duration
}

// callLog collects the calls of the load goroutines.
type callLog struct {
	mu    sync.Mutex
	calls []callTime
	errs  atomic.Int64
}

func (l *callLog) add(start time.Time, err error) {
	took := time.Since(start)
	if err != nil {
		l.errs.Add(1)
	}
	l.mu.Lock()
	l.calls = append(l.calls, callTime{start, took})
	l.mu.Unlock()
}

// between returns the durations of the calls started in [from, to),
// sorted, and the slowest call overall.
func (l *callLog) between(from, to time.Time) (sorted []time.Duration, slowest time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.calls {
		slowest = max(slowest, c.took)
		if !c.start.Before(from) && c.start.Before(to) {
			sorted = append(sorted, c.took)
		}
	}
	slices.Sort(sorted)
	return sorted, slowest
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(float64(len(sorted))*p))]
}

// TestSilentRedisUnderLoad partitions Redis (no RST, no FIN, SYNs
// unanswered) under 16 goroutines of GetOrLoad on hot keys whose L1 entries
// expire quickly, with the client's production options (MaxRetries 3,
// DialTimeout 5 s): no call may wait much longer than L2Timeout, the
// breaker must open so that the rest of the partition is served from L1,
// fail-safe and the loader, Set and Remove must queue their writes within
// L2Timeout, and when the network heals the writes land and the breaker
// closes. Close must not wait on the silent Redis either.
func TestSilentRedisUnderLoad(t *testing.T) {
	const (
		l2Timeout = 200 * time.Millisecond
		bound     = l2Timeout + time.Second // the loose bound on any call
		workers   = 16
		keys      = 8
	)
	srv := testserver.NewRedis(t)
	px := testserver.NewFaultProxy(t, srv.Addr())
	conn := px.Addr() + ",password=" + srv.Password()
	rdb := openClient(t, srv, "ConnectionStrings__cache", conn)
	// Writes go through a client of their own (its own breaker, closed
	// when the partition starts), so that they meet the silent Redis
	// rather than an open breaker.
	wrdb := openClient(t, srv, "ConnectionStrings__cache", conn)
	direct := openClient(t, srv)
	opts := Options{L1TTL: 20 * time.Millisecond, L2Timeout: l2Timeout, BreakDuration: 300 * time.Millisecond}
	c := newCache[int](t, rdb, "silent", opts)
	w := newCache[int](t, wrdb, "silent", opts)
	ctx := context.Background()
	load := func(context.Context) (int, error) { return 7, nil }
	for i := range keys {
		if _, err := c.GetOrLoad(ctx, fmt.Sprint("hot", i), load); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Set(ctx, "gone", 1); err != nil {
		t.Fatal(err)
	}
	if err := ping(wrdb); err != nil {
		t.Fatal(err)
	}

	var log callLog
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				_, err := c.GetOrLoad(ctx, fmt.Sprint("hot", i%keys), load)
				log.add(start, err)
				time.Sleep(time.Millisecond)
			}
		}()
	}
	stopLoad := func() {
		if stop != nil {
			close(stop)
			wg.Wait()
			stop = nil
		}
	}
	defer stopLoad()

	time.Sleep(200 * time.Millisecond) // some traffic before the partition
	px.Set(testserver.Silent)
	cut := time.Now()
	timed := func(what string, f func() error) {
		t.Helper()
		start := time.Now()
		err := f()
		took := time.Since(start)
		t.Logf("%s during the partition: %v", what, took)
		if err != nil {
			t.Errorf("%s: %v", what, err)
		}
		if took > bound {
			t.Errorf("%s took %v during the partition, want at most L2Timeout + 1 s (%v); it must queue for replay", what, took, bound)
		}
	}
	timed("Set", func() error { return w.Set(ctx, "w1", 42) })
	timed("Remove", func() error { return w.Remove(ctx, "gone") })
	time.Sleep(2500 * time.Millisecond) // the partition lasts through several breaks
	timed("late Set", func() error { return w.Set(ctx, "w2", 43) })
	healed := time.Now()
	px.Heal()

	sorted, slowest := log.between(cut.Add(time.Second), healed)
	p99 := percentile(sorted, 0.99)
	t.Logf("partition: %d calls after its first second, p50 %v p99 %v; slowest call %v; %d errors",
		len(sorted), percentile(sorted, 0.5), p99, slowest, log.errs.Load())
	if slowest > bound {
		t.Errorf("a GetOrLoad took %v, want at most L2Timeout + 1 s (%v)", slowest, bound)
	}
	if len(sorted) < 100 {
		t.Errorf("only %d calls in the partition after its first second: callers are frozen", len(sorted))
	}
	// Loosely: a probe every BreakDuration holds the callers that join
	// its flight for L2Timeout, which on a loaded machine can be more than
	// 1 % of the calls; without the breaker open, most would take that.
	if p95 := percentile(sorted, 0.95); p95 > 50*time.Millisecond {
		t.Errorf("p95 %v after the first second of the partition, want the breaker open and calls served from L1, fail-safe and the loader (at most 50 ms)", p95)
	}

	// Recovery: the queued writes land and the breakers close.
	eventually(t, 15*time.Second, "writes replayed and breakers closed after the partition healed", func() bool {
		ws, cs := w.Stats(), c.Stats()
		return ws.PendingReplay == 0 && !ws.BreakerOpen && !cs.BreakerOpen
	})
	t.Logf("recovered %v after healing", time.Since(healed))
	check := newCache[int](t, direct, "silent", Options{L1MaxEntries: -1})
	if v, ok := check.Get(ctx, "w1"); !ok || v != 42 {
		t.Errorf("w1 in Redis after the replay = %d, %v; want 42", v, ok)
	}
	if v, ok := check.Get(ctx, "w2"); !ok || v != 43 {
		t.Errorf("w2 in Redis after the replay = %d, %v; want 43", v, ok)
	}
	if v, ok := check.Get(ctx, "gone"); ok {
		t.Errorf("gone in Redis after the replayed Remove = %d", v)
	}
	stopLoad()
	if n := log.errs.Load(); n != 0 {
		t.Errorf("%d GetOrLoad errors, want none", n)
	}

	// Close while Redis is silent again, with a write queued.
	px.Set(testserver.Silent)
	_ = w.Set(ctx, "w3", 44)
	for _, cc := range []*Cache[int]{c, w} {
		start := time.Now()
		if err := cc.Close(); err != nil {
			t.Error(err)
		}
		took := time.Since(start)
		t.Logf("Close while Redis is silent: %v", took)
		if took > bound {
			t.Errorf("Close took %v while Redis is silent, want at most %v", took, bound)
		}
	}
	px.Heal()
}

// TestSilentRedisBareClient is the control of the partition tests: a
// go-redis client with its default options does not notice the partition
// for the length of its ReadTimeout (3 s), even with a short context
// deadline, so the proxy's fault is real and a bound shorter than that is
// the cache's doing.
func TestSilentRedisBareClient(t *testing.T) {
	srv := testserver.NewRedis(t)
	if srv.CACertFile() != "" {
		t.Skip("plain TCP only")
	}
	px := testserver.NewFaultProxy(t, srv.Addr())
	rdb := redis.NewClient(&redis.Options{Addr: px.Addr(), Password: srv.Password()})
	defer func() { _ = rdb.Close() }()
	if err := ping(rdb); err != nil {
		t.Fatal(err)
	}
	px.Set(testserver.Silent)
	done := make(chan time.Duration, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		_ = rdb.Get(ctx, "k").Err()
		done <- time.Since(start)
	}()
	select {
	case took := <-done:
		t.Fatalf("a bare go-redis GET returned after %v through the silent proxy; the partition is not real", took)
	case <-time.After(1200 * time.Millisecond):
	}
	px.Heal()
	select {
	case took := <-done:
		t.Logf("bare go-redis GET with a 200 ms deadline returned after %v", took)
	case <-time.After(10 * time.Second):
		t.Fatal("the bare GET did not return after the partition healed")
	}
}

// TestSilentRedisDirectClient measures what a silent Redis costs a call
// on the client NewRedis makes (aspireredis.Client's), with short timeouts: a call
// with a deadline ends at its deadline, dials and retries included,
// because go-redis returns when the caller's context is done (it goes on
// dialing in the background, each dial bounded by connectTimeout); a call
// without one waits for syncTimeout, then for each of MaxRetries retries,
// for connectRetry dials of connectTimeout each.
func TestSilentRedisDirectClient(t *testing.T) {
	const (
		syncTimeout    = 300 * time.Millisecond
		connectTimeout = 300 * time.Millisecond
		connectRetry   = 3 // the default
		maxRetries     = 3 // the default
	)
	// The worst case without a deadline, with the dial backoff (at most
	// connectTimeout between dials) and go-redis's retry backoff (at most
	// 512 ms between retries).
	worst := syncTimeout + maxRetries*(connectRetry*connectTimeout+(connectRetry-1)*connectTimeout+512*time.Millisecond)
	tests := []struct {
		name     string
		deadline time.Duration // 0: none
		bound    time.Duration
	}{
		// Its deadline, and scheduling slack for a loaded machine (1.6 s
		// seen beside a CPU load under -race): still far below what the
		// client's own timeouts would cost (the case below).
		{"with a 200 ms deadline", 200 * time.Millisecond, 200*time.Millisecond + 2*time.Second},
		// Twelve timeouts in a row, each overshooting on a loaded
		// machine: half the worst case again as slack.
		{"without a deadline", 0, worst * 3 / 2},
	}
	srv := testserver.NewRedis(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			px := testserver.NewFaultProxy(t, srv.Addr())
			rdb := openClient(t, srv, "ConnectionStrings__cache", fmt.Sprintf("%s,password=%s,syncTimeout=%d,connectTimeout=%d",
				px.Addr(), srv.Password(), syncTimeout.Milliseconds(), connectTimeout.Milliseconds()))
			if err := ping(rdb); err != nil {
				t.Fatal(err)
			}
			px.Set(testserver.Silent)
			defer px.Heal()
			ctx := context.Background()
			if tt.deadline > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.deadline)
				defer cancel()
			}
			start := time.Now()
			err := rdb.Get(ctx, "k").Err()
			took := time.Since(start)
			t.Logf("GET through a silent network: %v after %v", err, took)
			if err == nil || err == redis.Nil {
				t.Errorf("GET through a silent network succeeded: %v", err)
			}
			if took > tt.bound {
				t.Errorf("GET took %v, want at most %v", took, tt.bound)
			}
		})
	}
}

// TestDeadlineContext: the bound of an L2 operation reports its deadline,
// and its Done channel closes at or after the deadline, within a slot,
// with Err saying so; operations in one slot share the channel.
func TestDeadlineContext(t *testing.T) {
	tests := []struct {
		name    string
		timeout time.Duration
	}{{"short", 20 * time.Millisecond}, {"default", DefaultL2Timeout}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Cache[int]{l2Timeout: tt.timeout, slots: deadline.NewSlots(deadline.WidthFor(tt.timeout))}
			type key struct{}
			caller, cancel := context.WithCancel(context.WithValue(context.Background(), key{}, "v"))
			cancel() // the caller's cancellation does not end the operation
			ctx, _ := c.l2ctx(caller)
			other, _ := c.l2ctx(context.Background())
			deadline, ok := ctx.Deadline()
			if !ok || time.Until(deadline) > tt.timeout || time.Until(deadline) < tt.timeout-time.Second {
				t.Fatalf("Deadline() = %v, %v; want about now + %v", deadline, ok, tt.timeout)
			}
			if ctx.Value(key{}) != "v" {
				t.Error("the caller's values are lost")
			}
			if ctx.Done() == nil {
				t.Fatal("Done() is nil: go-redis would wait for its own timeouts")
			}
			// The slot opened for ctx ends a width after its deadline.
			if d2, _ := other.Deadline(); d2.Sub(deadline) <= c.slots.Width() && ctx.Done() != other.Done() {
				t.Error("two operations whose deadlines fall in one slot do not share it")
			}
			if ctx.Err() != nil {
				t.Fatalf("Err() = %v before the deadline", ctx.Err())
			}
			<-ctx.Done()
			if late := time.Since(deadline); late < 0 || late > c.slots.Width()+time.Second {
				t.Errorf("Done closed %v after the deadline, want in [0, %v] (+ scheduling)", late, c.slots.Width())
			}
			if ctx.Err() != context.DeadlineExceeded {
				t.Errorf("Err() = %v after Done, want DeadlineExceeded", ctx.Err())
			}
		})
	}
}

// TestSilentRedisSubscriptions: under TLS, dials through a silent network
// end with their context, as plain TCP ones do, so a subscription with a
// short deadline does not wait for the client's DialTimeout (5 s); and New
// and Close, which (un)subscribe the cache's invalidation channel, wait
// for it at most subscribeTimeout, even while the subscription's reader
// holds go-redis's PubSub lock to dial.
func TestSilentRedisSubscriptions(t *testing.T) {
	srv := testserver.NewRedis(t, testserver.WithRedisTLS())
	px := testserver.NewFaultProxy(t, srv.Addr())
	rdb := openClient(t, srv, "ConnectionStrings__cache", px.Addr()+",ssl=true,password="+srv.Password())
	if err := ping(rdb); err != nil {
		t.Fatal(err)
	}
	px.Set(testserver.Silent)
	defer px.Heal()

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	ps := rdb.Subscribe(ctx, "silent-tls")
	took := time.Since(start)
	_ = ps.Close()
	t.Logf("Subscribe with a 200 ms deadline through a silent network: %v", took)
	if took > 200*time.Millisecond+time.Second {
		t.Errorf("Subscribe with a 200 ms deadline took %v: the TLS dial ignores the context", took)
	}

	start = time.Now()
	c := newCache[int](t, rdb, "silent-tls", Options{})
	took = time.Since(start)
	t.Logf("New while Redis is silent: %v", took)
	if took > subscribeTimeout+time.Second {
		t.Errorf("New took %v while Redis is silent, want at most subscribeTimeout + 1 s", took)
	}
	// By now the invalidation subscription is dialing through the silent
	// network, and holds go-redis's PubSub lock while it does.
	time.Sleep(2 * subscribeTimeout)
	start = time.Now()
	c2 := newCache[int](t, rdb, "silent-tls-2", Options{})
	took = time.Since(start)
	t.Logf("another New on the client while Redis is silent: %v", took)
	if took > subscribeTimeout+time.Second {
		t.Errorf("another New took %v while Redis is silent, want at most subscribeTimeout + 1 s", took)
	}
	for _, cc := range []*Cache[int]{c2, c} {
		start = time.Now()
		_ = cc.Close()
		if took := time.Since(start); took > subscribeTimeout+time.Second {
			t.Errorf("Close took %v while Redis is silent", took)
		}
	}
}
