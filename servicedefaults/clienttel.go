package servicedefaults

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/semconv/v1.43.0/httpconv"
	"go.opentelemetry.io/otel/trace"

	"github.com/goaspire/goaspire/internal/memo"
	"github.com/goaspire/goaspire/internal/redact"
	"github.com/goaspire/goaspire/resilience"
)

// clientTransport is the client instrumentation of the App's HTTP
// clients, one span per attempt: otelhttp.NewTransport's scope, span,
// attributes and http.client.* instruments, with the span named after
// the method alone (as .NET's HttpClient names it), url.full redacted and
// http.request.resend_count recorded on retried and hedged attempts.
//
// It does less around the SDK than otelhttp: one allocation holds the
// request copy, the body wrappers and the span's attributes; the header
// is copied only when the trace context goes into it; and the metric
// attribute sets are computed once per destination, method, status and
// protocol and reused. With traces and metrics off it only passes the
// caller's trace context and baggage on.
type clientTransport struct {
	base http.RoundTripper
	prop propagation.TextMapPropagator

	tracer   trace.Tracer                        // nil when traces are off
	duration metric.Float64Histogram             // nil when metrics are off
	bodySize metric.Int64Histogram               // nil when metrics are off
	sets     memo.Bounded[clientKey, *clientSet] // metric attribute sets
}

// maxClientSets bounds the cache of metric attribute sets: the key space
// (hosts, ports, status codes) is the callers' and the servers' to choose.
const maxClientSets = 1024

type clientKey struct {
	method, host, scheme, proto, errType string
	port, status                         int
}

type clientSet struct {
	record  []metric.RecordOption
	errType attribute.KeyValue // the span's error.type for a status >= 400, else empty
}

var (
	clientSpanKind  = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient)}
	clientDurBounds = metric.WithExplicitBucketBoundaries(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
)

func (a *App) newClientInstrumentation(base http.RoundTripper) *clientTransport {
	t := &clientTransport{base: base, prop: a.tel.prop, sets: memo.Bounded[clientKey, *clientSet]{Max: maxClientSets}}
	if a.tel.tracing {
		t.tracer = a.tel.tp.Tracer(otelhttp.ScopeName, trace.WithInstrumentationVersion(otelhttp.Version))
	}
	if a.tel.metering {
		m := a.tel.mp.Meter(otelhttp.ScopeName, metric.WithInstrumentationVersion(otelhttp.Version))
		// Errors only come with invalid names: these are the conventions'.
		size, _ := httpconv.NewClientRequestBodySize(m)
		dur, _ := httpconv.NewClientRequestDuration(m, clientDurBounds)
		t.bodySize, t.duration = size.Inst(), dur.Inst()
	}
	return t
}

// clientCall is the per-attempt state, one allocation: the request sent
// on (a RoundTripper must not modify the caller's), the request and
// response body wrappers, and room for the span's attributes and the
// propagated header values.
type clientCall struct {
	req     http.Request
	reqBody countingReader
	last    atomic.Pointer[countingReader] // the body the transport reads now
	getBody func() (io.ReadCloser, error)  // the caller's GetBody
	resp    clientBody
	carrier injectCarrier
	attrs   [10]attribute.KeyValue
}

func (t *clientTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if t.tracer == nil && t.duration == nil {
		return t.propagate(r)
	}
	start := time.Now()
	ctx := r.Context()
	var span trace.Span
	if t.tracer != nil {
		ctx, span = t.tracer.Start(ctx, clientSpanName("", r), clientSpanKind...)
	}

	c := new(clientCall)
	c.req = *r.WithContext(ctx)
	out := &c.req
	if r.Body != nil && r.Body != http.NoBody {
		c.reqBody.ReadCloser = r.Body
		out.Body = &c.reqBody
		c.last.Store(&c.reqBody)
		if r.GetBody != nil {
			c.getBody = r.GetBody
			out.GetBody = c.rewind
		}
	}
	t.inject(ctx, &c.carrier, &c.req, r.Header)
	if span != nil && !span.IsRecording() {
		span = nil // sampled out: its context is passed on, nothing is recorded
	}

	host, port := clientHostPort(r)
	https := r.URL != nil && r.URL.Scheme == "https"
	port = requiredPort(https, port)
	method, original := clientMethod(r.Method)
	var attrs []attribute.KeyValue // the span's, set in one call once the attempt is over
	if span != nil {
		attrs = append(c.attrs[:0], method)
		if original.Valid() {
			attrs = append(attrs, original)
		}
		attrs = append(attrs, semconv.URLFull(clientURL(r)), semconv.ServerAddress(host))
		if port > 0 {
			attrs = append(attrs, semconv.ServerPort(port))
		}
		if resends := resilience.ResendCount(r.Context()); resends > 0 {
			attrs = append(attrs, semconv.HTTPRequestResendCount(resends))
		}
	}

	res, err := t.base.RoundTrip(out)
	if err == nil {
		res, err = checkResponse(t.base, out, res)
	}
	status := 0
	if err == nil {
		status = res.StatusCode
	}
	proto := r.Proto
	if res != nil && res.Proto != "" {
		proto = res.Proto
	}

	var set *clientSet
	if t.duration != nil || span != nil {
		errType := ""
		if status == 0 && err != nil {
			errType = metricErrorType(err)
		}
		set = t.set(clientKey{method: method.Value.AsString(), host: host, scheme: clientScheme(r), proto: proto,
			errType: errType, port: port, status: status})
	}
	if t.duration != nil {
		var size int64
		if b := c.last.Load(); b != nil {
			size = b.n.Load()
		}
		t.bodySize.Record(ctx, size, set.record...)
		t.duration.Record(ctx, float64(time.Since(start))/float64(time.Second), set.record...)
	}

	if span == nil {
		return res, err
	}
	if err != nil {
		span.SetAttributes(failedAttrs(attrs, r.Proto, err)...)
		span.SetStatus(codes.Error, err.Error())
		span.End()
		return res, err
	}
	span.SetAttributes(responseAttrs(attrs, status, proto, set)...)
	switch {
	case status < 100 || status >= 600:
		span.SetStatus(codes.Error, "Invalid HTTP status code "+strconv.Itoa(status))
	case status >= 400:
		span.SetStatus(codes.Error, "")
	}
	c.resp.span, c.resp.body = span, res.Body
	if _, ok := res.Body.(io.ReadWriteCloser); ok {
		res.Body = rwClientBody{&c.resp} // a protocol switch's body writes too
	} else {
		res.Body = &c.resp
	}
	return res, nil
}

// failedAttrs appends the attributes of an attempt that got no response.
func failedAttrs(attrs []attribute.KeyValue, proto string, err error) []attribute.KeyValue {
	if name, version := netProtocol(proto); version != "" {
		if name != "" && name != "http" {
			attrs = append(attrs, semconv.NetworkProtocolName(name))
		}
		attrs = append(attrs, semconv.NetworkProtocolVersion(version))
	}
	return append(attrs, semconv.ErrorType(err))
}

// responseAttrs appends the attributes of an attempt's response: proto
// is the response's protocol, which may differ from what the request
// asked for.
func responseAttrs(attrs []attribute.KeyValue, status int, proto string, set *clientSet) []attribute.KeyValue {
	if status > 0 {
		attrs = append(attrs, semconv.HTTPResponseStatusCode(status))
	}
	if set.errType.Valid() {
		attrs = append(attrs, set.errType)
	}
	name, version := netProtocol(proto)
	if name != "" && name != "http" {
		attrs = append(attrs, semconv.NetworkProtocolName(name))
	}
	if version != "" {
		attrs = append(attrs, semconv.NetworkProtocolVersion(version))
	}
	return attrs
}

// propagate passes the caller's trace context and baggage on, with
// traces and metrics off.
func (t *clientTransport) propagate(r *http.Request) (*http.Response, error) {
	ctx := r.Context()
	if !trace.SpanContextFromContext(ctx).IsValid() && baggage.FromContext(ctx).Len() == 0 {
		// Nothing to pass on (the propagators all carry the span
		// context or baggage): spare the copy.
		return t.base.RoundTrip(r)
	}
	c := new(struct {
		req     http.Request
		carrier injectCarrier
	})
	c.req = *r
	if !t.inject(ctx, &c.carrier, &c.req, r.Header) {
		return t.base.RoundTrip(r)
	}
	return t.base.RoundTrip(&c.req)
}

// inject writes the trace context of ctx into out's header, a copy of h
// made when the propagator sets a field, and reports whether it did.
func (t *clientTransport) inject(ctx context.Context, c *injectCarrier, out *http.Request, h http.Header) bool {
	c.src = h
	t.prop.Inject(ctx, c)
	if c.dst == nil {
		return false
	}
	out.Header = c.dst
	return true
}

// injectCarrier copies the source header the first time the propagator
// sets a field, and holds the values of the propagators' three fields.
type injectCarrier struct {
	src, dst http.Header
	vals     [3]string
}

func (c *injectCarrier) Get(key string) string { return headerCarrier(c.header()).Get(key) }

func (c *injectCarrier) Keys() []string { return headerCarrier(c.header()).Keys() }

func (c *injectCarrier) header() http.Header {
	if c.dst != nil {
		return c.dst
	}
	return c.src
}

func (c *injectCarrier) Set(key, value string) {
	if c.dst == nil {
		c.dst = make(http.Header, len(c.src)+2)
		for k, v := range c.src {
			c.dst[k] = v // shared: only whole entries are replaced
		}
	}
	i := -1
	switch key {
	case "traceparent":
		key, i = "Traceparent", 0
	case "tracestate":
		key, i = "Tracestate", 1
	case "baggage":
		key, i = "Baggage", 2
	default:
		key = http.CanonicalHeaderKey(key)
	}
	if i < 0 {
		c.dst[key] = []string{value}
		return
	}
	c.vals[i] = value
	c.dst[key] = c.vals[i : i+1 : i+1]
}

// rewind is the request's GetBody when it has a body: the transport
// calls it to send the body again on a new connection, and the body
// size recorded is the last body's.
func (c *clientCall) rewind() (io.ReadCloser, error) {
	b, err := c.getBody()
	if err != nil {
		c.last.Store(nil)
		return nil, err
	}
	if b == nil || b == http.NoBody {
		return b, nil
	}
	cb := &countingReader{ReadCloser: b}
	c.last.Store(cb)
	return cb, nil
}

// countingReader counts the request body bytes the transport reads (on
// its own goroutine).
type countingReader struct {
	io.ReadCloser
	n atomic.Int64
}

func (b *countingReader) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// clientBody ends the attempt's span when the response body is read to
// its end or closed, as otelhttp's does; a read error marks the span.
type clientBody struct {
	span  trace.Span
	body  io.ReadCloser
	ended atomic.Bool
}

func (b *clientBody) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	switch err {
	case nil:
	case io.EOF:
		b.end()
	default:
		b.span.SetAttributes(semconv.ErrorType(err))
		b.span.SetStatus(codes.Error, err.Error())
	}
	return n, err
}

func (b *clientBody) Close() error {
	b.end()
	return b.body.Close()
}

func (b *clientBody) end() {
	if b.ended.CompareAndSwap(false, true) {
		b.span.End()
	}
}

// rwClientBody is clientBody for a body that also writes (a protocol
// switch's).
type rwClientBody struct{ *clientBody }

func (b rwClientBody) Write(p []byte) (int, error) {
	n, err := b.body.(io.Writer).Write(p)
	if err != nil {
		b.span.SetAttributes(semconv.ErrorType(err))
		b.span.SetStatus(codes.Error, err.Error())
	}
	return n, err
}

// set returns the metric attribute set of k (and the span's error.type
// for its status), computed once per distinct key.
func (t *clientTransport) set(k clientKey) *clientSet {
	return t.sets.Get(k, newClientSet)
}

func newClientSet(k clientKey) *clientSet {
	attrs := []attribute.KeyValue{
		semconv.HTTPRequestMethodKey.String(k.method),
		semconv.ServerAddress(k.host),
		semconv.URLScheme(k.scheme),
	}
	if k.port > 0 {
		attrs = append(attrs, semconv.ServerPort(k.port))
	}
	name, version := netProtocol(k.proto)
	if name != "" {
		attrs = append(attrs, semconv.NetworkProtocolName(name))
	}
	if version != "" {
		attrs = append(attrs, semconv.NetworkProtocolVersion(version))
	}
	if k.status > 0 {
		attrs = append(attrs, semconv.HTTPResponseStatusCode(k.status))
	}
	if k.errType != "" {
		attrs = append(attrs, errorTypeKey.String(k.errType))
	}
	s := &clientSet{record: []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(attrs...))}}
	if k.status >= 400 || k.status > 0 && k.status < 100 {
		s.errType = errorTypeKey.String(strconv.Itoa(k.status))
	}
	return s
}

// checkResponse rejects what net/http's client would reject of a
// RoundTripper's answer, and gives a response without a body http.NoBody.
func checkResponse(rt http.RoundTripper, r *http.Request, res *http.Response) (*http.Response, error) {
	switch {
	case res == nil:
		return nil, fmt.Errorf("http: RoundTripper implementation (%T) returned a nil *Response with a nil error", rt)
	case res.Body != nil:
		return res, nil
	case res.ContentLength > 0 && r.Method != http.MethodHead:
		return nil, fmt.Errorf("http: RoundTripper implementation (%T) returned a *Response with content length %d but a nil Body", rt, res.ContentLength)
	}
	res.Body = http.NoBody
	return res, nil
}

// clientHostPort returns the destination of r as server.address and
// server.port record it: the URL's host, else the Host header's.
func clientHostPort(r *http.Request) (string, int) {
	var host string
	port := -1
	if r.URL != nil {
		host, port = splitHostPort(r.URL.Host)
	}
	if host == "" && port <= 0 {
		if h := r.Header["Host"]; len(h) != 0 {
			host, port = splitHostPort(h[0])
		}
	}
	return host, port
}

// clientScheme is url.scheme on the client metrics.
func clientScheme(r *http.Request) string {
	switch {
	case r.URL != nil && r.URL.Scheme != "":
		return r.URL.Scheme
	case r.TLS != nil:
		return "https"
	}
	return "http"
}

// Method attributes, as otelhttp makes them.
var clientMethods = map[string]attribute.KeyValue{
	http.MethodConnect: semconv.HTTPRequestMethodConnect,
	http.MethodDelete:  semconv.HTTPRequestMethodDelete,
	http.MethodGet:     semconv.HTTPRequestMethodGet,
	http.MethodHead:    semconv.HTTPRequestMethodHead,
	http.MethodOptions: semconv.HTTPRequestMethodOptions,
	http.MethodPatch:   semconv.HTTPRequestMethodPatch,
	http.MethodPost:    semconv.HTTPRequestMethodPost,
	http.MethodPut:     semconv.HTTPRequestMethodPut,
	http.MethodTrace:   semconv.HTTPRequestMethodTrace,
}

// clientMethod returns http.request.method and, for a method outside the
// standard set or not in upper case, http.request.method.original. An
// empty method is a GET, as net/http sends it.
func clientMethod(m string) (method, original attribute.KeyValue) {
	if m == "" {
		return semconv.HTTPRequestMethodGet, attribute.KeyValue{}
	}
	if kv, ok := clientMethods[m]; ok {
		return kv, attribute.KeyValue{}
	}
	original = semconv.HTTPRequestMethodOriginal(m)
	if kv, ok := clientMethods[strings.ToUpper(m)]; ok {
		return kv, original
	}
	return semconv.HTTPRequestMethodOther, original
}

// clientURL is url.full: the request URL without its user information,
// and with the values of query parameters that name a secret (api_key,
// access_token, ...) replaced by redact.Mask.
func clientURL(r *http.Request) string {
	if r.URL == nil {
		return ""
	}
	u := r.URL
	if u.User != nil {
		c := *u
		c.User = nil
		u = &c
	}
	full := u.String()
	if u.RawQuery != "" && mayHoldSecret(u.RawQuery) {
		return redact.URL(full)
	}
	return full
}

// mayHoldSecret reports whether redact.URL could change a URL with this
// query: a key that names a secret, or anything escaped or unusual,
// which the full parse then decides.
func mayHoldSecret(query string) bool {
	if strings.ContainsAny(query, "%+;") {
		return true
	}
	for query != "" {
		var kv string
		kv, query, _ = strings.Cut(query, "&")
		k, _, _ := strings.Cut(kv, "=")
		if redact.IsSecretKey(k) {
			return true
		}
	}
	return false
}

// metricErrorType is error.type on the client metrics when the request
// failed without a response, as otelhttp records it: the error's type
// name, pointers dereferenced ("net.OpError").
func metricErrorType(err error) string {
	t := reflect.TypeOf(err)
	if t == nil {
		return "_OTHER"
	}
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.PkgPath() == "" || t.Name() == "" {
		if s := t.String(); s != "" {
			return s
		}
		return "_OTHER"
	}
	return t.PkgPath() + "." + t.Name()
}
