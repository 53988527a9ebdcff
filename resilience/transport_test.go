package resilience_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/failsafe-go/failsafe-go/bulkhead"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"

	"github.com/goaspire/goaspire/resilience"
)

func TestRetriesTransientStatuses(t *testing.T) {
	for _, code := range []int{500, 502, 503, 504, 408, 429} {
		t.Run(http.StatusText(code), func(t *testing.T) {
			srv := newServer(t, failFirst(2, code))
			c, _ := newClient(t, &resilience.TransportConfig{Options: testOptions()})
			st, body, err := get(t, c, srv.URL)
			if err != nil || st != 200 || body != "ok" {
				t.Fatalf("GET = %d %q %v, want 200 ok", st, body, err)
			}
			if n := srv.hits.Load(); n != 3 {
				t.Fatalf("server saw %d requests, want 3", n)
			}
		})
	}
}

func TestDoesNotRetrySuccessOrClientErrors(t *testing.T) {
	for _, code := range []int{200, 201, 400, 401, 404, 409} {
		srv := newServer(t, status(code))
		c, _ := newClient(t, &resilience.TransportConfig{Options: testOptions()})
		st, _, err := get(t, c, srv.URL)
		if err != nil || st != code || srv.hits.Load() != 1 {
			t.Errorf("status %d: got %d, %v after %d requests, want 1 request", code, st, err, srv.hits.Load())
		}
	}
}

func TestRetriesExhaustedReturnLastResponse(t *testing.T) {
	srv := newServer(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(503)
		_, _ = io.WriteString(w, "attempt "+string(rune('0'+n)))
	})
	c, _ := newClient(t, &resilience.TransportConfig{Options: testOptions()})
	st, body, err := get(t, c, srv.URL)
	if err != nil || st != 503 || body != "attempt 4" {
		t.Fatalf("GET = %d %q %v, want the 4th attempt's 503 with its body", st, body, err)
	}
	if srv.hits.Load() != 4 {
		t.Fatalf("server saw %d requests, want 1 + 3 retries", srv.hits.Load())
	}
}

func TestRetriesClosedConnections(t *testing.T) {
	srv := newServer(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n <= 2 {
			closeConn(w)
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
	c, _ := newClient(t, &resilience.TransportConfig{Options: testOptions()})
	st, body, err := get(t, c, srv.URL)
	if err != nil || st != 200 || body != "ok" {
		t.Fatalf("GET = %d %q %v, want 200 ok", st, body, err)
	}
}

func TestClosedConnectionsExhaustRetries(t *testing.T) {
	srv := newServer(t, func(_ int, w http.ResponseWriter, _ *http.Request) { closeConn(w) })
	o := testOptions()
	o.Retry.MaxRetryAttempts = 2
	c, _ := newClient(t, &resilience.TransportConfig{Options: o})
	_, _, err := get(t, c, srv.URL)
	if !errors.Is(err, resilience.ErrRetriesExceeded) || !strings.Contains(err.Error(), "after 3 attempts") {
		t.Fatalf("GET error = %v, want retries exceeded after 3 attempts", err)
	}
}

func TestAttemptTimeoutIsRetried(t *testing.T) {
	srv := newServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if n == 1 {
			hang(n, w, r)
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
	o := testOptions()
	o.AttemptTimeout = 250 * time.Millisecond
	c, _ := newClient(t, &resilience.TransportConfig{Options: o})
	start := time.Now()
	st, body, err := get(t, c, srv.URL)
	if err != nil || st != 200 || body != "ok" {
		t.Fatalf("GET = %d %q %v, want 200 ok", st, body, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v, the attempt timeout did not cut the slow attempt", d)
	}
}

func TestAttemptTimeoutExhausted(t *testing.T) {
	srv := newServer(t, hang)
	o := testOptions()
	o.AttemptTimeout = 50 * time.Millisecond
	o.Retry.MaxRetryAttempts = 2
	c, _ := newClient(t, &resilience.TransportConfig{Options: o})
	_, _, err := get(t, c, srv.URL)
	if !errors.Is(err, resilience.ErrAttemptTimeout) || !errors.Is(err, resilience.ErrTimeout) ||
		errors.Is(err, resilience.ErrTotalTimeout) || !errors.Is(err, resilience.ErrRetriesExceeded) {
		t.Fatalf("GET error = %v, want attempt timeouts after retries", err)
	}
	if want := "attempt timeout of 50ms exceeded calling " + srv.authority(); !strings.Contains(err.Error(), want) {
		t.Fatalf("GET error = %v, want %q", err, want)
	}
	eventually(t, "3 attempts", func() bool { return srv.hits.Load() == 3 })
}

func TestTotalTimeout(t *testing.T) {
	srv := newServer(t, hang)
	o := testOptions()
	o.TotalRequestTimeout = 300 * time.Millisecond
	o.AttemptTimeout = 200 * time.Millisecond
	o.CircuitBreaker.SamplingDuration = time.Second
	c, _ := newClient(t, &resilience.TransportConfig{Options: o})
	start := time.Now()
	_, _, err := get(t, c, srv.URL)
	if !errors.Is(err, resilience.ErrTotalTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("GET error = %v, want the total timeout", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 3*time.Second {
		t.Fatalf("took %v, want about the 300ms total timeout", d)
	}
}

func TestTotalTimeoutBoundsRetryDelays(t *testing.T) {
	srv := newServer(t, status(503))
	o := testOptions()
	o.TotalRequestTimeout = 300 * time.Millisecond
	o.AttemptTimeout = 100 * time.Millisecond
	o.CircuitBreaker.SamplingDuration = time.Second
	o.Retry.Delay = 10 * time.Second
	c, _ := newClient(t, &resilience.TransportConfig{Options: o})
	start := time.Now()
	_, _, err := get(t, c, srv.URL)
	if !errors.Is(err, resilience.ErrTotalTimeout) {
		t.Fatalf("GET error = %v, want the total timeout", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("took %v: the 10s delay was not cut by the total timeout", d)
	}
	if n := srv.hits.Load(); n != 1 {
		t.Fatalf("server saw %d requests, want 1", n)
	}
}

// slowRetry makes the computed backoff long, so a fast retry shows that
// Retry-After was used. The time scale turns Retry-After seconds into
// 50 ms units.
func slowRetry() *resilience.TransportConfig {
	o := resilience.DefaultOptions()
	o.Retry.BackoffType = resilience.BackoffConstant
	o.Retry.UseJitter = false
	o.Retry.Delay = time.Minute // 3 s once scaled
	o.TotalRequestTimeout = 10 * time.Minute
	o.AttemptTimeout = time.Minute
	o.CircuitBreaker.SamplingDuration = 10 * time.Minute
	return &resilience.TransportConfig{Options: o, TimeScale: 0.05}
}

func TestRetryAfter(t *testing.T) {
	tests := []struct {
		name       string
		retryAfter func() string // computed when the first request arrives
		status     int
		min        time.Duration
		want       string
	}{
		{
			name:       "seconds",
			retryAfter: func() string { return "2" },
			status:     429,
			min:        100 * time.Millisecond,
			want:       "Retry-After's 2 s (100 ms scaled), not the 3 s backoff",
		},
		{
			// "Retry-After: 0" asks for an immediate retry, as in Polly.
			name:       "zero",
			retryAfter: func() string { return "0" },
			status:     503,
			want:       "at once, not after the 3 s backoff",
		},
		{
			// 3 to 4 s of date, scaled by 0.05: 150 to 200 ms.
			name:       "date",
			retryAfter: func() string { return time.Now().Add(4 * time.Second).UTC().Format(http.TimeFormat) },
			status:     503,
			min:        100 * time.Millisecond,
			want:       "the Retry-After date (about 175 ms scaled)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, func(n int, w http.ResponseWriter, _ *http.Request) {
				if n == 1 {
					w.Header().Set("Retry-After", tt.retryAfter())
					w.WriteHeader(tt.status)
					return
				}
				_, _ = io.WriteString(w, "ok")
			})
			c, _ := newClient(t, slowRetry())
			start := time.Now()
			st, _, err := get(t, c, srv.URL)
			d := time.Since(start)
			if err != nil || st != 200 {
				t.Fatalf("GET = %d %v", st, err)
			}
			if d < tt.min || d > 2*time.Second {
				t.Fatalf("retried after %v, want %s", d, tt.want)
			}
		})
	}
}

func TestRetryAfterBeyondTotalTimeoutReturnsResponse(t *testing.T) {
	srv := newServer(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Retry-After", "3600")
		w.WriteHeader(503)
		_, _ = io.WriteString(w, "come back in an hour")
	})
	c, _ := newClient(t, slowRetry())
	start := time.Now()
	resp, err := c.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 503 || string(b) != "come back in an hour" || resp.Header.Get("Retry-After") != "3600" {
		t.Fatalf("got %d %q", resp.StatusCode, b)
	}
	if d := time.Since(start); d > 2*time.Second || srv.hits.Load() != 1 {
		t.Fatalf("took %v and %d requests, want the response at once", d, srv.hits.Load())
	}
}

func TestRetryAfterIgnoredWhenDisabled(t *testing.T) {
	srv := newServer(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			w.Header().Set("Retry-After", "3600")
			w.WriteHeader(503)
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
	o := testOptions()
	o.Retry.ShouldRetryAfterHeader = false
	c, _ := newClient(t, &resilience.TransportConfig{Options: o})
	st, _, err := get(t, c, srv.URL)
	if err != nil || st != 200 || srv.hits.Load() != 2 {
		t.Fatalf("GET = %d %v after %d requests", st, err, srv.hits.Load())
	}
}

func TestMethodsAndIdempotency(t *testing.T) {
	tests := []struct {
		name     string
		method   string
		header   string
		mark     func(*http.Request) *http.Request
		opt      bool
		wantHits int32
	}{
		{"GET", "GET", "", nil, false, 2},
		{"HEAD", "HEAD", "", nil, false, 2},
		{"PUT", "PUT", "", nil, false, 2},
		{"DELETE", "DELETE", "", nil, false, 2},
		{"POST", "POST", "", nil, false, 1},
		{"PATCH", "PATCH", "", nil, false, 1},
		{"POST with Idempotency-Key", "POST", "Idempotency-Key", nil, false, 2},
		{"POST with X-Idempotency-Key", "POST", "X-Idempotency-Key", nil, false, 2},
		{"POST opted in for the request", "POST", "", resilience.RetryNonIdempotent, false, 2},
		{"PATCH opted in by option", "PATCH", "", nil, true, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, failFirst(1, 503))
			o := testOptions()
			o.Retry.RetryNonIdempotent = tt.opt
			c, _ := newClient(t, &resilience.TransportConfig{Options: o})
			req, _ := http.NewRequest(tt.method, srv.URL, strings.NewReader("payload"))
			if tt.method == "GET" || tt.method == "HEAD" {
				req, _ = http.NewRequest(tt.method, srv.URL, nil)
			}
			if tt.mark != nil {
				req = tt.mark(req)
			}
			if tt.header != "" {
				req.Header.Set(tt.header, "key-1")
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := srv.hits.Load(); got != tt.wantHits {
				t.Fatalf("server saw %d requests, want %d", got, tt.wantHits)
			}
			wantStatus := 200
			if tt.wantHits == 1 {
				wantStatus = 503
			}
			if resp.StatusCode != wantStatus {
				t.Fatalf("status %d, want %d", resp.StatusCode, wantStatus)
			}
		})
	}
}

// TestRetryNonIdempotentIsScopedToOneRequest: the opt-in of one POST
// does not carry over to a later POST made with a context derived from
// the first one's, as a handler calling several services would make.
func TestRetryNonIdempotentIsScopedToOneRequest(t *testing.T) {
	srv := newServer(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n == 1 || n == 3 {
			w.WriteHeader(503)
		}
	})
	c, _ := newClient(t, &resilience.TransportConfig{Options: testOptions()})
	first, _ := http.NewRequest("POST", srv.URL, strings.NewReader("a"))
	first = resilience.RetryNonIdempotent(first)
	resp, err := c.Do(first)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || srv.hits.Load() != 2 {
		t.Fatalf("opted-in POST: status %d after %d requests, want 200 after a retry", resp.StatusCode, srv.hits.Load())
	}
	ctx, cancel := context.WithCancel(first.Context())
	defer cancel()
	later, _ := http.NewRequestWithContext(ctx, "POST", srv.URL, strings.NewReader("b"))
	resp, err = c.Do(later)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || srv.hits.Load() != 3 {
		t.Fatalf("later POST with a derived context: status %d after %d requests, want its 503 sent once", resp.StatusCode, srv.hits.Load())
	}
}

func TestBodyIsReplayed(t *testing.T) {
	srv := newServer(t, failFirst(2, 503))
	c, _ := newClient(t, &resilience.TransportConfig{Options: testOptions()})
	for _, body := range []io.Reader{strings.NewReader("hello"), bytes.NewBufferString("hello"), bytes.NewReader([]byte("hello"))} {
		srv.hits.Store(0)
		req, _ := http.NewRequest("PUT", srv.URL, body)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	bodies := srv.Bodies()
	if len(bodies) != 9 {
		t.Fatalf("server saw %d bodies, want 9", len(bodies))
	}
	for i, b := range bodies {
		if b != "hello" {
			t.Fatalf("attempt %d sent body %q, want %q", i+1, b, "hello")
		}
	}
}

// onceReader is a body http.NewRequest cannot replay.
type onceReader struct{ io.Reader }

func TestBodyNotReplayable(t *testing.T) {
	t.Run("response", func(t *testing.T) {
		srv := newServer(t, status(503))
		c, _ := newClient(t, &resilience.TransportConfig{Options: testOptions()})
		req, _ := http.NewRequest("PUT", srv.URL, onceReader{strings.NewReader("x")})
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 503 || srv.hits.Load() != 1 {
			t.Fatalf("got %d after %d requests, want the 503 and no retry", resp.StatusCode, srv.hits.Load())
		}
	})
	t.Run("transport error", func(t *testing.T) {
		srv := newServer(t, func(_ int, w http.ResponseWriter, _ *http.Request) { closeConn(w) })
		c, _ := newClient(t, &resilience.TransportConfig{Options: testOptions()})
		req, _ := http.NewRequest("PUT", srv.URL, onceReader{strings.NewReader("x")})
		_, err := c.Do(req)
		if !errors.Is(err, resilience.ErrBodyNotReplayable) {
			t.Fatalf("error = %v, want ErrBodyNotReplayable", err)
		}
		if srv.hits.Load() != 1 {
			t.Fatalf("server saw %d requests, want 1", srv.hits.Load())
		}
	})
	t.Run("GetBody fails", func(t *testing.T) {
		srv := newServer(t, status(503))
		c, _ := newClient(t, &resilience.TransportConfig{Options: testOptions()})
		req, _ := http.NewRequest("PUT", srv.URL, strings.NewReader("x"))
		boom := errors.New("body source gone")
		req.GetBody = func() (io.ReadCloser, error) { return nil, boom }
		_, err := c.Do(req)
		if !errors.Is(err, resilience.ErrBodyNotReplayable) || !errors.Is(err, boom) {
			t.Fatalf("error = %v, want ErrBodyNotReplayable wrapping the GetBody error", err)
		}
	})
}

func TestCallerCancellationStopsAtOnce(t *testing.T) {
	t.Run("during an attempt", func(t *testing.T) {
		srv := newServer(t, hang)
		c, _ := newClient(t, &resilience.TransportConfig{Options: testOptions()})
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(50*time.Millisecond, cancel)
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL, nil)
		start := time.Now()
		_, err := c.Do(req)
		if !errors.Is(err, context.Canceled) || time.Since(start) > 3*time.Second {
			t.Fatalf("error %v after %v, want context.Canceled at once", err, time.Since(start))
		}
		if errors.Is(err, resilience.ErrTimeout) {
			t.Fatalf("the caller's cancellation was reported as a timeout: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
		if srv.hits.Load() != 1 {
			t.Fatalf("server saw %d requests, want 1", srv.hits.Load())
		}
	})
	t.Run("during a retry delay", func(t *testing.T) {
		o := testOptions()
		o.Retry.Delay = 10 * time.Second
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		srv := newServer(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(503)
			time.AfterFunc(20*time.Millisecond, cancel)
		})
		c, _ := newClient(t, &resilience.TransportConfig{Options: o})
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL, nil)
		start := time.Now()
		_, err := c.Do(req)
		if !errors.Is(err, context.Canceled) || time.Since(start) > 3*time.Second {
			t.Fatalf("error %v after %v, want context.Canceled at once", err, time.Since(start))
		}
		if srv.hits.Load() != 1 {
			t.Fatalf("server saw %d requests, want 1", srv.hits.Load())
		}
	})
	t.Run("caller deadline before the attempt timeout", func(t *testing.T) {
		srv := newServer(t, failFirst(1, 503))
		c, _ := newClient(t, &resilience.TransportConfig{Options: testOptions()})
		c.Timeout = 5 * time.Second // below the 10 s attempt timeout
		st, body, err := get(t, c, srv.URL)
		if err != nil || st != 200 || body != "ok" || srv.hits.Load() != 2 {
			t.Fatalf("GET = %d %q %v after %d requests", st, body, err, srv.hits.Load())
		}
	})
	t.Run("caller deadline", func(t *testing.T) {
		srv := newServer(t, hang)
		c, _ := newClient(t, &resilience.TransportConfig{Options: testOptions()})
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL, nil)
		_, err := c.Do(req)
		if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, resilience.ErrTimeout) {
			t.Fatalf("error = %v, want the caller's deadline, not the pipeline's", err)
		}
	})
}

func TestBreakerOpensAndFailsFast(t *testing.T) {
	var mu sync.Mutex
	ok := false
	srv := newServer(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if !ok {
			w.WriteHeader(500)
		}
	})
	o := testOptions()
	o.Retry.MaxRetryAttempts = 0
	o.CircuitBreaker.MinimumThroughput = 3
	o.CircuitBreaker.FailureRatio = 0.5
	o.CircuitBreaker.BreakDuration = 200 * time.Millisecond
	c, rt := newClient(t, &resilience.TransportConfig{Options: o})
	for i := 0; i < 3; i++ {
		if st, _, err := get(t, c, srv.URL); err != nil || st != 500 {
			t.Fatalf("request %d: %d %v", i, st, err)
		}
	}
	if s := rt.CircuitState(srv.authority()); s != resilience.CircuitOpen {
		t.Fatalf("breaker is %v, want open", s)
	}
	_, _, err := get(t, c, srv.URL)
	var open *resilience.CircuitOpenError
	if !errors.Is(err, resilience.ErrCircuitOpen) || !errors.Is(err, circuitbreaker.ErrOpen) || !errors.As(err, &open) ||
		open.Destination != srv.authority() {
		t.Fatalf("error = %v, want a CircuitOpenError for %s", err, srv.authority())
	}
	if srv.hits.Load() != 3 {
		t.Fatalf("server saw %d requests, want 3: an open breaker must not send", srv.hits.Load())
	}
	if s := rt.CircuitState(srv.authority()); s != resilience.CircuitOpen {
		t.Fatalf("breaker is %v, want open", s)
	}
	// After the break, a failed trial call opens it again...
	time.Sleep(250 * time.Millisecond)
	if st, _, err := get(t, c, srv.URL); err != nil || st != 500 {
		t.Fatalf("failed trial call: %d %v", st, err)
	}
	if s := rt.CircuitState(srv.authority()); s != resilience.CircuitOpen {
		t.Fatalf("breaker is %v after a failed trial call, want open", s)
	}
	if _, _, err := get(t, c, srv.URL); !errors.Is(err, resilience.ErrCircuitOpen) {
		t.Fatalf("after a failed trial: %v, want ErrCircuitOpen", err)
	}
	// ...and a good one closes it.
	mu.Lock()
	ok = true
	mu.Unlock()
	time.Sleep(250 * time.Millisecond)
	if st, _, err := get(t, c, srv.URL); err != nil || st != 200 {
		t.Fatalf("trial call: %d %v", st, err)
	}
	if s := rt.CircuitState(srv.authority()); s != resilience.CircuitClosed {
		t.Fatalf("breaker is %v after a good trial call, want closed", s)
	}
}

func TestBreakerPerAuthority(t *testing.T) {
	bad := newServer(t, status(500))
	good := newServer(t, func(_ int, w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "good") })
	o := testOptions()
	o.CircuitBreaker.MinimumThroughput = 4
	o.CircuitBreaker.FailureRatio = 0.5
	o.CircuitBreaker.BreakDuration = time.Minute
	c, rt := newClient(t, &resilience.TransportConfig{Options: o, Resolver: resolverFor(bad, good)})
	for i := 0; i < 20; i++ {
		st, body, err := get(t, c, "http://catalog/items")
		if err != nil || st != 200 || body != "good" {
			t.Fatalf("request %d: %d %q %v, want every call to end on the good instance", i, st, body, err)
		}
	}
	if s := rt.CircuitState(bad.authority()); s != resilience.CircuitOpen {
		t.Fatalf("bad instance's breaker is %v, want open", s)
	}
	if s := rt.CircuitState(good.authority()); s != resilience.CircuitClosed {
		t.Fatalf("good instance's breaker is %v, want closed", s)
	}
	before := bad.hits.Load()
	for i := 0; i < 10; i++ {
		if st, _, err := get(t, c, "http://catalog/items"); err != nil || st != 200 {
			t.Fatalf("request after opening: %d %v", st, err)
		}
	}
	if after := bad.hits.Load(); after != before {
		t.Fatalf("the open instance got %d more requests", after-before)
	}
}

func TestFailedResponsesAreDrainedAndConnectionsReused(t *testing.T) {
	big := strings.Repeat("x", 8<<10)
	srv := newServer(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n%4 != 0 {
			w.WriteHeader(503)
			_, _ = io.WriteString(w, big)
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
	c, _ := newClient(t, &resilience.TransportConfig{Options: testOptions()})
	for i := 0; i < 5; i++ {
		if st, body, err := get(t, c, srv.URL); err != nil || st != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q %v", i, st, body, err)
		}
	}
	if srv.hits.Load() != 20 {
		t.Fatalf("server saw %d requests, want 20", srv.hits.Load())
	}
	if n := srv.conns.Load(); n != 1 {
		t.Fatalf("%d connections for 20 sequential requests, want 1: failed responses leak connections", n)
	}
}

func TestBodyReadableAfterTimeoutsElapse(t *testing.T) {
	srv := newServer(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "head ")
		w.(http.Flusher).Flush()
		time.Sleep(700 * time.Millisecond)
		_, _ = io.WriteString(w, "tail")
	})
	o := testOptions()
	o.AttemptTimeout = 250 * time.Millisecond
	o.TotalRequestTimeout = 300 * time.Millisecond
	o.CircuitBreaker.SamplingDuration = time.Second
	c, _ := newClient(t, &resilience.TransportConfig{Options: o})
	st, body, err := get(t, c, srv.URL)
	if err != nil || st != 200 || body != "head tail" {
		t.Fatalf("GET = %d %q %v: the timeouts must stop at the response headers", st, body, err)
	}
}

func TestConcurrencyLimit(t *testing.T) {
	for _, queue := range []int{0, 1} {
		release := make(chan struct{})
		srv := newServer(t, func(n int, w http.ResponseWriter, _ *http.Request) {
			if n == 1 {
				<-release
			}
			_, _ = io.WriteString(w, "ok")
		})
		o := testOptions()
		o.RateLimiter = resilience.RateLimiterOptions{PermitLimit: 1, QueueLimit: queue}
		c, _ := newClient(t, &resilience.TransportConfig{Options: o})
		first := make(chan error, 1)
		go func() { _, _, err := get(t, c, srv.URL); first <- err }()
		eventually(t, "the first request", func() bool { return srv.hits.Load() == 1 })
		second := make(chan error, 1)
		go func() { _, _, err := get(t, c, srv.URL); second <- err }()
		if queue == 0 {
			err := <-second
			if !errors.Is(err, resilience.ErrRejected) || !errors.Is(err, bulkhead.ErrFull) {
				t.Fatalf("second request error = %v, want ErrRejected", err)
			}
			close(release)
		} else {
			time.Sleep(50 * time.Millisecond)
			if srv.hits.Load() != 1 {
				t.Fatal("the queued request was sent while the limit was reached")
			}
			close(release)
			if err := <-second; err != nil {
				t.Fatalf("queued request: %v", err)
			}
		}
		if err := <-first; err != nil {
			t.Fatalf("first request: %v", err)
		}
	}
}

func TestResolutionKeepsPathAndHost(t *testing.T) {
	srv := newServer(t, func(_ int, w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, r.URL.RequestURI()) })
	c, _ := newClient(t, &resilience.TransportConfig{Options: testOptions(), Resolver: resolverFor(srv)})
	st, body, err := get(t, c, "http://catalog/items/7?full=1")
	if err != nil || st != 200 || body != "/items/7?full=1" {
		t.Fatalf("GET = %d %q %v", st, body, err)
	}
	req, _ := http.NewRequest("GET", "http://catalog/", nil)
	req.Host = "catalog.internal"
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	hosts := srv.Hosts()
	if hosts[0] != srv.authority() || hosts[1] != "catalog.internal" {
		t.Fatalf("Host headers %q, want the resolved authority then the caller's own", hosts)
	}
}

func TestRequestIsNotModified(t *testing.T) {
	srv := newServer(t, failFirst(1, 503))
	c, _ := newClient(t, &resilience.TransportConfig{Options: testOptions(), Resolver: resolverFor(srv)})
	req, _ := http.NewRequest("PUT", "http://catalog/x", strings.NewReader("b"))
	before := *req
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if req.URL.Host != "catalog" || req.Host != before.Host || req.URL != before.URL {
		t.Fatalf("request modified: URL %v Host %q", req.URL, req.Host)
	}
}

func TestSwitchingProtocolsBodyStaysWritable(t *testing.T) {
	srv := newServer(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		conn, rw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		_ = rw.Flush()
		buf := make([]byte, 4)
		if _, err := io.ReadFull(rw, buf); err == nil {
			_, _ = rw.Write(buf)
			_ = rw.Flush()
		}
	})
	c, _ := newClient(t, &resilience.TransportConfig{Options: testOptions()})
	req, _ := http.NewRequest("GET", srv.URL, nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "echo")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rwc, ok := resp.Body.(io.ReadWriteCloser)
	if resp.StatusCode != 101 || !ok {
		t.Fatalf("status %d, body %T: want a writable 101 body", resp.StatusCode, resp.Body)
	}
	if _, err := rwc.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(rwc, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo = %q, %v", buf, err)
	}
}
