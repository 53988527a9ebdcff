package discovery

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/goaspire/goaspire/internal/dnstest"
	"github.com/goaspire/goaspire/internal/poll"
)

// eventually polls cond until it holds; the deadline only ends a test that
// would otherwise hang.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, 20*time.Second, what, cond)
}

func ips(s ...string) []netip.Addr {
	out := make([]netip.Addr, len(s))
	for i, v := range s {
		out[i] = netip.MustParseAddr(v)
	}
	return out
}

func newDNSResolver(t *testing.T, srv *dnstest.Server, values map[string]string) *Resolver {
	t.Helper()
	r := NewResolver(FromMap(values), WithNetResolver(srv.Resolver()), withRoot(fstest.MapFS{}))
	t.Cleanup(func() { r.Close() })
	return r
}

func hostsOf(t *testing.T, r *Resolver, raw string) []string {
	t.Helper()
	eps, err := r.Endpoints(mustURL(t, raw))
	if err != nil {
		t.Fatalf("Endpoints(%s): %v", raw, err)
	}
	var out []string
	for _, ep := range eps {
		out = append(out, ep.Scheme+"://"+ep.Host)
	}
	return out
}

// roundRobin resolves raw n times and counts the hosts handed out.
func roundRobin(t *testing.T, r *Resolver, raw string, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		u, err := r.Resolve(mustURL(t, raw))
		if err != nil {
			t.Fatalf("Resolve(%s): %v", raw, err)
		}
		got[u.Scheme+"://"+u.Host]++
	}
	return got
}

const fast = "00:00:00.02"

func TestDNSRefreshA(t *testing.T) {
	srv := dnstest.Start(t)
	srv.Set("catalog", dnstest.Records{IPs: ips("10.0.0.1", "10.0.0.2", "fd00::3")})
	r := newDNSResolver(t, srv, map[string]string{
		"Aspire:ServiceDiscovery:Dns:Enabled":              "true",
		"Aspire:ServiceDiscovery:Dns:DefaultRefreshPeriod": fast,
	})

	tests := []struct {
		url  string
		want []string
	}{
		{"http://catalog", []string{"http://10.0.0.1", "http://10.0.0.2", "http://[fd00::3]"}},
		{"https+http://catalog:8443/items", []string{"https://10.0.0.1:8443", "https://10.0.0.2:8443", "https://[fd00::3]:8443"}},
	}
	for _, tt := range tests {
		if got := hostsOf(t, r, tt.url); !slices.Equal(got, tt.want) {
			t.Errorf("Endpoints(%s) = %v, want %v", tt.url, got, tt.want)
		}
	}
	if got := roundRobin(t, r, "http://catalog/x", 9); len(got) != 3 || got["http://10.0.0.1"] != 3 || got["http://[fd00::3]"] != 3 {
		t.Errorf("round-robin over 3 instances = %v", got)
	}

	// An instance appears, one goes away.
	srv.Set("catalog", dnstest.Records{IPs: ips("10.0.0.2", "10.0.0.4", "fd00::3")})
	want := []string{"http://10.0.0.2", "http://10.0.0.4", "http://[fd00::3]"}
	eventually(t, "refresh shows the new set", func() bool { return slices.Equal(hostsOf(t, r, "http://catalog"), want) })
	got := roundRobin(t, r, "http://catalog/x", 6)
	if len(got) != 3 || got["http://10.0.0.1"] != 0 || got["http://10.0.0.4"] != 2 {
		t.Errorf("round-robin after refresh = %v, want 2 each of %v", got, want)
	}

	// A failing server keeps the last set.
	srv.Fail(true)
	n := srv.Queries("catalog")
	eventually(t, "failed refreshes", func() bool { return srv.Queries("catalog") >= n+4 })
	if got := hostsOf(t, r, "http://catalog"); !slices.Equal(got, want) {
		t.Errorf("after failed refreshes Endpoints = %v, want the last set %v", got, want)
	}

	// Configured endpoints win; IP literals are not looked up.
	if got := hostsOf(t, r, "http://127.0.0.1:9"); got != nil {
		t.Errorf("IP literal: Endpoints = %v, want pass-through", got)
	}
}

func TestDNSConfiguredWins(t *testing.T) {
	srv := dnstest.Start(t)
	srv.Set("catalog", dnstest.Records{IPs: ips("10.0.0.1")})
	r := newDNSResolver(t, srv, map[string]string{
		"Aspire:ServiceDiscovery:Dns:Enabled": "true",
		"services:catalog:http:0":             "http://localhost:5001",
	})
	if got, want := hostsOf(t, r, "http://catalog"), []string{"http://localhost:5001"}; !slices.Equal(got, want) {
		t.Errorf("Endpoints = %v, want %v", got, want)
	}
	if n := srv.Queries("catalog"); n != 0 {
		t.Errorf("DNS asked %d times about a configured name", n)
	}
	ch, stop, err := r.Watch(mustURL(t, "http://catalog"))
	if err != nil || ch != nil {
		t.Errorf("Watch of a configured name = %v, %v; want a nil channel", ch, err)
	}
	stop()
}

func TestDNSDisabled(t *testing.T) {
	srv := dnstest.Start(t)
	srv.Set("catalog", dnstest.Records{IPs: ips("10.0.0.1")})
	for _, v := range []string{"", "false"} {
		r := newDNSResolver(t, srv, map[string]string{"Aspire:ServiceDiscovery:Dns:Enabled": v})
		if got := hostsOf(t, r, "http://catalog"); got != nil {
			t.Errorf("Enabled=%q: Endpoints = %v, want pass-through", v, got)
		}
	}
	if n := srv.Queries("catalog"); n != 0 {
		t.Errorf("DNS asked %d times while disabled", n)
	}
}

func TestDNSRetryFaster(t *testing.T) {
	srv := dnstest.Start(t)
	srv.Fail(true)
	r := newDNSResolver(t, srv, map[string]string{
		"Aspire:ServiceDiscovery:Dns:Enabled": "true",
		// A set with records would not be looked up again for an hour:
		// only the retry period can bring the records below.
		"Aspire:ServiceDiscovery:Dns:DefaultRefreshPeriod": "01:00:00",
		"Aspire:ServiceDiscovery:Dns:MinRetryPeriod":       "00:00:00.01",
		"Aspire:ServiceDiscovery:Dns:MaxRetryPeriod":       "00:00:00.05",
	})
	u := mustURL(t, "http://catalog")
	_, err := r.Endpoints(u)
	if err == nil || !strings.Contains(err.Error(), `"catalog"`) {
		t.Fatalf("Endpoints with a failing server: err = %v, want one naming the DNS name", err)
	}
	if _, err := r.Resolve(u); err == nil {
		t.Error("Resolve with a failing server: no error")
	}
	srv.Set("catalog", dnstest.Records{IPs: ips("10.0.0.7")})
	srv.Fail(false)
	eventually(t, "a retry finds the records", func() bool {
		eps, err := r.Endpoints(u)
		return err == nil && len(eps) == 1 && eps[0].Host == "10.0.0.7"
	})

	// A name without records passes through until it has some.
	if got := hostsOf(t, r, "http://orders"); got != nil {
		t.Errorf("no records: Endpoints = %v, want pass-through", got)
	}
	srv.Set("orders", dnstest.Records{IPs: ips("10.0.0.8")})
	eventually(t, "records of a name that had none", func() bool {
		return slices.Equal(hostsOf(t, r, "http://orders"), []string{"http://10.0.0.8"})
	})
}

func TestDNSRetryPeriods(t *testing.T) {
	tm := dnsTimings{refresh: time.Minute, minRetry: time.Second, maxRetry: 30 * time.Second, factor: 2}
	tests := []struct {
		prev       time.Duration
		hadRecords bool
		want       time.Duration
	}{
		{0, false, time.Second},
		{10 * time.Minute, true, time.Second},
		{time.Second, false, 2 * time.Second},
		{8 * time.Second, false, 16 * time.Second},
		{16 * time.Second, false, 30 * time.Second},
		{30 * time.Second, false, 30 * time.Second},
	}
	for _, tt := range tests {
		if got := tm.retryAfter(tt.prev, tt.hadRecords); got != tt.want {
			t.Errorf("retryAfter(%v, %v) = %v, want %v", tt.prev, tt.hadRecords, got, tt.want)
		}
	}
}

func TestDNSSRV(t *testing.T) {
	srv := dnstest.Start(t)
	srv.Set("_default._tcp.basket.shop.svc.cluster.local", dnstest.Records{SRV: []dnstest.SRV{
		{Target: "basket-0.basket.shop.svc.cluster.local", Port: 8080},
		{Target: "basket-1.basket.shop.svc.cluster.local", Port: 8080},
	}})
	srv.Set("_dashboard._tcp.basket.shop.svc.cluster.local", dnstest.Records{SRV: []dnstest.SRV{
		{Target: "basket-0.basket.shop.svc.cluster.local", Port: 8888},
	}})
	r := newDNSResolver(t, srv, map[string]string{
		"Aspire:ServiceDiscovery:DnsSrv:Enabled":              "true",
		"Aspire:ServiceDiscovery:DnsSrv:QuerySuffix":          ".shop.svc.cluster.local",
		"Aspire:ServiceDiscovery:DnsSrv:DefaultRefreshPeriod": fast,
	})
	tests := []struct {
		url  string
		want []string
	}{
		{"http://basket", []string{"http://basket-0.basket.shop.svc.cluster.local:8080", "http://basket-1.basket.shop.svc.cluster.local:8080"}},
		{"http://_dashboard.basket:1", []string{"http://basket-0.basket.shop.svc.cluster.local:8888"}},
	}
	for _, tt := range tests {
		if got := hostsOf(t, r, tt.url); !slices.Equal(got, tt.want) {
			t.Errorf("Endpoints(%s) = %v, want %v", tt.url, got, tt.want)
		}
	}

	ch, stop, err := r.Watch(mustURL(t, "http://basket"))
	if err != nil || ch == nil {
		t.Fatalf("Watch = %v, %v", ch, err)
	}
	defer stop()
	srv.Set("_default._tcp.basket.shop.svc.cluster.local", dnstest.Records{SRV: []dnstest.SRV{
		{Target: "basket-1.basket.shop.svc.cluster.local", Port: 8080},
		{Target: "basket-2.basket.shop.svc.cluster.local", Port: 8081},
	}})
	want := []string{"http://basket-1.basket.shop.svc.cluster.local:8080", "http://basket-2.basket.shop.svc.cluster.local:8081"}
	for !slices.Equal(hostsOf(t, r, "http://basket"), want) {
		select {
		case <-ch:
		case <-time.After(20 * time.Second):
			t.Fatal("no change notice")
		}
	}
}

func TestDNSKubernetesSuffix(t *testing.T) {
	pod := map[string]string{"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
	sa := "var/run/secrets/kubernetes.io/serviceaccount/"
	mounted := func(files map[string]string) fstest.MapFS {
		fsys := fstest.MapFS{sa + "token": {Data: []byte("t")}, sa + "ca.crt": {Data: []byte("c")}}
		for k, v := range files {
			fsys[k] = &fstest.MapFile{Data: []byte(v)}
		}
		return fsys
	}
	tests := []struct {
		name string
		env  map[string]string
		fsys fstest.MapFS
		want string
	}{
		{"resolv.conf search", pod, mounted(map[string]string{
			"etc/resolv.conf": "nameserver 10.96.0.10\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n",
			sa + "namespace":  "other",
		}), "shop.svc.cluster.local"},
		{"namespace file", pod, mounted(map[string]string{"etc/resolv.conf": "nameserver 10.96.0.10\n", sa + "namespace": "shop\n"}), "shop.svc.cluster.local"},
		{"not in a pod", nil, mounted(map[string]string{"etc/resolv.conf": "search shop.svc.cluster.local\n"}), ""},
		{"no service account", pod, fstest.MapFS{"etc/resolv.conf": {Data: []byte("search shop.svc.cluster.local\n")}}, ""},
		{"nothing to read", pod, mounted(nil), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := kubernetesSuffix(FromMap(tt.env), tt.fsys); got != tt.want {
				t.Errorf("suffix = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestDNSSRVWithoutSuffix(t *testing.T) {
	srv := dnstest.Start(t)
	srv.Set("basket", dnstest.Records{IPs: ips("10.0.0.9")})
	tests := []struct {
		name   string
		values map[string]string
		want   []string
	}{
		{"SRV only: pass-through", map[string]string{"Aspire:ServiceDiscovery:DnsSrv:Enabled": "true"}, nil},
		{"SRV and A: A", map[string]string{"Aspire:ServiceDiscovery:DnsSrv:Enabled": "true", "Aspire:ServiceDiscovery:Dns:Enabled": "true"}, []string{"http://10.0.0.9"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newDNSResolver(t, srv, tt.values)
			if got := hostsOf(t, r, "http://basket"); !slices.Equal(got, tt.want) {
				t.Errorf("Endpoints = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestDNSBadSettings(t *testing.T) {
	tests := []struct {
		values map[string]string
		key    string
	}{
		{map[string]string{"Aspire:ServiceDiscovery:Dns:Enabled": "maybe"}, "Aspire:ServiceDiscovery:Dns:Enabled"},
		{map[string]string{"Aspire:ServiceDiscovery:Dns:Enabled": "true", "Aspire:ServiceDiscovery:Dns:MinRetryPeriod": "soon"}, "Aspire:ServiceDiscovery:Dns:MinRetryPeriod"},
		{map[string]string{"Aspire:ServiceDiscovery:DnsSrv:Enabled": "true", "Aspire:ServiceDiscovery:DnsSrv:RetryBackOffFactor": "0.5"}, "Aspire:ServiceDiscovery:DnsSrv:RetryBackOffFactor"},
		{map[string]string{"Aspire:ServiceDiscovery:Dns:Enabled": "true", "Aspire:ServiceDiscovery:Dns:DefaultRefreshPeriod": "-00:00:01"}, "Aspire:ServiceDiscovery:Dns:DefaultRefreshPeriod"},
	}
	for _, tt := range tests {
		r := NewResolver(FromMap(tt.values))
		_, err := r.Endpoints(mustURL(t, "http://catalog"))
		var ke *KeyError
		if !errors.As(err, &ke) || !strings.EqualFold(ke.Key, tt.key) {
			t.Errorf("%v: err = %v, want a KeyError for %s", tt.values, err, tt.key)
		}
		r.Close()
	}
}

func TestDNSIdleStopAndClose(t *testing.T) {
	srv := dnstest.Start(t)
	srv.Set("catalog", dnstest.Records{IPs: ips("10.0.0.1")})
	r := newDNSResolver(t, srv, map[string]string{
		"Aspire:ServiceDiscovery:Dns:Enabled":              "true",
		"Aspire:ServiceDiscovery:Dns:DefaultRefreshPeriod": fast,
	})
	u := mustURL(t, "http://catalog")
	hostsOf(t, r, "http://catalog")
	res, _ := r.resolve(u)
	e := res.dns
	running := func() bool { e.mu.Lock(); defer e.mu.Unlock(); return e.running }
	eventually(t, "refresh stops when unused", func() bool { return !running() })

	// The next use starts it again and waits for a fresh lookup.
	srv.Set("catalog", dnstest.Records{IPs: ips("10.0.0.2")})
	if got, want := hostsOf(t, r, "http://catalog"), []string{"http://10.0.0.2"}; !slices.Equal(got, want) {
		t.Errorf("after restart Endpoints = %v, want %v", got, want)
	}

	r.Close()
	r.Close()
	if running() {
		t.Error("refresh still running after Close")
	}
	if got, want := hostsOf(t, r, "http://catalog"), []string{"http://10.0.0.2"}; !slices.Equal(got, want) {
		t.Errorf("after Close Endpoints = %v, want the last set %v", got, want)
	}
	if _, err := r.Endpoints(mustURL(t, "http://orders")); !errors.Is(err, ErrResolverClosed) {
		t.Errorf("new name after Close: err = %v, want ErrResolverClosed", err)
	}
}

// TestDNSTransport: an http.Client through the Transport follows the A
// records of a headless service: two instances on one port at 127.0.0.1
// and 127.0.0.2, one of which leaves.
func TestDNSTransport(t *testing.T) {
	serve := func(addr, name string) string {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Skipf("cannot listen on %s: %v", addr, err)
		}
		s := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, name) })}
		go s.Serve(ln)
		t.Cleanup(func() { s.Close() })
		return ln.Addr().String()
	}
	first := serve("127.0.0.1:0", "one")
	_, port, _ := net.SplitHostPort(first)
	serve("127.0.0.2:"+port, "two")

	srv := dnstest.Start(t)
	srv.Set("catalog", dnstest.Records{IPs: ips("127.0.0.1", "127.0.0.2")})
	r := newDNSResolver(t, srv, map[string]string{
		"Aspire:ServiceDiscovery:Dns:Enabled":              "true",
		"Aspire:ServiceDiscovery:Dns:DefaultRefreshPeriod": fast,
	})
	base := &http.Transport{}
	defer base.CloseIdleConnections()
	c := &http.Client{Transport: NewTransport(r, base)}
	get := func() string {
		resp, err := c.Get("http://catalog:" + port + "/")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	got := map[string]int{}
	for range 4 {
		got[get()]++
	}
	if got["one"] != 2 || got["two"] != 2 {
		t.Errorf("answers = %v, want 2 each from one and two", got)
	}
	srv.Set("catalog", dnstest.Records{IPs: ips("127.0.0.2")})
	eventually(t, "the removed instance leaves", func() bool { a, b := get(), get(); return a == "two" && b == "two" })
	for range 4 {
		if s := get(); s != "two" {
			t.Fatalf("answer from %q after it left DNS", s)
		}
	}
}

// BenchmarkResolveSource compares Resolve over three configured instances
// with Resolve over three DNS-discovered ones (a current set, between
// refreshes).
func BenchmarkResolveSource(b *testing.B) {
	srv := dnstest.Start(b)
	srv.Set("catalog", dnstest.Records{IPs: ips("10.0.0.1", "10.0.0.2", "10.0.0.3")})
	config := NewResolver(FromMap(map[string]string{
		"services__catalog__http__0": "http://10.0.0.1:8080",
		"services__catalog__http__1": "http://10.0.0.2:8080",
		"services__catalog__http__2": "http://10.0.0.3:8080",
	}))
	dns := NewResolver(FromMap(map[string]string{"Aspire:ServiceDiscovery:Dns:Enabled": "true"}),
		WithNetResolver(srv.Resolver()), withRoot(fstest.MapFS{}))
	defer dns.Close()
	for _, bb := range []struct {
		name string
		r    *Resolver
	}{{"config", config}, {"dns", dns}} {
		b.Run(bb.name, func(b *testing.B) {
			u := mustURL(b, "https+http://catalog:8080/products/1")
			if eps, err := bb.r.Endpoints(u); err != nil || len(eps) != 3 {
				b.Fatalf("Endpoints = %v, %v", eps, err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bb.r.Resolve(u); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestDNSCloseDuringLookup: a first use waiting on a server that does not
// answer returns when the Resolver is closed.
func TestDNSCloseDuringLookup(t *testing.T) {
	srv := dnstest.Start(t)
	srv.Drop(true)
	r := newDNSResolver(t, srv, map[string]string{"Aspire:ServiceDiscovery:Dns:Enabled": "true"})
	errc := make(chan error, 1)
	go func() {
		_, err := r.Endpoints(mustURL(t, "http://catalog"))
		errc <- err
	}()
	eventually(t, "the lookup reaches the server", func() bool { return srv.Queries("catalog") > 0 })
	r.Close()
	if err := <-errc; !errors.Is(err, ErrResolverClosed) {
		t.Errorf("Endpoints = %v, want ErrResolverClosed", err)
	}
}

// TestDNSWatchFirst: a Watch before any other use starts the lookup, and
// Endpoints waits for it.
func TestDNSWatchFirst(t *testing.T) {
	srv := dnstest.Start(t)
	srv.Set("catalog", dnstest.Records{IPs: ips("10.0.0.1")})
	r := newDNSResolver(t, srv, map[string]string{"Aspire:ServiceDiscovery:Dns:Enabled": "true"})
	u := mustURL(t, "http://catalog")
	_, stop, err := r.Watch(u)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if got, want := hostsOf(t, r, "http://catalog"), []string{"http://10.0.0.1"}; !slices.Equal(got, want) {
		t.Errorf("Endpoints = %v, want %v", got, want)
	}
}
