package cache

import (
	"context"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/internal/poll"
	"github.com/goaspire/goaspire/testserver"
)

// product is the value type of most tests and benchmarks.
type product struct {
	ID    int      `json:"id"`
	Name  string   `json:"name"`
	Price float64  `json:"price"`
	Tags  []string `json:"tags"`
}

func sampleProduct(id int) product {
	return product{ID: id, Name: "Contoso Trail Runner", Price: 129.5, Tags: []string{"shoes", "outdoor"}}
}

// quietLogger drops logs; tests that care about logs use their own.
func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// openClient connects to srv the way a service under Aspire would.
func openClient(t testing.TB, srv *testserver.Redis, extra ...string) redis.UniversalClient {
	t.Helper()
	values := map[string]string{"ConnectionStrings__cache": srv.ConnectionString()}
	if f := srv.CACertFile(); f != "" {
		values["SSL_CERT_FILE"] = f
	}
	for i := 0; i+1 < len(extra); i += 2 {
		values[extra[i]] = extra[i+1]
	}
	rdb, err := openRedis(context.Background(), discovery.FromMap(values), "cache")
	if err != nil {
		t.Fatalf("open redis: %v", err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// newCache makes a cache and closes it when the test ends.
func newCache[T any](t testing.TB, rdb redis.UniversalClient, name string, o Options) *Cache[T] {
	t.Helper()
	if o.Logger == nil {
		o.Logger = quietLogger()
	}
	c, err := New[T](rdb, name, o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, within, what, cond)
}

// waitSubscribed waits until the cache's invalidation channel has the
// given number of subscribers on the server.
func waitSubscribed(t testing.TB, rdb redis.UniversalClient, channel string, n int64) {
	t.Helper()
	eventually(t, 5*time.Second, "subscribers on "+channel, func() bool {
		m, err := rdb.PubSubNumSub(context.Background(), channel).Result()
		return err == nil && m[channel] >= n
	})
}

// proxy forwards TCP connections to a server and can black-hole them:
// connections stay open but no byte gets through, as in a network
// partition, which no error reveals.
type proxy struct {
	ln     net.Listener
	target string
	hole   atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
	wg     sync.WaitGroup
}

func newProxy(t testing.TB, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(c, s)
		go p.pipe(s, c)
	}
}

func (p *proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.hole.Load() {
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			_ = dst.Close()
			return
		}
	}
}

func (p *proxy) close() {
	_ = p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
