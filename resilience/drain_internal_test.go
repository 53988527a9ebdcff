package resilience

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// A failed response whose body never ends must not hold up the retry.
func TestDrainIsBounded(t *testing.T) {
	drainTimeoutForTest.Store(int64(50 * time.Millisecond))
	defer drainTimeoutForTest.Store(0)
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) == 1 {
			w.WriteHeader(503)
			_, _ = io.WriteString(w, "trickle")
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	defer srv.Close()
	base := http.DefaultTransport.(*http.Transport).Clone()
	defer base.CloseIdleConnections()
	o := DefaultOptions()
	o.Retry.Delay = time.Millisecond
	rt, err := NewTransport(base, &TransportConfig{Options: o})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	start := time.Now()
	resp, err := (&http.Client{Transport: rt}).Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "ok" || time.Since(start) > 3*time.Second {
		t.Fatalf("got %q after %v", b, time.Since(start))
	}
}
