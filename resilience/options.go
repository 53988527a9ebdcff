package resilience

import (
	"fmt"
	"strings"
	"time"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/internal/outlier"
	"github.com/goaspire/goaspire/internal/redact"
)

// Options configures the standard pipeline, as
// Microsoft.Extensions.Http.Resilience's HttpStandardResilienceOptions
// does, outermost strategy first. DefaultOptions returns Aspire's values.
//
// Every duration must be positive (Retry.Delay and Retry.MaxDelay may be
// zero), and the constructors enforce the rules .NET does: the attempt
// timeout may not exceed the total timeout, and the circuit breaker's
// sampling window must be at least twice the attempt timeout. An invalid
// value is a *discovery.KeyError naming its configuration key.
type Options struct {
	// RateLimiter limits how many calls run at once (.NET's default rate
	// limiter is a concurrency limiter).
	RateLimiter RateLimiterOptions
	// TotalRequestTimeout bounds a call from start to response headers,
	// across every attempt and every delay. Default 30s.
	TotalRequestTimeout time.Duration
	// Retry says which failures are retried, how often and after what delay.
	Retry RetryOptions
	// CircuitBreaker stops calls to a destination that keeps failing.
	CircuitBreaker CircuitBreakerOptions
	// AttemptTimeout bounds one attempt, up to its response headers.
	// Default 10s.
	AttemptTimeout time.Duration
	// OutlierDetection ejects instances of a service that stop answering
	// (goaspire only; .NET has no counterpart). It applies to HTTP
	// clients with a Resolver, not to a Pipeline.
	OutlierDetection OutlierDetectionOptions
}

// OutlierDetectionOptions configures outlier ejection, as Envoy's outlier
// detection and grpc's outlier_detection balancer: after
// ConsecutiveFailures attempts in a row to one instance of a service
// failed without an answer (the attempt timeout fired, or the connection
// could not be made or broke before the response headers), the instance
// is ejected for BaseEjectionTime multiplied by the number of times it
// has been ejected, at most MaxEjectionTime. Calls skip an ejected
// instance while the service has another one that is not ejected; an
// instance that answers (with any status, a 5xx included) resets its
// count. Unlike the circuit breaker, ejection needs no minimum
// throughput. The zero value is off; DefaultOptions turns it on.
type OutlierDetectionOptions struct {
	// Enabled turns ejection on. Default true.
	Enabled bool
	// ConsecutiveFailures is the number of failures in a row that ejects
	// an instance. Default 5.
	ConsecutiveFailures int
	// BaseEjectionTime is the first ejection's length; the n-th ejection
	// in a row lasts n times as long. Default 30s.
	BaseEjectionTime time.Duration
	// MaxEjectionTime caps one ejection. Default 300s.
	MaxEjectionTime time.Duration
	// MaxEjectionPercent caps the share of a service's instances ejected
	// at once, in percent, as Envoy's max_ejection_percent: one instance
	// may always be ejected, and an instance that fails while the cap is
	// reached is not ejected (its failures are not counted meanwhile).
	// Default 10, so a service of fewer than 20 instances has at most one
	// ejected: an overloaded machine slowing every instance down cannot
	// eject them all.
	MaxEjectionPercent int
}

func defaultOutlierDetection() OutlierDetectionOptions {
	return OutlierDetectionOptions{
		Enabled:             true,
		ConsecutiveFailures: outlier.DefaultConsecutiveFailures,
		BaseEjectionTime:    outlier.DefaultBaseEjectionTime,
		MaxEjectionTime:     outlier.DefaultMaxEjectionTime,
		MaxEjectionPercent:  10,
	}
}

// config returns the detector's configuration; ok is false when ejection
// is off.
func (o OutlierDetectionOptions) config() (c outlier.Config, ok bool) {
	if !o.Enabled {
		return outlier.Config{}, false
	}
	return outlier.Config{ConsecutiveFailures: o.ConsecutiveFailures, BaseEjectionTime: o.BaseEjectionTime, MaxEjectionTime: o.MaxEjectionTime}, true
}

// RateLimiterOptions configures the concurrency limiter.
type RateLimiterOptions struct {
	// PermitLimit is the number of calls that may run at once. Default 1000.
	PermitLimit int
	// QueueLimit is the number of calls that may wait for a permit; past
	// it calls fail with ErrRejected. Default 0: no call waits.
	QueueLimit int
}

// BackoffType selects how retry delays grow, as Polly's DelayBackoffType.
type BackoffType int

// Backoff types.
const (
	// BackoffConstant waits Delay before every retry.
	BackoffConstant BackoffType = iota
	// BackoffLinear waits Delay, 2×Delay, 3×Delay, ...
	BackoffLinear
	// BackoffExponential waits Delay, 2×Delay, 4×Delay, ...; with jitter,
	// it uses Polly's decorrelated jitter (DecorrelatedJitterBackoffV2),
	// whose median delays are about 0.9, 1.1, 2, 4, 8, ... × Delay.
	BackoffExponential
)

// String returns the type's configuration name.
func (b BackoffType) String() string {
	switch b {
	case BackoffConstant:
		return "Constant"
	case BackoffLinear:
		return "Linear"
	case BackoffExponential:
		return "Exponential"
	}
	return fmt.Sprintf("BackoffType(%d)", int(b))
}

// parseBackoffType parses "Constant", "Linear" or "Exponential" in any
// case.
func parseBackoffType(s string) (BackoffType, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "constant":
		return BackoffConstant, nil
	case "linear":
		return BackoffLinear, nil
	case "exponential":
		return BackoffExponential, nil
	}
	return 0, fmt.Errorf("invalid backoff type %q: want Constant, Linear or Exponential", redact.Value("BackoffType", s))
}

// RetryOptions configures retries.
type RetryOptions struct {
	// MaxRetryAttempts is the number of retries after the first attempt.
	// Default 3; 0 disables retries.
	MaxRetryAttempts int
	// BackoffType selects how delays grow. Default BackoffExponential.
	BackoffType BackoffType
	// UseJitter randomizes delays. Default true.
	UseJitter bool
	// Delay is the base delay. Default 2s.
	Delay time.Duration
	// MaxDelay caps every delay, Retry-After included; 0 means no cap.
	MaxDelay time.Duration
	// ShouldRetryAfterHeader makes a Retry-After response header (seconds
	// or an HTTP date) replace the computed delay. Default true.
	ShouldRetryAfterHeader bool
	// RetryNonIdempotent retries (and hedges) requests whose method is not
	// idempotent (POST, PATCH, CONNECT and unknown methods). By default
	// they are sent once unless they carry an Idempotency-Key (or
	// X-Idempotency-Key) header; the function RetryNonIdempotent opts in
	// one request. This is a deliberate difference from .NET, which retries
	// every method.
	RetryNonIdempotent bool
}

// CircuitBreakerOptions configures the circuit breakers, one per
// destination. A breaker opens when, within SamplingDuration, at least
// MinimumThroughput calls were made and at least FailureRatio of them
// failed; it then refuses calls for BreakDuration, lets one trial call
// through (half-open), and closes if that call succeeds or opens again if
// it fails. As in Polly, the breaker turns half-open when the first call
// after BreakDuration arrives, not on a timer.
type CircuitBreakerOptions struct {
	// FailureRatio is the failure ratio, in (0, 1], that opens the
	// breaker. Default 0.1.
	FailureRatio float64
	// MinimumThroughput is the number of calls in the window below which
	// the breaker never opens. Default 100.
	MinimumThroughput int
	// SamplingDuration is the sliding window failures are counted over.
	// Default 30s.
	SamplingDuration time.Duration
	// BreakDuration is how long the breaker stays open. Default 5s.
	BreakDuration time.Duration
}

// DefaultOptions returns the defaults of .NET's standard resilience
// handler (AddStandardResilienceHandler).
func DefaultOptions() Options {
	return Options{
		RateLimiter:         RateLimiterOptions{PermitLimit: 1000, QueueLimit: 0},
		TotalRequestTimeout: 30 * time.Second,
		Retry: RetryOptions{
			MaxRetryAttempts:       3,
			BackoffType:            BackoffExponential,
			UseJitter:              true,
			Delay:                  2 * time.Second,
			ShouldRetryAfterHeader: true,
		},
		CircuitBreaker:   defaultBreaker(),
		AttemptTimeout:   10 * time.Second,
		OutlierDetection: defaultOutlierDetection(),
	}
}

func defaultBreaker() CircuitBreakerOptions {
	return CircuitBreakerOptions{
		FailureRatio:      0.1,
		MinimumThroughput: 100,
		SamplingDuration:  30 * time.Second,
		BreakDuration:     5 * time.Second,
	}
}

// HedgingOptions configures the hedging pipeline, as .NET's
// HttpStandardHedgingResilienceOptions: a total timeout around a hedging
// strategy, and per destination a concurrency limiter, a circuit breaker
// and an attempt timeout. DefaultHedgingOptions returns Aspire's values.
type HedgingOptions struct {
	// TotalRequestTimeout bounds the call across every hedged attempt.
	// Default 30s.
	TotalRequestTimeout time.Duration
	// Hedging says when extra attempts start.
	Hedging HedgingStrategyOptions
	// Endpoint configures the strategies applied per destination.
	Endpoint EndpointOptions
}

// HedgingStrategyOptions configures when hedged attempts start.
type HedgingStrategyOptions struct {
	// Delay is how long an attempt runs before the next one starts in
	// parallel. An attempt that fails with a transient failure starts the
	// next one at once. Zero starts every attempt at once; a negative
	// Delay starts the next attempt only when one fails. Default 2s.
	Delay time.Duration
	// MaxHedgedAttempts is the number of attempts on top of the first.
	// Default 1.
	MaxHedgedAttempts int
	// HedgeNonIdempotent hedges requests whose method is not idempotent
	// too; see RetryOptions.RetryNonIdempotent for the rules otherwise.
	HedgeNonIdempotent bool
}

// EndpointOptions configures the strategies applied per destination by
// the hedging pipeline.
type EndpointOptions struct {
	// RateLimiter limits concurrent calls per destination. Default 1000,
	// no queue.
	RateLimiter RateLimiterOptions
	// CircuitBreaker configures the per-destination breaker (same defaults
	// as the standard pipeline).
	CircuitBreaker CircuitBreakerOptions
	// Timeout bounds one attempt. Default 10s.
	Timeout time.Duration
	// OutlierDetection ejects instances that stop answering, as in
	// Options: hedged attempts skip them while another instance is not
	// ejected.
	OutlierDetection OutlierDetectionOptions
}

// DefaultHedgingOptions returns the defaults of .NET's standard hedging
// handler (AddStandardHedgingHandler).
func DefaultHedgingOptions() HedgingOptions {
	return HedgingOptions{
		TotalRequestTimeout: 30 * time.Second,
		Hedging:             HedgingStrategyOptions{Delay: 2 * time.Second, MaxHedgedAttempts: 1},
		Endpoint: EndpointOptions{
			RateLimiter:      RateLimiterOptions{PermitLimit: 1000},
			CircuitBreaker:   defaultBreaker(),
			Timeout:          10 * time.Second,
			OutlierDetection: defaultOutlierDetection(),
		},
	}
}

// invalid reports an option value that cannot be used, as a
// *discovery.KeyError. Its key is the field's full configuration key: in
// the most specific of secs that sets it, else in the last of secs (the
// value is a default that conflicts with another one). Without sections
// (options set in code) the key is the field's path below the section.
func invalid(cfg *discovery.Config, secs []string, field, format string, args ...any) error {
	key := field
	if len(secs) > 0 {
		key = secs[len(secs)-1] + ":" + field
		for i := len(secs) - 1; i >= 0; i-- {
			if _, ok := cfg.Lookup(secs[i] + ":" + field); ok {
				key = secs[i] + ":" + field
				break
			}
		}
	}
	return fmt.Errorf("resilience: %w", &discovery.KeyError{Key: key, Err: fmt.Errorf(format, args...)})
}

// Config keys below a section (see the package documentation).
const (
	keyTotalTimeout    = "TotalRequestTimeout:Timeout"
	keyMaxRetries      = "Retry:MaxRetryAttempts"
	keyBackoffType     = "Retry:BackoffType"
	keyUseJitter       = "Retry:UseJitter"
	keyDelay           = "Retry:Delay"
	keyMaxDelay        = "Retry:MaxDelay"
	keyRetryAfter      = "Retry:ShouldRetryAfterHeader"
	keyNonIdempotent   = "Retry:RetryNonIdempotent"
	keySampling        = "CircuitBreaker:SamplingDuration"
	keyAttemptTimeout  = "AttemptTimeout:Timeout"
	keyHedgeDelay      = "Hedging:Delay"
	keyMaxHedged       = "Hedging:MaxHedgedAttempts"
	keyHedgeNonIdem    = "Hedging:HedgeNonIdempotent"
	keyEndpointTimeout = "Endpoint:Timeout:Timeout"
	keyOutlier         = "OutlierDetection:"
)

// Configuration sections.
const (
	// SectionHTTP holds the standard pipeline's settings for every HTTP
	// client; SectionHTTP + ":Clients:{name}" overrides them per client.
	SectionHTTP = "Aspire:Resilience:Http"
	// SectionHedging holds the hedging pipeline's settings;
	// SectionHedging + ":Clients:{name}" overrides them per client.
	SectionHedging = "Aspire:Resilience:Hedging"
	// SectionPipelines + ":{name}" holds a non-HTTP Pipeline's settings.
	SectionPipelines = "Aspire:Resilience:Pipelines"
)

// validate reports the first option that cannot be used; cfg and secs
// are where the options were read from, if anywhere (see invalid).
func (o Options) validate(cfg *discovery.Config, secs ...string) error {
	bad := func(field, reason string, args ...any) error {
		return invalid(cfg, secs, field, reason, args...)
	}
	if err := o.RateLimiter.validate(cfg, secs, "RateLimiter:DefaultRateLimiterOptions:"); err != nil {
		return err
	}
	if o.TotalRequestTimeout <= 0 {
		return bad(keyTotalTimeout, "must be positive, got %s", o.TotalRequestTimeout)
	}
	if o.AttemptTimeout <= 0 {
		return bad(keyAttemptTimeout, "must be positive, got %s", o.AttemptTimeout)
	}
	r := o.Retry
	if r.MaxRetryAttempts < 0 {
		return bad(keyMaxRetries, "must not be negative, got %d", r.MaxRetryAttempts)
	}
	if r.BackoffType < BackoffConstant || r.BackoffType > BackoffExponential {
		return bad(keyBackoffType, "unknown backoff type %d", int(r.BackoffType))
	}
	if r.Delay < 0 {
		return bad(keyDelay, "must not be negative, got %s", r.Delay)
	}
	if r.MaxDelay < 0 {
		return bad(keyMaxDelay, "must not be negative, got %s", r.MaxDelay)
	}
	if err := o.CircuitBreaker.validate(cfg, secs, "CircuitBreaker:"); err != nil {
		return err
	}
	// The two rules .NET's HttpStandardResilienceOptions validator enforces.
	if o.AttemptTimeout > o.TotalRequestTimeout {
		return bad(keyAttemptTimeout, "the attempt timeout (%s) must not exceed the total request timeout %s (%s)",
			o.AttemptTimeout, keyTotalTimeout, o.TotalRequestTimeout)
	}
	if o.CircuitBreaker.SamplingDuration < 2*o.AttemptTimeout {
		return bad(keySampling, "the sampling duration (%s) must be at least twice the attempt timeout %s (%s)",
			o.CircuitBreaker.SamplingDuration, keyAttemptTimeout, o.AttemptTimeout)
	}
	return o.OutlierDetection.validate(cfg, secs, keyOutlier)
}

func (o HedgingOptions) validate(cfg *discovery.Config, secs ...string) error {
	bad := func(field, reason string, args ...any) error {
		return invalid(cfg, secs, field, reason, args...)
	}
	if o.TotalRequestTimeout <= 0 {
		return bad(keyTotalTimeout, "must be positive, got %s", o.TotalRequestTimeout)
	}
	if o.Hedging.MaxHedgedAttempts < 0 {
		return bad(keyMaxHedged, "must not be negative, got %d", o.Hedging.MaxHedgedAttempts)
	}
	if err := o.Endpoint.RateLimiter.validate(cfg, secs, "Endpoint:RateLimiter:DefaultRateLimiterOptions:"); err != nil {
		return err
	}
	if o.Endpoint.Timeout <= 0 {
		return bad(keyEndpointTimeout, "must be positive, got %s", o.Endpoint.Timeout)
	}
	if err := o.Endpoint.CircuitBreaker.validate(cfg, secs, "Endpoint:CircuitBreaker:"); err != nil {
		return err
	}
	if o.Endpoint.Timeout > o.TotalRequestTimeout {
		return bad(keyEndpointTimeout, "the attempt timeout (%s) must not exceed the total request timeout %s (%s)",
			o.Endpoint.Timeout, keyTotalTimeout, o.TotalRequestTimeout)
	}
	if o.Endpoint.CircuitBreaker.SamplingDuration < 2*o.Endpoint.Timeout {
		return bad("Endpoint:"+keySampling, "the sampling duration (%s) must be at least twice the attempt timeout %s (%s)",
			o.Endpoint.CircuitBreaker.SamplingDuration, keyEndpointTimeout, o.Endpoint.Timeout)
	}
	return o.Endpoint.OutlierDetection.validate(cfg, secs, "Endpoint:"+keyOutlier)
}

// validate checks the options of an enabled detector; prefix is the
// section below which its keys are ("OutlierDetection:").
func (o OutlierDetectionOptions) validate(cfg *discovery.Config, secs []string, prefix string) error {
	if !o.Enabled {
		return nil
	}
	if o.ConsecutiveFailures < 1 {
		return invalid(cfg, secs, prefix+"ConsecutiveFailures", "must be at least 1, got %d", o.ConsecutiveFailures)
	}
	if o.BaseEjectionTime <= 0 {
		return invalid(cfg, secs, prefix+"BaseEjectionTime", "must be positive, got %s", o.BaseEjectionTime)
	}
	if o.MaxEjectionTime < o.BaseEjectionTime {
		return invalid(cfg, secs, prefix+"MaxEjectionTime", "must be at least %sBaseEjectionTime (%s), got %s", prefix, o.BaseEjectionTime, o.MaxEjectionTime)
	}
	if o.MaxEjectionPercent < 0 || o.MaxEjectionPercent > 100 {
		return invalid(cfg, secs, prefix+"MaxEjectionPercent", "must be in [0, 100], got %d", o.MaxEjectionPercent)
	}
	return nil
}

func (r RateLimiterOptions) validate(cfg *discovery.Config, secs []string, prefix string) error {
	if r.PermitLimit <= 0 {
		return invalid(cfg, secs, prefix+"PermitLimit", "must be positive, got %d", r.PermitLimit)
	}
	if r.QueueLimit < 0 {
		return invalid(cfg, secs, prefix+"QueueLimit", "must not be negative, got %d", r.QueueLimit)
	}
	return nil
}

func (c CircuitBreakerOptions) validate(cfg *discovery.Config, secs []string, prefix string) error {
	bad := func(field, reason string, args ...any) error {
		return invalid(cfg, secs, prefix+field, reason, args...)
	}
	if !(c.FailureRatio > 0 && c.FailureRatio <= 1) {
		return bad("FailureRatio", "must be in (0, 1], got %v", c.FailureRatio)
	}
	if c.MinimumThroughput < 1 {
		return bad("MinimumThroughput", "must be at least 1, got %d", c.MinimumThroughput)
	}
	if c.SamplingDuration <= 0 {
		return bad("SamplingDuration", "must be positive, got %s", c.SamplingDuration)
	}
	if c.BreakDuration <= 0 {
		return bad("BreakDuration", "must be positive, got %s", c.BreakDuration)
	}
	return nil
}

// ApplyConfig overrides the options whose keys are set in sec (a section
// such as cfg.Section("Aspire:Resilience:Http")). Keys not set keep their
// current value; keys this package does not know are ignored, as .NET's
// configuration binder does. It does not validate the result.
func (o *Options) ApplyConfig(sec *discovery.Config) error {
	var err error
	if err = o.RateLimiter.applyConfig(sec, "RateLimiter:DefaultRateLimiterOptions:"); err != nil {
		return err
	}
	if o.TotalRequestTimeout, err = sec.Duration(keyTotalTimeout, o.TotalRequestTimeout); err != nil {
		return err
	}
	if o.Retry.MaxRetryAttempts, err = sec.Int(keyMaxRetries, o.Retry.MaxRetryAttempts); err != nil {
		return err
	}
	if v, ok := sec.Lookup(keyBackoffType); ok && strings.TrimSpace(v) != "" {
		b, perr := parseBackoffType(v)
		if perr != nil {
			return &discovery.KeyError{Key: sec.Path() + ":" + keyBackoffType, Err: perr}
		}
		o.Retry.BackoffType = b
	}
	if o.Retry.UseJitter, err = sec.Bool(keyUseJitter, o.Retry.UseJitter); err != nil {
		return err
	}
	if o.Retry.Delay, err = sec.Duration(keyDelay, o.Retry.Delay); err != nil {
		return err
	}
	if o.Retry.MaxDelay, err = sec.Duration(keyMaxDelay, o.Retry.MaxDelay); err != nil {
		return err
	}
	if o.Retry.ShouldRetryAfterHeader, err = sec.Bool(keyRetryAfter, o.Retry.ShouldRetryAfterHeader); err != nil {
		return err
	}
	if o.Retry.RetryNonIdempotent, err = sec.Bool(keyNonIdempotent, o.Retry.RetryNonIdempotent); err != nil {
		return err
	}
	if err = o.CircuitBreaker.applyConfig(sec, "CircuitBreaker:"); err != nil {
		return err
	}
	if o.AttemptTimeout, err = sec.Duration(keyAttemptTimeout, o.AttemptTimeout); err != nil {
		return err
	}
	return o.OutlierDetection.applyConfig(sec, keyOutlier)
}

// applyConfig overrides the options whose keys are set in sec (a section
// such as cfg.Section("Aspire:Resilience:Hedging")). Keys not set keep
// their current value; unknown keys are ignored. It does not validate the
// result.
func (o *HedgingOptions) applyConfig(sec *discovery.Config) error {
	var err error
	if o.TotalRequestTimeout, err = sec.Duration(keyTotalTimeout, o.TotalRequestTimeout); err != nil {
		return err
	}
	if o.Hedging.Delay, err = sec.Duration(keyHedgeDelay, o.Hedging.Delay); err != nil {
		return err
	}
	if o.Hedging.MaxHedgedAttempts, err = sec.Int(keyMaxHedged, o.Hedging.MaxHedgedAttempts); err != nil {
		return err
	}
	if o.Hedging.HedgeNonIdempotent, err = sec.Bool(keyHedgeNonIdem, o.Hedging.HedgeNonIdempotent); err != nil {
		return err
	}
	if err = o.Endpoint.RateLimiter.applyConfig(sec, "Endpoint:RateLimiter:DefaultRateLimiterOptions:"); err != nil {
		return err
	}
	if err = o.Endpoint.CircuitBreaker.applyConfig(sec, "Endpoint:CircuitBreaker:"); err != nil {
		return err
	}
	if o.Endpoint.Timeout, err = sec.Duration(keyEndpointTimeout, o.Endpoint.Timeout); err != nil {
		return err
	}
	return o.Endpoint.OutlierDetection.applyConfig(sec, "Endpoint:"+keyOutlier)
}

func (o *OutlierDetectionOptions) applyConfig(sec *discovery.Config, prefix string) error {
	var err error
	if o.Enabled, err = sec.Bool(prefix+"Enabled", o.Enabled); err != nil {
		return err
	}
	if o.ConsecutiveFailures, err = sec.Int(prefix+"ConsecutiveFailures", o.ConsecutiveFailures); err != nil {
		return err
	}
	if o.BaseEjectionTime, err = sec.Duration(prefix+"BaseEjectionTime", o.BaseEjectionTime); err != nil {
		return err
	}
	if o.MaxEjectionTime, err = sec.Duration(prefix+"MaxEjectionTime", o.MaxEjectionTime); err != nil {
		return err
	}
	o.MaxEjectionPercent, err = sec.Int(prefix+"MaxEjectionPercent", o.MaxEjectionPercent)
	return err
}

func (r *RateLimiterOptions) applyConfig(sec *discovery.Config, prefix string) error {
	var err error
	if r.PermitLimit, err = sec.Int(prefix+"PermitLimit", r.PermitLimit); err != nil {
		return err
	}
	r.QueueLimit, err = sec.Int(prefix+"QueueLimit", r.QueueLimit)
	return err
}

func (c *CircuitBreakerOptions) applyConfig(sec *discovery.Config, prefix string) error {
	var err error
	if c.FailureRatio, err = sec.Float(prefix+"FailureRatio", c.FailureRatio); err != nil {
		return err
	}
	if c.MinimumThroughput, err = sec.Int(prefix+"MinimumThroughput", c.MinimumThroughput); err != nil {
		return err
	}
	if c.SamplingDuration, err = sec.Duration(prefix+"SamplingDuration", c.SamplingDuration); err != nil {
		return err
	}
	c.BreakDuration, err = sec.Duration(prefix+"BreakDuration", c.BreakDuration)
	return err
}

// scaled returns the options with every duration multiplied by f.
func (o Options) scaled(f float64) Options {
	if f == 1 {
		return o
	}
	o.TotalRequestTimeout = scale(o.TotalRequestTimeout, f)
	o.AttemptTimeout = scale(o.AttemptTimeout, f)
	o.Retry.Delay = scale(o.Retry.Delay, f)
	o.Retry.MaxDelay = scale(o.Retry.MaxDelay, f)
	o.CircuitBreaker = o.CircuitBreaker.scaled(f)
	o.OutlierDetection = o.OutlierDetection.scaled(f)
	return o
}

func (o HedgingOptions) scaled(f float64) HedgingOptions {
	if f == 1 {
		return o
	}
	o.TotalRequestTimeout = scale(o.TotalRequestTimeout, f)
	if o.Hedging.Delay > 0 {
		o.Hedging.Delay = scale(o.Hedging.Delay, f)
	}
	o.Endpoint.Timeout = scale(o.Endpoint.Timeout, f)
	o.Endpoint.CircuitBreaker = o.Endpoint.CircuitBreaker.scaled(f)
	o.Endpoint.OutlierDetection = o.Endpoint.OutlierDetection.scaled(f)
	return o
}

func (o OutlierDetectionOptions) scaled(f float64) OutlierDetectionOptions {
	o.BaseEjectionTime = scale(o.BaseEjectionTime, f)
	o.MaxEjectionTime = scale(o.MaxEjectionTime, f)
	return o
}

func (c CircuitBreakerOptions) scaled(f float64) CircuitBreakerOptions {
	c.SamplingDuration = scale(c.SamplingDuration, f)
	c.BreakDuration = scale(c.BreakDuration, f)
	return c
}

func scale(d time.Duration, f float64) time.Duration {
	if f == 1 || d == 0 {
		return d
	}
	s := time.Duration(float64(d) * f)
	if s <= 0 {
		s = 1
	}
	return s
}
