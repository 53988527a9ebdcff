package resilience

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync/atomic"

	"go.opentelemetry.io/otel/metric"

	"github.com/goaspire/goaspire/discovery"
)

// TransportConfig configures NewTransport. The zero value (or a nil
// *TransportConfig) is the standard pipeline with Aspire's defaults,
// sending each request to its URL as is.
type TransportConfig struct {
	// Options are the pipeline's policies. The zero value means
	// DefaultOptions(); start from DefaultOptions() to change a few.
	Options Options
	// Name names the pipeline: the "pipeline" attribute of its metrics and
	// span events, and a field of its logs. LoadTransportConfig sets it to
	// the client's name.
	Name string
	// Resolver, when set, resolves the request's logical URL
	// (http://catalog, https+http://catalog) on every attempt, inside the
	// retry loop: each retry goes to another instance, the circuit
	// breakers are per resolved authority, and an instance whose breaker
	// is open, or that outlier detection ejected, is skipped while another
	// one is available. Without a Resolver the request URL is used as is.
	Resolver *discovery.Resolver
	// BaseAddress, when set, is where a request whose URL has no host
	// goes, as .NET's HttpClient.BaseAddress: with BaseAddress
	// https+http://catalog, a request for "/products/1" (or "products/1")
	// is a request for https+http://catalog/products/1, resolved through
	// the Resolver like any other. Only its scheme and host are used; it
	// must have both, and no path beyond "/", query or fragment. A request
	// URL with a scheme or host is sent as is. The caller's request is
	// not modified: the pipeline's own copy of it carries the address.
	BaseAddress *url.URL
	// ShouldHandle decides which outcomes are transient failures:
	// retried (subject to the method rules) and counted by the circuit
	// breakers. Nil means IsTransientHTTP.
	ShouldHandle func(resp *http.Response, err error) bool
	// MeterProvider receives the metrics; nil means the OpenTelemetry
	// global provider.
	MeterProvider metric.MeterProvider
	// Logger receives circuit-breaker transitions; nil means slog.Default().
	Logger *slog.Logger
	// TimeScale multiplies every duration of the pipeline (timeouts,
	// delays, the breaker's window and break, Retry-After delays), after
	// validation. Tests use it to run failure scenarios in milliseconds:
	// 0.01 turns the 2 s base delay into 20 ms and the 10 s attempt
	// timeout into 100 ms. Zero means 1; it must not be negative.
	TimeScale float64
}

// HedgingConfig configures NewHedgingTransport. The zero value (or a nil
// *HedgingConfig) is the hedging pipeline with Aspire's defaults.
type HedgingConfig struct {
	// Options are the pipeline's policies. The zero value means
	// DefaultHedgingOptions().
	Options HedgingOptions
	// Name names the pipeline, as TransportConfig.Name.
	Name string
	// Resolver, when set, gives the instances the attempts race across,
	// each attempt to another instance in round-robin order, leaving out
	// instances outlier detection ejected while another one is there.
	// Without it every attempt goes to the request URL.
	Resolver *discovery.Resolver
	// BaseAddress is where a request whose URL has no host goes, as in
	// TransportConfig.
	BaseAddress *url.URL
	// ShouldHandle decides which outcomes are transient failures, which
	// start the next attempt at once and count for the breakers. Nil means
	// IsTransientHTTP.
	ShouldHandle func(resp *http.Response, err error) bool
	// MeterProvider, Logger and TimeScale are as in TransportConfig.
	MeterProvider metric.MeterProvider
	Logger        *slog.Logger
	TimeScale     float64
}

// PipelineConfig configures NewPipeline. The zero value (or a nil
// *PipelineConfig) is the standard policies with Aspire's defaults.
type PipelineConfig struct {
	// Options are the pipeline's policies. The zero value means
	// DefaultOptions(). Retry.RetryNonIdempotent and
	// Retry.ShouldRetryAfterHeader do not apply outside HTTP.
	Options Options
	// Name names the pipeline: its circuit breaker's destination in
	// metrics and errors, and its "pipeline" attribute. Default
	// "pipeline".
	Name string
	// ShouldHandle decides which errors are transient. Nil means
	// IsTransient. The caller's own context ending is never retried,
	// whatever it says.
	ShouldHandle func(err error) bool
	// MeterProvider, Logger and TimeScale are as in TransportConfig.
	MeterProvider metric.MeterProvider
	Logger        *slog.Logger
	TimeScale     float64
}

// LoadTransportConfig returns the configuration of the HTTP client called
// name: DefaultOptions overridden by the keys set in SectionHTTP, then by
// those in SectionHTTP:Clients:{name} (when name is not empty), validated,
// and Name set to name. The package documentation lists the keys. An
// unusable value is a *discovery.KeyError naming its full key. Set
// Resolver, MeterProvider and Logger on the result before NewTransport.
func LoadTransportConfig(cfg *discovery.Config, name string) (*TransportConfig, error) {
	o := DefaultOptions()
	if err := loadSections(cfg, SectionHTTP, name, o.ApplyConfig, func(secs ...string) error { return o.validate(cfg, secs...) }); err != nil {
		return nil, err
	}
	return &TransportConfig{Options: o, Name: name}, nil
}

// LoadHedgingConfig returns the configuration of the hedged HTTP client
// called name: DefaultHedgingOptions overridden by the keys set in
// SectionHedging, then in SectionHedging:Clients:{name}, validated, and
// Name set to name. Errors are as LoadTransportConfig's.
func LoadHedgingConfig(cfg *discovery.Config, name string) (*HedgingConfig, error) {
	o := DefaultHedgingOptions()
	if err := loadSections(cfg, SectionHedging, name, o.applyConfig, func(secs ...string) error { return o.validate(cfg, secs...) }); err != nil {
		return nil, err
	}
	return &HedgingConfig{Options: o, Name: name}, nil
}

// LoadPipelineConfig returns the configuration of the non-HTTP Pipeline
// called name: DefaultOptions overridden by the keys set in
// SectionPipelines:{name}, validated, and Name set to name. Errors are as
// LoadTransportConfig's.
func LoadPipelineConfig(cfg *discovery.Config, name string) (*PipelineConfig, error) {
	if name == "" {
		return nil, errors.New("resilience: a pipeline read from configuration needs a name")
	}
	o := DefaultOptions()
	sec := SectionPipelines + ":" + name
	if err := o.ApplyConfig(cfg.Section(sec)); err != nil {
		return nil, fmt.Errorf("resilience: %w", err)
	}
	if err := o.validate(cfg, sec); err != nil {
		return nil, err
	}
	return &PipelineConfig{Options: o, Name: name}, nil
}

// loadSections applies the section root, then root:Clients:{name} when
// name is not empty, and validates the result.
func loadSections(cfg *discovery.Config, root, name string, apply func(*discovery.Config) error, validate func(secs ...string) error) error {
	secs := []string{root}
	if name != "" {
		secs = append(secs, root+":Clients:"+name)
	}
	for _, s := range secs {
		if err := apply(cfg.Section(s)); err != nil {
			return fmt.Errorf("resilience: %w", err)
		}
	}
	return validate(secs...)
}

// settings is what the constructors share once a config is checked.
type settings struct {
	name   string
	meter  metric.MeterProvider
	logger *slog.Logger
	scale  float64
}

func newSettings(name string, mp metric.MeterProvider, l *slog.Logger, scale float64) (settings, error) {
	if scale < 0 {
		return settings{}, fmt.Errorf("resilience: TimeScale must not be negative, got %v", scale)
	}
	if scale == 0 {
		scale = 1
	}
	return settings{name: name, meter: mp, logger: l, scale: scale}, nil
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
