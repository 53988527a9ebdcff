package resilience_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/internal/dnstest"
	"github.com/goaspire/goaspire/internal/syncbuf"
	"github.com/goaspire/goaspire/resilience"
)

// countingTransport counts the attempts that reach the network.
type countingTransport struct {
	n    atomic.Int32
	next http.RoundTripper
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.next.RoundTrip(r)
}

// TestUnresolvedServiceIsNotRetried: a service name nothing configures and
// DNS does not know fails at the first attempt with an error naming the
// variables, one DNS lookup per call, and one warning for all the calls;
// a temporary DNS failure is still retried.
func TestUnresolvedServiceIsNotRetried(t *testing.T) {
	dns := dnstest.Start(t)
	d := &net.Dialer{Resolver: dns.Resolver(), Timeout: time.Minute}
	tr := &http.Transport{DialContext: d.DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	base := &countingTransport{next: tr}

	// One lookup's worth of questions, as the dialer asks them.
	if _, err := dns.Resolver().LookupIPAddr(context.Background(), "pricng"); err == nil {
		t.Fatal("pricng resolved")
	}
	perLookup := dns.Queries("pricng")
	if perLookup == 0 {
		t.Fatal("no question reached the DNS server")
	}

	var logs syncbuf.Buffer
	c, err := resilience.LoadTransportConfig(discovery.FromMap(nil), "")
	if err != nil {
		t.Fatal(err)
	}
	c.Resolver = discovery.NewResolver(discovery.FromMap(map[string]string{"services__pricing__http__0": "http://127.0.0.1:1"}))
	c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	// Quick retries, generous timeouts: the temporary failure below must
	// be retried however loaded the machine.
	c.Options.Retry.Delay = time.Millisecond
	c.Options.TotalRequestTimeout = time.Minute
	rt, err := resilience.NewTransport(base, c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	client := &http.Client{Transport: rt}

	const calls = 5
	for i := range calls {
		before := base.n.Load()
		_, err := client.Get("https+http://pricng/prices")
		var uerr *discovery.UnresolvedError
		if !errors.As(err, &uerr) {
			t.Fatalf("call %d: err = %v, want a *discovery.UnresolvedError", i, err)
		}
		for _, v := range []string{"services__pricng__http__0", "PRICNG_HTTP", "services__pricng__https__0", "PRICNG_HTTPS"} {
			if !strings.Contains(err.Error(), v) {
				t.Errorf("error %q does not name %s", err, v)
			}
		}
		if n := base.n.Load() - before; n != 1 {
			t.Fatalf("call %d made %d attempts, want 1", i, n)
		}
	}
	if got, want := dns.Queries("pricng"), perLookup*(1+calls); got != want {
		t.Errorf("DNS questions about pricng = %d, want %d (one lookup per call)", got, want)
	}
	if n := strings.Count(logs.String(), "DNS does not know it"); n != 1 {
		t.Errorf("%d warnings for %d calls, want 1:\n%s", n, calls, logs.String())
	}

	// A temporary DNS failure is transient: it is retried.
	dns.Fail(true)
	before := base.n.Load()
	_, err = client.Get("https+http://pricng/prices")
	var uerr *discovery.UnresolvedError
	if err == nil || errors.As(err, &uerr) {
		t.Fatalf("with a failing DNS server: err = %v, want a DNS error", err)
	}
	if n := base.n.Load() - before; n < 2 {
		t.Errorf("a temporary DNS failure made %d attempts, want retries", n)
	}
}

func TestUnresolvedIsNotTransient(t *testing.T) {
	err := &discovery.UnresolvedError{Service: "pricng", Err: &net.OpError{Op: "dial", Err: &net.DNSError{Name: "pricng", IsNotFound: true}}}
	if resilience.IsTransientHTTP(nil, err) {
		t.Error("IsTransientHTTP(UnresolvedError) = true")
	}
	if resilience.IsTransient(err) {
		t.Error("IsTransient(UnresolvedError) = true")
	}
}
