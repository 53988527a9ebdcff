package cache

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// counter is a loader that counts its calls.
type counter struct {
	calls atomic.Int64
}

func (c *counter) loader(v product, err error, delay time.Duration) Loader[product] {
	return func(ctx context.Context) (product, error) {
		c.calls.Add(1)
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-ctx.Done():
				return product{}, ctx.Err()
			}
		}
		return v, err
	}
}

func TestNewValidates(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"negative TTL", Options{TTL: -1}, "Options.TTL"},
		{"negative soft timeout", Options{SoftTimeout: -time.Second}, "Options.SoftTimeout"},
		{"negative size", Options{L1MaxBytes: -1}, "Options.L1MaxBytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New[int](nil, "x", tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New error = %v, want one naming %s", err, tt.want)
			}
		})
	}
	if _, err := New[int](nil, " ", Options{}); err == nil {
		t.Error("New accepted an empty name")
	}
}

func TestL1OnlyGetOrLoad(t *testing.T) {
	c := newCache[product](t, nil, "l1only", Options{})
	ctx := context.Background()
	var n counter
	for range 3 {
		v, err := c.GetOrLoad(ctx, "p1", n.loader(sampleProduct(1), nil, 0))
		if err != nil || v.ID != 1 {
			t.Fatalf("GetOrLoad = %+v, %v", v, err)
		}
	}
	if got := n.calls.Load(); got != 1 {
		t.Errorf("loader called %d times, want 1", got)
	}
	s := c.Stats()
	if s.L1Hits != 2 || s.L1Misses != 1 || s.Loads != 1 {
		t.Errorf("stats %+v, want 2 L1 hits, 1 miss, 1 load", s)
	}
	if err := c.Set(ctx, "p1", sampleProduct(2)); err != nil {
		t.Fatal(err)
	}
	if v, ok := c.Get(ctx, "p1"); !ok || v.ID != 2 {
		t.Errorf("Get after Set = %+v, %v", v, ok)
	}
	if err := c.Remove(ctx, "p1"); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Get(ctx, "p1"); ok {
		t.Error("Get after Remove found the value")
	}
}

func TestLoaderErrorIsReturnedWithoutStaleValue(t *testing.T) {
	c := newCache[product](t, nil, "errors", Options{})
	boom := errors.New("database down")
	var n counter
	_, err := c.GetOrLoad(context.Background(), "k", n.loader(product{}, boom, 0))
	if !errors.Is(err, boom) {
		t.Fatalf("error = %v, want %v", err, boom)
	}
	// Errors are not cached.
	_, _ = c.GetOrLoad(context.Background(), "k", n.loader(product{}, boom, 0))
	if n.calls.Load() != 2 {
		t.Errorf("loader called %d times, want 2", n.calls.Load())
	}
}

func TestLoaderPanicBecomesError(t *testing.T) {
	c := newCache[int](t, nil, "panics", Options{})
	_, err := c.GetOrLoad(context.Background(), "k", func(context.Context) (int, error) { panic("oops") })
	if err == nil || !strings.Contains(err.Error(), "loader panicked: oops") {
		t.Fatalf("error = %v", err)
	}
}

func TestStaleServedWhenLoaderFails(t *testing.T) {
	c := newCache[product](t, nil, "stale", Options{TTL: 30 * time.Millisecond, FailSafeThrottle: time.Hour})
	ctx := context.Background()
	var n counter
	if _, err := c.GetOrLoad(ctx, "k", n.loader(sampleProduct(1), nil, 0)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	clock.advance(time.Now()) // the coarse clock's ticker may lag on a loaded machine
	v, err := c.GetOrLoad(ctx, "k", n.loader(product{}, errors.New("db down"), 0))
	if err != nil || v.ID != 1 {
		t.Fatalf("GetOrLoad after failure = %+v, %v; want the stale value", v, err)
	}
	// Throttled: the failing loader is not called again at once.
	if _, err := c.GetOrLoad(ctx, "k", n.loader(product{}, errors.New("db down"), 0)); err != nil {
		t.Fatal(err)
	}
	if got := n.calls.Load(); got != 2 {
		t.Errorf("loader called %d times, want 2 (one load, one failed reload)", got)
	}
	if s := c.Stats(); s.StaleServed != 1 || s.LoadErrors != 1 {
		t.Errorf("stats %+v, want 1 stale served, 1 load error", s)
	}
}

func TestFailSafeDisabled(t *testing.T) {
	c := newCache[product](t, nil, "nofailsafe", Options{TTL: 20 * time.Millisecond, FailSafeMaxAge: -1})
	ctx := context.Background()
	var n counter
	_, _ = c.GetOrLoad(ctx, "k", n.loader(sampleProduct(1), nil, 0))
	time.Sleep(40 * time.Millisecond)
	clock.advance(time.Now()) // the coarse clock's ticker may lag on a loaded machine
	boom := errors.New("db down")
	if _, err := c.GetOrLoad(ctx, "k", n.loader(product{}, boom, 0)); !errors.Is(err, boom) {
		t.Fatalf("error = %v, want %v", err, boom)
	}
}

func TestSoftTimeoutServesStaleAndRefreshesInBackground(t *testing.T) {
	c := newCache[product](t, nil, "soft", Options{TTL: 20 * time.Millisecond, SoftTimeout: 20 * time.Millisecond})
	ctx := context.Background()
	var n counter
	_, _ = c.GetOrLoad(ctx, "k", n.loader(sampleProduct(1), nil, 0))
	time.Sleep(40 * time.Millisecond)
	start := time.Now()
	v, err := c.GetOrLoad(ctx, "k", n.loader(sampleProduct(2), nil, 300*time.Millisecond))
	if err != nil || v.ID != 1 {
		t.Fatalf("slow reload gave %+v, %v; want the stale value", v, err)
	}
	if d := time.Since(start); d > 250*time.Millisecond {
		t.Errorf("waited %v for a slow loader despite the soft timeout", d)
	}
	eventually(t, 2*time.Second, "background refresh", func() bool {
		v, ok := c.Get(ctx, "k")
		return ok && v.ID == 2
	})
}

func TestHardTimeout(t *testing.T) {
	c := newCache[product](t, nil, "hard", Options{HardTimeout: 20 * time.Millisecond})
	var n counter
	_, err := c.GetOrLoad(context.Background(), "k", n.loader(sampleProduct(1), nil, time.Second))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error = %v, want DeadlineExceeded", err)
	}
}

// TestCallerCancellationDoesNotCancelTheSharedLoad: neither the caller
// running the load nor one waiting for it cancels the load by giving up;
// the waiter leaves at once, and the load's value serves everyone.
func TestCallerCancellationDoesNotCancelTheSharedLoad(t *testing.T) {
	c := newCache[product](t, nil, "cancel", Options{})
	var calls atomic.Int64
	release := make(chan struct{})
	loader := func(ctx context.Context) (product, error) {
		calls.Add(1)
		<-release
		if err := ctx.Err(); err != nil {
			return product{}, err
		}
		return sampleProduct(1), nil
	}
	leaderCtx, cancelLeader := context.WithCancel(context.Background())
	leader := make(chan error, 1)
	go func() {
		_, err := c.GetOrLoad(leaderCtx, "k", loader)
		leader <- err
	}()
	eventually(t, time.Second, "load started", func() bool { return calls.Load() == 1 })
	waiterCtx, cancelWaiter := context.WithCancel(context.Background())
	waiter := make(chan error, 1)
	go func() {
		_, err := c.GetOrLoad(waiterCtx, "k", loader)
		waiter <- err
	}()
	cancelLeader()
	cancelWaiter()
	if err := <-waiter; !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled waiter got %v, want context.Canceled", err)
	}
	close(release)
	if err := <-leader; err != nil {
		t.Fatalf("the caller running the load got %v; its cancellation must not cancel the load", err)
	}
	v, err := c.GetOrLoad(context.Background(), "k", n0loader)
	if err != nil || v.ID != 1 || calls.Load() != 1 {
		t.Fatalf("got %+v, %v after %d loads; want the first load's value", v, err, calls.Load())
	}
}

func n0loader(context.Context) (product, error) { return product{ID: -1}, nil }

func TestNegativeCaching(t *testing.T) {
	c := newCache[product](t, nil, "neg", Options{NegativeTTL: time.Minute})
	ctx := context.Background()
	var n counter
	notFound := fmt.Errorf("product 7: %w", ErrNotFound)
	for range 3 {
		if _, err := c.GetOrLoad(ctx, "p7", n.loader(product{}, notFound, 0)); !errors.Is(err, ErrNotFound) {
			t.Fatalf("error = %v, want ErrNotFound", err)
		}
	}
	if n.calls.Load() != 1 {
		t.Errorf("loader called %d times, want 1", n.calls.Load())
	}
	// Without NegativeTTL, not found is not cached.
	c2 := newCache[product](t, nil, "noneg", Options{})
	for range 2 {
		_, _ = c2.GetOrLoad(ctx, "p7", n.loader(product{}, notFound, 0))
	}
	if n.calls.Load() != 3 {
		t.Errorf("loader called %d times, want 3", n.calls.Load())
	}
}

func TestTagsL1(t *testing.T) {
	c := newCache[product](t, nil, "tags", Options{})
	ctx := context.Background()
	_ = c.Set(ctx, "a", sampleProduct(1), WithTags("shoes", "sale"))
	_ = c.Set(ctx, "b", sampleProduct(2), WithTags("shoes"))
	_ = c.Set(ctx, "c", sampleProduct(3), WithTags("hats"))
	if err := c.RemoveByTag(ctx, "shoes"); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]bool{"a": false, "b": false, "c": true} {
		if _, ok := c.Get(ctx, key); ok != want {
			t.Errorf("Get(%q) found=%v, want %v", key, ok, want)
		}
	}
}

func TestL1BoundByEntries(t *testing.T) {
	c := newCache[int](t, nil, "bounded", Options{L1MaxEntries: 100})
	ctx := context.Background()
	for i := range 1000 {
		_ = c.Set(ctx, fmt.Sprint(i), i)
	}
	s := c.Stats()
	if s.L1Entries > 100 || s.L1Entries < 50 {
		t.Errorf("L1 holds %d entries, want at most 100 (and not far below)", s.L1Entries)
	}
	if s.L1Evictions != int64(1000-s.L1Entries) {
		t.Errorf("evictions %d, entries %d", s.L1Evictions, s.L1Entries)
	}
}

func TestL1BoundBySize(t *testing.T) {
	c := newCache[string](t, nil, "sized", Options{L1MaxBytes: 256 << 10})
	ctx := context.Background()
	big := strings.Repeat("x", 1000)
	for i := range 1000 {
		_ = c.Set(ctx, fmt.Sprint(i), big)
	}
	s := c.Stats()
	// Each entry costs a little over 1 KB.
	if s.L1Entries > 256 || s.L1Entries < 100 {
		t.Errorf("L1 holds %d entries of 1 KB under a 256 KB bound", s.L1Entries)
	}
}

func TestL1KeepsReferencedEntries(t *testing.T) {
	c := newCache[int](t, nil, "clock", Options{L1MaxEntries: 64})
	ctx := context.Background()
	load := func(v int) Loader[int] { return func(context.Context) (int, error) { return v, nil } }
	_, _ = c.GetOrLoad(ctx, "hot", load(1))
	for i := range 500 {
		_, _ = c.GetOrLoad(ctx, "hot", load(1)) // keeps its reference bit set
		_ = c.Set(ctx, fmt.Sprint("cold", i), i)
	}
	if c.Stats().Loads != 1 {
		t.Errorf("the hot entry was evicted: %d loads", c.Stats().Loads)
	}
}

func TestStampedeL1Only(t *testing.T) {
	c := newCache[product](t, nil, "stampede-l1", Options{})
	var n counter
	var wg sync.WaitGroup
	start := make(chan struct{})
	var errs atomic.Int64
	for range 500 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			v, err := c.GetOrLoad(context.Background(), "k", n.loader(sampleProduct(1), nil, 20*time.Millisecond))
			if err != nil || v.ID != 1 {
				errs.Add(1)
			}
		}()
	}
	close(start)
	wg.Wait()
	if n.calls.Load() != 1 || errs.Load() != 0 {
		t.Fatalf("%d loads and %d errors for 500 concurrent misses; want 1 and 0", n.calls.Load(), errs.Load())
	}
}

func TestClosed(t *testing.T) {
	c, err := New[int](nil, "closed", Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	_ = c.Set(context.Background(), "k", 1)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	if _, err := c.GetOrLoad(context.Background(), "k", func(context.Context) (int, error) { return 2, nil }); !errors.Is(err, ErrClosed) {
		t.Errorf("GetOrLoad after Close: %v", err)
	}
	if err := c.Set(context.Background(), "k", 1); !errors.Is(err, ErrClosed) {
		t.Errorf("Set after Close: %v", err)
	}
}
