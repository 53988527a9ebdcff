package resilience

import (
	"context"
	"log/slog"
	"net/http"
	"sync/atomic"

	"go.opentelemetry.io/otel/metric"

	"github.com/goaspire/goaspire/discovery"
)

// Option configures a Transport or a Pipeline.
type Option func(*settings)

type kind int

const (
	kindStandard kind = iota
	kindHedging
	kindPipeline
)

type settings struct {
	kind     kind
	name     string
	opts     Options
	hedging  HedgingOptions
	section  string // where opts/hedging were read from, for errors
	err      error
	resolver *discovery.Resolver
	meter    metric.MeterProvider
	logger   *slog.Logger
	scale    float64

	shouldHandleHTTP func(*http.Response, error) bool
	shouldHandle     func(error) bool
}

// newSettings applies opts over the defaults and validates the options a
// constructor of kind k uses: the hedging options for kindHedging, the
// standard ones otherwise.
func newSettings(k kind, opts []Option) (*settings, error) {
	s := &settings{kind: k, opts: DefaultOptions(), hedging: DefaultHedgingOptions(), scale: 1}
	for _, o := range opts {
		if o != nil && s.err == nil {
			o(s)
		}
	}
	if s.err != nil {
		return nil, s.err
	}
	var err error
	if k == kindHedging {
		err = s.hedging.validate(s.section)
	} else {
		err = s.opts.validate(s.section)
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}

// WithOptions replaces the standard pipeline's options (for NewTransport
// and NewPipeline; NewHedgingTransport ignores them). Options given later,
// WithConfig included, override these.
func WithOptions(o Options) Option {
	return func(s *settings) { s.opts = o; s.section = "" }
}

// WithHedgingOptions replaces the hedging pipeline's options (for
// NewHedgingTransport; the other constructors ignore them).
func WithHedgingOptions(o HedgingOptions) Option {
	return func(s *settings) { s.hedging = o; s.section = "" }
}

// WithConfig reads the options from configuration, over the ones set so
// far, and names the pipeline name (see WithName). NewTransport reads
// SectionHTTP, then SectionHTTP:Clients:{name}; NewHedgingTransport reads
// SectionHedging, then SectionHedging:Clients:{name}; NewPipeline reads
// SectionPipelines:{name}. The package documentation lists the keys. An
// unusable value makes the constructor fail with an error naming the key.
func WithConfig(cfg *discovery.Config, name string) Option {
	return func(s *settings) {
		if name != "" {
			s.name = name
		}
		switch s.kind {
		case kindStandard:
			s.section, s.err = applySections(&s.opts, cfg, SectionHTTP, name)
		case kindHedging:
			s.section, s.err = applySections(&s.hedging, cfg, SectionHedging, name)
		case kindPipeline:
			if name != "" {
				s.section = SectionPipelines + ":" + name
				s.err = s.opts.ApplyConfig(cfg.Section(s.section))
			}
		}
	}
}

// WithName names the pipeline: the name is the "pipeline" attribute of
// its metrics, appears in its logs, and is a non-HTTP Pipeline's
// destination.
func WithName(name string) Option { return func(s *settings) { s.name = name } }

// WithResolver makes every attempt resolve the request's logical URL
// (http://catalog, https+http://catalog) through r, inside the retry loop:
// each retry goes to the next instance round-robin, the circuit breakers
// are per resolved authority, and an instance whose breaker is open is
// skipped while another one is available. The hedging pipeline races the
// instances r resolves. Without a resolver the request URL is used as is.
func WithResolver(r *discovery.Resolver) Option { return func(s *settings) { s.resolver = r } }

// WithMeterProvider sets where metrics go; the default is the OpenTelemetry
// global provider.
func WithMeterProvider(mp metric.MeterProvider) Option { return func(s *settings) { s.meter = mp } }

// WithLogger sets the logger circuit-breaker transitions are logged to;
// the default is slog.Default().
func WithLogger(l *slog.Logger) Option { return func(s *settings) { s.logger = l } }

// WithTimeScale multiplies every duration of the pipeline (timeouts,
// delays, the breaker's window and break, Retry-After delays) by f, after
// validation. Tests use it to run failure scenarios in milliseconds:
// WithTimeScale(0.01) turns the 2 s base delay into 20 ms and the 10 s
// attempt timeout into 100 ms. f must be positive.
func WithTimeScale(f float64) Option {
	return func(s *settings) {
		if f > 0 {
			s.scale = f
		}
	}
}

// WithShouldHandleResponse replaces the test deciding which HTTP outcomes
// are transient failures: retried (subject to the method rules), counted
// by the circuit breakers, and hedged. The default is IsTransientHTTP.
func WithShouldHandleResponse(f func(resp *http.Response, err error) bool) Option {
	return func(s *settings) { s.shouldHandleHTTP = f }
}

// WithShouldHandle replaces the test deciding which errors of a non-HTTP
// Pipeline are transient. The default is IsTransient. The caller's own
// context cancellation is never retried, whatever f says.
func WithShouldHandle(f func(err error) bool) Option {
	return func(s *settings) { s.shouldHandle = f }
}

type ctxKey int

const (
	nonIdempotentKey ctxKey = iota
	callKey
	attemptKey
	resendKey
)

// ResendCount returns how many times the request whose context is ctx was
// sent before by the pipeline: 0 for a call's first attempt, 1 for the
// first retry or hedge, and so on. A transport below the pipeline (client
// instrumentation, say) reads it from the request's context; it is what
// the semantic conventions' http.request.resend_count attribute records.
func ResendCount(ctx context.Context) int {
	n, _ := ctx.Value(resendKey).(int)
	return n
}

// RetryNonIdempotent returns a shallow copy of req that the pipeline may
// retry and hedge whatever its method, as if RetryOptions.RetryNonIdempotent
// were set for it alone. Use it for a POST or PATCH the server handles
// idempotently; sending an Idempotency-Key header has the same effect and
// tells the server too.
//
// The opt-in belongs to that one request: it is spent by the first call
// the pipeline makes with it, so a later request made with a context
// derived from req's (say, by a handler calling other services) is not
// retried unless it opts in too.
func RetryNonIdempotent(req *http.Request) *http.Request {
	return req.WithContext(context.WithValue(req.Context(), nonIdempotentKey, new(atomic.Bool)))
}

// optedIn reports whether req was made by RetryNonIdempotent and its
// opt-in not yet spent, and spends it.
func optedIn(req *http.Request) bool {
	b, _ := req.Context().Value(nonIdempotentKey).(*atomic.Bool)
	return b != nil && b.CompareAndSwap(false, true)
}
