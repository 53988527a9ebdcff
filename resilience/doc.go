// Package resilience is goaspire's counterpart of
// Microsoft.Extensions.Http.Resilience, the resilience handlers Aspire's
// ServiceDefaults put on every HttpClient, built on failsafe-go.
//
// It gives:
//
//   - NewTransport: the standard resilience pipeline as an
//     http.RoundTripper, outermost first: a concurrency limit, a total
//     timeout, retries with exponential backoff and jitter, a circuit
//     breaker per destination authority and an attempt timeout, with
//     Aspire's defaults (DefaultOptions);
//   - NewHedgingTransport: the hedging pipeline, which races a request
//     across the instances service discovery resolves (DefaultHedgingOptions);
//   - NewPipeline and Do: the same policies around any call, such as a
//     database query, with IsTransient deciding what to retry;
//   - NewBackoff: the retry strategy's delays for loops of one's own;
//   - metrics, span events and logs for every retry, breaker transition,
//     rejection and timeout;
//   - package resiliencetest: a scripted fake transport and a time scale
//     to unit-test code under failure in milliseconds.
//
// # Stacking
//
// An application client stacks, outermost first, as servicedefaults'
// App.HTTPClient does: this package's Transport, client instrumentation
// (otelhttp, so each attempt gets its own client span, as .NET's
// HttpClient records them, and carries the trace context), and a base
// transport shared by the application's clients. Give the Transport the
// discovery Resolver (TransportConfig.Resolver) rather than wrapping the
// base in discovery.Transport: the logical URL is then resolved on every
// attempt, inside the retry loop, so a retry goes to the next instance and
// each instance has its own circuit breaker:
//
//	c, err := resilience.LoadTransportConfig(cfg, "catalog") // or &resilience.TransportConfig{...}
//	if err != nil {
//		return err // a *discovery.KeyError naming the key at fault
//	}
//	c.Resolver = discovery.NewResolver(cfg)
//	rt, err := resilience.NewTransport(otelhttp.NewTransport(base), c)
//	client := &http.Client{Transport: rt}
//
// TransportConfig.BaseAddress (and HedgingConfig's) is where a request
// URL without a host goes, as .NET's HttpClient.BaseAddress:
// App.HTTPClient("catalog") sets https+http://catalog, so
// client.Get("/products/1") is resolved like
// https+http://catalog/products/1, in the pipeline's own copy of the
// request.
//
// Each constructor takes its own config struct (TransportConfig,
// HedgingConfig, PipelineConfig), so a setting that does not apply to it
// cannot be given; a nil or zero config is Aspire's defaults.
//
// The caller's own span, if any, is the parent of the attempts' spans.
//
// # Behaviour
//
// Transient failures are 408, 429 and 5xx responses and transport errors
// (IsTransientHTTP). They are retried only for requests that may be sent
// twice: idempotent methods (GET, HEAD, OPTIONS, TRACE, PUT, DELETE),
// requests with an Idempotency-Key or X-Idempotency-Key header, and
// requests the caller opted in (RetryOptions.RetryNonIdempotent for a
// client, the function RetryNonIdempotent for one request). .NET retries every method; not retrying
// POST and PATCH by default is a deliberate difference. Bodies are
// replayed with Request.GetBody; a body that cannot be replayed makes the
// request single-shot (its failure wraps ErrBodyNotReplayable).
//
// Retry delays follow Polly v8: with the default exponential backoff and
// jitter, Polly's decorrelated jitter formula (DecorrelatedJitterBackoffV2),
// implemented here rather than failsafe-go's proportional jitter. A
// Retry-After header (seconds or an HTTP date) replaces the delay; when it
// asks for longer than the total timeout leaves, the response is returned
// at once instead of waiting for a timeout. Responses of failed attempts
// are drained (up to 64 KiB) and closed, so their connections are reused.
// When the retries are exhausted, the last response is returned as is (a
// 503 with a nil error), or the last error wrapped in an error matching
// ErrRetriesExceeded.
//
// The circuit breakers are failsafe-go's time-based breakers, one per
// destination authority ("host:port"): a breaker opens when, within
// SamplingDuration, at least MinimumThroughput calls were made and at
// least FailureRatio of them failed; it then refuses calls with a
// *CircuitOpenError (ErrCircuitOpen) for BreakDuration, lets one trial
// call through, and closes if it succeeds.
//
// With a Resolver, the first attempt of a call goes to the instance the
// resolver hands out round-robin, and every later attempt of the same
// call to an instance that call has not tried yet whose breaker is not
// open, while there is one (then to one it tried, the one that failed
// last coming last). The choice is made per call, so concurrent calls
// cannot hand a retry back to the instance that just failed it. An
// instance whose breaker is open is skipped in favour of another one; a
// *CircuitOpenError ends a call only when no instance of the service lets
// calls through.
//
// # Outlier detection
//
// A breaker decides on a failure ratio over a minimum throughput (100
// calls in 30 s by default), which an instance that has gone silent never
// reaches: at one call per 10 s attempt timeout per caller, half the calls
// of a two-instance service would keep waiting the attempt timeout on the
// dead one. Outlier detection, as Envoy's and grpc's outlier_detection,
// ejects such an instance after OutlierDetection:ConsecutiveFailures
// attempts in a row that got no answer, whatever the traffic: for
// BaseEjectionTime times the number of its ejections in a row (capped at
// MaxEjectionTime; the count drops by one for every BaseEjectionTime it
// then stays healthy). While an instance is ejected, first attempts
// (the resolver's round-robin choice), retries, reroutes around an open
// breaker and hedges go to the service's other instances; an ejected
// instance is still called when every instance is ejected, or is the only
// one, so ejection never takes a service away. As in Envoy, at most
// MaxEjectionPercent of a service's instances are ejected at once (but
// always one may be): a machine so loaded that every instance seems slow
// cannot eject them all. When the ejection ends the
// instance gets calls again: an answer puts it back for good, more
// failures eject it again, for longer. Ejection needs a Resolver; each
// Transport keeps its own, per instance authority (Transport.Ejected).
//
// What counts as no answer: the attempt timeout firing before the
// response headers, and transport errors that are not the request's fault
// (a refused or timed-out dial, a reset, EOF before the headers; not
// certificate errors or a malformed request, which would fail anywhere).
// In the hedging pipeline, an attempt still waiting for its headers a
// hedging delay after it started, when an attempt to another instance
// answered first, counts too: the hedge usually wins before the attempt
// timeout, so the timeout alone would never eject a silent instance there.
// Any response, a 5xx included, is an answer and resets the count: a 503
// comes from an instance that is up but overloaded or failing, which
// retries and the breaker's failure ratio handle; ejecting it would move
// its whole load onto the other instances (Envoy keeps consecutive 5xx and
// gateway failures as separate, opt-in detectors for that reason). The
// caller's own cancellation or deadline, and a total timeout cutting a
// retry short, say nothing about the instance and do not count (a first
// attempt that the total timeout bounds, when it is not above the attempt
// timeout, does count).
//
// The timeouts cover a call up to its response headers; reading the body
// is bounded by the request's context alone. The attempt timeout fails an
// attempt with ErrAttemptTimeout (retried); the total timeout fails the
// call with ErrTotalTimeout. Canceling the request's context stops the
// call at once, whatever it is doing, and returns the context's error.
//
// Errors match this package's sentinels and failsafe-go's with errors.Is:
// ErrCircuitOpen and circuitbreaker.ErrOpen, ErrTimeout/ErrTotalTimeout/
// ErrAttemptTimeout and timeout.ErrExceeded (and context.DeadlineExceeded),
// ErrRejected and bulkhead.ErrFull, ErrRetriesExceeded and
// retrypolicy.ErrExceeded.
//
// # Built on failsafe-go
//
// The policies are failsafe-go's where they fit, and this package's where
// failsafe-go (pre-1.0, so every upgrade is treated as an API change)
// falls short:
//
//   - concurrency limit: a failsafe-go bulkhead (the bounded queue is this
//     package's; a bulkhead bounds waiting time, not waiters);
//   - retries: a failsafe-go retrypolicy with this package's predicate and
//     delay function (Polly's jitter, Retry-After as seconds or date on any
//     status: failsafehttp.DelayFunc reads whole seconds on 429/503 only,
//     and failsafehttp's retry skips 408). Its executor runs only once a
//     first attempt has failed and may be retried, its first execution
//     replaying that outcome: an executor allocates about a dozen objects
//     per call, which the no-failure path does without;
//   - circuit breakers: failsafe-go circuitbreakers, one per destination,
//     driven through their permit and record methods because the
//     destination is known only once the attempt's URL is resolved;
//   - timeouts: one timer per attempt, firing at the attempt timeout or at
//     the end of the total timeout, which cancels the attempt's context as
//     failsafe-go's timeout policy does but is stopped, not canceled, when
//     the response headers arrive (failsafe-go's timeout cancels the
//     context when the attempt returns, cutting off the response body).
//     The hedging pipeline's total timeout and the non-HTTP Pipeline's
//     timeouts are failsafe-go timeout policies;
//   - hedging: this package's loop, because failsafe-go's hedgepolicy
//     starts the next attempt only when the delay elapses (Polly also
//     starts it as soon as an attempt fails) and has no per-endpoint
//     pipelines.
//
// # Configuration
//
// LoadTransportConfig, LoadHedgingConfig and LoadPipelineConfig read
// .NET-shaped keys; durations accept .NET
// TimeSpan text ("00:00:02") and Go durations ("2s"). Keys this package
// does not know are ignored, as .NET's binder does. The standard pipeline
// reads Aspire:Resilience:Http, then Aspire:Resilience:Http:Clients:{name}
// for the named client; the hedging pipeline reads Aspire:Resilience:Hedging
// and Aspire:Resilience:Hedging:Clients:{name}; a non-HTTP Pipeline reads
// Aspire:Resilience:Pipelines:{name}. Below those sections:
//
//	key (standard pipeline and Pipeline)                 default      Options field
//	RateLimiter:DefaultRateLimiterOptions:PermitLimit    1000         RateLimiter.PermitLimit
//	RateLimiter:DefaultRateLimiterOptions:QueueLimit     0            RateLimiter.QueueLimit
//	TotalRequestTimeout:Timeout                          00:00:30     TotalRequestTimeout
//	Retry:MaxRetryAttempts                               3            Retry.MaxRetryAttempts
//	Retry:BackoffType                                    Exponential  Retry.BackoffType (Constant, Linear, Exponential)
//	Retry:UseJitter                                      true         Retry.UseJitter
//	Retry:Delay                                          00:00:02     Retry.Delay
//	Retry:MaxDelay                                       (none)       Retry.MaxDelay
//	Retry:ShouldRetryAfterHeader                         true         Retry.ShouldRetryAfterHeader
//	Retry:RetryNonIdempotent                             false        Retry.RetryNonIdempotent (goaspire only)
//	CircuitBreaker:FailureRatio                          0.1          CircuitBreaker.FailureRatio
//	CircuitBreaker:MinimumThroughput                     100          CircuitBreaker.MinimumThroughput
//	CircuitBreaker:SamplingDuration                      00:00:30     CircuitBreaker.SamplingDuration
//	CircuitBreaker:BreakDuration                         00:00:05     CircuitBreaker.BreakDuration
//	AttemptTimeout:Timeout                               00:00:10     AttemptTimeout
//	OutlierDetection:Enabled                             true         OutlierDetection.Enabled (goaspire only, as the four below)
//	OutlierDetection:ConsecutiveFailures                 5            OutlierDetection.ConsecutiveFailures
//	OutlierDetection:BaseEjectionTime                    00:00:30     OutlierDetection.BaseEjectionTime
//	OutlierDetection:MaxEjectionTime                     00:05:00     OutlierDetection.MaxEjectionTime
//	OutlierDetection:MaxEjectionPercent                  10           OutlierDetection.MaxEjectionPercent (at least one instance)
//
//	key (hedging pipeline)                                        default   HedgingOptions field
//	TotalRequestTimeout:Timeout                                   00:00:30  TotalRequestTimeout
//	Hedging:Delay                                                 00:00:02  Hedging.Delay
//	Hedging:MaxHedgedAttempts                                     1         Hedging.MaxHedgedAttempts
//	Hedging:HedgeNonIdempotent                                    false     Hedging.HedgeNonIdempotent (goaspire only)
//	Endpoint:RateLimiter:DefaultRateLimiterOptions:PermitLimit    1000      Endpoint.RateLimiter.PermitLimit
//	Endpoint:RateLimiter:DefaultRateLimiterOptions:QueueLimit     0         Endpoint.RateLimiter.QueueLimit
//	Endpoint:CircuitBreaker:FailureRatio (and the other breaker keys)       Endpoint.CircuitBreaker
//	Endpoint:Timeout:Timeout                                      00:00:10  Endpoint.Timeout
//	Endpoint:OutlierDetection:Enabled (and the other outlier keys)          Endpoint.OutlierDetection
//
// For example, Aspire__Resilience__Http__Clients__catalog__Retry__MaxRetryAttempts=5
// gives the catalog client five retries. The options are validated as
// .NET validates them: the attempt timeout may not exceed the total
// timeout, and the sampling duration must be at least twice the attempt
// timeout; outlier detection, when enabled, needs ConsecutiveFailures of
// at least 1, a positive BaseEjectionTime and a MaxEjectionTime not below
// it (the OutlierDetection keys do not apply to a Pipeline). A value that
// cannot be used is a *discovery.KeyError whose Key
// is the full key at fault (the section and the key below it), whether
// the value does not parse or breaks a rule; for options set in code, Key
// is the key below the section ("AttemptTimeout:Timeout").
//
// # Telemetry
//
// Metrics use the config's MeterProvider (default: the OpenTelemetry
// global), instrumentation scope "github.com/goaspire/goaspire/resilience",
// with attributes destination (the authority, or the pipeline name),
// outcome and pipeline (the config's Name, when set):
//
//	goaspire.resilience.retries                counter  outcome: the failed attempt's status code, transport_error, attempt_timeout, error
//	goaspire.resilience.breaker.state_changes  counter  outcome: the new state (open, half_open, closed)
//	goaspire.resilience.breaker.state          gauge    0 closed, 1 open, 2 half-open
//	goaspire.resilience.rejections             counter  outcome: circuit_open, concurrency_limit
//	goaspire.resilience.timeouts               counter  outcome: attempt, total
//	goaspire.resilience.hedges                 counter  hedged attempts started
//	goaspire.resilience.ejections              counter  instances ejected by outlier detection; outcome: consecutive_failures
//
// The same events are added to the span active in the request's context,
// with the same attributes (retries also carry attempt and delay_ms):
//
//	goaspire.resilience.retry
//	goaspire.resilience.breaker.state_change
//	goaspire.resilience.rejected
//	goaspire.resilience.timeout
//	goaspire.resilience.hedge
//	goaspire.resilience.ejection
//
// The package creates no spans of its own. Breaker transitions are logged
// once each, through the config's Logger (default slog.Default()):
// opening at Warn, the others at Info. Each ejection is logged once at
// Warn, naming the instance's authority and the ejection's length.
package resilience
