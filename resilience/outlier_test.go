package resilience_test

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/internal/poll"
	"github.com/goaspire/goaspire/resilience"
	"github.com/goaspire/goaspire/testserver"
)

// deadCounter wraps a base transport and counts, for the instance at
// dead, the attempts that got no answer and the first attempts of calls
// (not retries or hedges) sent to it once `after` of them have failed
// ("after the first few timeouts"), against all first attempts sent
// meanwhile.
type deadCounter struct {
	base  http.RoundTripper
	dead  string
	after int32

	failed       atomic.Int32 // attempts to dead that ended without an answer
	firstAfter   atomic.Int32 // first attempts sent once failed >= after
	deadAfter    atomic.Int32 // of which to dead
	firstToDead  atomic.Int32 // every first attempt to dead
	firstTotal   atomic.Int32
	counting     atomic.Bool // the load phase is running
	answeredDead atomic.Int32
}

func (d *deadCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	toDead := r.URL.Host == d.dead
	if d.counting.Load() && resilience.ResendCount(r.Context()) == 0 {
		d.firstTotal.Add(1)
		if toDead {
			d.firstToDead.Add(1)
		}
		if d.failed.Load() >= d.after {
			d.firstAfter.Add(1)
			if toDead {
				d.deadAfter.Add(1)
			}
		}
	}
	resp, err := d.base.RoundTrip(r)
	if toDead {
		if err != nil {
			d.failed.Add(1)
		} else {
			d.answeredDead.Add(1)
		}
	}
	return resp, err
}

// load sends GETs to http://catalog/items from workers goroutines, perCall
// each, stopping early once limit has passed (the code before ejection
// spends an attempt timeout on half the calls). It returns the number of
// calls made and the failures.
func load(c *http.Client, workers, perWorker int, limit time.Duration) (calls int32, failed int32, first error) {
	var (
		n, bad   atomic.Int32
		firstErr atomic.Value
		wg       sync.WaitGroup
	)
	stop := time.Now().Add(limit)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perWorker && time.Now().Before(stop); i++ {
				n.Add(1)
				resp, err := c.Get("http://catalog/items")
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					_ = resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					bad.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	wg.Wait()
	first, _ = firstErr.Load().(error)
	return n.Load(), bad.Load(), first
}

// TestSilentInstanceIsEjected is the user's scenario: a service of two
// instances, one of which goes silent (the fault proxy in front of it
// blackholes new connections and stalls open ones, or partitions it), 16
// goroutines of GETs through the standard pipeline with discovery. The
// breaker cannot help (its minimum throughput of 100 calls is never
// reached within its window at one call per attempt timeout per
// goroutine); outlier detection must: once the first few attempts timed
// out, at most 1 % of the calls may still go to the silent instance
// first, every call must succeed, and once the network heals and the
// ejection has run out the instance serves again.
func TestSilentInstanceIsEjected(t *testing.T) {
	for _, fault := range []testserver.Fault{testserver.Blackhole, testserver.Silent} {
		t.Run(fault.String(), func(t *testing.T) {
			t.Parallel()
			// The load stops before the first ejection can run out
			// (loadLimit < baseEjection): an ejection that ends sends
			// the calls in flight then to the instance again until it
			// fails ConsecutiveFailures more times, which over seconds
			// of load (instead of the minutes of production
			// ejections) would be more than 1 % of the calls.
			const (
				workers, perWorker  = 16, 60
				consecutiveFailures = 5
				baseEjection        = 4 * time.Second
				loadLimit           = 2500 * time.Millisecond
			)
			a := newServer(t, func(_ int, w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "a") })
			b := newServer(t, func(_ int, w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "b") })
			p := testserver.NewFaultProxy(t, a.authority())
			cfg := discovery.FromMap(map[string]string{
				"services__catalog__http__0": "http://" + p.Addr(),
				"services__catalog__http__1": b.URL,
				// The defaults scaled down around a 300 ms attempt
				// timeout: a 1 s window sees about 3 calls per goroutine
				// to the silent instance, far below 100.
				"Aspire:Resilience:Http:AttemptTimeout:Timeout":                            "300ms",
				"Aspire:Resilience:Http:CircuitBreaker:SamplingDuration":                   "1s",
				"Aspire:Resilience:Http:Retry:Delay":                                       "10ms",
				"Aspire:Resilience:Http:OutlierDetection:ConsecutiveFailures":              fmt.Sprint(consecutiveFailures),
				"Aspire:Resilience:Http:Clients:catalog:OutlierDetection:BaseEjectionTime": baseEjection.String(),
			})
			tc, err := resilience.LoadTransportConfig(cfg, "catalog")
			if err != nil {
				t.Fatal(err)
			}
			logs := &logRecorder{}
			tc.Resolver = discovery.NewResolver(cfg)
			tc.Logger = slog.New(logs)
			base := newBase(t)
			dc := &deadCounter{base: base, dead: p.Addr(), after: consecutiveFailures}
			rt, err := resilience.NewTransport(dc, tc)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = rt.Close() })
			c := &http.Client{Transport: rt}

			// Both instances serve, and keep connections in the pool.
			for range 8 {
				if code, _, err := get(t, c, "http://catalog/items"); err != nil || code != http.StatusOK {
					t.Fatalf("warm-up: %d, %v", code, err)
				}
			}
			if a.hits.Load() == 0 || b.hits.Load() == 0 {
				t.Fatalf("warm-up: A served %d, B %d: both should serve", a.hits.Load(), b.hits.Load())
			}

			p.Set(fault)
			dc.counting.Store(true)
			start := time.Now()
			calls, failed, firstErr := load(c, workers, perWorker, loadLimit)
			elapsed := time.Since(start)
			dc.counting.Store(false)

			after, dead := dc.firstAfter.Load(), dc.deadAfter.Load()
			t.Logf("%s: %d calls in %s, %d failed; first attempts to the silent instance: %d of %d in all, %d of %d after its first %d failures (%.2f %%); attempts without an answer: %d; ejections logged: %d",
				fault, calls, elapsed.Round(time.Millisecond), failed, dc.firstToDead.Load(), dc.firstTotal.Load(),
				dead, after, consecutiveFailures, 100*float64(dead)/float64(max(after, 1)), dc.failed.Load(), logs.count("resilience: instance ejected"))
			if failed > 0 {
				t.Errorf("%d of %d calls failed, first: %v", failed, calls, firstErr)
			}
			if dc.failed.Load() < consecutiveFailures || after == 0 {
				t.Fatalf("the silent instance failed %d attempts, %d first attempts came after: the scenario did not happen", dc.failed.Load(), after)
			}
			if float64(dead) > 0.01*float64(after) {
				t.Errorf("%d of %d first attempts after the first %d timeouts went to the silent instance (%.1f %%), want at most 1 %%",
					dead, after, consecutiveFailures, 100*float64(dead)/float64(after))
			}
			if n := logs.count("resilience: instance ejected"); n == 0 {
				t.Errorf("no ejection was logged")
			}
			if !rt.Ejected(p.Addr()) || rt.Ejected(b.authority()) {
				t.Errorf("Ejected: silent instance %v, healthy one %v; want true, false", rt.Ejected(p.Addr()), rt.Ejected(b.authority()))
			}

			// Healed, the instance serves again once its ejection has run
			// out (the calls meanwhile go to B and succeed).
			p.Heal()
			answered := dc.answeredDead.Load()
			poll.Until(t, baseEjection+10*time.Second, "the healed instance serves again", func() bool {
				code, _, err := get(t, c, "http://catalog/items")
				if err != nil || code != http.StatusOK {
					t.Fatalf("after healing: %d, %v", code, err)
				}
				return dc.answeredDead.Load() > answered
			})
			if rt.Ejected(p.Addr()) {
				t.Error("the healed instance answered but is still ejected")
			}
		})
	}
}

// TestSilentInstanceIsEjectedHedging is the scenario through the hedging
// pipeline: an attempt to the blackholed instance is overtaken by the
// hedge to the other one, which counts as a failure of the silent
// instance, so it is ejected and first attempts stop going there.
func TestSilentInstanceIsEjectedHedging(t *testing.T) {
	t.Parallel()
	const workers, perWorker, consecutiveFailures = 16, 50, 5
	a := newServer(t, func(_ int, w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "a") })
	b := newServer(t, func(_ int, w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "b") })
	p := testserver.NewFaultProxy(t, a.authority())
	cfg := discovery.FromMap(map[string]string{
		"services__catalog__http__0":                                           "http://" + p.Addr(),
		"services__catalog__http__1":                                           b.URL,
		"Aspire:Resilience:Hedging:Hedging:Delay":                              "50ms",
		"Aspire:Resilience:Hedging:Endpoint:Timeout:Timeout":                   "2s",
		"Aspire:Resilience:Hedging:Endpoint:OutlierDetection:BaseEjectionTime": "30s",
	})
	hc, err := resilience.LoadHedgingConfig(cfg, "catalog")
	if err != nil {
		t.Fatal(err)
	}
	hc.Resolver = discovery.NewResolver(cfg)
	hc.Logger = slog.New(&logRecorder{})
	dc := &deadCounter{base: newBase(t), dead: p.Addr(), after: consecutiveFailures}
	rt, err := resilience.NewHedgingTransport(dc, hc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Close() })
	c := &http.Client{Transport: rt}

	p.Set(testserver.Blackhole)
	dc.counting.Store(true)
	calls, failed, firstErr := load(c, workers, perWorker, 20*time.Second)
	dc.counting.Store(false)
	after, dead := dc.firstAfter.Load(), dc.deadAfter.Load()
	t.Logf("%d calls, %d failed; first attempts to the silent instance: %d of %d in all, %d of %d after its first %d failures",
		calls, failed, dc.firstToDead.Load(), dc.firstTotal.Load(), dead, after, consecutiveFailures)
	if failed > 0 {
		t.Errorf("%d of %d calls failed, first: %v", failed, calls, firstErr)
	}
	if dc.failed.Load() < consecutiveFailures || after == 0 {
		t.Fatalf("the silent instance failed %d attempts, %d first attempts came after: the scenario did not happen", dc.failed.Load(), after)
	}
	if float64(dead) > 0.01*float64(after) {
		t.Errorf("%d of %d first attempts after the first %d failures went to the silent instance, want at most 1 %%", dead, after, consecutiveFailures)
	}
	if !rt.Ejected(p.Addr()) {
		t.Error("the silent instance is not ejected")
	}
}

// TestWhatEjects checks which outcomes count for outlier detection, with
// one attempt per call (no retries) and two failures ejecting: no answer
// (a refused connection, a reset, an attempt timeout) ejects; an answer,
// even a 503, does not. An ejected instance is still used when it is the
// service's only one.
func TestWhatEjects(t *testing.T) {
	refused := func(t *testing.T) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		_ = ln.Close()
		return "http://" + addr
	}
	tests := []struct {
		name      string
		instance  func(t *testing.T) string // the instance's URL
		disabled  bool
		wantEject bool
		modify    func(*resilience.Options)
	}{
		{"connection refused", refused, false, true, nil},
		{"reset before the response", func(t *testing.T) string {
			return newServer(t, func(_ int, w http.ResponseWriter, _ *http.Request) { closeConn(w) }).URL
		}, false, true, nil},
		{"attempt timeout", func(t *testing.T) string { return newServer(t, hang).URL }, false, true, nil},
		// The total timeout, no longer than the attempt timeout, bounds
		// the first attempt: the instance had all of it to answer.
		{"total timeout on the first attempt", func(t *testing.T) string { return newServer(t, hang).URL }, false, true,
			func(o *resilience.Options) { o.TotalRequestTimeout = o.AttemptTimeout }},
		{"503", func(t *testing.T) string { return newServer(t, status(http.StatusServiceUnavailable)).URL }, false, false, nil},
		{"200", func(t *testing.T) string { return newServer(t, status(http.StatusOK)).URL }, false, false, nil},
		{"disabled", refused, true, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := tt.instance(t)
			o := testOptions()
			o.Retry.MaxRetryAttempts = 0
			o.AttemptTimeout = 200 * time.Millisecond
			o.OutlierDetection.ConsecutiveFailures = 2
			o.OutlierDetection.Enabled = !tt.disabled
			if tt.modify != nil {
				tt.modify(&o)
			}
			r := discovery.NewResolver(discovery.FromMap(map[string]string{"services__catalog__http__0": u}))
			var sent atomic.Int32
			tr := newBase(t)
			base := roundTripFunc(func(r *http.Request) (*http.Response, error) {
				sent.Add(1)
				return tr.RoundTrip(r)
			})
			rt, err := resilience.NewTransport(base, &resilience.TransportConfig{Options: o, Resolver: r})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = rt.Close() })
			c := &http.Client{Transport: rt}
			host := u[len("http://"):]
			call := func() {
				resp, err := c.Get("http://catalog/x")
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					_ = resp.Body.Close()
				}
			}
			call()
			if rt.Ejected(host) {
				t.Fatal("ejected after one failure, want two")
			}
			call()
			if got := rt.Ejected(host); got != tt.wantEject {
				t.Fatalf("Ejected = %v, want %v", got, tt.wantEject)
			}
			// Ejected or not, the service's only instance is called.
			n := sent.Load()
			call()
			if sent.Load() == n {
				t.Fatal("the only instance was not called")
			}
		})
	}
}

// TestEjectionCap: with every instance of a service refusing connections,
// MaxEjectionPercent bounds how many are ejected at once (at least one
// always may be), and calls still go out (the survivors are used).
func TestEjectionCap(t *testing.T) {
	refused := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		_ = ln.Close()
		return addr
	}
	tests := []struct {
		percent, instances, want int
	}{
		{10, 2, 1},
		{10, 3, 1},
		{50, 4, 2},
		{100, 3, 3},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d%% of %d", tt.percent, tt.instances), func(t *testing.T) {
			m := map[string]string{}
			var addrs []string
			for i := range tt.instances {
				a := refused()
				addrs = append(addrs, a)
				m[fmt.Sprintf("services__catalog__http__%d", i)] = "http://" + a
			}
			o := testOptions()
			o.Retry.MaxRetryAttempts = 0
			o.OutlierDetection.ConsecutiveFailures = 1
			o.OutlierDetection.MaxEjectionPercent = tt.percent
			c, rt := newClient(t, &resilience.TransportConfig{Options: o, Resolver: discovery.NewResolver(discovery.FromMap(m))})
			for range 4 * tt.instances {
				if resp, err := c.Get("http://catalog/x"); err == nil {
					_ = resp.Body.Close()
					t.Fatal("a refused instance answered")
				}
			}
			ejected := 0
			for _, a := range addrs {
				if rt.Ejected(a) {
					ejected++
				}
			}
			if ejected != tt.want {
				t.Fatalf("%d of %d instances ejected, want %d", ejected, tt.instances, tt.want)
			}
		})
	}
}
