package resilience_test

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/internal/poll"
	"github.com/goaspire/goaspire/resilience"
)

// server is an httptest server that counts requests and connections and
// records request bodies.
type server struct {
	*httptest.Server
	hits   atomic.Int32
	conns  atomic.Int32 // connections opened
	mu     sync.Mutex
	bodies []string
	hosts  []string
}

// newServer starts a server whose handler receives the 1-based number of
// the request.
func newServer(t *testing.T, h func(n int, w http.ResponseWriter, r *http.Request)) *server {
	t.Helper()
	s := &server{}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.bodies = append(s.bodies, string(b))
		s.hosts = append(s.hosts, r.Host)
		s.mu.Unlock()
		h(int(s.hits.Add(1)), w, r)
	}))
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

func (s *server) Bodies() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.bodies...)
}

func (s *server) Hosts() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.hosts...)
}

// authority is the server's host:port.
func (s *server) authority() string { return s.Listener.Addr().String() }

// status answers with code.
func status(code int) func(int, http.ResponseWriter, *http.Request) {
	return func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(code) }
}

// failFirst answers code to the first n requests, then 200 "ok".
func failFirst(n, code int) func(int, http.ResponseWriter, *http.Request) {
	return func(i int, w http.ResponseWriter, _ *http.Request) {
		if i <= n {
			w.WriteHeader(code)
			_, _ = io.WriteString(w, "try again")
			return
		}
		_, _ = io.WriteString(w, "ok")
	}
}

// hang waits for the request to be canceled (or 10 s).
func hang(_ int, _ http.ResponseWriter, r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-time.After(10 * time.Second):
	}
}

// closeConn hijacks the connection and closes it without answering.
func closeConn(w http.ResponseWriter) {
	conn, _, err := w.(http.Hijacker).Hijack()
	if err == nil {
		_ = conn.Close()
	}
}

// testOptions are the defaults with millisecond delays and timeouts long
// enough not to fire unless a test wants them to.
func testOptions() resilience.Options {
	o := resilience.DefaultOptions()
	o.Retry.Delay = time.Millisecond
	o.TotalRequestTimeout = 20 * time.Second
	o.AttemptTimeout = 10 * time.Second
	o.CircuitBreaker.SamplingDuration = 20 * time.Second
	return o
}

func newBase(t *testing.T) *http.Transport {
	b := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(b.CloseIdleConnections)
	return b
}

// newClient returns a client sending through a standard pipeline over a
// fresh base transport.
func newClient(t *testing.T, c *resilience.TransportConfig) (*http.Client, *resilience.Transport) {
	t.Helper()
	rt, err := resilience.NewTransport(newBase(t), c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Close() })
	return &http.Client{Transport: rt}, rt
}

// resolverFor resolves http://catalog to the given servers.
func resolverFor(servers ...*server) *discovery.Resolver {
	m := map[string]string{}
	for i, s := range servers {
		m["services__catalog__http__"+string(rune('0'+i))] = s.URL
	}
	return discovery.NewResolver(discovery.FromMap(m))
}

// get sends a GET and returns the status and body.
func get(t *testing.T, c *http.Client, url string) (int, string, error) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// eventually polls cond until it holds or a deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, 5*time.Second, what, cond)
}
