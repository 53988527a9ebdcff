package servicedefaults

import (
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/resilience"
)

// Which resilience handler a client gets, as Aspire's
// AddStandardResilienceHandler / AddStandardHedgingHandler.
const (
	handlerStandard = "Standard"
	handlerHedging  = "Hedging"
	handlerNone     = "None"
)

// clientHandlerKey names the handler of one client:
// Aspire:ServiceDefaults:HttpClients:{name}:Resilience is Standard (the
// default), Hedging or None.
func clientHandlerKey(name string) string {
	return "Aspire:ServiceDefaults:HttpClients:" + name + ":Resilience"
}

// readResilienceSettings validates, when Add runs, the resilience options
// of the default client and of every client configured by name, so that
// a bad value fails Add naming its key instead of failing requests later.
func readResilienceSettings(cfg *discovery.Config, hedged map[string]bool) error {
	if _, err := resilience.LoadTransportConfig(cfg, ""); err != nil {
		return err
	}
	if _, err := resilience.LoadHedgingConfig(cfg, ""); err != nil {
		return err
	}
	for _, name := range cfg.Section(resilience.SectionHTTP + ":Clients").Children() {
		if _, err := resilience.LoadTransportConfig(cfg, name); err != nil {
			return err
		}
	}
	for _, name := range cfg.Section(resilience.SectionHedging + ":Clients").Children() {
		if _, err := resilience.LoadHedgingConfig(cfg, name); err != nil {
			return err
		}
	}
	for _, name := range cfg.Section("Aspire:ServiceDefaults:HttpClients").Children() {
		if _, err := clientHandler(cfg, name, hedged); err != nil {
			return err
		}
	}
	return nil
}

func clientHandler(cfg *discovery.Config, name string, hedged map[string]bool) (string, error) {
	key := clientHandlerKey(name)
	v := cfg.String(key)
	switch {
	case v == "" && hedged[name]:
		return handlerHedging, nil
	case v == "":
		return handlerStandard, nil
	}
	for _, h := range []string{handlerStandard, handlerHedging, handlerNone} {
		if strings.EqualFold(v, h) {
			return h, nil
		}
	}
	return "", &discovery.KeyError{Key: key, Err: errBadHandler}
}

// newClientTransport builds the transport of the client called name,
// outermost first: the resilience pipeline (which resolves the logical
// URL through discovery on every attempt, so retries and hedges go to
// other instances and each instance has its own circuit breaker), then
// client instrumentation (a span per attempt, as .NET's HttpClient makes,
// and the trace context passed on), then the App's shared connection pool.
// With the handler None, discovery alone sits above the instrumentation.
// A host-less request URL goes to the client's own service (see
// baseAddress): the pipeline applies that in the copy of the request it
// makes anyway, unless middlewares wrap it (they see the full logical
// URL) or there is no pipeline, when a wrapper does.
// The caller holds a.mu.
func (a *App) newClientTransport(name string) http.RoundTripper {
	if a.base == nil {
		a.base = a.newBaseTransport()
	}
	inner := a.newClientInstrumentation(a.base)
	baseAddr := baseAddressURL(name)

	handler, err := clientHandler(a.cfg, name, a.hedged)
	var rt http.RoundTripper
	if err == nil {
		var t *resilience.Transport
		switch handler {
		case handlerNone:
			rt = discovery.NewTransport(a.resolver, inner)
		case handlerHedging:
			var c *resilience.HedgingConfig
			if c, err = resilience.LoadHedgingConfig(a.cfg, name); err == nil {
				c.Resolver, c.MeterProvider, c.Logger = a.resolver, a.tel.mp, a.componentLogger(scopeResilience)
				c.BaseAddress = baseAddr
				t, err = resilience.NewHedgingTransport(inner, c)
			}
		default:
			var c *resilience.TransportConfig
			if c, err = resilience.LoadTransportConfig(a.cfg, name); err == nil {
				c.Resolver, c.MeterProvider, c.Logger = a.resolver, a.tel.mp, a.componentLogger(scopeResilience)
				c.BaseAddress = baseAddr
				t, err = resilience.NewTransport(inner, c)
			}
		}
		if t != nil {
			a.pipelines = append(a.pipelines, t)
			if a.byClient == nil {
				a.byClient = map[string]*resilience.Transport{}
			}
			a.byClient[name] = t
			rt = t
		}
	}
	if err != nil {
		// Add validated the configuration, so this is a programming
		// error (a name configured only through WithHedging, say); make
		// it loud but keep the process up.
		a.logger.Error("HTTP client configuration is invalid; its requests will fail", "client", name, "error", err)
		rt = failingTransport{err: err}
	}
	if _, ok := rt.(*resilience.Transport); ok && len(a.wrapTransport) == 0 {
		return rt // the pipeline applies baseAddr itself
	}
	for i := len(a.wrapTransport) - 1; i >= 0; i-- {
		rt = a.wrapTransport[i](name, rt)
	}
	return baseAddress(name, rt)
}

// CircuitState returns the state of the circuit breaker that the pipeline
// of the client called name (see HTTPClient) keeps for destination, an
// authority ("host:port") the client's requests went to; CircuitClosed
// when the client has no pipeline (it was not made yet, or its handler is
// None) or the destination has no breaker yet. It works whatever the
// WithHTTPMiddleware middlewares wrap the client's transport in.
func (a *App) CircuitState(name, destination string) resilience.CircuitState {
	a.mu.Lock()
	t := a.byClient[name]
	a.mu.Unlock()
	if t == nil {
		return resilience.CircuitClosed
	}
	return t.CircuitState(destination)
}

// HealthHTTPClient returns an http.Client for the health checks of the
// service's HTTP dependencies (health.HTTP): it resolves logical URLs and
// sends a host-less URL to the service called name, as HTTPClient does,
// through the App's connection pool, but without the resilience pipeline,
// so a probe is neither retried nor held for the pipeline's 30 s total
// timeout (the health check's own timeout bounds it) and its failures do
// not count toward the breakers of the client's requests. Nor does it
// make client spans or metrics: probes would drown the service's own
// calls. The WithHTTPMiddleware middlewares do not apply.
func (a *App) HealthHTTPClient(name string) *http.Client {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.base == nil {
		a.base = a.newBaseTransport()
	}
	return &http.Client{Transport: baseAddress(name, discovery.NewTransport(a.resolver, a.base))}
}

// baseAddressScheme is the scheme a host-less request URL takes, as
// Aspire's default client BaseAddress: https when the service has an
// https endpoint, else http.
const baseAddressScheme = "https+http"

// baseAddress makes requests whose URL has no host go to the service
// called name (as .NET's HttpClient.BaseAddress "https+http://name"):
// client.Get("/products/1") is a GET of https+http://name/products/1. A
// client without a name (or whose name is not a host name) sends such
// URLs on unchanged, and the transport below rejects them.
func baseAddress(name string, next http.RoundTripper) http.RoundTripper {
	if baseAddressURL(name) == nil {
		return next
	}
	return &baseAddressTransport{host: name, next: next}
}

// baseAddressURL is the base address of the client called name,
// https+http://name; nil when name is empty or not a host name.
func baseAddressURL(name string) *url.URL {
	if name == "" || strings.ContainsAny(name, "/:?#@[] ") {
		return nil
	}
	return &url.URL{Scheme: baseAddressScheme, Host: name}
}

type baseAddressTransport struct {
	host string
	next http.RoundTripper
}

func (t *baseAddressTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL == nil || r.URL.Host != "" || r.URL.Scheme != "" || r.URL.Opaque != "" {
		return t.next.RoundTrip(r)
	}
	// One allocation for the request copy (a RoundTripper must not
	// modify r) and its URL.
	out := new(struct {
		r http.Request
		u url.URL
	})
	out.u = *r.URL
	u := &out.u
	u.Scheme, u.Host = baseAddressScheme, t.host
	if !strings.HasPrefix(u.Path, "/") && u.Path != "" {
		u.Path = "/" + u.Path
		if u.RawPath != "" {
			u.RawPath = "/" + u.RawPath
		}
	}
	out.r = *r
	out.r.URL = u
	return t.next.RoundTrip(&out.r)
}

// clientSpanName names a client span after the request's method, as the
// semantic conventions and .NET's HttpClient do ("GET"); a method outside
// the standard set is "HTTP", as the conventions ask.
func clientSpanName(_ string, r *http.Request) string {
	switch r.Method {
	case "":
		return http.MethodGet
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return r.Method
	}
	return "HTTP"
}

// failingTransport answers every request with the same error.
type failingTransport struct{ err error }

func (t failingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		r.Body.Close()
	}
	return nil, t.err
}

var errBadHandler = errors.New(`must be "Standard", "Hedging" or "None"`)

// WithHedging gives the named clients the standard hedging handler instead
// of the standard resilience handler, as AddStandardHedgingHandler does in
// .NET: a request still waiting after Hedging:Delay (2 s) is raced against
// another instance, each instance behind its own circuit breaker. The
// configuration key Aspire:ServiceDefaults:HttpClients:{name}:Resilience
// (Standard, Hedging or None) overrides it.
func WithHedging(names ...string) Option {
	return func(o *options) {
		if o.hedged == nil {
			o.hedged = map[string]bool{}
		}
		for _, n := range names {
			o.hedged[n] = true
		}
	}
}
