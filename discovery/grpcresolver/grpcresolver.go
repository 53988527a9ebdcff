// Package grpcresolver turns logical service names into gRPC addresses
// through a discovery.Resolver, so that grpc-go clients find the instances
// an Aspire AppHost injected:
//
//	b := grpcresolver.NewBuilder(discovery.NewResolver(cfg))
//	conn, err := grpc.NewClient("aspire:///users",
//		grpc.WithResolvers(b),
//		grpc.WithTransportCredentials(grpcresolver.Credentials(nil)),
//		grpc.WithDefaultServiceConfig(grpcresolver.RoundRobin),
//	)
//
// A name resolves to the service's endpoint named "grpc", else its "https"
// endpoint, else its "http" one, in every form the AppHost writes them
// (services__users__grpc__0..N, services__users__https__0,
// USERS_GRPC=http://host:port, ...; see discovery.Resolver). Every
// endpoint found is one address, so with the round_robin policy calls are
// spread over every instance. A name nothing is configured for passes
// through to DNS (grpc's "dns" resolver, port 443 unless the target names
// one) and is reached over TLS.
//
// Configuration does not change after it is loaded, so configured
// addresses are resolved once per ClientConn. A name found by DNS
// discovery (see discovery.Resolver) follows its refreshes: every change
// of the set is pushed to the ClientConn, until the ClientConn is closed.
// Such endpoints take the first scheme, https, so they are reached over
// TLS, checked against the record's name (SRV) or address (A/AAAA). A
// name whose DNS lookup has no records when the ClientConn is built
// passes through to grpc's "dns" resolver; ResolveNow does not hasten a
// refresh.
package grpcresolver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"

	"google.golang.org/grpc/attributes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"

	"github.com/goaspire/goaspire/discovery"
)

// Scheme is the target scheme the Builder resolves: "aspire:///users".
const Scheme = "aspire"

// RoundRobin is the service config that spreads calls over every resolved
// address, for grpc.WithDefaultServiceConfig. grpc's default policy,
// pick_first, would send every call to one instance.
const RoundRobin = `{"loadBalancingConfig":[{"round_robin":{}}]}`

// Builder is a grpc-go resolver.Builder for the "aspire" scheme. Register
// it on one ClientConn with grpc.WithResolvers, or process-wide with
// resolver.Register. A Builder is safe for concurrent use.
type Builder struct {
	r *discovery.Resolver
}

// NewBuilder returns a Builder resolving names through r.
func NewBuilder(r *discovery.Resolver) *Builder { return &Builder{r: r} }

// Scheme implements resolver.Builder.
func (b *Builder) Scheme() string { return Scheme }

// Build implements resolver.Builder. The target's endpoint is the
// logical service name, optionally with a port that only pass-through
// uses ("aspire:///users", "aspire:///users:8443"). An error names the
// configuration key whose value is unusable.
func (b *Builder) Build(target resolver.Target, cc resolver.ClientConn, opts resolver.BuildOptions) (resolver.Resolver, error) {
	name := target.Endpoint()
	eps, u, err := lookup(b.r, name)
	if err != nil {
		return nil, err
	}
	if len(eps) == 0 {
		return passThrough(name, cc, opts)
	}
	changed, stop, err := b.r.Watch(u)
	if err != nil {
		return nil, fmt.Errorf("grpcresolver: %q: %w", name, err)
	}
	if changed != nil {
		// A refreshed set: the first one may be newer than eps.
		if eps, err = b.r.Endpoints(u); err != nil || len(eps) == 0 {
			stop()
			if err == nil {
				err = errNoRecords
			}
			return nil, fmt.Errorf("grpcresolver: %q: %w", name, err)
		}
	}
	if err := cc.UpdateState(state(eps)); err != nil {
		stop()
		return nil, fmt.Errorf("grpcresolver: %q: %w", name, err)
	}
	if changed == nil {
		return nopResolver{}, nil
	}
	w := &watchResolver{r: b.r, u: u, name: name, cc: cc, changed: changed, stop: stop, done: make(chan struct{})}
	w.wg.Add(1)
	go w.run()
	return w, nil
}

var errNoRecords = errors.New("no DNS records")

func state(eps []discovery.Endpoint) resolver.State {
	s := resolver.State{Endpoints: make([]resolver.Endpoint, 0, len(eps))}
	for _, ep := range eps {
		s.Endpoints = append(s.Endpoints, resolver.Endpoint{Addresses: []resolver.Address{address(ep)}})
	}
	return s
}

// watchResolver pushes every change of a DNS-discovered set to its
// ClientConn.
type watchResolver struct {
	r       *discovery.Resolver
	u       *url.URL
	name    string
	cc      resolver.ClientConn
	changed <-chan struct{}
	stop    func()
	done    chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
}

func (w *watchResolver) run() {
	defer w.wg.Done()
	for {
		select {
		case <-w.done:
			return
		case <-w.changed:
		}
		eps, err := w.r.Endpoints(w.u)
		switch {
		case err != nil:
			w.cc.ReportError(fmt.Errorf("grpcresolver: %q: %w", w.name, err))
		case len(eps) == 0:
			w.cc.ReportError(fmt.Errorf("grpcresolver: %q: %w", w.name, errNoRecords))
		default:
			// An error means the balancer rejected the addresses; the
			// next change tries again.
			_ = w.cc.UpdateState(state(eps))
		}
	}
}

// ResolveNow implements resolver.Resolver; refreshes follow their own
// schedule.
func (w *watchResolver) ResolveNow(resolver.ResolveNowOptions) {}

// Close implements resolver.Resolver: it stops the watch and waits for the
// goroutine pushing updates.
func (w *watchResolver) Close() {
	w.once.Do(func() {
		w.stop()
		close(w.done)
		w.wg.Wait()
	})
}

// Lookup returns the endpoints configured for the service called name
// (a port after the name is only used by pass-through and A/AAAA
// discovery): those of its endpoint named "grpc",
// else of its "https" endpoint, else of its "http" one, in configuration
// order. It returns nil when nothing is configured, which means
// pass-through to DNS. An error names the key whose value is unusable.
//
// With DNS discovery on, a name nothing is configured for is looked up in
// DNS: SRV _grpc._tcp.{name}.{suffix}, then _default._tcp.{name}.{suffix};
// or the A/AAAA records of name, with the port given after the name
// (443 without one).
func Lookup(r *discovery.Resolver, name string) ([]discovery.Endpoint, error) {
	eps, _, err := lookup(r, name)
	return eps, err
}

func lookup(r *discovery.Resolver, name string) ([]discovery.Endpoint, *url.URL, error) {
	host, port := name, ""
	if h, p, err := net.SplitHostPort(name); err == nil {
		host, port = h, p
	}
	if host == "" || strings.ContainsAny(host, "/?#@ ") {
		return nil, nil, fmt.Errorf("grpcresolver: invalid service name %q", name)
	}
	// https+http://_grpc.users, then https+http://users.
	for _, h := range []string{"_grpc." + host, host} {
		if port != "" {
			h = net.JoinHostPort(h, port)
		}
		u := &url.URL{Scheme: "https+http", Host: h}
		eps, err := r.Endpoints(u)
		if err != nil {
			return nil, nil, err
		}
		if len(eps) > 0 {
			return eps, u, nil
		}
	}
	return nil, nil, nil
}

// schemeKey keys the endpoint's scheme in a resolver.Address's
// attributes, where Credentials reads it.
type schemeKey struct{}

func address(ep discovery.Endpoint) resolver.Address {
	host := ep.Host
	if _, _, err := net.SplitHostPort(host); err != nil {
		port := "80"
		if ep.Scheme == "https" {
			port = "443"
		}
		host = net.JoinHostPort(strings.Trim(host, "[]"), port)
	}
	return resolver.Address{
		Addr: host,
		// The :authority of calls and the name the TLS certificate is
		// checked against: the endpoint's, not the logical name's.
		ServerName: host,
		Attributes: attributes.New(schemeKey{}, ep.Scheme),
	}
}

// nopResolver is the resolver of a fixed set of addresses: configuration
// does not change, so there is nothing to do again.
type nopResolver struct{}

func (nopResolver) ResolveNow(resolver.ResolveNowOptions) {}
func (nopResolver) Close()                                {}

// passThrough resolves name with grpc's DNS resolver, marking every
// address as https.
func passThrough(name string, cc resolver.ClientConn, opts resolver.BuildOptions) (resolver.Resolver, error) {
	dns := resolver.Get("dns")
	if dns == nil {
		return nil, errors.New("grpcresolver: grpc's dns resolver is not registered")
	}
	t := resolver.Target{URL: url.URL{Scheme: "dns", Path: "/" + name}}
	return dns.Build(t, httpsConn{cc}, opts)
}

// httpsConn marks the addresses a DNS pass-through resolves as https.
type httpsConn struct{ resolver.ClientConn }

func (c httpsConn) UpdateState(s resolver.State) error {
	for i := range s.Addresses {
		s.Addresses[i].Attributes = s.Addresses[i].Attributes.WithValue(schemeKey{}, "https")
	}
	for i := range s.Endpoints {
		for j := range s.Endpoints[i].Addresses {
			a := &s.Endpoints[i].Addresses[j]
			a.Attributes = a.Attributes.WithValue(schemeKey{}, "https")
		}
	}
	return c.ClientConn.UpdateState(s)
}

// Credentials returns transport credentials that follow each address's
// scheme: TLS with cfg (nil means the system roots) for an https
// endpoint or a DNS pass-through, plaintext HTTP/2 (h2c) for an http
// endpoint. Addresses from another resolver are reached over TLS.
func Credentials(cfg *tls.Config) credentials.TransportCredentials {
	if cfg == nil {
		cfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return &schemeCredentials{tls: credentials.NewTLS(cfg), plain: insecure.NewCredentials()}
}

type schemeCredentials struct {
	tls, plain credentials.TransportCredentials
}

func (c *schemeCredentials) pick(ctx context.Context) credentials.TransportCredentials {
	info := credentials.ClientHandshakeInfoFromContext(ctx)
	if s, _ := info.Attributes.Value(schemeKey{}).(string); s == "http" {
		return c.plain
	}
	return c.tls
}

// ClientHandshake implements credentials.TransportCredentials.
func (c *schemeCredentials) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return c.pick(ctx).ClientHandshake(ctx, authority, conn)
}

// ServerHandshake implements credentials.TransportCredentials; these
// credentials are for clients only.
func (c *schemeCredentials) ServerHandshake(net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("grpcresolver: Credentials are client credentials")
}

// Info implements credentials.TransportCredentials.
func (c *schemeCredentials) Info() credentials.ProtocolInfo { return c.tls.Info() }

// Clone implements credentials.TransportCredentials.
func (c *schemeCredentials) Clone() credentials.TransportCredentials {
	return &schemeCredentials{tls: c.tls.Clone(), plain: c.plain.Clone()}
}

// OverrideServerName implements credentials.TransportCredentials.
//
// Deprecated: grpc-go no longer calls it; set resolver.Address.ServerName.
func (c *schemeCredentials) OverrideServerName(string) error { return nil }
