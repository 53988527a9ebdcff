package servicedefaults

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/net/http/httpproxy"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/resilience"
)

// Default durations, each overridable from configuration (see the package
// documentation) or by an Option.
const (
	// DefaultShutdownTimeout is the grace period in-flight requests get to
	// finish after SIGTERM. With DefaultFlushTimeout it makes 30 s, the
	// Kubernetes default terminationGracePeriodSeconds.
	DefaultShutdownTimeout = 25 * time.Second
	// DefaultFlushTimeout bounds flushing telemetry and closing clients
	// once the server has drained.
	DefaultFlushTimeout = 5 * time.Second
	// DefaultHealthCacheDuration is how long outside Development a health
	// report is reused.
	DefaultHealthCacheDuration = 2 * time.Second
)

// Paths of the health endpoints, as in .NET Aspire's ServiceDefaults.
const (
	HealthPath = "/health"
	AlivePath  = "/alive"
)

// SelfCheckName names the always-present live check.
const SelfCheckName = "self"

// App is a service set up by Add. Its methods are safe for concurrent use.
type App struct {
	cfg      *discovery.Config
	resolver *discovery.Resolver
	tel      *telemetry
	logs     *logHandlers
	logger   *slog.Logger // goaspire's own records (servicedefaults scope)
	user     *slog.Logger // App.Logger and slog.Default (the service's scope)
	health   *health.Registry
	next     http.Handler // the handler given to Add
	handler  http.Handler
	roots    *trustedRoots  // SSL_CERT_FILE, SSL_CERT_DIR, read when TLS needs them (roots.go)
	globals  bool           // Add installed the App's telemetry and logger as the process-wide defaults
	server   serverSettings // the HTTP server's settings (kestrel.go)

	shutdownTimeout, flushTimeout, shutdownDelay time.Duration

	// res holds the databases, caches and Redis clients opened by name.
	res resources
	// wrapTransport stacks the HTTP client middleware (outermost first)
	// over the discovery-aware, instrumented transport of a named client.
	// The resilience pipeline plugs in here.
	wrapTransport []func(name string, next http.RoundTripper) http.RoundTripper
	// hedged names the clients WithHedging gave the hedging handler.
	hedged map[string]bool

	mu         sync.Mutex
	base       *http.Transport
	clients    map[string]http.RoundTripper
	pipelines  []*resilience.Transport          // closed by Shutdown
	byClient   map[string]*resilience.Transport // the pipelines by client name, for CircuitState
	hooks      []hook
	sides      []SideServer // served beside HTTP (side.go)
	serving    bool
	serverDone chan struct{} // closed when Serve has drained; nil until Serve starts
	shutDown   bool          // the hooks were taken: no more are registered

	stopping     chan struct{} // closed when Shutdown starts
	workers      workers       // App.Go's background workers (workers.go)
	stopOnce     sync.Once
	shutdownDone chan struct{} // closed when the first Shutdown returns; nil until it starts
	shutdownErr  error

	draining atomic.Bool // shutdown has begun: /health answers 503

	// opening is the parent of the contexts clients open with;
	// cancelOpens ends it when Shutdown closes the clients.
	opening     context.Context
	cancelOpens context.CancelFunc
}

// Option configures Add.
type Option func(*options)

type options struct {
	cfg             *discovery.Config
	shutdownTimeout *time.Duration
	flushTimeout    *time.Duration
	shutdownDelay   *time.Duration
	logWriter       io.Writer
	middleware      []func(string, http.RoundTripper) http.RoundTripper
	hedged          map[string]bool
	routeFunc       func(*http.Request) string
	noGlobals       bool
	sources         []discovery.Source
}

// WithConfig makes Add use cfg instead of calling discovery.Load. Tests
// pass discovery.FromMap(...) so they never depend on the process
// environment; every OTEL_* variable is then read from cfg too.
func WithConfig(cfg *discovery.Config) Option { return func(o *options) { o.cfg = cfg } }

// WithShutdownTimeout sets the grace period in-flight requests get to
// finish once shutdown starts, overriding
// Aspire:ServiceDefaults:ShutdownTimeout. Past it, remaining connections
// are closed. A negative d makes Add fail.
func WithShutdownTimeout(d time.Duration) Option {
	return func(o *options) { o.shutdownTimeout = &d }
}

// WithFlushTimeout bounds the Shutdown that Run performs after draining
// (flushing telemetry, closing clients), overriding
// Aspire:ServiceDefaults:FlushTimeout. A negative d makes Add fail.
func WithFlushTimeout(d time.Duration) Option {
	return func(o *options) { o.flushTimeout = &d }
}

// WithLogWriter makes the App's logger write to w instead of os.Stderr.
func WithLogWriter(w io.Writer) Option { return func(o *options) { o.logWriter = w } }

// WithHTTPMiddleware wraps the transport of every client App.HTTPClient
// makes. mw receives the client's name and the transport below it (the
// resilience pipeline resolving through service discovery on every
// attempt, then client instrumentation, then the shared connection pool)
// and returns the transport to use. Several middlewares
// stack with the first given outermost.
func WithHTTPMiddleware(mw func(name string, next http.RoundTripper) http.RoundTripper) Option {
	return func(o *options) { o.middleware = append(o.middleware, mw) }
}

// Add sets up a service the way .NET Aspire's AddServiceDefaults and
// MapDefaultEndpoints do, and returns the App to run it. In order, it:
//
//  1. loads configuration (discovery.Load, unless WithConfig), adding
//     the WithConfigSource sources;
//  2. sets up OpenTelemetry traces, metrics and logs from the OTEL_*
//     variables, each exported over OTLP only when an endpoint is set
//     (otherwise a no-op provider), and installs them, with W3C trace
//     context and baggage propagation, as the otel globals (not with
//     WithoutGlobals);
//  3. replaces slog's default logger (slog.SetDefault, which also routes
//     the log package; not with WithoutGlobals) with App.Logger: stderr
//     (text in Development, JSON otherwise) with trace_id/span_id from the
//     context, plus the OTel log pipeline (integrations/aspireredis
//     routes go-redis's own logger there too, once it opens a client);
//  4. creates the health registry with its "self" live check, served at
//     GET /health and GET /alive in front of h;
//  5. wraps h in server instrumentation (App.Handler);
//  6. in a container with a memory limit and no GOMEMLIMIT, sets Go's
//     soft memory limit to 90 % of it (MemoryLimitKey; not with
//     WithoutGlobals).
//
// h is any http.Handler: an *http.ServeMux, or another router such as
// chi's. Span and metric routes come from the ServeMux pattern that
// matched, or from WithRouteFunc. h may be nil for a worker: the App then
// serves only the health endpoints, and only when the configuration names
// an endpoint (see Run). Errors name the variable or key at
// fault. If Add fails, nothing needs closing.
func Add(ctx context.Context, h http.Handler, opts ...Option) (*App, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	cfg := o.cfg
	if cfg == nil {
		var err error
		if cfg, err = discovery.Load(); err != nil {
			return nil, fmt.Errorf("servicedefaults: %w", err)
		}
	}
	cfg, watch, err := addSources(ctx, cfg, o.sources)
	if err != nil {
		return nil, err
	}
	a := &App{
		cfg:           cfg,
		resolver:      discovery.NewResolver(cfg),
		clients:       map[string]http.RoundTripper{},
		stopping:      make(chan struct{}),
		wrapTransport: o.middleware,
		hedged:        o.hedged,
	}

	// Read every setting before building anything, so a bad value fails
	// Add without side effects.
	var errs []error
	a.shutdownTimeout, a.flushTimeout, a.shutdownDelay, err = readShutdownSettings(cfg, &o)
	errs = append(errs, err)
	hs, err := readHealthSettings(cfg)
	errs = append(errs, err)
	ls, err := readLogSettings(cfg)
	errs = append(errs, err)
	a.server, err = readServerSettings(cfg)
	errs = append(errs, err)
	ots, err := readOTelSettings(cfg)
	errs = append(errs, err)
	errs = append(errs, readResilienceSettings(cfg, o.hedged))
	errs = append(errs, readMemoryLimitSettings(cfg))
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("servicedefaults: %w", err)
	}
	a.roots = ots.roots

	a.tel, err = newTelemetry(ctx, ots)
	if err != nil {
		return nil, err
	}
	a.opening, a.cancelOpens = context.WithCancel(context.WithoutCancel(ctx))

	w := o.logWriter
	if w == nil {
		w = os.Stderr
	}
	a.logs = newLogHandlers(w, ls, a.tel.lp)
	a.logger = a.logs.logger(instrumentationName)
	a.user = a.logs.logger(ots.serviceName)
	for _, warning := range ots.warnings {
		a.logger.Warn(warning.msg, "variable", warning.key)
	}

	a.health = health.NewRegistry(health.WithDefaultTimeout(hs.timeout), health.WithLogger(a.componentLogger(scopeHealth)))
	_ = a.health.Register(health.Check{
		Name:  SelfCheckName,
		Tags:  []string{health.TagLive},
		Check: func(context.Context) error { return nil },
	})
	if mux, ok := h.(*http.ServeMux); ok && mux == nil {
		h = nil // a nil *ServeMux, as callers passed before Add took any handler
	}
	if h == nil {
		h = http.NotFoundHandler()
		a.server.worker = true // listens only on a configured endpoint (kestrel.go)
	}
	if mux, ok := h.(*http.ServeMux); ok {
		if err := checkProbePatterns(mux); err != nil {
			_ = a.tel.shutdown(ctx)
			a.cancelOpens()
			return nil, err
		}
	}
	a.next = h
	a.handler = a.newServer(h,
		a.readiness(a.health.Handler(health.HandlerOptions{
			Detailed: hs.detailed, CacheDuration: hs.cache, ResponseTimeout: hs.response,
		}), hs.detailed),
		a.health.Handler(health.HandlerOptions{
			Predicate: health.Tagged(health.TagLive), Detailed: hs.detailed, CacheDuration: hs.cache, ResponseTimeout: hs.response,
		}),
		o.routeFunc)

	// Side effects on process-wide state come last, once nothing can fail.
	if !o.noGlobals {
		a.globals = true
		a.installGlobals()
	}
	if watch {
		a.watchConfig()
	}
	return a, nil
}

// checkProbePatterns fails when mux has its own route for a health
// endpoint, which the App's would shadow.
func checkProbePatterns(mux *http.ServeMux) error {
	for _, p := range []string{HealthPath, AlivePath} {
		_, pattern := mux.Handler(&http.Request{Method: http.MethodGet, URL: &url.URL{Path: p}, Host: "localhost"})
		if route(pattern) == p {
			return fmt.Errorf("servicedefaults: mapping %q: the mux already has %q", "GET "+p, pattern)
		}
	}
	return nil
}

type healthSettings struct {
	detailed bool
	cache    time.Duration
	timeout  time.Duration
	response time.Duration // longest wait of a probe for a run
}

func readHealthSettings(cfg *discovery.Config) (healthSettings, error) {
	hc := cfg.Section("Aspire:ServiceDefaults:HealthChecks")
	dev := cfg.IsDevelopment()
	defCache := DefaultHealthCacheDuration
	if dev {
		defCache = 0
	}
	var s healthSettings
	var errs []error
	var err error
	s.detailed, err = hc.Bool("DetailedOutput", dev)
	errs = append(errs, err)
	s.cache, err = hc.Duration("CacheDuration", defCache)
	errs = append(errs, err)
	s.timeout, err = hc.Duration("Timeout", health.DefaultTimeout)
	errs = append(errs, err)
	if s.timeout <= 0 {
		errs = append(errs, &discovery.KeyError{Key: "Aspire:ServiceDefaults:HealthChecks:Timeout", Err: errors.New("must be positive")})
	}
	s.response, err = hc.Duration("ResponseTimeout", health.DefaultResponseTimeout)
	errs = append(errs, err)
	if s.response <= 0 {
		errs = append(errs, &discovery.KeyError{Key: "Aspire:ServiceDefaults:HealthChecks:ResponseTimeout", Err: errors.New("must be positive")})
	}
	return s, errors.Join(errs...)
}

// headerCarrier is propagation.HeaderCarrier without the per-call
// canonicalization (an allocation) of the propagators' lower-case names.
type headerCarrier http.Header

var canonicalNames = map[string]string{"traceparent": "Traceparent", "tracestate": "Tracestate", "baggage": "Baggage"}

func (h headerCarrier) Get(key string) string {
	if ck, ok := canonicalNames[key]; ok {
		if v := h[ck]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	return http.Header(h).Get(key)
}

func (h headerCarrier) Set(key, value string) { http.Header(h).Set(key, value) }

func (h headerCarrier) Keys() []string { return propagation.HeaderCarrier(h).Keys() }

// route returns the path part of a ServeMux pattern
// ("GET example.com/items/{id}" -> "/items/{id}").
func route(pattern string) string {
	if i := strings.IndexAny(pattern, " \t"); i >= 0 {
		pattern = strings.TrimLeft(pattern[i:], " \t")
	}
	if i := strings.IndexByte(pattern, '/'); i > 0 {
		pattern = pattern[i:]
	}
	return pattern
}

// Config returns the configuration the App was built from.
func (a *App) Config() *discovery.Config { return a.cfg }

// Resolver returns the App's service-endpoint resolver.
func (a *App) Resolver() *discovery.Resolver { return a.resolver }

// Logger returns the App's logger (also slog's default after Add). Log
// with the ...Context methods inside a request so records carry the
// trace_id and span_id of the current span. Its records are exported
// under an instrumentation scope named after the service (its
// OTEL_SERVICE_NAME), which the Aspire dashboard shows as their Category;
// goaspire's packages log under their own package paths.
func (a *App) Logger() *slog.Logger { return a.user }

// Health returns the App's health registry. Register checks on it to have
// /health (every check) and /alive (checks tagged health.TagLive) run
// them.
func (a *App) Health() *health.Registry { return a.health }

// Handler returns the instrumented handler Run serves: the handler given
// to Add, behind the health endpoints, wrapped in server instrumentation
// (a server span per request, continuing the caller's trace, named
// "{method} {route}" with http.route, plus the http.server.* metrics;
// the health endpoints are neither traced nor measured) and panic
// recovery (see the package documentation). Use
// it to serve the App with an http.Server of your own.
func (a *App) Handler() http.Handler { return a.handler }

// TracerProvider returns the App's tracer provider (a no-op one when
// traces are not exported), to hand to client libraries.
func (a *App) TracerProvider() trace.TracerProvider { return a.tel.tp }

// MeterProvider returns the App's meter provider (a no-op one when
// metrics are not exported).
func (a *App) MeterProvider() metric.MeterProvider { return a.tel.mp }

// Tracer returns a tracer for user code; name is the instrumentation
// scope, conventionally the package path.
func (a *App) Tracer(name string, opts ...trace.TracerOption) trace.Tracer {
	return a.tel.tp.Tracer(name, opts...)
}

// Meter returns a meter for user code's instruments (counters,
// histograms...); name is the instrumentation scope.
func (a *App) Meter(name string, opts ...metric.MeterOption) metric.Meter {
	return a.tel.mp.Meter(name, opts...)
}

// OnShutdown registers f to run during Shutdown, after the server has
// drained and the telemetry buffered so far has been exported, in reverse
// order of registration (like defer). Clients made by the App register
// their Close here; users may add their own. f gets Shutdown's context
// (less a reserve for stopping telemetry) and should return when it ends:
// a hook still running then is abandoned and reported in Shutdown's error
// (see HookTimeoutError). f registered after Shutdown has taken the hooks
// runs at once with a background context.
func (a *App) OnShutdown(f func(context.Context) error) {
	a.mu.Lock()
	if !a.shutDown {
		a.hooks = append(a.hooks, hook{fmt.Sprintf("OnShutdown hook %d", len(a.hooks)+1), f})
		a.mu.Unlock()
		return
	}
	a.mu.Unlock()
	if err := f(context.Background()); err != nil {
		a.logger.Warn("shutdown hook failed", "error", err)
	}
}

// HTTPClient returns an http.Client for calling other services, as an
// Aspire .NET service's HttpClient with AddServiceDiscovery and
// AddStandardResilienceHandler. Its transport, shared by every client of
// the same name, stacks (outermost first):
//
//   - the WithHTTPMiddleware middlewares;
//   - the standard resilience pipeline (package resilience: concurrency
//     limit, total timeout 30 s, up to 3 retries with backoff, a circuit
//     breaker per destination, attempt timeout 10 s), configured from
//     Aspire:Resilience:Http and Aspire:Resilience:Http:Clients:{name}; or
//     the hedging pipeline for clients named in WithHedging; or none, by
//     Aspire:ServiceDefaults:HttpClients:{name}:Resilience = None;
//   - service discovery, on every attempt: logical URLs such as
//     "https+http://catalog/items" resolve through App.Resolver, so a
//     retry goes to the next instance;
//   - client instrumentation: a span per attempt, named after the method
//     ("GET"), with the trace context propagated to the callee, and the
//     http.client.* metrics, with otelhttp's instrumentation scope and
//     attributes (with traces and metrics off, only the propagation); the
//     span ends when the response body is read to its end or closed; its
//     url.full has no user information and secret query parameters
//     (api_key, token, ...) masked, and a retried or hedged attempt has
//     http.request.resend_count;
//   - one connection pool shared by the whole App, trusting the system
//     roots plus SSL_CERT_FILE / SSL_CERT_DIR from the configuration and
//     using HTTP_PROXY / HTTPS_PROXY / NO_PROXY from it.
//
// name identifies the client to middleware and configuration, and is the
// client's base address: a request URL without a host goes to that
// service, so client.Get("/products/1") on HTTPClient("catalog") is a GET
// of "https+http://catalog/products/1" (as .NET's BaseAddress); a full URL
// goes where it says. App.CircuitState reads the client's breakers, and
// App.HealthHTTPClient is the client for health checks of the same
// service, outside the pipeline. The pipeline's total timeout bounds each call;
// request contexts still apply. Shutdown closes the pool's idle
// connections.
func (a *App) HTTPClient(name string) *http.Client {
	a.mu.Lock()
	defer a.mu.Unlock()
	rt, ok := a.clients[name]
	if !ok {
		rt = a.newClientTransport(name)
		a.clients[name] = rt
	}
	return &http.Client{Transport: rt}
}

func (a *App) newBaseTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 64 // the default 2 throttles service-to-service traffic
	pc := &httpproxy.Config{
		HTTPProxy:  a.cfg.String("HTTP_PROXY"),
		HTTPSProxy: a.cfg.String("HTTPS_PROXY"),
		NoProxy:    a.cfg.String("NO_PROXY"),
	}
	proxy := pc.ProxyFunc()
	t.Proxy = func(r *http.Request) (*url.URL, error) { return proxy(r.URL) }
	// The first client reads the trusted roots, unless the system roots
	// hold them (see trustedRoots).
	if pool := a.RootCAs(); pool != nil {
		t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return t
}

// Shutdown stops the App and returns by ctx's deadline whatever a hook
// does. It makes /health answer 503, stops the server if Serve is running
// (the grace period for in-flight requests applies, bounded by ctx),
// exports the telemetry buffered so far, runs the OnShutdown hooks
// (closing the clients the App made) with ctx, abandoning one still
// running near the deadline, closes idle HTTP client connections, then
// flushes and stops telemetry with the time reserved for it.
//
// Its error reports hooks that failed or were abandoned, workers that
// did not stop and a server that did not drain in time. Telemetry that
// could not be exported (the collector is down, slow or refusing) is not
// an error: Shutdown logs one warning on the console with the spans, log
// records and metric data points lost, and, once the first flush has
// failed, gives the providers only a moment to stop rather than the rest
// of ctx.
//
// It is idempotent: later calls wait for the first, or for their own ctx,
// and return its result. Run calls it after draining, so a deferred
// Shutdown after Run is harmless.
func (a *App) Shutdown(ctx context.Context) error {
	a.beginDraining()
	a.stopOnce.Do(func() { close(a.stopping) })
	a.mu.Lock()
	done := a.shutdownDone
	first := done == nil
	if first {
		done = make(chan struct{})
		a.shutdownDone = done
	}
	a.mu.Unlock()
	if first {
		err := a.shutdown(ctx)
		a.mu.Lock()
		a.shutdownErr = err
		a.mu.Unlock()
		close(done)
		return err
	}
	select {
	case <-done:
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.shutdownErr
	case <-ctx.Done():
		return fmt.Errorf("servicedefaults: waiting for the shutdown in progress: %w", ctx.Err())
	}
}
