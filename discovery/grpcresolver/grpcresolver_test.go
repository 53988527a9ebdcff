package grpcresolver_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/discovery/grpcresolver"
	"github.com/goaspire/goaspire/internal/dnstest"
	"github.com/goaspire/goaspire/internal/grpctest"
	"github.com/goaspire/goaspire/internal/grpctest/echopb"
	"github.com/goaspire/goaspire/internal/otlptest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestLookup(t *testing.T) {
	tests := []struct {
		name   string
		env    map[string]string
		lookup string
		want   string // "scheme://host" joined by " "; "" is pass-through
		errKey string
	}{
		{name: "indexed grpc endpoint, every instance", env: map[string]string{
			"services__users__grpc__0": "http://127.0.0.1:9000",
			"services__users__grpc__1": "http://127.0.0.1:9001",
			"services__users__grpc__2": "http://127.0.0.1:9002",
			"services__users__http__0": "http://127.0.0.1:8080",
		}, lookup: "users", want: "http://127.0.0.1:9000 http://127.0.0.1:9001 http://127.0.0.1:9002"},
		{name: "grpc endpoint over https", env: map[string]string{
			"services__users__grpc__0": "https://localhost:9443",
		}, lookup: "users", want: "https://localhost:9443"},
		{name: "Aspire 13 variable", env: map[string]string{"USERS_GRPC": "http://127.0.0.1:9000", "USERS_HTTP": "http://127.0.0.1:8080"},
			lookup: "users", want: "http://127.0.0.1:9000"},
		{name: "encoded Aspire 13 variable", env: map[string]string{"USER_SVC_GRPC": "http://127.0.0.1:9000"},
			lookup: "user-svc", want: "http://127.0.0.1:9000"},
		{name: "https before http without grpc", env: map[string]string{
			"services__users__http__0":  "http://127.0.0.1:8080",
			"services__users__https__0": "https://127.0.0.1:8443",
		}, lookup: "users", want: "https://127.0.0.1:8443"},
		{name: "http alone", env: map[string]string{"services__users__http__0": "http://127.0.0.1:8080"},
			lookup: "users", want: "http://127.0.0.1:8080"},
		{name: "Aspire 13 http variable", env: map[string]string{"USERS_HTTP": "http://127.0.0.1:8080"},
			lookup: "users", want: "http://127.0.0.1:8080"},
		{name: "port on the name is ignored", env: map[string]string{"USERS_GRPC": "http://127.0.0.1:9000"},
			lookup: "users:1234", want: "http://127.0.0.1:9000"},
		{name: "another service's endpoints", env: map[string]string{"services__orders__grpc__0": "http://127.0.0.1:9000"},
			lookup: "users", want: ""},
		{name: "nothing configured", lookup: "users", want: ""},
		{name: "bad value names its key", env: map[string]string{"services__users__grpc__0": "http://u:p@127.0.0.1:9000"},
			lookup: "users", errKey: "services:users:grpc:0"},
		{name: "bad name", lookup: "users/x", errKey: "invalid service name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := discovery.NewResolver(discovery.FromMap(tt.env))
			eps, err := grpcresolver.Lookup(r, tt.lookup)
			if tt.errKey != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errKey) {
					t.Fatalf("Lookup error = %v, want one naming %q", err, tt.errKey)
				}
				if strings.Contains(err.Error(), "u:p") {
					t.Errorf("error shows the user information: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, ep := range eps {
				got = append(got, ep.Scheme+"://"+ep.Host)
			}
			if g := strings.Join(got, " "); g != tt.want {
				t.Errorf("Lookup(%q) = %q, want %q", tt.lookup, g, tt.want)
			}
		})
	}
}

func dial(t *testing.T, env map[string]string, target string, tlsCfg *tls.Config) echopb.EchoClient {
	t.Helper()
	b := grpcresolver.NewBuilder(discovery.NewResolver(discovery.FromMap(env)))
	cc, err := grpc.NewClient(target,
		grpc.WithResolvers(b),
		grpc.WithTransportCredentials(grpcresolver.Credentials(tlsCfg)),
		grpc.WithDefaultServiceConfig(grpcresolver.RoundRobin),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return echopb.NewEchoClient(cc)
}

func call(ctx context.Context, c echopb.EchoClient) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	rep, err := c.Get(ctx, &echopb.EchoRequest{Message: "hi"}, grpc.WaitForReady(true))
	if err != nil {
		return "", err
	}
	return rep.GetInstance(), nil
}

// TestRoundRobin: three instances named by the indexed form each get an
// equal share of the calls.
func TestRoundRobin(t *testing.T) {
	env := map[string]string{}
	for i := 0; i < 3; i++ {
		s := grpctest.Start(t, "echo-"+strconv.Itoa(i), nil)
		env["services__echo__grpc__"+strconv.Itoa(i)] = "http://" + s.Addr
	}
	c := dial(t, env, "aspire:///echo", nil)
	counts := map[string]int{}
	// Wait until every instance is connected, then count a fresh round.
	for len(counts) < 3 {
		inst, err := call(context.Background(), c)
		if err != nil {
			t.Fatal(err)
		}
		counts[inst]++
	}
	clear(counts)
	for i := 0; i < 30; i++ {
		inst, err := call(context.Background(), c)
		if err != nil {
			t.Fatal(err)
		}
		counts[inst]++
	}
	for i := 0; i < 3; i++ {
		if n := counts["echo-"+strconv.Itoa(i)]; n != 10 {
			t.Errorf("echo-%d got %d of 30 calls, want 10 (counts %v)", i, n, counts)
		}
	}
}

// TestTLS: an https endpoint is reached over TLS, trusting the pool given
// to Credentials and checking the certificate against the endpoint's host
// (not the logical name); an untrusted certificate fails.
func TestTLS(t *testing.T) {
	cert, certPEM := otlptest.NewCertificate(t)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	s := grpctest.Start(t, "secure", &cert)
	port := s.Addr[strings.LastIndexByte(s.Addr, ':')+1:]

	tests := []struct {
		name, target string
		env          map[string]string
		pool         *x509.CertPool
		wantErr      bool
	}{
		{"https endpoint", "aspire:///echo", map[string]string{"services__echo__grpc__0": "https://localhost:" + port}, pool, false},
		{"pass-through to DNS", "aspire:///localhost:" + port, nil, pool, false},
		{"untrusted", "aspire:///echo", map[string]string{"services__echo__grpc__0": "https://localhost:" + port}, nil, true},
		{"plaintext to a TLS server", "aspire:///echo", map[string]string{"services__echo__grpc__0": "http://localhost:" + port}, pool, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cfg *tls.Config
			if tt.pool != nil {
				cfg = &tls.Config{RootCAs: tt.pool}
			}
			c := dial(t, tt.env, tt.target, cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			rep, err := c.Get(ctx, &echopb.EchoRequest{})
			if tt.wantErr {
				if err == nil {
					t.Fatal("call succeeded")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if rep.GetInstance() != "secure" {
				t.Errorf("instance = %q", rep.GetInstance())
			}
		})
	}
}

// TestBuildError: a bad endpoint makes the call fail with the key named.
func TestBuildError(t *testing.T) {
	c := dial(t, map[string]string{"USERS_GRPC": "http://a b"}, "aspire:///users", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := c.Get(ctx, &echopb.EchoRequest{})
	var re *discovery.ResolveError
	if err == nil || (!errors.As(err, &re) && !strings.Contains(err.Error(), "USERS_GRPC")) {
		t.Fatalf("call error = %v, want one naming USERS_GRPC", err)
	}
}

// TestDNSRefresh: with SRV discovery on, the ClientConn follows the
// records of a DNS server whose answers change: a new instance gets calls,
// a removed one no longer does.
func TestDNSRefresh(t *testing.T) {
	cert, certPEM := otlptest.NewCertificate(t)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	var ports []uint16
	for i := range 3 {
		s := grpctest.Start(t, "echo-"+strconv.Itoa(i), &cert)
		p, err := strconv.Atoi(s.Addr[strings.LastIndexByte(s.Addr, ':')+1:])
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, uint16(p))
	}
	dns := dnstest.Start(t)
	const name = "_grpc._tcp.echo.shop.svc.cluster.local"
	dns.Set(name, dnstest.Records{SRV: []dnstest.SRV{{Target: "localhost", Port: ports[0]}, {Target: "localhost", Port: ports[1]}}})

	r := discovery.NewResolver(discovery.FromMap(map[string]string{
		"Aspire:ServiceDiscovery:DnsSrv:Enabled":              "true",
		"Aspire:ServiceDiscovery:DnsSrv:QuerySuffix":          "shop.svc.cluster.local",
		"Aspire:ServiceDiscovery:DnsSrv:DefaultRefreshPeriod": "00:00:00.02",
	}), discovery.WithNetResolver(dns.Resolver()))
	defer r.Close()
	cc, err := grpc.NewClient("aspire:///echo",
		grpc.WithResolvers(grpcresolver.NewBuilder(r)),
		grpc.WithTransportCredentials(grpcresolver.Credentials(&tls.Config{RootCAs: pool})),
		grpc.WithDefaultServiceConfig(grpcresolver.RoundRobin),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	c := echopb.NewEchoClient(cc)

	seen := map[string]int{}
	for seen["echo-0"] == 0 || seen["echo-1"] == 0 {
		inst, err := call(context.Background(), c)
		if err != nil {
			t.Fatal(err)
		}
		if inst == "echo-2" {
			t.Fatalf("a call went to echo-2 before it was in DNS")
		}
		seen[inst]++
	}

	dns.Set(name, dnstest.Records{SRV: []dnstest.SRV{{Target: "localhost", Port: ports[1]}, {Target: "localhost", Port: ports[2]}}})
	deadline := time.Now().Add(20 * time.Second)
	for inst := ""; inst != "echo-2"; {
		if time.Now().After(deadline) {
			t.Fatal("echo-2 never got a call after it appeared in DNS")
		}
		if inst, err = call(context.Background(), c); err != nil {
			t.Fatal(err)
		}
	}
	clear(seen)
	for range 20 {
		inst, err := call(context.Background(), c)
		if err != nil {
			t.Fatal(err)
		}
		seen[inst]++
	}
	if seen["echo-0"] != 0 || seen["echo-1"] != 10 || seen["echo-2"] != 10 {
		t.Errorf("calls after the refresh = %v, want 10 each on echo-1 and echo-2", seen)
	}
}
