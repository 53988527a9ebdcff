package resilience_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/goaspire/goaspire/resilience"
)

type valueKey struct{}

// capturing records the contexts of the requests it sends on.
type capturing struct {
	base http.RoundTripper
	mu   sync.Mutex
	ctxs []context.Context
}

func (c *capturing) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.ctxs = append(c.ctxs, r.Context())
	c.mu.Unlock()
	return c.base.RoundTrip(r)
}

func (c *capturing) last() context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ctxs[len(c.ctxs)-1]
}

// TestAttemptContext: whether the caller's context can be canceled or not
// (the pipeline keeps the first attempt's context in the call in the
// latter case), the attempt's context stays alive while the body is read,
// ends when it is closed, ends with the caller's, and the attempt timeout
// cuts a hung attempt that follows successful ones (their timers reused).
func TestAttemptContext(t *testing.T) {
	tests := []struct {
		name   string
		parent func(t *testing.T) (context.Context, context.CancelFunc)
	}{
		{"background", func(*testing.T) (context.Context, context.CancelFunc) { return context.Background(), func() {} }},
		{"cancelable", func(t *testing.T) (context.Context, context.CancelFunc) { return context.WithCancel(t.Context()) }},
		{"values only", func(*testing.T) (context.Context, context.CancelFunc) {
			return context.WithValue(context.Background(), valueKey{}, 1), func() {}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cut := make(chan bool, 1)
			srv := newServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
				if n == 3 {
					select {
					case <-r.Context().Done():
						cut <- true
					case <-time.After(5 * time.Second):
						cut <- false
					}
					return
				}
				_, _ = io.WriteString(w, "ok")
			})
			o := testOptions()
			o.AttemptTimeout = 200 * time.Millisecond
			o.Retry.MaxRetryAttempts = 0
			capt := &capturing{base: newBase(t)}
			rt, err := resilience.NewTransport(capt, &resilience.TransportConfig{Options: o})
			if err != nil {
				t.Fatal(err)
			}
			defer rt.Close()
			c := &http.Client{Transport: rt}

			send := func(ctx context.Context) (*http.Response, error) {
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
				if err != nil {
					t.Fatal(err)
				}
				return c.Do(req)
			}
			for i := range 2 {
				ctx, cancel := tt.parent(t)
				resp, err := send(ctx)
				if err != nil {
					t.Fatalf("request %d: %v", i+1, err)
				}
				actx := capt.last()
				if actx.Err() != nil {
					t.Fatalf("request %d: the attempt's context ended before the body was read", i+1)
				}
				if i == 0 {
					_, _ = io.ReadAll(resp.Body)
					resp.Body.Close()
				} else {
					// The caller's cancellation ends the attempt's context,
					// when the caller's can be canceled.
					cancel()
					if ctx.Done() != nil {
						select {
						case <-actx.Done():
						case <-time.After(10 * time.Second):
							t.Fatal("the caller's cancellation did not reach the attempt")
						}
					}
					resp.Body.Close()
				}
				select {
				case <-actx.Done():
				case <-time.After(10 * time.Second):
					t.Fatalf("request %d: the attempt's context did not end with its body", i+1)
				}
				if actx.Err() == nil {
					t.Fatalf("request %d: Done is closed but Err is nil", i+1)
				}
				cancel()
			}
			ctx, cancel := tt.parent(t)
			defer cancel()
			_, err = send(ctx)
			if !errors.Is(err, resilience.ErrAttemptTimeout) {
				t.Fatalf("hung request: %v, want an attempt timeout", err)
			}
			if !<-cut {
				t.Fatal("the attempt timeout did not cut the hung request")
			}
		})
	}
}
