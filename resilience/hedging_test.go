package resilience_test

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/goaspire/goaspire/resilience"
)

func hedgingOptions() resilience.HedgingOptions {
	h := resilience.DefaultHedgingOptions()
	h.TotalRequestTimeout = 20 * time.Second
	h.Endpoint.Timeout = 10 * time.Second
	h.Endpoint.CircuitBreaker.SamplingDuration = 20 * time.Second
	return h
}

func newHedgingClient(t *testing.T, c *resilience.HedgingConfig) (*http.Client, *resilience.Transport) {
	t.Helper()
	rt, err := resilience.NewHedgingTransport(newBase(t), c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Close() })
	return &http.Client{Transport: rt}, rt
}

func TestHedgingRacesInstances(t *testing.T) {
	var canceled atomic.Int32
	slow := newServer(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			canceled.Add(1)
		case <-time.After(10 * time.Second):
			_, _ = io.WriteString(w, "slow")
		}
	})
	fast := newServer(t, func(_ int, w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "fast") })
	h := hedgingOptions()
	h.Hedging.Delay = 200 * time.Millisecond
	c, _ := newHedgingClient(t, &resilience.HedgingConfig{Options: h, Resolver: resolverFor(slow, fast)})
	// Round-robin makes one call start on each instance.
	for i := 0; i < 2; i++ {
		start := time.Now()
		st, body, err := get(t, c, "http://catalog/")
		if err != nil || st != 200 || body != "fast" {
			t.Fatalf("call %d: %d %q %v, want the fast instance's answer", i, st, body, err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("call %d took %v", i, d)
		}
	}
	// The call that started on the slow instance hedged to the fast one
	// (on a loaded machine the other call may have hedged too): every
	// slow attempt lost and was canceled.
	if slow.hits.Load() < 1 {
		t.Fatal("no call started on the slow instance")
	}
	eventually(t, "the losing attempts to be canceled", func() bool { return canceled.Load() == slow.hits.Load() })
}

func TestHedgingStartsAtOnceOnFailure(t *testing.T) {
	bad := newServer(t, status(503))
	good := newServer(t, func(_ int, w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "good") })
	h := hedgingOptions()
	h.Hedging.Delay = 10 * time.Second
	c, _ := newHedgingClient(t, &resilience.HedgingConfig{Options: h, Resolver: resolverFor(bad, good)})
	for i := 0; i < 2; i++ {
		start := time.Now()
		st, body, err := get(t, c, "http://catalog/")
		if err != nil || st != 200 || body != "good" {
			t.Fatalf("call %d: %d %q %v", i, st, body, err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("call %d took %v: a failed attempt must start the hedge at once", i, d)
		}
	}
}

func TestHedgingAllFailReturnsLastFailure(t *testing.T) {
	a := newServer(t, status(503))
	b := newServer(t, status(503))
	h := hedgingOptions()
	h.Hedging.MaxHedgedAttempts = 3
	c, _ := newHedgingClient(t, &resilience.HedgingConfig{Options: h, Resolver: resolverFor(a, b)})
	st, _, err := get(t, c, "http://catalog/")
	if err != nil || st != 503 {
		t.Fatalf("GET = %d %v, want the last 503", st, err)
	}
	if n := a.hits.Load() + b.hits.Load(); n != 4 {
		t.Fatalf("%d attempts, want 1 + 3 hedges", n)
	}
	if a.hits.Load() != 2 || b.hits.Load() != 2 {
		t.Fatalf("attempts per instance %d/%d, want them spread 2/2", a.hits.Load(), b.hits.Load())
	}
}

func TestHedgingParallelWhenDelayZero(t *testing.T) {
	release := make(chan struct{})
	srv := newServer(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
	h := hedgingOptions()
	h.Hedging.Delay = 0
	h.Hedging.MaxHedgedAttempts = 2
	c, _ := newHedgingClient(t, &resilience.HedgingConfig{Options: h})
	done := make(chan error, 1)
	go func() { _, _, err := get(t, c, srv.URL); done <- err }()
	eventually(t, "3 parallel attempts", func() bool { return srv.hits.Load() == 3 })
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestHedgingSendsNonIdempotentOnce(t *testing.T) {
	srv := newServer(t, status(503))
	c, _ := newHedgingClient(t, &resilience.HedgingConfig{Options: hedgingOptions()})
	resp, err := c.Post(srv.URL, "text/plain", strings.NewReader("order"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || srv.hits.Load() != 1 {
		t.Fatalf("got %d after %d requests, want one attempt", resp.StatusCode, srv.hits.Load())
	}

	h := hedgingOptions()
	h.Hedging.HedgeNonIdempotent = true
	c, _ = newHedgingClient(t, &resilience.HedgingConfig{Options: h})
	srv.hits.Store(0)
	resp, err = c.Post(srv.URL, "text/plain", strings.NewReader("order"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if srv.hits.Load() != 2 {
		t.Fatalf("%d attempts with HedgeNonIdempotent, want 2", srv.hits.Load())
	}
	if b := srv.Bodies(); b[len(b)-1] != "order" || b[len(b)-2] != "order" {
		t.Fatalf("hedged bodies %q", b)
	}
}

func TestHedgingTimeouts(t *testing.T) {
	srv := newServer(t, hang)
	h := hedgingOptions()
	h.TotalRequestTimeout = 300 * time.Millisecond
	h.Endpoint.Timeout = 100 * time.Millisecond
	h.Endpoint.CircuitBreaker.SamplingDuration = time.Second
	h.Hedging.MaxHedgedAttempts = 10
	c, _ := newHedgingClient(t, &resilience.HedgingConfig{Options: h})
	_, _, err := get(t, c, srv.URL)
	if !errors.Is(err, resilience.ErrTotalTimeout) {
		t.Fatalf("error = %v, want the total timeout", err)
	}
	if n := srv.hits.Load(); n < 2 {
		t.Fatalf("%d attempts: an attempt timeout must start the next attempt", n)
	}
}

func TestHedgingBreakerPerEndpoint(t *testing.T) {
	bad := newServer(t, status(500))
	good := newServer(t, func(_ int, w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "good") })
	h := hedgingOptions()
	h.Endpoint.CircuitBreaker.MinimumThroughput = 3
	h.Endpoint.CircuitBreaker.FailureRatio = 0.5
	h.Endpoint.CircuitBreaker.BreakDuration = time.Minute
	c, rt := newHedgingClient(t, &resilience.HedgingConfig{Options: h, Resolver: resolverFor(bad, good)})
	for i := 0; i < 10; i++ {
		if st, body, err := get(t, c, "http://catalog/"); err != nil || st != 200 || body != "good" {
			t.Fatalf("call %d: %d %q %v", i, st, body, err)
		}
	}
	if rt.CircuitState(bad.authority()) != resilience.CircuitOpen || rt.CircuitState(good.authority()) != resilience.CircuitClosed {
		t.Fatalf("breakers %v/%v, want open/closed", rt.CircuitState(bad.authority()), rt.CircuitState(good.authority()))
	}
	if n := bad.hits.Load(); n != 3 {
		t.Fatalf("bad instance got %d requests, want 3 (then its breaker opened)", n)
	}
}
