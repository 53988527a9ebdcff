// Package resiliencetest helps test code that calls HTTP services through
// a resilience pipeline: a scripted fake transport that answers with a
// sequence of responses, errors and delays, without a network, and a
// TimeScale that shrinks the pipeline's delays and timeouts so failure
// scenarios run in milliseconds.
//
//	fake := resiliencetest.NewTransport(
//		resiliencetest.Respond(503).Times(2),
//		resiliencetest.Respond(200).Body(`{"id":1}`),
//	)
//	rt, _ := resilience.NewTransport(fake, &resilience.TransportConfig{TimeScale: resiliencetest.TimeScale})
//	client := &http.Client{Transport: rt}
//	// ... exercise your code with client, then inspect fake.Requests().
package resiliencetest

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/goaspire/goaspire/internal/redact"
	"github.com/goaspire/goaspire/resilience"
)

// Errors a Fail step can return. They look to the pipeline like the
// transport errors a real network produces.
var (
	// ErrConnectionReset is a connection reset by the peer.
	ErrConnectionReset error = &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
	// ErrConnectionRefused is a refused connection.
	ErrConnectionRefused error = &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	// ErrTimeout is a network timeout (its Timeout method returns true).
	ErrTimeout error = &net.OpError{Op: "read", Net: "tcp", Err: timeoutError{}}
)

type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

// Step is one scripted outcome: a response, an error, or a hang. Build one
// with Respond, Fail or Hang and refine it with its methods; Steps are
// values, each method returns a modified copy.
type Step struct {
	status int
	header http.Header
	body   string
	err    error
	hang   bool
	delay  time.Duration
	times  int
}

// Respond answers with status, an empty body and no headers.
func Respond(status int) Step { return Step{status: status, times: 1} }

// Fail makes RoundTrip return err, such as ErrConnectionReset.
func Fail(err error) Step { return Step{err: err, times: 1} }

// Delay answers 200 OK after d: a slow server. It is Respond(200).After(d).
func Delay(d time.Duration) Step { return Respond(http.StatusOK).After(d) }

// Hang blocks until the request's context is done, then returns its
// error: a server that never answers.
func Hang() Step { return Step{hang: true, times: 1} }

// Body sets the response body.
func (s Step) Body(body string) Step { s.body = body; return s }

// Header adds a response header.
func (s Step) Header(key, value string) Step {
	h := s.header.Clone()
	if h == nil {
		h = http.Header{}
	}
	h.Add(key, value)
	s.header = h
	return s
}

// RetryAfter adds a Retry-After header of d, in whole seconds rounded up.
func (s Step) RetryAfter(d time.Duration) Step {
	secs := int64((d + time.Second - 1) / time.Second)
	return s.Header("Retry-After", strconv.FormatInt(secs, 10))
}

// RetryAfterDate adds a Retry-After header holding the HTTP date t.
func (s Step) RetryAfterDate(t time.Time) Step {
	return s.Header("Retry-After", t.UTC().Format(http.TimeFormat))
}

// After delays the outcome by d; the request's context still interrupts
// the wait, as it would a slow server.
func (s Step) After(d time.Duration) Step { s.delay = d; return s }

// Times repeats the step n times (n ≥ 1).
func (s Step) Times(n int) Step {
	if n < 1 {
		n = 1
	}
	s.times = n
	return s
}

// String describes the step, for test failure messages.
func (s Step) String() string {
	switch {
	case s.hang:
		return "hang"
	case s.err != nil:
		return "fail: " + s.err.Error()
	}
	return "respond " + strconv.Itoa(s.status)
}

// Request is a request the Transport received.
type Request struct {
	// Method, URL and Header are the request's.
	Method string
	URL    *url.URL
	Header http.Header
	// Host is the request's Host field.
	Host string
	// Body is the request body, read in full.
	Body []byte
	// Time is when the request arrived.
	Time time.Time
	// Step is the outcome the request was given.
	Step Step
}

// String describes the request without its secrets: the method, the URL
// with any password masked, and the body's size.
func (r Request) String() string {
	return fmt.Sprintf("%s %s (%d-byte body)", r.Method, redactedURL(r.URL), len(r.Body))
}

// Format implements fmt.Formatter so that no verb prints a secret: %#v
// shows the fields with the URL's password, secret headers
// (Authorization, Cookie, API keys) and secrets in the body masked; every
// other verb formats String. The fields themselves keep the real values.
func (r Request) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		fmt.Fprintf(f, "resiliencetest.Request{Method:%q, URL:%q, Header:%#v, Host:%q, Body:%q, Time:%#v, Step:%q}",
			r.Method, redactedURL(r.URL), redact.Header(r.Header), r.Host, redact.Text(string(r.Body)), r.Time, r.Step.String())
		return
	}
	fmt.Fprintf(f, fmt.FormatString(f, verb), r.String())
}

// LogValue implements slog.LogValuer with secrets masked, as Format does.
func (r Request) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("method", r.Method),
		slog.String("url", redactedURL(r.URL)),
		slog.Any("header", redact.Header(r.Header)),
		slog.Int("body_bytes", len(r.Body)),
		slog.String("step", r.Step.String()),
	)
}

// MarshalJSON implements json.Marshaler with secrets masked, as Format
// does; the body is a string.
func (r Request) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Method string
		URL    string
		Header http.Header
		Host   string
		Body   string
		Time   time.Time
		Step   string
	}{r.Method, redactedURL(r.URL), redact.Header(r.Header), r.Host, redact.Text(string(r.Body)), r.Time, r.Step.String()})
}

func redactedURL(u *url.URL) string {
	if u == nil {
		return ""
	}
	return redact.URL(u.String())
}

// Transport is an http.RoundTripper that answers requests with its script,
// one step per request, in order; once the script is used up, the last
// step repeats (no steps at all means 200 OK). It records every request.
// A Transport is safe for concurrent use.
type Transport struct {
	mu    sync.Mutex
	steps []Step
	idx   int
	used  int // uses of steps[idx]
	reqs  []Request
	open  atomic.Int64
}

// NewTransport returns a Transport playing steps.
func NewTransport(steps ...Step) *Transport {
	return &Transport{steps: steps}
}

// Requests returns the requests received so far, in order.
func (t *Transport) Requests() []Request {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]Request(nil), t.reqs...)
}

// Calls returns the number of requests received so far.
func (t *Transport) Calls() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.reqs)
}

// OpenBodies returns the number of response bodies handed out and not yet
// closed. After a client is done with every response it should be zero:
// anything else is a leaked connection in a real transport.
func (t *Transport) OpenBodies() int { return int(t.open.Load()) }

func (t *Transport) next() Step {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.steps) == 0 {
		return Respond(http.StatusOK)
	}
	s := t.steps[t.idx]
	t.used++
	if t.used >= s.times && t.idx < len(t.steps)-1 {
		t.idx++
		t.used = 0
	}
	return s
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	rec := Request{Method: req.Method, URL: req.URL, Header: req.Header.Clone(), Host: req.Host, Time: time.Now()}
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		_ = req.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("resiliencetest: reading the request body: %w", err)
		}
		rec.Body = b
	}
	s := t.next()
	rec.Step = s
	t.mu.Lock()
	t.reqs = append(t.reqs, rec)
	t.mu.Unlock()

	ctx := req.Context()
	if s.delay > 0 {
		timer := time.NewTimer(s.delay)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return nil, ctx.Err()
		}
	}
	if s.hang {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.err != nil {
		return nil, s.err
	}
	h := s.header.Clone()
	if h == nil {
		h = http.Header{}
	}
	t.open.Add(1)
	return &http.Response{
		Status:        strconv.Itoa(s.status) + " " + http.StatusText(s.status),
		StatusCode:    s.status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Body:          &body{Reader: strings.NewReader(s.body), open: &t.open},
		ContentLength: int64(len(s.body)),
		Request:       req,
	}, nil
}

// body counts itself closed once.
type body struct {
	*strings.Reader
	open   *atomic.Int64
	closed atomic.Bool
}

func (b *body) Close() error {
	if b.closed.CompareAndSwap(false, true) {
		b.open.Add(-1)
	}
	return nil
}

// TimeScale is the TimeScale of fast pipelines (TransportConfig,
// HedgingConfig and PipelineConfig have the field): it scales every
// duration by 1/100, so the defaults become a 20 ms base retry delay, a
// 100 ms attempt timeout, a 300 ms total timeout and a 50 ms break, and a
// Retry-After of one second waits 10 ms. A scenario with a few retries
// runs in tens of milliseconds, with timeouts still wide enough for a
// loaded CI machine. Durations you set yourself are scaled too.
const TimeScale = 0.01

// NewClient returns an *http.Client sending through the standard pipeline
// configured by c (nil means the defaults) over t, with TimeScale unless c
// sets another one, for tests of code that takes an *http.Client.
func NewClient(t *Transport, c *resilience.TransportConfig) (*http.Client, error) {
	var cc resilience.TransportConfig
	if c != nil {
		cc = *c
	}
	if cc.TimeScale == 0 {
		cc.TimeScale = TimeScale
	}
	rt, err := resilience.NewTransport(t, &cc)
	if err != nil {
		return nil, err
	}
	return &http.Client{Transport: rt}, nil
}
