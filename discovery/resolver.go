package discovery

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Query is a parsed logical service URL, as
// Microsoft.Extensions.ServiceDiscovery reads one: "https+http://catalog"
// is service "catalog" with schemes [https http]; "http://_grpc.catalog" is
// service "catalog", endpoint "grpc", schemes [http].
type Query struct {
	// Schemes are the allowed schemes in order of preference.
	Schemes []string
	// Service is the logical service name (the host without the endpoint
	// prefix).
	Service string
	// Endpoint is the endpoint name, or "" when none was given.
	Endpoint string
}

// ParseQuery parses a logical URL's scheme and host into a Query.
func ParseQuery(u *url.URL) (Query, error) {
	if u == nil || u.Scheme == "" {
		return Query{}, errors.New("discovery: URL has no scheme")
	}
	host := u.Hostname()
	if host == "" {
		return Query{}, fmt.Errorf("discovery: URL %q has no host", u.Redacted())
	}
	q := Query{Service: host}
	if dot := strings.IndexByte(host, '.'); strings.HasPrefix(host, "_") && dot > 1 && !strings.HasSuffix(host, ".") {
		q.Endpoint = host[1:dot]
		q.Service = host[dot+1:]
	}
	for _, s := range strings.Split(strings.ToLower(u.Scheme), "+") {
		if s == "" {
			return Query{}, fmt.Errorf("discovery: URL %q has an empty scheme in %q", u.Redacted(), u.Scheme)
		}
		q.Schemes = append(q.Schemes, s)
	}
	return q, nil
}

// Endpoint is one resolved address of a service.
type Endpoint struct {
	// Scheme is "http", "https", or another scheme the endpoint declared.
	Scheme string
	// Host is "host:port" (or just "host").
	Host string
	// Source names where the endpoint came from, such as
	// "services:catalog:http:0", "CATALOG_HTTP", "dns:catalog" or
	// "dns-srv:_default._tcp.catalog.shop.svc.cluster.local", for logs and
	// errors.
	Source string
}

// ResolveError reports endpoint configuration that cannot be used. It names
// the key at fault.
type ResolveError struct {
	// Service is the logical service name.
	Service string
	// Key is the configuration key or variable at fault.
	Key string
	// Reason says what is wrong.
	Reason string
}

// Error implements error.
func (e *ResolveError) Error() string {
	return fmt.Sprintf("discovery: service %q: %s: %s", e.Service, e.Key, e.Reason)
}

// Resolver turns logical service URLs into endpoints, following
// Microsoft.Extensions.ServiceDiscovery's configuration rules over three
// variable forms, first match wins:
//
//  1. services__{service}__{endpoint}__{index} (Aspire 8.x–13.1, 13.2.3+);
//  2. services__{service}__{scheme}__{index} (Aspire 13.2.0–13.2.2);
//  3. {SERVICE}_{ENDPOINT}=scheme://host:port (Aspire 13.0+).
//
// With no endpoint name the "default" endpoint is used, else the first one
// named after an allowed scheme. A named endpoint that only the
// scheme-keyed form 2 could hold is looked up last, after form 3, since
// that form cannot tell a named endpoint from the plain one. Of the
// endpoints found, only those of the most preferred scheme present are
// kept, so https+http:// returns no http endpoints when an https one
// exists. Several endpoints are several instances, handed out round-robin.
// Nothing found means pass-through: the host is used as a DNS name with the
// first scheme, unless DNS discovery is enabled (see below). A pass-through
// name that DNS does not know either fails the request with an
// *UnresolvedError naming the variables that would configure it (see
// Unresolved), which resilience does not retry.
//
// Of form 3, a more preferred scheme wins over a form 1 or 2 endpoint:
// https+http://api takes API_HTTPS over services__api__http__0, since
// aspire publish and deploy (Docker Compose, Kubernetes) drop the
// services__ variables of https endpoints but may keep API_HTTPS.
//
// Configuration does not change after Load, so results are computed once
// per logical host and cached. A Resolver is safe for concurrent use.
//
// # DNS discovery
//
// For a name nothing is configured for, a Resolver can look the instances
// up in DNS, as Microsoft.Extensions.ServiceDiscovery.Dns does; it is off
// unless enabled (configured endpoints always win):
//
//	Aspire:ServiceDiscovery:Dns:Enabled     false  A/AAAA: every address of {service} is an instance
//	Aspire:ServiceDiscovery:DnsSrv:Enabled  false  SRV: every target:port of _{endpoint}._tcp.{service}.{suffix}
//	Aspire:ServiceDiscovery:DnsSrv:QuerySuffix     the suffix, e.g. "shop.svc.cluster.local"; inferred in a pod
//	...:DefaultRefreshPeriod                00:01:00  longest life of a set with records (both sections)
//	...:MinRetryPeriod                      00:00:01  first retry after a failure or an empty set
//	...:MaxRetryPeriod                      00:00:30  longest retry period
//	...:RetryBackOffFactor                  2         growth of the retry period
//
// A/AAAA records carry no port: the endpoint is the address with the
// logical URL's port, if any, and the URL's first scheme, so a Kubernetes
// headless service's pods become instances. SRV records (the {endpoint}
// is the URL's endpoint name, "default" without one) give each instance's
// port; the endpoint is the record's target and port. Inside a Kubernetes
// pod (KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT set and the
// service account mounted) the suffix is the first "search" domain of
// /etc/resolv.conf, else the service account's namespace followed by
// ".svc.cluster.local". With both enabled, SRV is used when a suffix is
// known and A/AAAA otherwise. IP literals are never looked up.
//
// The first use of a name waits for its lookup; then the set is refreshed
// in the background, when its first record expires (the smallest TTL of
// the answers, and of the SRV targets' addresses the server added) but at
// least every DefaultRefreshPeriod (a TTL of 0 means that period), as
// .NET's providers do, and the calls go round-robin over the current set.
// The lookups go through Go's own resolver (see WithNetResolver), whose
// answers the Resolver reads the TTLs from; /etc/hosts entries have none.
// A failed refresh keeps the last set that had records and is retried
// sooner, with back-off; a name that has no records passes through (as
// above) until it has. A name's refresh stops
// after one refresh period without use or watchers (Watch) and starts
// again, waiting for a fresh lookup, on the next use. Close stops every
// refresh.
type Resolver struct {
	cfg    *Config
	cache  sync.Map // cacheKey -> *resolution
	cached atomic.Int64
	dns    *dnsDiscovery // nil when DNS discovery is off
	warned sync.Map      // lower-case host -> struct{}: reported by Unresolved
}

// maxCached bounds the resolution cache, so a client that calls many
// distinct real hosts through the Transport cannot grow it without limit.
// Past it, results are computed per call (and round-robin restarts).
const maxCached = 4096

type cacheKey struct{ scheme, host string }

type resolution struct {
	endpoints []Endpoint // empty means pass-through
	next      atomic.Uint64
	err       error

	// Set when the endpoints come from DNS.
	dns  *dnsEntry
	q    Query
	port string
	view atomic.Pointer[dnsView]
}

// dnsView is a DNS set turned into the endpoints of one logical URL.
type dnsView struct {
	set       *dnsSet
	endpoints []Endpoint
}

// NewResolver returns a Resolver reading cfg. DNS discovery, when the
// configuration enables it, queries net.DefaultResolver unless
// WithNetResolver says otherwise; a Resolver that does it should be
// closed (Close) when no longer used.
func NewResolver(cfg *Config, opts ...ResolverOption) *Resolver {
	var o resolverOptions
	for _, opt := range opts {
		opt(&o)
	}
	cfg = cfg.root()
	return &Resolver{cfg: cfg, dns: newDNSDiscovery(cfg, o)}
}

// Close stops the refresh of DNS-discovered names and waits for it. Later
// calls keep the last sets found. Close is safe to call more than once,
// and on a Resolver without DNS discovery does nothing. A query Close
// interrupts may still finish inside package net (its own goroutine, up
// to the resolver's timeout) unless the net.Resolver's Dial closes the
// connection when the query's context is done.
func (r *Resolver) Close() error {
	if r != nil && r.dns != nil {
		r.dns.close()
	}
	return nil
}

// Endpoints returns every endpoint configured for the logical URL, in
// configuration order, or the current DNS set (see DNS discovery), or
// nil when nothing is found (pass-through). An error names the key whose
// value is unusable, or the DNS name whose lookup failed.
func (r *Resolver) Endpoints(u *url.URL) ([]Endpoint, error) {
	res, err := r.resolve(u)
	if err != nil {
		return nil, err
	}
	return res.current()
}

// current returns the endpoints of res: fixed ones, or the DNS entry's
// current set.
func (res *resolution) current() ([]Endpoint, error) {
	if res.dns == nil {
		return res.endpoints, nil
	}
	set, err := res.dns.current()
	if err != nil {
		return nil, err
	}
	if set.err != nil {
		return nil, set.err
	}
	if v := res.view.Load(); v != nil && v.set == set {
		return v.endpoints, nil
	}
	v := &dnsView{set: set, endpoints: make([]Endpoint, 0, len(set.hosts))}
	source := "dns:" + res.dns.name
	if res.dns.srv {
		source = "dns-srv:" + res.dns.name
	}
	for _, h := range set.hosts {
		if !res.dns.srv {
			if res.port != "" {
				h = net.JoinHostPort(h, res.port)
			} else if strings.Contains(h, ":") {
				h = "[" + h + "]"
			}
		}
		v.endpoints = append(v.endpoints, Endpoint{Scheme: res.q.Schemes[0], Host: h, Source: source})
	}
	res.view.Store(v)
	return v.endpoints, nil
}

// Watch reports changes of u's endpoints: changed receives a value
// (without blocking the sender; one pending notice at most) after a DNS
// refresh changed the set, and the set keeps being refreshed until stop
// is called. For endpoints from configuration, which never change,
// changed is nil. Call Endpoints for the new set.
func (r *Resolver) Watch(u *url.URL) (changed <-chan struct{}, stop func(), err error) {
	res, err := r.resolve(u)
	if err != nil {
		return nil, nil, err
	}
	if res.dns == nil {
		return nil, func() {}, nil
	}
	w := make(chan struct{}, 1)
	return w, res.dns.watch(w), nil
}

// ErrNilURL is returned by Resolver and Transport methods given a nil URL
// (or a request without one).
var ErrNilURL = errors.New("discovery: nil URL")

// errNilResolver is returned by a Transport or Resolver that has none.
var errNilResolver = errors.New("discovery: nil Resolver")

func (r *Resolver) resolve(u *url.URL) (*resolution, error) {
	if u == nil {
		return nil, ErrNilURL
	}
	if r == nil {
		return nil, errNilResolver
	}
	key := cacheKey{u.Scheme, u.Host}
	if v, ok := r.cache.Load(key); ok {
		res := v.(*resolution)
		return res, res.err
	}
	res := &resolution{}
	q, err := ParseQuery(u)
	if err != nil {
		res.err = err
	} else {
		res.endpoints, res.err = r.lookup(q)
		if res.err == nil && len(res.endpoints) == 0 && r.dns != nil {
			r.dnsResolution(res, q, u)
		}
	}
	if r.cached.Load() >= maxCached {
		return res, res.err
	}
	v, loaded := r.cache.LoadOrStore(key, res)
	if !loaded {
		r.cached.Add(1)
	}
	res = v.(*resolution)
	return res, res.err
}

// Resolve returns the real URL for a logical one: the next endpoint
// round-robin with the path, query and fragment of u kept, or, when nothing
// is configured, u itself with its first scheme. It returns u unchanged
// (the same pointer) when there is nothing to rewrite. A nil u is an error
// wrapping ErrNilURL.
func (r *Resolver) Resolve(u *url.URL) (*url.URL, error) {
	return r.resolveInto(nil, u)
}

// ResolveInto is Resolve writing the real URL into dst instead of a new
// URL, for a caller that keeps one per request and so spares the
// allocation: it returns u itself when there is nothing to rewrite, else
// dst holding the rewritten copy. dst must not be u.
func (r *Resolver) ResolveInto(dst, u *url.URL) (*url.URL, error) {
	if dst == nil {
		return nil, errors.New("discovery: ResolveInto: nil destination URL")
	}
	return r.resolveInto(dst, u)
}

// resolveInto resolves u into dst, or into a new URL when dst is nil.
func (r *Resolver) resolveInto(dst, u *url.URL) (*url.URL, error) {
	res, err := r.resolve(u)
	if err != nil {
		return nil, err
	}
	eps, err := res.current()
	if err != nil {
		return nil, err
	}
	if len(eps) == 0 {
		scheme, _, plural := strings.Cut(u.Scheme, "+")
		if !plural {
			return u, nil
		}
		if dst == nil {
			dst = new(url.URL)
		}
		*dst = *u
		dst.Scheme = scheme
		return dst, nil
	}
	n := res.next.Add(1) - 1
	ep := eps[n%uint64(len(eps))]
	if dst == nil {
		dst = new(url.URL)
	}
	*dst = *u
	dst.Scheme = ep.Scheme
	dst.Host = ep.Host
	return dst, nil
}

// dnsResolution makes res follow the DNS name of q when DNS discovery
// covers it.
func (r *Resolver) dnsResolution(res *resolution, q Query, u *url.URL) {
	if r.dns.err != nil {
		res.err = r.dns.err
		return
	}
	name, srv, ok := r.dns.dnsName(q)
	if !ok {
		return
	}
	e := r.dns.entry(name, srv)
	if e == nil {
		return // past maxCached names: pass-through
	}
	res.dns, res.q, res.port = e, q, u.Port()
}

func (r *Resolver) lookup(q Query) ([]Endpoint, error) {
	var names []string
	if q.Endpoint == "" {
		names = append([]string{"default"}, q.Schemes...)
		// Forms 1 and 2 share the services section; then form 3.
		if eps, found, err := r.fromSection(q, names); found || err != nil {
			if err == nil && len(eps) > 0 {
				// A deployment (aspire publish/deploy) may drop the
				// services__ variables of https endpoints and keep the
				// {SERVICE}_HTTPS form: a more preferred scheme there
				// wins over what the section has.
				if best := indexOf(q.Schemes, eps[0].Scheme); best > 0 {
					better, err := r.fromEndpointVars(q, q.Schemes[:best])
					if err != nil {
						return nil, err
					}
					if len(better) > 0 && indexOf(q.Schemes, better[0].Scheme) < best {
						return better, nil
					}
				}
			}
			return eps, err
		}
		return r.fromEndpointVars(q, names)
	}
	if eps, found, err := r.fromSection(q, []string{q.Endpoint}); found || err != nil {
		return eps, err
	}
	if eps, err := r.fromEndpointVars(q, []string{q.Endpoint}); len(eps) > 0 || err != nil {
		return eps, err
	}
	eps, _, err := r.fromSection(q, q.Schemes)
	return eps, err
}

// fromSection reads services:{service}:{name} for the first name that
// exists. found is true when a section existed, even if filtering by
// scheme left nothing.
func (r *Resolver) fromSection(q Query, names []string) ([]Endpoint, bool, error) {
	svc := r.cfg.Section("services:" + q.Service)
	for _, name := range names {
		path := "services:" + q.Service + ":" + name
		var eps []Endpoint
		if v, ok := svc.Lookup(name); ok && strings.TrimSpace(v) != "" {
			ep, err := parseEndpoint(q, path, v)
			if err != nil {
				return nil, true, err
			}
			eps = append(eps, ep)
		} else {
			children := svc.Section(name).Children()
			if len(children) == 0 {
				continue
			}
			for _, c := range children {
				if i, err := strconv.Atoi(c); err != nil || i < 0 {
					return nil, true, &ResolveError{Service: q.Service, Key: path + ":" + c, Reason: "endpoint index is not a non-negative number"}
				}
			}
			// Numeric order, as .NET binds arrays (the keys are checked
			// numbers above).
			slices.SortFunc(children, func(a, b string) int {
				x, _ := strconv.Atoi(a)
				y, _ := strconv.Atoi(b)
				return x - y
			})
			for _, c := range children {
				key := path + ":" + c
				v := svc.Section(name).String(c)
				if strings.TrimSpace(v) == "" {
					return nil, true, &ResolveError{Service: q.Service, Key: key, Reason: "empty endpoint"}
				}
				ep, err := parseEndpoint(q, key, v)
				if err != nil {
					return nil, true, err
				}
				eps = append(eps, ep)
			}
		}
		return filterSchemes(q, eps), true, nil
	}
	return nil, false, nil
}

// fromEndpointVars reads the Aspire 13 {SERVICE}_{ENDPOINT} variables.
func (r *Resolver) fromEndpointVars(q Query, names []string) ([]Endpoint, error) {
	for _, name := range names {
		key := EnvName(q.Service) + "_" + EnvName(name)
		v, ok := r.cfg.Lookup(key)
		if !ok || strings.TrimSpace(v) == "" {
			continue
		}
		ep, err := parseEndpoint(q, key, v)
		if err != nil {
			return nil, err
		}
		if eps := filterSchemes(q, []Endpoint{ep}); len(eps) > 0 {
			return eps, nil
		}
	}
	return nil, nil
}

// parseEndpoint reads "scheme://host:port" or a bare "host:port" (which
// takes the query's first scheme).
func parseEndpoint(q Query, key, v string) (Endpoint, error) {
	v = strings.TrimSpace(v)
	bad := func(reason string) (Endpoint, error) {
		return Endpoint{}, &ResolveError{Service: q.Service, Key: key, Reason: reason}
	}
	if !strings.Contains(v, "://") {
		if _, _, err := net.SplitHostPort(v); err != nil && strings.Contains(v, ":") && !strings.HasPrefix(v, "[") {
			return bad("invalid host:port")
		}
		if strings.ContainsAny(v, "/?#@ ") {
			return bad("invalid host:port")
		}
		return Endpoint{Scheme: q.Schemes[0], Host: v, Source: key}, nil
	}
	u, err := url.Parse(v)
	if err != nil || u.Host == "" || u.Scheme == "" {
		return bad("invalid endpoint URL")
	}
	if u.User != nil {
		return bad("endpoint URL must not carry user information")
	}
	return Endpoint{Scheme: strings.ToLower(u.Scheme), Host: u.Host, Source: key}, nil
}

// filterSchemes keeps only endpoints whose scheme is the most preferred
// allowed scheme present.
func filterSchemes(q Query, eps []Endpoint) []Endpoint {
	best := len(q.Schemes)
	for _, ep := range eps {
		if i := indexOf(q.Schemes, ep.Scheme); i >= 0 && i < best {
			best = i
		}
	}
	out := eps[:0:0]
	for _, ep := range eps {
		if i := indexOf(q.Schemes, ep.Scheme); i >= 0 && i <= best {
			out = append(out, ep)
		}
	}
	return out
}

func indexOf(list []string, s string) int {
	for i, v := range list {
		if v == s {
			return i
		}
	}
	return -1
}

// Transport is an http.RoundTripper that resolves logical request URLs
// through a Resolver before handing the request to Base. The path, query
// and headers are kept; the Host header follows the resolved address
// unless the caller set one of its own.
type Transport struct {
	// Resolver resolves request URLs. It must not be nil.
	Resolver *Resolver
	// Base sends the rewritten request; nil means http.DefaultTransport.
	Base http.RoundTripper
}

// NewTransport returns a Transport resolving through r and sending through
// base (nil for http.DefaultTransport).
func NewTransport(r *Resolver, base http.RoundTripper) *Transport {
	return &Transport{Resolver: r, Base: base}
}

// RoundTrip implements http.RoundTripper. It does not modify req. A
// request without a URL is an error wrapping ErrNilURL, as is a Transport
// without a Resolver an error; neither panics.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req == nil {
		return nil, errors.New("discovery: nil Request")
	}
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	u, err := t.Resolver.Resolve(req.URL)
	if err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	if u == req.URL {
		resp, err := base.RoundTrip(req)
		return t.unresolved(req.URL, resp, err)
	}
	out := new(http.Request)
	*out = *req
	out.URL = u
	if req.Host == "" || req.Host == req.URL.Host {
		out.Host = ""
	}
	resp, err := base.RoundTrip(out)
	return t.unresolved(req.URL, resp, err)
}

// unresolved turns a failure to find the pass-through host of the
// logical URL u in DNS into an *UnresolvedError.
func (t *Transport) unresolved(u *url.URL, resp *http.Response, err error) (*http.Response, error) {
	if err != nil {
		if uerr, _ := t.Resolver.Unresolved(u, err); uerr != nil {
			return nil, uerr
		}
	}
	return resp, err
}
