package servicedefaults

import (
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/goaspire/goaspire/internal/memo"
)

// WithRouteFunc makes the App name a request's route (the server span
// "{method} {route}", its http.route attribute and the http.route of the
// server metrics) with f instead of the pattern of the http.ServeMux that
// matched. f is called once the handler given to Add has returned (with
// traces and metrics off, only for the log of a recovered panic), with
// the request the App passed to it; it returns the route template (such
// as "/items/{id}"), or "" for none (the span is then named after the
// method alone, unless the ServeMux set a pattern). For a chi router:
//
//	servicedefaults.WithRouteFunc(func(r *http.Request) string {
//		return router.Find(chi.NewRouteContext(), r.Method, r.URL.Path)
//	})
func WithRouteFunc(f func(*http.Request) string) Option {
	return func(o *options) { o.routeFunc = f }
}

// server is App.Handler: the health endpoints in front of the user's
// handler, panic recovery, and the server instrumentation.
//
// The instrumentation is otelhttp's (same scope, span, attributes and
// http.server.* instruments) done with less around it: one wrapper for
// the writer (the panic-recovery one, which also counts), pooled
// per-request state, and the metric attribute sets, span names and
// record options computed once per route and reused.
type server struct {
	a         *App
	next      http.Handler
	health    http.Handler
	alive     http.Handler
	routeFunc func(*http.Request) string
	prop      propagation.TextMapPropagator

	tracer                trace.Tracer // nil when traces are off
	duration              metric.Float64Histogram
	requestSize, respSize metric.Int64Histogram // nil when metrics are off

	routes memo.Bounded[routeKey, *routeEntry]
}

// maxRoutes bounds the per-route cache: server.address comes from the
// client's Host header, so the key space is the client's to choose.
const maxRoutes = 1024

type routeKey struct {
	method, route, host, proto, errType string
	port, status                        int
	tls                                 bool
}

type routeEntry struct {
	name      string // span name
	routeAttr attribute.KeyValue
	record    []metric.RecordOption // the metric attribute set
}

var serverSpanKind = trace.WithSpanKind(trace.SpanKindServer)

func (a *App) newServer(next http.Handler, health, alive http.Handler, routeFunc func(*http.Request) string) *server {
	s := &server{a: a, next: next, health: health, alive: alive, routeFunc: routeFunc, prop: a.tel.prop, routes: memo.Bounded[routeKey, *routeEntry]{Max: maxRoutes}}
	if a.tel.tracing {
		s.tracer = a.tel.tp.Tracer(otelhttp.ScopeName, trace.WithInstrumentationVersion(otelhttp.Version))
	}
	if a.tel.metering {
		m := a.tel.mp.Meter(otelhttp.ScopeName, metric.WithInstrumentationVersion(otelhttp.Version))
		// Errors only come with invalid names: these are constants.
		s.duration, _ = m.Float64Histogram("http.server.request.duration",
			metric.WithUnit("s"), metric.WithDescription("Duration of HTTP server requests."),
			metric.WithExplicitBucketBoundaries(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10))
		s.requestSize, _ = m.Int64Histogram("http.server.request.body.size",
			metric.WithUnit("By"), metric.WithDescription("Size of HTTP server request bodies."))
		s.respSize, _ = m.Int64Histogram("http.server.response.body.size",
			metric.WithUnit("By"), metric.WithDescription("Size of HTTP server response bodies."))
	}
	return s
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case HealthPath:
		serveProbe(s.health, w, r)
		return
	case AlivePath:
		serveProbe(s.alive, w, r)
		return
	}
	st := statePool.Get().(*reqState)
	st.ResponseWriter = w
	if s.tracer == nil && s.duration == nil {
		s.serveUntraced(st, r)
	} else {
		s.serveTraced(st, r)
		clear(st.attrs[:]) // drop the references before pooling
	}
	abort := st.abort
	st.reset()
	statePool.Put(st)
	if abort {
		panic(http.ErrAbortHandler) // the server closes the connection without logging
	}
}

// serveProbe serves the health endpoints, uninstrumented, to GET and HEAD
// as ServeMux's "GET /health" pattern would.
func serveProbe(h http.Handler, w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, http.StatusText(http.StatusMethodNotAllowed), http.StatusMethodNotAllowed)
		return
	}
	h.ServeHTTP(w, r)
}

// serveUntraced serves r with traces and metrics off: only the caller's
// trace context is extracted, so logs and outgoing calls stay correlated.
func (s *server) serveUntraced(st *reqState, r *http.Request) {
	// The server canonicalizes header keys, so a map lookup skips
	// untraced requests without HeaderCarrier's per-call
	// canonicalization of the lower-case names.
	if len(r.Header["Traceparent"]) != 0 || len(r.Header["Baggage"]) != 0 {
		if ctx := s.prop.Extract(r.Context(), headerCarrier(r.Header)); ctx != r.Context() {
			r = r.WithContext(ctx)
		}
	}
	// Nothing is recorded: the handler writes through the panic
	// writer alone, which tracks what recovery needs.
	s.serve(st, &st.panicWriter, r)
}

func (s *server) serveTraced(st *reqState, r *http.Request) {
	start := time.Now()
	ctx := r.Context()
	if len(r.Header["Traceparent"]) != 0 || len(r.Header["Baggage"]) != 0 {
		ctx = s.prop.Extract(ctx, headerCarrier(r.Header))
	}
	method := standardMethod(r.Method)
	var span trace.Span
	if s.tracer != nil {
		attrs := requestAttrs(st.attrs[:0], r, method)
		ctx, span = s.tracer.Start(ctx, spanMethod(method), serverSpanKind, trace.WithAttributes(attrs...))
	}
	if ctx != r.Context() {
		r = r.WithContext(ctx)
	}
	var body *countingBody
	if r.Body != nil && r.Body != http.NoBody {
		body = &st.body
		body.ReadCloser = r.Body
		r.Body = body
	}

	s.serve(st, st, r)

	if body != nil {
		r.Body = body.ReadCloser // the server checks r.Body's type after the handler
	}
	st.route = s.route(r)
	status := st.status
	if status == 0 {
		status = http.StatusOK
	}
	e := s.entry(r, method, st.route, status, st.errType)
	if span != nil {
		if st.route != "" {
			span.SetName(e.name)
		}
		n := 0
		if body != nil && body.n > 0 {
			st.attrs[n] = semconv.HTTPRequestBodySize(int(body.n))
			n++
		}
		if st.written > 0 {
			st.attrs[n] = semconv.HTTPResponseBodySize(int(st.written))
			n++
		}
		st.attrs[n] = semconv.HTTPResponseStatusCode(status)
		n++
		if st.route != "" {
			st.attrs[n] = e.routeAttr
			n++
		}
		span.SetAttributes(st.attrs[:n]...)
		if status >= 500 || status < 100 {
			if st.errType == "" { // a recovered panic set its own status
				if status < 100 || status >= 600 {
					span.SetStatus(codes.Error, "Invalid HTTP status code "+strconv.Itoa(status))
				} else {
					span.SetStatus(codes.Error, "")
				}
			}
		}
		span.End()
	}
	if s.duration != nil {
		var read int64
		if body != nil {
			read = body.n
		}
		s.requestSize.Record(ctx, read, e.record...)
		s.respSize.Record(ctx, st.written, e.record...)
		s.duration.Record(ctx, float64(time.Since(start))/float64(time.Second), e.record...)
	}
}

// serve serves r with the user's handler, writing to w (st, or its
// panicWriter), recovering a panic (see handlePanic).
func (s *server) serve(st *reqState, w http.ResponseWriter, r *http.Request) {
	defer func() {
		if p := recover(); p != nil {
			if s.routeFunc != nil || r.Pattern != "" {
				st.route = s.route(r)
			}
			s.a.handlePanic(st, r, p)
		}
	}()
	s.next.ServeHTTP(w, r)
}

// route returns the route of r once the handler has run: the user's
// function's, else the ServeMux pattern's path.
func (s *server) route(r *http.Request) string {
	if s.routeFunc != nil {
		if rt := s.routeFunc(r); rt != "" {
			return rt
		}
	}
	if r.Pattern != "" {
		return route(r.Pattern)
	}
	return ""
}

// entry returns the span name, route attribute and metric attribute set
// of a request, computed once per distinct key.
func (s *server) entry(r *http.Request, method, route string, status int, errType string) *routeEntry {
	host, port := splitHostPort(r.Host)
	tls := r.TLS != nil
	if p := requiredPort(tls, port); p > 0 {
		port = p
	} else {
		port = 0
	}
	k := routeKey{method: method, route: route, host: host, proto: r.Proto, errType: errType, port: port, status: status, tls: tls}
	return s.routes.Get(k, newRouteEntry)
}

func newRouteEntry(k routeKey) *routeEntry {
	e := &routeEntry{name: spanMethod(k.method)}
	attrs := []attribute.KeyValue{
		semconv.HTTPRequestMethodKey.String(k.method),
		scheme(k.tls),
		semconv.ServerAddress(k.host),
		semconv.HTTPResponseStatusCode(k.status),
	}
	if k.port > 0 {
		attrs = append(attrs, semconv.ServerPort(k.port))
	}
	if name, version := netProtocol(k.proto); name != "" {
		attrs = append(attrs, semconv.NetworkProtocolName(name))
		if version != "" {
			attrs = append(attrs, semconv.NetworkProtocolVersion(version))
		}
	}
	if k.route != "" {
		e.name += " " + k.route
		e.routeAttr = semconv.HTTPRoute(k.route)
		attrs = append(attrs, e.routeAttr)
	}
	if k.errType != "" {
		attrs = append(attrs, errorTypeKey.String(k.errType))
	}
	e.record = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(attrs...))}
	return e
}

// requestAttrs appends the attributes otelhttp gives a server span at its
// start.
func requestAttrs(attrs []attribute.KeyValue, r *http.Request, method string) []attribute.KeyValue {
	host, port := splitHostPort(r.Host)
	tls := r.TLS != nil
	attrs = append(attrs, semconv.ServerAddress(host), semconv.HTTPRequestMethodKey.String(method), scheme(tls))
	if p := requiredPort(tls, port); p > 0 {
		attrs = append(attrs, semconv.ServerPort(p))
	}
	if method == "_OTHER" {
		attrs = append(attrs, semconv.HTTPRequestMethodOriginal(r.Method))
	}
	peer, peerPort := splitHostPort(r.RemoteAddr)
	if peer != "" {
		attrs = append(attrs, semconv.NetworkPeerAddress(peer))
		if peerPort > 0 {
			attrs = append(attrs, semconv.NetworkPeerPort(peerPort))
		}
	}
	if ua := r.Header["User-Agent"]; len(ua) != 0 && ua[0] != "" {
		attrs = append(attrs, semconv.UserAgentOriginal(ua[0]))
	}
	client := peer
	if xff := r.Header["X-Forwarded-For"]; len(xff) != 0 && xff[0] != "" {
		client, _, _ = strings.Cut(xff[0], ",")
	}
	if client != "" {
		attrs = append(attrs, semconv.ClientAddress(client))
	}
	if r.URL != nil && r.URL.Path != "" {
		attrs = append(attrs, semconv.URLPath(r.URL.Path))
	}
	if name, version := netProtocol(r.Proto); name != "" {
		if name != "http" {
			attrs = append(attrs, semconv.NetworkProtocolName(name))
		}
		if version != "" {
			attrs = append(attrs, semconv.NetworkProtocolVersion(version))
		}
	}
	return attrs
}

var (
	schemeHTTP  = semconv.URLScheme("http")
	schemeHTTPS = semconv.URLScheme("https")
)

func scheme(tls bool) attribute.KeyValue {
	if tls {
		return schemeHTTPS
	}
	return schemeHTTP
}

// standardMethod returns the method as http.request.method records it:
// the known methods, else "_OTHER".
func standardMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodHead,
		http.MethodPatch, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	switch u := strings.ToUpper(m); u {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodHead,
		http.MethodPatch, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return u
	}
	return "_OTHER"
}

// spanMethod is the method part of a span name ("HTTP" for an unknown
// method, as otelhttp names it).
func spanMethod(method string) string {
	if method == "_OTHER" {
		return "HTTP"
	}
	return method
}

func netProtocol(proto string) (name, version string) {
	name, version, _ = strings.Cut(proto, "/")
	switch name {
	case "HTTP":
		return "http", version
	case "":
		return "", version
	}
	return strings.ToLower(name), version
}

// splitHostPort splits "host:port", "[v6]:port" or a bare host; port is
// -1 when absent or invalid.
func splitHostPort(hostport string) (string, int) {
	i := strings.LastIndexByte(hostport, ':')
	if i < 0 || strings.HasPrefix(hostport, "[") && strings.IndexByte(hostport[i:], ']') >= 0 {
		return strings.Trim(hostport, "[]"), -1
	}
	host, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return host, -1
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return host, -1
	}
	return host, int(port)
}

func requiredPort(tls bool, port int) int {
	if port <= 0 || tls && port == 443 || !tls && port == 80 {
		return -1
	}
	return port
}

// reqState is the per-request state of App.Handler, pooled: the writer
// the handler gets (panicWriter's job, plus the status and size the
// instrumentation records) and room for the span's attributes. A
// ResponseWriter must not be used after ServeHTTP returns, so reuse is
// safe for handlers that keep that rule.
type reqState struct {
	panicWriter
	status  int
	written int64
	route   string
	errType string
	body    countingBody
	attrs   [16]attribute.KeyValue
}

var statePool = sync.Pool{New: func() any { return new(reqState) }}

// reset clears st but for attrs, which only the traced path uses (and
// clears).
func (st *reqState) reset() {
	st.panicWriter = panicWriter{}
	st.status, st.written, st.route, st.errType = 0, 0, "", ""
	st.body = countingBody{}
}

func (st *reqState) WriteHeader(code int) {
	if st.status == 0 && code >= 200 || code == http.StatusSwitchingProtocols {
		st.status = code
	}
	st.panicWriter.WriteHeader(code)
}

func (st *reqState) Write(p []byte) (int, error) {
	if st.status == 0 {
		st.status = http.StatusOK
	}
	n, err := st.panicWriter.Write(p)
	st.written += int64(n)
	return n, err
}

func (st *reqState) WriteString(p string) (int, error) {
	if st.status == 0 {
		st.status = http.StatusOK
	}
	n, err := st.panicWriter.WriteString(p)
	st.written += int64(n)
	return n, err
}

func (st *reqState) ReadFrom(r io.Reader) (int64, error) {
	if st.status == 0 {
		st.status = http.StatusOK
	}
	n, err := st.panicWriter.ReadFrom(r)
	st.written += n
	return n, err
}

// countingBody counts the request body bytes the handler reads.
type countingBody struct {
	io.ReadCloser
	n int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	return n, err
}
