package resilience

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/bulkhead"
	"github.com/failsafe-go/failsafe-go/common"
	"github.com/failsafe-go/failsafe-go/retrypolicy"
	"github.com/failsafe-go/failsafe-go/timeout"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/internal/outlier"
)

// Transport is an http.RoundTripper that sends requests through a
// resilience pipeline: the standard one (NewTransport) or the hedging one
// (NewHedgingTransport).
//
// A Transport is safe for concurrent use; make one per client
// configuration and share it (with its base transport's connection pool).
type Transport struct {
	base         http.RoundTripper
	kind         kind
	name         string
	opts         Options        // effective (scaled) standard options
	hedging      HedgingOptions // effective (scaled) hedging options
	declared     Options        // as configured, for error messages
	declaredH    HedgingOptions
	scale        float64
	resolver     *discovery.Resolver
	baseAddr     *url.URL // scheme and host of a host-less request; nil for none
	shouldHandle func(*http.Response, error) bool
	anyMethod    bool // retry or hedge non-idempotent methods too

	limiter    bulkhead.Bulkhead[any] // standard pipeline only
	queueLimit int
	queued     atomic.Int64
	dests      *destinations
	tel        *telemetry
	// outliers ejects instances that stop answering; nil without a
	// Resolver or with outlier detection off.
	outliers *outlier.Detector
	maxEject int // OutlierDetection.MaxEjectionPercent

	// exec runs the retries (standard) or the total timeout (hedging).
	exec    failsafe.Executor[*http.Response]
	hedgeFn func(failsafe.Execution[*http.Response]) (*http.Response, error)

	timers sync.Pool // *attemptTimer
}

// NewTransport returns a Transport applying the standard resilience
// pipeline of .NET's AddStandardResilienceHandler to every request sent
// through base (nil means http.DefaultTransport), outermost first:
//
//  1. a concurrency limit (RateLimiter; failsafe-go bulkhead), refusing
//     calls with ErrRejected past it;
//  2. a total timeout, failing the call with ErrTotalTimeout;
//  3. retries (failsafe-go retrypolicy) of transient failures: 408, 429,
//     5xx and transport errors, with exponential backoff and decorrelated
//     jitter, or the delay a Retry-After header asks for;
//  4. per attempt, the destination: the URL is resolved through the
//     TransportConfig.Resolver, if any, so each retry may go to
//     another instance, and instances that stopped answering are
//     ejected for a while (outlier detection, see the package
//     documentation);
//  5. a circuit breaker per destination authority (failsafe-go
//     circuitbreaker), refusing calls with ErrCircuitOpen while open;
//  6. an attempt timeout, failing the attempt with ErrAttemptTimeout.
//
// (The package documentation says which parts are failsafe-go's and why
// the timeouts are timers of this package's.)
//
// Requests are retried only when their method is idempotent (GET, HEAD,
// OPTIONS, TRACE, PUT, DELETE), when they carry an Idempotency-Key or
// X-Idempotency-Key header, or when the caller opted in
// (RetryOptions.RetryNonIdempotent, RetryNonIdempotent). A
// request body is replayed through Request.GetBody; a request whose body
// cannot be replayed is sent once. Responses of failed attempts are
// drained and closed. When retries are exhausted the last response is
// returned as is (a 503 stays a 503, with a nil error), or the last error
// wrapped in an error matching ErrRetriesExceeded.
//
// The timeouts cover a call until its response headers arrive; reading
// the body is bounded by the request's context. Canceling that context
// stops everything at once.
//
// c may be nil: the zero TransportConfig is Aspire's defaults. The options
// are validated; an invalid value is a *discovery.KeyError naming it.
func NewTransport(base http.RoundTripper, c *TransportConfig) (*Transport, error) {
	if c == nil {
		c = &TransportConfig{}
	}
	o := c.Options
	if o == (Options{}) {
		o = DefaultOptions()
	}
	if err := o.validate(nil); err != nil {
		return nil, err
	}
	s, err := newSettings(c.Name, c.MeterProvider, c.Logger, c.TimeScale)
	if err != nil {
		return nil, err
	}
	t := newTransport(base, kindStandard, s, c.Resolver, c.ShouldHandle)
	if t.baseAddr, err = baseAddress(c.BaseAddress); err != nil {
		return nil, err
	}
	t.declared, t.opts = o, o.scaled(s.scale)
	t.anyMethod = o.Retry.RetryNonIdempotent
	o = t.opts
	t.limiter = bulkhead.New[any](uint(o.RateLimiter.PermitLimit))
	t.queueLimit = o.RateLimiter.QueueLimit
	t.dests = &destinations{opts: o.CircuitBreaker}
	if err := t.initTelemetry(&s); err != nil {
		return nil, err
	}
	t.initOutliers(o.OutlierDetection)
	retry := retrypolicy.NewBuilder[*http.Response]().
		WithMaxRetries(o.Retry.MaxRetryAttempts).
		HandleIf(func(_ *http.Response, err error) bool {
			af, ok := err.(*attemptFailure)
			return ok && af.retryable
		}).
		ReturnLastFailure().
		WithDelayFunc(t.retryDelay).
		OnRetryScheduled(t.onRetryScheduled).
		Build()
	// The retry executor takes over only when the first attempt failed and
	// may be retried (see RoundTrip); each attempt is the retryStep. The
	// total and attempt timeouts are timers per attempt; see attempt.
	t.exec = failsafe.With[*http.Response](retry, step[*http.Response](t.retryStep))
	return t, nil
}

// NewHedgingTransport returns a Transport applying the hedging pipeline of
// .NET's AddStandardHedgingHandler to every request sent through base (nil
// means http.DefaultTransport), outermost first: a total timeout, then
// hedging, then per destination a concurrency limit, a circuit breaker and
// an attempt timeout.
//
// Hedging sends the request, and when no response has come after
// Hedging.Delay, or as soon as an attempt fails with a transient failure
// (including an open breaker), sends it again, up to MaxHedgedAttempts
// more times; the first response that is not a transient failure wins and
// the other attempts are canceled, their responses drained. With a
// Resolver (HedgingConfig.Resolver), each attempt goes to a different instance of
// the service, in round-robin order. The method and body rules are those
// of NewTransport: a request that may not be sent twice is sent once.
//
// c may be nil: the zero HedgingConfig is Aspire's defaults.
func NewHedgingTransport(base http.RoundTripper, c *HedgingConfig) (*Transport, error) {
	if c == nil {
		c = &HedgingConfig{}
	}
	o := c.Options
	if o == (HedgingOptions{}) {
		o = DefaultHedgingOptions()
	}
	if err := o.validate(nil); err != nil {
		return nil, err
	}
	s, err := newSettings(c.Name, c.MeterProvider, c.Logger, c.TimeScale)
	if err != nil {
		return nil, err
	}
	t := newTransport(base, kindHedging, s, c.Resolver, c.ShouldHandle)
	if t.baseAddr, err = baseAddress(c.BaseAddress); err != nil {
		return nil, err
	}
	t.declaredH, t.hedging = o, o.scaled(s.scale)
	t.anyMethod = o.Hedging.HedgeNonIdempotent
	h := t.hedging
	t.dests = &destinations{opts: h.Endpoint.CircuitBreaker, permits: h.Endpoint.RateLimiter.PermitLimit, queue: h.Endpoint.RateLimiter.QueueLimit}
	if err := t.initTelemetry(&s); err != nil {
		return nil, err
	}
	t.initOutliers(h.Endpoint.OutlierDetection)
	t.exec = failsafe.With[*http.Response](timeout.New[*http.Response](h.TotalRequestTimeout))
	return t, nil
}

// kind is a Transport's pipeline.
type kind int

const (
	kindStandard kind = iota
	kindHedging
)

func newTransport(base http.RoundTripper, k kind, s settings, r *discovery.Resolver, shouldHandle func(*http.Response, error) bool) *Transport {
	if base == nil {
		base = http.DefaultTransport
	}
	if shouldHandle == nil {
		shouldHandle = IsTransientHTTP
	}
	t := &Transport{
		base:         base,
		kind:         k,
		name:         s.name,
		scale:        s.scale,
		resolver:     r,
		shouldHandle: shouldHandle,
	}
	t.hedgeFn = t.hedge
	return t
}

// baseAddress checks a configured BaseAddress and returns its scheme and
// host; nil for none.
func baseAddress(u *url.URL) (*url.URL, error) {
	if u == nil {
		return nil, nil
	}
	if u.Scheme == "" || u.Host == "" || u.Opaque != "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return nil, fmt.Errorf("resilience: BaseAddress %q must be a scheme and host alone, as https+http://catalog", u.Redacted())
	}
	return &url.URL{Scheme: u.Scheme, Host: u.Host}, nil
}

// hostless reports whether u is a URL that BaseAddress applies to: a
// path, query or fragment alone.
func hostless(u *url.URL) bool {
	return u.Host == "" && u.Scheme == "" && u.Opaque == ""
}

// destination is the authority a call of req is for, before resolution.
func (t *Transport) destination(req *http.Request) string {
	if t.baseAddr != nil && hostless(req.URL) {
		return t.baseAddr.Host
	}
	return req.URL.Host
}

func (t *Transport) initTelemetry(s *settings) error {
	tel, err := newTelemetry(s, t.dests)
	if err != nil {
		return err
	}
	t.tel = tel
	t.dests.tel = tel
	return nil
}

// initOutliers makes the outlier detector, when there are instances to
// choose from and ejection is on.
func (t *Transport) initOutliers(o OutlierDetectionOptions) {
	cfg, ok := o.config()
	if !ok || t.resolver == nil {
		return
	}
	n := o.ConsecutiveFailures
	t.maxEject = o.MaxEjectionPercent
	t.outliers = outlier.New(cfg, func(addr string, d time.Duration) { t.tel.ejected(addr, d, n) })
}

// Ejected reports whether outlier detection has ejected destination (an
// instance's authority, "host:port") for now: calls go to the service's
// other instances while one of them is not ejected.
func (t *Transport) Ejected(destination string) bool {
	return t.outliers.Ejected(destination)
}

// CircuitState returns the state of the circuit breaker of destination (an
// authority, "host:port"); CircuitClosed when there is none.
func (t *Transport) CircuitState(destination string) CircuitState {
	if d, ok := t.dests.lookup(destination); ok {
		return CircuitState(d.state.Load())
	}
	return CircuitClosed
}

// CloseIdleConnections closes the base transport's idle connections, when
// it can.
func (t *Transport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// Close unregisters the Transport's metric callbacks. It does not close
// the base transport, which may be shared.
func (t *Transport) Close() error { return t.tel.close() }

// RoundTrip implements http.RoundTripper. It does not modify req.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL == nil {
		closeBody(req)
		return nil, errors.New("resilience: request has no URL")
	}
	if t.kind == kindHedging {
		c := t.newCall(req)
		resp, err := t.exec.WithContext(c).GetWithExecution(t.hedgeFn)
		return c.finish(resp, err)
	}
	ctx := req.Context()
	if err := acquire(ctx, t.limiter, t.queueLimit, &t.queued); err != nil {
		closeBody(req)
		if errors.Is(err, bulkhead.ErrFull) {
			dest := t.destination(req)
			t.tel.rejected(ctx, dest, outcomeConcurrencyLimit)
			return nil, &rejectedError{destination: dest, permitLimit: t.opts.RateLimiter.PermitLimit}
		}
		return nil, err
	}
	defer t.limiter.ReleasePermit()
	c := t.newCall(req)
	resp, err := t.attempt(c, &c.cur)
	if af, ok := err.(*attemptFailure); ok && af.retryable && t.opts.Retry.MaxRetryAttempts > 0 {
		// The first attempt failed and may be retried: failsafe-go's
		// retry policy takes over, its first execution replaying this
		// outcome. The no-failure path thus costs no executor.
		c.replay, c.first = true, af
		resp, err = t.exec.WithContext(c).Get(noResponse)
	}
	return c.finish(resp, err)
}

// retryStep is the retry policy's inner step: one attempt of the call,
// the first one replayed.
func (t *Transport) retryStep(exec failsafe.Execution[*http.Response], _ func(failsafe.Execution[*http.Response]) *common.PolicyResult[*http.Response]) *common.PolicyResult[*http.Response] {
	c := exec.Context().Value(callKey).(*call)
	var (
		resp *http.Response
		err  error
	)
	if c.replay {
		c.replay, err = false, c.first
		c.first = nil
	} else {
		resp, err = t.attempt(c, &c.cur)
	}
	return &common.PolicyResult[*http.Response]{Result: resp, Error: err, Done: true, Success: true, SuccessAll: true}
}

// noResponse is the function the retry executor is given; retryStep makes
// the attempts instead.
func noResponse() (*http.Response, error) { return nil, nil }

// call is the state of one RoundTrip. It is also the root context of the
// call's executions, so the steps find it (and its current attempt)
// through the contexts failsafe-go derives from it.
type call struct {
	context.Context
	cancel      context.CancelFunc // hedging only: ends every attempt's context
	t           *Transport
	req         *http.Request
	url         *url.URL // the logical URL: req's, or req's at the BaseAddress
	start       time.Time
	retryable   bool // the method and body allow sending the request again
	bodyBlocked bool // the method allows it but the body cannot be replayed
	bodySent    atomic.Bool
	attempts    atomic.Int32
	prev        float64 // decorrelated jitter state
	cur         attempt // the current attempt (the standard pipeline's attempts are sequential)
	rb          respBody
	replay      bool // the retry executor's first attempt replays first
	first       *attemptFailure
	// tried lists the destinations the call's attempts went to, in
	// order, so a retry goes to an instance not tried yet (triedBuf
	// keeps the usual few without an allocation).
	tried    []string
	triedBuf [4]string
	// The first attempt of a standard call keeps its resolved URL, its
	// request and (when the caller's context cannot be canceled) its
	// context here, so the no-failure path allocates none of them.
	// Later attempts, whose predecessors' requests the base transport
	// may still hold, get their own.
	firstURL url.URL
	firstReq http.Request
	firstCtx attemptCtx
	// baseURL is the logical URL of a host-less request sent to the
	// BaseAddress.
	baseURL url.URL
}

// attempt is the state of one attempt.
type attempt struct {
	c     *call
	url   *url.URL // where the attempt goes
	fixed bool     // url was chosen by hedging; do not resolve or reroute
	n     int32    // the attempt's number in its call, from 1
	// lost is set when the instance did not answer: the connection
	// failed before the response headers, or the attempt timed out
	// (the failures outlier detection counts).
	lost bool
	// superseded is set by the hedging loop on an attempt it cancels
	// because an attempt started at least the hedging delay later, to
	// another instance, answered first: its instance counts as not
	// answering.
	superseded atomic.Bool
	resp       *http.Response
	// cancel ends the context resp is read through, once resp is drained
	// or its body closed.
	cancel canceler
}

// release drains the attempt's response, if it has one, and ends its
// context.
func (a *attempt) release() {
	if a.resp != nil {
		drain(a.resp, a.cancel)
		a.resp = nil
	}
	if a.cancel != nil {
		a.cancel.cancel()
		a.cancel = nil
	}
}

func (t *Transport) newCall(req *http.Request) *call {
	c := &call{t: t, req: req, start: time.Now(), Context: req.Context()}
	if t.kind == kindHedging {
		c.Context, c.cancel = context.WithCancel(req.Context())
	}
	c.cur.c = c
	c.tried = c.triedBuf[:0]
	c.url = req.URL
	if t.baseAddr != nil && hostless(req.URL) {
		u := &c.baseURL
		*u = *req.URL
		u.Scheme, u.Host = t.baseAddr.Scheme, t.baseAddr.Host
		if u.Path != "" && u.Path[0] != '/' {
			u.Path = "/" + u.Path
			if u.RawPath != "" {
				u.RawPath = "/" + u.RawPath
			}
		}
		c.url = u
	}
	methodOK := t.anyMethod || idempotent(req.Method) || hasIdempotencyKey(req.Header) ||
		optedIn(req)
	bodyOK := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	c.retryable = methodOK && bodyOK
	c.bodyBlocked = methodOK && !bodyOK
	return c
}

// Value makes the call, and its current attempt, reachable from the
// contexts failsafe-go derives from it.
func (c *call) Value(key any) any {
	switch key {
	case callKey:
		return c
	case attemptKey:
		return &c.cur
	}
	return c.Context.Value(key)
}

// body returns the body for an attempt: the request's own for the first,
// a replay from GetBody for the others.
func (c *call) body() (io.ReadCloser, error) {
	if c.bodySent.CompareAndSwap(false, true) {
		return c.req.Body, nil
	}
	if c.req.Body == nil || c.req.Body == http.NoBody {
		return c.req.Body, nil
	}
	if c.req.GetBody == nil {
		return nil, &bodyError{msg: "the request has no GetBody"}
	}
	b, err := c.req.GetBody()
	if err != nil {
		return nil, &bodyError{err: err, msg: "GetBody failed"}
	}
	return b, nil
}

// attemptFailure is an attempt's transient failure: a response or an
// error. The retry policy retries it when retryable.
type attemptFailure struct {
	resp       *http.Response
	err        error
	retryAfter time.Duration
	// hasRetryAfter says retryAfter came from a Retry-After header
	// (which may ask for 0: retry at once).
	hasRetryAfter bool
	retryable     bool
	dest          string
}

func (f *attemptFailure) Error() string {
	if f.err != nil {
		return f.err.Error()
	}
	return "resilience: transient failure: HTTP " + strconv.Itoa(f.resp.StatusCode)
}

func (f *attemptFailure) Unwrap() error { return f.err }

func (f *attemptFailure) outcome() string {
	if f.resp != nil {
		return outcomeOf(f.resp.StatusCode, nil)
	}
	return outcomeOf(0, f.err)
}

// attempt makes one attempt of call a.c, as a child of parent: it checks
// the time left, picks the destination (resolving the URL), applies the
// destination's concurrency limit (hedging) and circuit breaker, sends the
// request under a timer, and classifies the outcome for the breaker and
// the retry. A transient failure is returned as an *attemptFailure.
//
// The timer is the attempt timeout, or the total timeout when that comes
// first; between attempts the retry delay is capped at what the total
// timeout leaves, so one timer per attempt enforces both. It cancels the
// attempt's context, as failsafe-go's timeout policy does, but is stopped
// (not canceled) when the response headers arrive, so the body stays
// readable until it is closed.
func (t *Transport) attempt(parent context.Context, a *attempt) (*http.Response, error) {
	c := a.c
	n := c.attempts.Add(1)
	a.n = n

	limit, kind := t.opts.AttemptTimeout, timeoutAttempt
	if t.kind == kindHedging {
		limit = t.hedging.Endpoint.Timeout
	} else if n == 1 {
		// The call has just started: the whole total timeout is left.
		if t.opts.TotalRequestTimeout <= limit {
			limit, kind = t.opts.TotalRequestTimeout, timeoutTotal
		}
	} else if left := t.opts.TotalRequestTimeout - time.Since(c.start); left <= 0 {
		return nil, t.totalTimeout(c)
	} else if left < limit {
		limit, kind = left, timeoutTotal
	}

	if !a.fixed {
		u, err := t.pick(c)
		if err != nil {
			return nil, err
		}
		a.url = u
	}
	d := t.dests.get(a.url.Host, c.start)
	if d.limiter != nil {
		if err := acquire(parent, d.limiter, t.dests.queue, &d.queued); err != nil {
			if !errors.Is(err, bulkhead.ErrFull) {
				return nil, err
			}
			t.tel.rejected(parent, d.name, outcomeConcurrencyLimit)
			rej := &rejectedError{destination: d.name, permitLimit: d.permits}
			return nil, &attemptFailure{err: rej, retryable: c.retryable, dest: d.name}
		}
		defer d.limiter.ReleasePermit()
	}
	seq := d.seq.Load()
	if !d.cb.TryAcquirePermit() {
		if seq != d.seq.Load() {
			t.tel.stateEvent(parent, d.name, CircuitState(d.state.Load()))
		}
		if alt := t.reroute(a, d); alt != nil {
			d = alt
			seq = d.seq.Load()
		} else {
			t.tel.rejected(parent, d.name, outcomeCircuitOpen)
			open := &CircuitOpenError{Destination: d.name, RemainingDelay: d.cb.RemainingDelay()}
			if a.fixed {
				// Hedging: another attempt may go elsewhere.
				return nil, &attemptFailure{err: open, retryable: c.retryable, dest: d.name}
			}
			return nil, open
		}
	}

	if !a.fixed {
		c.tried = append(c.tried, d.name)
	}
	a.resp, a.cancel, a.lost = nil, nil, false
	ctx, cancel := parent, canceler(nil)
	var timer *attemptTimer
	if dl, ok := parent.Deadline(); !ok || time.Until(dl) > limit {
		// (When the caller's own deadline comes first, it bounds the
		// attempt and no timer is needed: the error is then the
		// caller's.)
		if a == &c.cur && n == 1 && parent == context.Context(c) && c.Context.Done() == nil {
			// The caller's context cannot be canceled: the call's own
			// attempt context needs no registration with it.
			c.firstCtx.Context = c
			ctx, cancel = &c.firstCtx, &c.firstCtx
		} else {
			var f context.CancelFunc
			ctx, f = context.WithCancel(parent)
			cancel = cancelFunc(f)
		}
		timer = t.startTimer(limit, cancel)
	}
	resp, err := t.send(ctx, a)
	if err != nil && a.resp == nil && a.superseded.Load() {
		a.lost = true
	}
	if timer != nil && !t.stopTimer(timer) {
		// The timer fired: whatever the attempt produced is dropped.
		resp = nil
		if kind == timeoutTotal {
			err = t.totalTimeout(c)
			// A first attempt bounded by the total timeout (not above
			// the attempt timeout) had all of it to answer.
			a.lost = n == 1 && a.resp == nil
		} else {
			err = &attemptFailure{err: &timeoutError{kind: timeoutAttempt, duration: t.declaredAttemptTimeout(), destination: d.name}}
			t.tel.timedOut(parent, d.name, timeoutAttempt)
			a.lost = a.resp == nil
		}
	}
	if t.outliers != nil {
		// Outlier detection counts the attempts that got no answer; any
		// answer, a 5xx included, resets the count. The caller's own
		// cancellation or deadline, and a total timeout cutting a later
		// attempt short, say nothing about the instance.
		if a.lost {
			if t.mayEject(c, d.name) && t.outliers.Failure(d.name) {
				t.tel.ejectionEvent(parent, d.name)
			}
		} else if a.resp != nil {
			t.outliers.Success(d.name)
		}
	}

	af, _ := err.(*attemptFailure)
	if af != nil {
		d.cb.RecordFailure()
	} else {
		// As Polly: an outcome that is not a transient failure, the
		// caller's cancellation and the total timeout included, counts
		// as a success.
		d.cb.RecordSuccess()
	}
	if seq != d.seq.Load() {
		t.tel.stateEvent(parent, d.name, CircuitState(d.state.Load()))
	}

	// Keep the attempt's context alive only while its response may
	// still be read.
	if r := a.resp; r != nil && (r == resp || (af != nil && af.resp == r)) {
		a.cancel = cancel
	} else {
		if r != nil {
			drain(r, cancel)
			a.resp = nil
		}
		if cancel != nil {
			cancel.cancel()
		}
	}

	if af != nil {
		af.dest = d.name
		af.retryable = c.retryable
		if af.resp != nil && af.retryAfter > 0 && t.kind == kindStandard &&
			af.retryAfter >= t.opts.TotalRequestTimeout-time.Since(c.start) {
			// Retry-After asks for longer than the total timeout leaves:
			// waiting would only end in a timeout, so hand the response
			// back now.
			af.retryable = false
		}
	}
	return resp, err
}

func (t *Transport) totalTimeout(c *call) error {
	d := t.declared.TotalRequestTimeout
	if t.kind == kindHedging {
		d = t.declaredH.TotalRequestTimeout
	}
	t.tel.timedOut(c, c.url.Host, timeoutTotal)
	return &timeoutError{kind: timeoutTotal, duration: d, destination: c.url.Host}
}

func (t *Transport) declaredAttemptTimeout() time.Duration {
	if t.kind == kindHedging {
		return t.declaredH.Endpoint.Timeout
	}
	return t.declared.AttemptTimeout
}

// pick returns the URL an attempt of call c goes to. The first attempt
// takes the resolver's round-robin choice, which spreads calls over the
// instances; a later attempt of the same call goes to the first instance,
// in configuration order after the one tried last, that the call has not
// tried yet and whose breaker is not open; failing that, to one tried
// before whose breaker is not open, the one that just failed last of all.
// The choice is the call's own: attempts made by other goroutines
// meanwhile cannot hand the failed instance back to it.
func (t *Transport) pick(c *call) (*url.URL, error) {
	if t.resolver == nil {
		return c.url, nil
	}
	if len(c.tried) == 0 {
		var (
			u   *url.URL
			err error
		)
		if c.cur.n == 1 && t.kind == kindStandard {
			u, err = t.resolver.ResolveInto(&c.firstURL, c.url)
		} else {
			u, err = t.resolver.Resolve(c.url)
		}
		if err == nil && t.outliers.Ejected(u.Host) {
			u = t.avoidEjected(c, u)
		}
		return u, err
	}
	eps, err := t.resolver.Endpoints(c.url)
	if err != nil {
		return nil, err
	}
	if len(eps) < 2 {
		return t.resolver.Resolve(c.url)
	}
	start := c.after(eps)
	best, bestRank := start%len(eps), 4
	for k := range len(eps) {
		i := (start + k) % len(eps)
		rank := 0
		if c.hasTried(eps[i].Host) {
			rank = 1
		}
		if t.dests.isOpen(eps[i].Host) || t.outliers.Ejected(eps[i].Host) {
			rank += 2
		}
		if rank < bestRank {
			best, bestRank = i, rank
		}
		if rank == 0 {
			break
		}
	}
	return endpointURL(c.url, eps[best]), nil
}

// avoidEjected returns the URL of the first instance after u's, in
// configuration order, that is not ejected; u when every instance is.
// When u is the call's own first URL it is rewritten in place.
func (t *Transport) avoidEjected(c *call, u *url.URL) *url.URL {
	eps, err := t.resolver.Endpoints(c.url)
	if err != nil || len(eps) < 2 {
		return u
	}
	start := 0
	for i, ep := range eps {
		if ep.Host == u.Host {
			start = i
			break
		}
	}
	for k := 1; k < len(eps); k++ {
		ep := eps[(start+k)%len(eps)]
		if t.outliers.Ejected(ep.Host) {
			continue
		}
		if u == &c.firstURL {
			u.Scheme, u.Host = ep.Scheme, ep.Host
			return u
		}
		return endpointURL(c.url, ep)
	}
	return u
}

// after returns the index in eps following the instance the call tried
// last (0 when it is not among them).
func (c *call) after(eps []discovery.Endpoint) int {
	if len(c.tried) == 0 {
		return 0
	}
	last := c.tried[len(c.tried)-1]
	for i, ep := range eps {
		if ep.Host == last {
			return i + 1
		}
	}
	return 0
}

func (c *call) hasTried(host string) bool {
	for _, h := range c.tried {
		if h == host {
			return true
		}
	}
	return false
}

// endpointURL is u sent to endpoint ep: its scheme and host, u's path,
// query and fragment.
func endpointURL(u *url.URL, ep discovery.Endpoint) *url.URL {
	out := *u
	out.Scheme, out.Host = ep.Scheme, ep.Host
	return &out
}

// reroute looks for another instance of the service whose breaker lets a
// call through, when the chosen one's is open: first one the call has not
// tried, then one it has, and of each, instances not ejected first. It
// returns nil when there is none.
func (t *Transport) reroute(a *attempt, open *destination) *destination {
	if a.fixed || t.resolver == nil {
		return nil
	}
	c := a.c
	eps, err := t.resolver.Endpoints(c.url)
	if err != nil || len(eps) < 2 {
		return nil
	}
	start := c.after(eps)
	passes := 2
	if t.anyEjected(eps) {
		passes = 4 // instances not ejected, then ejected ones
	}
	for pass := range passes {
		for k := range len(eps) {
			ep := eps[(start+k)%len(eps)]
			if ep.Host == open.name || c.hasTried(ep.Host) != (pass&1 == 1) ||
				(passes == 4 && t.outliers.Ejected(ep.Host) != (pass >= 2)) {
				continue
			}
			d := t.dests.get(ep.Host, c.start)
			seq := d.seq.Load()
			if d.cb.TryAcquirePermit() {
				a.url = endpointURL(c.url, ep)
				return d
			}
			if seq != d.seq.Load() {
				t.tel.stateEvent(c, d.name, CircuitState(d.state.Load()))
			}
		}
	}
	return nil
}

// mayEject reports whether instance name of call c's service may be
// ejected: whether, with it, no more than MaxEjectionPercent of the
// service's instances would be ejected (one always may be).
func (t *Transport) mayEject(c *call, name string) bool {
	if t.outliers.Ejected(name) {
		return true // (Failure ignores it)
	}
	eps, err := t.resolver.Endpoints(c.url)
	if err != nil || len(eps) < 2 {
		return true
	}
	ejected := 0
	for _, ep := range eps {
		if ep.Host != name && t.outliers.Ejected(ep.Host) {
			ejected++
		}
	}
	return outlier.CapAllows(ejected, len(eps), t.maxEject)
}

// anyEjected reports whether one of eps is ejected.
func (t *Transport) anyEjected(eps []discovery.Endpoint) bool {
	if t.outliers == nil {
		return false
	}
	for _, ep := range eps {
		if t.outliers.Ejected(ep.Host) {
			return true
		}
	}
	return false
}

// send makes one attempt through the base transport.
func (t *Transport) send(ctx context.Context, a *attempt) (*http.Response, error) {
	c := a.c
	body, err := c.body()
	if err != nil {
		return nil, err
	}
	var r *http.Request
	if a.n > 1 {
		ctx = context.WithValue(ctx, resendKey, int(a.n-1))
		r = c.req.WithContext(ctx)
	} else if a == &c.cur {
		c.firstReq = *c.req.WithContext(ctx)
		r = &c.firstReq
	} else {
		r = c.req.WithContext(ctx)
	}
	if a.url != c.req.URL {
		r.URL = a.url
		if c.req.Host == "" || c.req.Host == c.url.Host {
			r.Host = ""
		}
	}
	r.Body = body
	resp, err := t.base.RoundTrip(r)
	if err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		if t.resolver != nil {
			// A service nothing configures and DNS does not know: another
			// attempt would fail the same way.
			if uerr, first := t.resolver.Unresolved(c.url, err); uerr != nil {
				if first {
					t.tel.unresolved(uerr)
				}
				return nil, uerr
			}
		}
		// No answer: a dial error, a reset, EOF before the response
		// headers (not an error that would fail the same way anywhere,
		// such as a malformed request).
		a.lost = transientTransportError(err)
		if !t.shouldHandle(nil, err) {
			return nil, err
		}
		return nil, &attemptFailure{err: err}
	}
	a.resp = resp
	if !t.shouldHandle(resp, nil) {
		return resp, nil
	}
	af := &attemptFailure{resp: resp}
	if t.kind == kindStandard && t.opts.Retry.ShouldRetryAfterHeader {
		if d, ok := retryAfter(resp.Header, time.Now()); ok {
			d = scale(d, t.scale)
			if m := t.opts.Retry.MaxDelay; m > 0 && d > m {
				d = m
			}
			af.retryAfter, af.hasRetryAfter = d, true
		}
	}
	return nil, af
}

// retryDelay is the retry policy's delay: the Retry-After the last
// response asked for, else the backoff; never past the total timeout.
func (t *Transport) retryDelay(exec failsafe.ExecutionAttempt[*http.Response]) time.Duration {
	c, _ := exec.Context().Value(callKey).(*call)
	if c == nil {
		return 0
	}
	var d time.Duration
	if af, ok := exec.LastError().(*attemptFailure); ok && af.hasRetryAfter {
		d = af.retryAfter
	} else {
		d = backoff(t.opts.Retry, exec.Retries(), &c.prev, randFloat)
	}
	if left := t.opts.TotalRequestTimeout - time.Since(c.start); d > left {
		// The next attempt will find the total timeout spent.
		d = max(left, 0)
	}
	return d
}

// onRetryScheduled drains the failed attempt's response, so its
// connection goes back to the pool during the delay, and records the
// retry.
func (t *Transport) onRetryScheduled(e failsafe.ExecutionScheduledEvent[*http.Response]) {
	ctx := e.Context()
	af, _ := e.LastError().(*attemptFailure)
	if af == nil {
		return
	}
	if a, ok := ctx.Value(attemptKey).(*attempt); ok {
		a.release()
	}
	t.tel.retry(ctx, af.dest, af.outcome(), e.Attempts(), e.Delay)
}

// finish turns the pipeline's result into RoundTrip's, and hands what is
// left of the call over to the response body.
func (c *call) finish(resp *http.Response, err error) (*http.Response, error) {
	if !c.bodySent.Load() {
		closeBody(c.req)
	}
	if err != nil {
		resp = nil
		switch e := err.(type) {
		case *attemptFailure:
			if e.resp != nil {
				resp, err = e.resp, nil
			} else {
				err = e.err
				if c.bodyBlocked {
					err = &bodyError{err: err, msg: "the request was not retried"}
				} else if n := int(c.attempts.Load()); n > 1 {
					err = &retriesExceededError{attempts: n, err: err}
				}
			}
		default:
			if cerr := c.req.Context().Err(); cerr != nil {
				if !errors.Is(err, cerr) {
					err = cerr
				}
			} else if err == timeout.ErrExceeded {
				err = c.t.totalTimeout(c)
			}
		}
	}
	a := &c.cur
	if resp == nil || a.resp != resp {
		a.release()
		if c.cancel != nil {
			c.cancel()
		}
		if resp == nil {
			if err == nil {
				err = errors.New("resilience: no response")
			}
			return nil, err
		}
	}
	dn := done{attempt: a.cancel, call: c.cancel}
	a.resp, a.cancel = nil, nil
	if rwc, ok := resp.Body.(io.ReadWriteCloser); ok && resp.StatusCode == http.StatusSwitchingProtocols {
		resp.Body = &rwBody{ReadWriteCloser: rwc, done: dn}
		return resp, nil
	}
	c.rb = respBody{ReadCloser: resp.Body, done: dn}
	resp.Body = &c.rb
	return resp, nil
}

// done ends what a response's body still holds.
type done struct {
	attempt canceler
	call    context.CancelFunc
}

func (d *done) run() {
	if d.attempt != nil {
		d.attempt.cancel()
	}
	if d.call != nil {
		d.call()
	}
}

// respBody ends the attempt's context when the caller closes the body.
type respBody struct {
	io.ReadCloser
	done done
}

func (b *respBody) Close() error {
	err := b.ReadCloser.Close()
	b.done.run()
	return err
}

type rwBody struct {
	io.ReadWriteCloser
	done done
}

func (b *rwBody) Close() error {
	err := b.ReadWriteCloser.Close()
	b.done.run()
	return err
}

// maxDrain and drainTimeout bound how much of a failed attempt's body is
// read, and for how long, to reuse its connection; past them the
// connection is closed instead.
const maxDrain = 64 << 10

const drainTimeout = time.Second

// drainTimeoutForTest, when positive, replaces drainTimeout. It is atomic
// because drains run in the background (abandoned hedged attempts) and
// may outlive the test that caused them.
var drainTimeoutForTest atomic.Int64

func drainLimit() time.Duration {
	if d := drainTimeoutForTest.Load(); d > 0 {
		return time.Duration(d)
	}
	return drainTimeout
}

// drain reads what is left of a response body, within bounds, and closes
// it. cancel, if not nil, ends the body's context: it is called if the
// drain takes longer than drainTimeout.
func drain(resp *http.Response, cancel canceler) {
	if resp == nil || resp.Body == nil {
		return
	}
	if cancel != nil {
		timer := time.AfterFunc(drainLimit(), cancel.cancel)
		defer timer.Stop()
	}
	_, _ = io.CopyN(io.Discard, resp.Body, maxDrain)
	_ = resp.Body.Close()
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

// canceler ends an attempt's context.
type canceler interface{ cancel() }

// cancelFunc is a context.CancelFunc as a canceler.
type cancelFunc context.CancelFunc

func (f cancelFunc) cancel() { f() }

// attemptCtx is the context of a call's first attempt when the caller's
// context cannot be canceled (its Done is nil, as context.Background's):
// canceling it then needs no registration with the caller's, and it lives
// in the call, so it costs no allocation of its own. Its Done channel is
// made when first asked for.
type attemptCtx struct {
	context.Context // the call
	mu              sync.Mutex
	done            chan struct{}
	err             error
}

func (c *attemptCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
		if c.err != nil {
			close(c.done)
		}
	}
	return c.done
}

func (c *attemptCtx) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *attemptCtx) cancel() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
	}
	c.err = context.Canceled
	if c.done != nil {
		close(c.done)
	}
}

// attemptTimer is an attempt's timeout: a timer that cancels the
// attempt's context when it fires. Timers that were stopped in time go
// back to their Transport's pool and serve later attempts, so the
// no-failure path allocates none.
type attemptTimer struct {
	t      *time.Timer
	mu     sync.Mutex
	target canceler
}

func (at *attemptTimer) fire() {
	at.mu.Lock()
	target := at.target
	at.mu.Unlock()
	if target != nil {
		target.cancel()
	}
}

// startTimer arms a timer canceling target after d.
func (t *Transport) startTimer(d time.Duration, target canceler) *attemptTimer {
	at, _ := t.timers.Get().(*attemptTimer)
	if at == nil {
		at = &attemptTimer{target: target}
		at.t = time.AfterFunc(d, at.fire)
		return at
	}
	at.mu.Lock()
	at.target = target
	at.mu.Unlock()
	at.t.Reset(d)
	return at
}

// stopTimer stops at and reports whether it had not fired. A timer that
// fired (its function may still be running) is left to the garbage
// collector.
func (t *Transport) stopTimer(at *attemptTimer) bool {
	if !at.t.Stop() {
		return false
	}
	at.mu.Lock()
	at.target = nil
	at.mu.Unlock()
	t.timers.Put(at)
	return true
}
