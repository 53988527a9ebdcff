package resilience_test

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/goaspire/goaspire/resilience"
)

// TestRetriesGoToAnotherInstance sends 2000 GETs from 16 goroutines to a
// service of two instances, A failing 40 % of its requests (30 % with 503
// and 10 % by resetting the connection, or, in the second case, by
// hanging past the attempt timeout) and B healthy. Within one call no
// attempt may follow one on A to A again while B is there (B must be
// tried in between), and an open breaker on A may not be a call's final
// error: every call succeeds.
func TestRetriesGoToAnotherInstance(t *testing.T) {
	cases := []struct {
		name string
		fail func(w http.ResponseWriter, r *http.Request)
	}{
		{"503s and resets", nil},
		{"hangs", func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			const calls, workers = 2000, 16
			a := newServer(t, func(_ int, w http.ResponseWriter, r *http.Request) {
				p := rand.IntN(100)
				switch {
				case p < 10 && tc.fail != nil:
					tc.fail(w, r)
				case p < 10:
					closeConn(w)
				case p < 40:
					w.WriteHeader(http.StatusServiceUnavailable)
				default:
					_, _ = io.WriteString(w, "a")
				}
			})
			b := newServer(t, func(_ int, w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "b") })
			o := resilience.DefaultOptions()
			o.Retry.Delay = time.Millisecond
			o.AttemptTimeout = time.Second // cuts A's hangs; B answers well within it even on a loaded machine
			o.CircuitBreaker.MinimumThroughput = 20
			o.CircuitBreaker.BreakDuration = 100 * time.Millisecond
			// The base transport counts the pipeline's attempts per call
			// and instance (what A itself sees includes net/http's own
			// retry of a request on a reused connection it closed).
			var mu sync.Mutex
			onA := map[string]int{}      // call id -> attempts sent to A
			seq := map[string][]string{} // call id -> the attempts' instances and outcomes
			tr := newBase(t)
			base := roundTripFunc(func(r *http.Request) (*http.Response, error) {
				id := r.Header.Get("X-Call")
				host := "B"
				if r.URL.Host == a.authority() {
					host = "A"
					mu.Lock()
					onA[id]++
					mu.Unlock()
				}
				resp, err := tr.RoundTrip(r)
				out := "ok"
				if err != nil {
					out = err.Error()
				} else if resp.StatusCode != http.StatusOK {
					out = resp.Status
				}
				mu.Lock()
				seq[id] = append(seq[id], host+": "+out)
				mu.Unlock()
				return resp, err
			})
			rt, err := resilience.NewTransport(base, &resilience.TransportConfig{Options: o, Resolver: resolverFor(a, b)})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = rt.Close() })
			c := &http.Client{Transport: rt}

			var next, failed atomic.Int32
			var firstErr atomic.Value
			var wg sync.WaitGroup
			for range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1)
						if i > calls {
							return
						}
						req, _ := http.NewRequest(http.MethodGet, "http://catalog/items", nil)
						req.Header.Set("X-Call", strconv.Itoa(int(i)))
						resp, err := c.Do(req)
						if err == nil {
							_, _ = io.Copy(io.Discard, resp.Body)
							_ = resp.Body.Close()
							if resp.StatusCode != http.StatusOK {
								err = fmt.Errorf("status %d", resp.StatusCode)
							}
						}
						if err != nil {
							failed.Add(1)
							firstErr.CompareAndSwap(nil, err.Error())
						}
					}
				}()
			}
			wg.Wait()
			if n := failed.Load(); n > 0 {
				t.Errorf("%d of %d calls failed (%.2f %% success), first: %v", n, calls, 100*float64(calls-n)/calls, firstErr.Load())
			}
			mu.Lock()
			defer mu.Unlock()
			twice := 0
			for id, attempts := range seq {
				// Back to A is allowed once B was tried and failed (an
				// attempt timeout can drop B's late answer on a loaded
				// machine), never straight after A.
				for i := 1; i < len(attempts); i++ {
					if attempts[i][0] == 'A' && attempts[i-1][0] == 'A' {
						twice++
						t.Logf("call %s: %q", id, attempts)
						break
					}
				}
			}
			if twice > 0 {
				t.Errorf("%d calls sent A two attempts in a row while B was there", twice)
			}
			if len(onA) == 0 || b.hits.Load() == 0 {
				t.Fatalf("A saw %d calls, B %d requests: the test did not spread calls over both instances", len(onA), b.hits.Load())
			}
			t.Logf("A: %d calls, B: %d requests, A's breaker %v", len(onA), b.hits.Load(), rt.CircuitState(a.authority()))
		})
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
