package discovery

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Configuration sections of DNS discovery, after the two providers of
// Microsoft.Extensions.ServiceDiscovery.Dns.
const (
	// DNSSection turns on A/AAAA discovery (DnsServiceEndpointProvider):
	// every address of the service name is one instance.
	DNSSection = "Aspire:ServiceDiscovery:Dns"
	// DNSSRVSection turns on SRV discovery (DnsSrvServiceEndpointProvider):
	// every target and port of _{endpoint}._tcp.{service}.{suffix} is one
	// instance.
	DNSSRVSection = "Aspire:ServiceDiscovery:DnsSrv"
)

// The defaults of DnsServiceEndpointProviderOptions and
// DnsSrvServiceEndpointProviderOptions.
const (
	DefaultDNSRefreshPeriod   = time.Minute
	DefaultDNSMinRetryPeriod  = time.Second
	DefaultDNSMaxRetryPeriod  = 30 * time.Second
	DefaultDNSRetryBackOff    = 2.0
	dnsLookupTimeout          = 10 * time.Second
	kubernetesServiceAccount  = "var/run/secrets/kubernetes.io/serviceaccount"
	kubernetesDefaultZoneName = "svc.cluster.local"
)

// ErrResolverClosed is returned for a DNS-discovered name that had not
// been looked up before the Resolver was closed.
var ErrResolverClosed = errors.New("discovery: Resolver closed")

// ResolverOption configures NewResolver.
type ResolverOption func(*resolverOptions)

type resolverOptions struct {
	net  *net.Resolver
	root fs.FS
}

// WithNetResolver makes DNS discovery dial its DNS servers with nr's Dial
// (and follow its StrictErrors) instead of net.DefaultResolver's. DNS
// discovery always uses Go's own resolver (PreferGo), so that it can read
// the records' TTLs, which the C library's does not give.
func WithNetResolver(nr *net.Resolver) ResolverOption {
	return func(o *resolverOptions) { o.net = nr }
}

// withRoot makes the namespace inference read the pod's files below root
// instead of "/" (for tests).
func withRoot(root fs.FS) ResolverOption {
	return func(o *resolverOptions) { o.root = root }
}

// dnsTimings are the refresh settings of one provider.
type dnsTimings struct {
	refresh, minRetry, maxRetry time.Duration
	factor                      float64
}

func readDNSTimings(sec *Config) (dnsTimings, error) {
	var t dnsTimings
	var errs [4]error
	t.refresh, errs[0] = sec.Duration("DefaultRefreshPeriod", DefaultDNSRefreshPeriod)
	t.minRetry, errs[1] = sec.Duration("MinRetryPeriod", DefaultDNSMinRetryPeriod)
	t.maxRetry, errs[2] = sec.Duration("MaxRetryPeriod", DefaultDNSMaxRetryPeriod)
	t.factor, errs[3] = sec.Float("RetryBackOffFactor", DefaultDNSRetryBackOff)
	if err := errors.Join(errs[:]...); err != nil {
		return t, err
	}
	for _, c := range []struct {
		key string
		d   time.Duration
	}{{"DefaultRefreshPeriod", t.refresh}, {"MinRetryPeriod", t.minRetry}, {"MaxRetryPeriod", t.maxRetry}} {
		if c.d <= 0 {
			return t, sec.keyError(c.key, errors.New("must be positive"))
		}
	}
	if t.factor < 1 {
		return t, sec.keyError("RetryBackOffFactor", errors.New("must be at least 1"))
	}
	return t, nil
}

// retryAfter returns the delay before the next lookup after a failed one,
// as DnsServiceEndpointProviderBase computes it: MinRetryPeriod after a
// success, then growing by RetryBackOffFactor up to MaxRetryPeriod.
func (t dnsTimings) retryAfter(prev time.Duration, hadRecords bool) time.Duration {
	if hadRecords || prev <= 0 {
		return min(t.minRetry, t.maxRetry)
	}
	next := time.Duration(float64(prev) * t.factor)
	if next <= 0 || next > t.maxRetry {
		return t.maxRetry
	}
	return next
}

// dnsDiscovery is a Resolver's DNS state: the names being looked up and
// the goroutines refreshing them.
type dnsDiscovery struct {
	net    *net.Resolver
	a, srv bool
	aT     dnsTimings
	srvT   dnsTimings
	suffix string // SRV query suffix, "" when unknown
	err    error  // unusable settings, reported for every DNS name

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	entries map[string]*dnsEntry
}

// newDNSDiscovery reads the DNS sections of cfg; it returns nil when
// neither provider is enabled.
func newDNSDiscovery(cfg *Config, o resolverOptions) *dnsDiscovery {
	d := &dnsDiscovery{net: ttlResolver(o.net), entries: map[string]*dnsEntry{}}
	aSec, srvSec := cfg.Section(DNSSection), cfg.Section(DNSSRVSection)
	var errs []error
	var err error
	d.a, err = aSec.Bool("Enabled", false)
	errs = append(errs, err)
	d.srv, err = srvSec.Bool("Enabled", false)
	errs = append(errs, err)
	if !d.a && !d.srv && errors.Join(errs...) == nil {
		return nil
	}
	if d.a {
		d.aT, err = readDNSTimings(aSec)
		errs = append(errs, err)
	}
	if d.srv {
		d.srvT, err = readDNSTimings(srvSec)
		errs = append(errs, err)
		if s := strings.Trim(strings.TrimSpace(srvSec.String("QuerySuffix")), "."); s != "" {
			d.suffix = s
		} else {
			root := o.root
			if root == nil {
				root = os.DirFS("/")
			}
			d.suffix = kubernetesSuffix(cfg, root)
		}
	}
	d.err = errors.Join(errs...)
	d.ctx, d.cancel = context.WithCancel(context.Background())
	return d
}

// kubernetesSuffix infers the SRV query suffix inside a Kubernetes pod
// as DnsSrvServiceEndpointProviderFactory does: only when
// KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are set and the
// service account's token and ca.crt exist, the first domain of the
// "search" line of /etc/resolv.conf ("{namespace}.svc.cluster.local"),
// else the service account's namespace file with ".svc.cluster.local".
func kubernetesSuffix(cfg *Config, root fs.FS) string {
	if cfg.String("KUBERNETES_SERVICE_HOST") == "" || cfg.String("KUBERNETES_SERVICE_PORT") == "" {
		return ""
	}
	for _, f := range []string{"token", "ca.crt"} {
		if _, err := fs.Stat(root, kubernetesServiceAccount+"/"+f); err != nil {
			return ""
		}
	}
	if b, err := fs.ReadFile(root, "etc/resolv.conf"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if !strings.HasPrefix(line, "search ") {
				continue
			}
			if f := strings.Fields(line); len(f) > 1 {
				return strings.Trim(f[1], ".")
			}
		}
	}
	if b, err := fs.ReadFile(root, kubernetesServiceAccount+"/namespace"); err == nil {
		if ns := strings.TrimSpace(string(b)); ns != "" {
			return ns + "." + kubernetesDefaultZoneName
		}
	}
	return ""
}

// dnsName returns the DNS query for q: SRV when enabled and a suffix is
// known, else A/AAAA when enabled, else nothing. IP literals are never
// looked up.
func (d *dnsDiscovery) dnsName(q Query) (name string, srv bool, ok bool) {
	if _, err := netip.ParseAddr(strings.Trim(q.Service, "[]")); err == nil {
		return "", false, false
	}
	if d.srv && d.suffix != "" {
		ep := q.Endpoint
		if ep == "" {
			ep = "default"
		}
		return "_" + ep + "._tcp." + q.Service + "." + d.suffix, true, true
	}
	if d.a {
		return q.Service, false, true
	}
	return "", false, false
}

// entry returns the refreshed state of one DNS name, creating it on first
// use; nil past maxCached names.
func (d *dnsDiscovery) entry(name string, srv bool) *dnsEntry {
	key := "a:" + name
	if srv {
		key = "srv:" + name
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if e, ok := d.entries[key]; ok {
		return e
	}
	if len(d.entries) >= maxCached {
		return nil
	}
	e := &dnsEntry{d: d, name: name, srv: srv, timings: d.aT, watchers: map[chan struct{}]struct{}{}}
	if srv {
		e.timings = d.srvT
	}
	d.entries[key] = e
	return e
}

// close stops every refresh and waits for the goroutines doing it.
func (d *dnsDiscovery) close() {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	d.cancel()
	d.wg.Wait()
}

// lookup runs one query: the hosts found, sorted, or an error, and the
// smallest TTL of the records (0 when unknown). A name that does not exist
// (or has no records) is an empty set, not an error.
func (d *dnsDiscovery) lookup(ctx context.Context, name string, srv bool) ([]string, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, dnsLookupTimeout)
	defer cancel()
	rec := &ttlRecorder{}
	ctx = context.WithValue(ctx, ttlKey{}, rec)
	var hosts []string
	if srv {
		_, recs, err := d.net.LookupSRV(ctx, "", "", name)
		if err != nil {
			if isNotFound(err) {
				return nil, 0, nil
			}
			return nil, 0, err
		}
		for _, r := range recs {
			hosts = append(hosts, net.JoinHostPort(strings.TrimSuffix(r.Target, "."), strconv.Itoa(int(r.Port))))
		}
	} else {
		addrs, err := d.net.LookupNetIP(ctx, "ip", name)
		if err != nil {
			if isNotFound(err) {
				return nil, 0, nil
			}
			return nil, 0, err
		}
		for _, a := range addrs {
			hosts = append(hosts, a.Unmap().WithZone("").String())
		}
	}
	slices.Sort(hosts)
	return slices.Compact(hosts), rec.ttl(), nil
}

func isNotFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

// dnsSet is one published result of a DNS name.
type dnsSet struct {
	hosts []string // sorted; IPs for A/AAAA, target:port for SRV
	err   error    // the last lookup's error when there is no good set
}

// dnsEntry is one DNS name, refreshed by a goroutine while it is used:
// the goroutine stops after a refresh period in which nobody asked for the
// name and nobody watches it, and the next use starts it again.
type dnsEntry struct {
	d       *dnsDiscovery
	name    string
	srv     bool
	timings dnsTimings

	set      atomic.Pointer[dnsSet]
	lastUsed atomic.Int64 // UnixNano of the last use
	live     atomic.Bool  // running and nobody waits for a fresh set: set is current

	mu       sync.Mutex
	running  bool
	ready    chan struct{} // closed by the next publish while someone waits for a fresh set
	fresh    time.Time     // when set was last looked up
	watchers map[chan struct{}]struct{}
}

// current returns the entry's set, starting the refresh when it is not
// running and waiting for a lookup when there is no fresh set.
func (e *dnsEntry) current() (*dnsSet, error) {
	e.lastUsed.Store(time.Now().UnixNano())
	if e.live.Load() {
		if s := e.set.Load(); s != nil {
			return s, nil
		}
	}
	e.mu.Lock()
	e.ensureRunning()
	ready := e.ready
	e.mu.Unlock()
	if ready != nil {
		select {
		case <-ready:
		case <-e.d.ctx.Done():
		}
	}
	if s := e.set.Load(); s != nil {
		return s, nil
	}
	return nil, ErrResolverClosed
}

// ensureRunning starts the refresh goroutine unless it runs or the
// Resolver is closed; e.mu is held. When the set is missing or stale,
// e.ready is made for the callers to wait on.
func (e *dnsEntry) ensureRunning() {
	d := e.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if e.running || d.closed {
		return
	}
	if e.set.Load() == nil || time.Since(e.fresh) > e.timings.refresh {
		e.ready = make(chan struct{})
	}
	e.running = true
	e.live.Store(e.ready == nil)
	d.wg.Add(1)
	go e.refresh()
}

// refresh looks the name up, publishes the result and waits for the next
// lookup: after a set with records, until the first of them expires (its
// TTL) but no longer than the refresh period, as .NET's providers do; a
// growing retry period after an empty set or a failure.
func (e *dnsEntry) refresh() {
	defer e.d.wg.Done()
	var retry time.Duration
	hadRecords := false
	for {
		started := time.Now()
		hosts, ttl, err := e.d.lookup(e.d.ctx, e.name, e.srv)
		if e.d.ctx.Err() != nil {
			e.stop()
			return
		}
		wait := e.timings.refresh
		if ttl > 0 && ttl < wait {
			wait = ttl
		}
		if err != nil || len(hosts) == 0 {
			retry = e.timings.retryAfter(retry, hadRecords)
			wait = retry
			hadRecords = false
		} else {
			retry, hadRecords = 0, true
		}
		e.publish(hosts, err)

		t := time.NewTimer(wait)
		select {
		case <-e.d.ctx.Done():
			t.Stop()
			e.stop()
			return
		case <-t.C:
		}
		e.mu.Lock()
		// Nobody asked since this lookup, nor for a refresh period
		// (short TTLs make several lookups in one): stop until the next
		// use.
		idleSince := min(started.UnixNano(), time.Now().Add(-e.timings.refresh).UnixNano())
		if len(e.watchers) == 0 && e.lastUsed.Load() < idleSince {
			e.running = false
			e.live.Store(false)
			e.mu.Unlock()
			return
		}
		e.mu.Unlock()
	}
}

func (e *dnsEntry) stop() {
	e.mu.Lock()
	e.running = false
	e.live.Store(false)
	if e.ready != nil {
		close(e.ready)
		e.ready = nil
	}
	e.mu.Unlock()
}

// publish stores a lookup's result and tells the watchers when the set
// changed. A failure keeps the last set that had records: instances do
// not vanish because one query timed out.
func (e *dnsEntry) publish(hosts []string, err error) {
	old := e.set.Load()
	next := &dnsSet{hosts: hosts}
	if err != nil {
		kind := "A/AAAA"
		if e.srv {
			kind = "SRV"
		}
		err = fmt.Errorf("discovery: DNS %s lookup of %q: %w", kind, e.name, err)
		if old != nil && len(old.hosts) > 0 {
			next = old
		} else {
			next = &dnsSet{err: err}
		}
	}
	changed := old == nil || !slices.Equal(old.hosts, next.hosts) || (old.err == nil) != (next.err == nil)
	e.set.Store(next)
	e.mu.Lock()
	e.fresh = time.Now()
	if e.ready != nil {
		close(e.ready)
		e.ready = nil
	}
	e.live.Store(e.running)
	if changed {
		for w := range e.watchers {
			select {
			case w <- struct{}{}:
			default:
			}
		}
	}
	e.mu.Unlock()
}

// watch registers w for change notices and keeps the refresh running.
func (e *dnsEntry) watch(w chan struct{}) (stop func()) {
	e.mu.Lock()
	e.watchers[w] = struct{}{}
	e.ensureRunning()
	e.mu.Unlock()
	return func() {
		e.mu.Lock()
		delete(e.watchers, w)
		e.mu.Unlock()
	}
}
