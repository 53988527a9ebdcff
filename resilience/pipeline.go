package resilience

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/bulkhead"
	"github.com/failsafe-go/failsafe-go/common"
	"github.com/failsafe-go/failsafe-go/retrypolicy"
	"github.com/failsafe-go/failsafe-go/timeout"
)

// Pipeline applies the standard pipeline's policies to any call, such as
// a database query or a queue operation: a concurrency limit, a total
// timeout, retries of transient errors with backoff, a circuit breaker and
// an attempt timeout. Run calls through it with Do or Pipeline.Run.
//
// Which errors are transient is decided by IsTransient unless
// PipelineConfig.ShouldHandle says otherwise. The caller's context being done is
// never retried. A Pipeline is safe for concurrent use; it has one circuit
// breaker, so make one per dependency.
type Pipeline struct {
	name         string
	opts         Options // effective (scaled)
	declared     Options
	shouldHandle func(error) bool
	limiter      bulkhead.Bulkhead[any]
	queued       atomic.Int64
	dests        *destinations
	dest         *destination
	tel          *telemetry
	exec         failsafe.Executor[any]
}

// NewPipeline returns a Pipeline applying c's policies; c may be nil (the
// zero PipelineConfig is Aspire's defaults). The options are validated;
// an invalid value is a *discovery.KeyError naming it.
func NewPipeline(c *PipelineConfig) (*Pipeline, error) {
	if c == nil {
		c = &PipelineConfig{}
	}
	declared := c.Options
	if declared == (Options{}) {
		declared = DefaultOptions()
	}
	if err := declared.validate(nil); err != nil {
		return nil, err
	}
	s, err := newSettings(c.Name, c.MeterProvider, c.Logger, c.TimeScale)
	if err != nil {
		return nil, err
	}
	o := declared.scaled(s.scale)
	p := &Pipeline{
		name:         s.name,
		opts:         o,
		declared:     declared,
		shouldHandle: c.ShouldHandle,
		limiter:      bulkhead.New[any](uint(o.RateLimiter.PermitLimit)),
		dests:        &destinations{opts: o.CircuitBreaker},
	}
	if p.name == "" {
		p.name = "pipeline"
	}
	if p.shouldHandle == nil {
		p.shouldHandle = IsTransient
	}
	tel, err := newTelemetry(&s, p.dests)
	if err != nil {
		return nil, err
	}
	p.tel, p.dests.tel = tel, tel
	p.dest = p.dests.get(p.name, time.Now())
	retry := retrypolicy.NewBuilder[any]().
		WithMaxRetries(o.Retry.MaxRetryAttempts).
		HandleIf(func(_ any, err error) bool {
			af, ok := err.(*attemptFailure)
			return ok && af.retryable
		}).
		ReturnLastFailure().
		WithDelayFunc(func(exec failsafe.ExecutionAttempt[any]) time.Duration {
			// Do always runs with its pipelineCall as the context root.
			pc := exec.Context().Value(callKey).(*pipelineCall)
			return backoff(p.opts.Retry, exec.Retries(), &pc.prev, randFloat)
		}).
		OnRetryScheduled(func(e failsafe.ExecutionScheduledEvent[any]) {
			if af, ok := e.LastError().(*attemptFailure); ok {
				outcome := outcomeError
				if _, isTimeout := af.err.(*timeoutError); isTimeout {
					outcome = outcomeAttemptTimeout
				}
				p.tel.retry(e.Context(), p.name, outcome, e.Attempts(), e.Delay)
			}
		}).
		Build()
	p.exec = failsafe.With[any](
		timeout.New[any](o.TotalRequestTimeout),
		retry,
		step[any](p.breaker),
		timeout.New[any](o.AttemptTimeout),
	)
	return p, nil
}

// CircuitState returns the state of the pipeline's circuit breaker.
func (p *Pipeline) CircuitState() CircuitState { return CircuitState(p.dest.state.Load()) }

// Close unregisters the pipeline's metric callbacks.
func (p *Pipeline) Close() error { return p.tel.close() }

// Run calls fn through the pipeline; see Do.
func (p *Pipeline) Run(ctx context.Context, fn func(ctx context.Context) error) error {
	_, err := Do(ctx, p, func(ctx context.Context) (struct{}, error) { return struct{}{}, fn(ctx) })
	return err
}

// Do calls fn through the pipeline p and returns its result. fn receives
// a context bounded by the attempt and total timeouts; it must honour it.
// fn is called again after a transient error, so it must be safe to
// repeat (a whole transaction, not one statement of it).
//
// When every attempt failed Do returns the last attempt's result and
// error, the error wrapped in one matching ErrRetriesExceeded when it was
// retried. Refusals and timeouts match ErrCircuitOpen (a
// *CircuitOpenError), ErrRejected, and ErrTotalTimeout or
// ErrAttemptTimeout.
func Do[T any](ctx context.Context, p *Pipeline, fn func(ctx context.Context) (T, error)) (T, error) {
	var zero T
	if err := acquire(ctx, p.limiter, p.opts.RateLimiter.QueueLimit, &p.queued); err != nil {
		if errors.Is(err, bulkhead.ErrFull) {
			p.tel.rejected(ctx, p.name, outcomeConcurrencyLimit)
			return zero, &rejectedError{destination: p.name, permitLimit: p.opts.RateLimiter.PermitLimit}
		}
		return zero, err
	}
	defer p.limiter.ReleasePermit()
	pc := &pipelineCall{Context: ctx}
	res, err := p.exec.WithContext(pc).GetWithExecution(func(exec failsafe.Execution[any]) (any, error) {
		v, err := fn(exec.Context())
		if err != nil && ctx.Err() == nil && !exec.IsCanceled() && p.shouldHandle(err) {
			return v, &attemptFailure{err: err}
		}
		return v, err
	})
	v, _ := res.(T)
	if err == nil {
		return v, nil
	}
	switch e := err.(type) {
	case *attemptFailure:
		err = e.err
		if n := int(pc.attempts.Load()); n > 1 {
			err = &retriesExceededError{attempts: n, err: err}
		}
	default:
		if cerr := ctx.Err(); cerr != nil {
			if !errors.Is(err, cerr) {
				err = cerr
			}
		} else if err == timeout.ErrExceeded {
			err = &timeoutError{kind: timeoutTotal, duration: p.declared.TotalRequestTimeout, destination: p.name}
			p.tel.timedOut(ctx, p.name, timeoutTotal)
		}
	}
	return v, err
}

// pipelineCall carries one Do call's state through the contexts
// failsafe-go derives.
type pipelineCall struct {
	context.Context
	prev     float64
	attempts atomic.Int32
}

func (pc *pipelineCall) Value(key any) any {
	if key == callKey {
		return pc
	}
	return pc.Context.Value(key)
}

// breaker is the step between the retry and the attempt timeout: the
// circuit breaker, and the classification of the attempt's outcome.
func (p *Pipeline) breaker(exec failsafe.Execution[any], next func(failsafe.Execution[any]) *common.PolicyResult[any]) *common.PolicyResult[any] {
	ctx := exec.Context()
	if pc, ok := ctx.Value(callKey).(*pipelineCall); ok {
		pc.attempts.Add(1)
	}
	d := p.dest
	seq := d.seq.Load()
	if !d.cb.TryAcquirePermit() {
		if seq != d.seq.Load() {
			p.tel.stateEvent(ctx, d.name, CircuitState(d.state.Load()))
		}
		p.tel.rejected(ctx, d.name, outcomeCircuitOpen)
		return failed[any](&CircuitOpenError{Destination: d.name, RemainingDelay: d.cb.RemainingDelay()})
	}
	res := next(exec)
	af, _ := res.Error.(*attemptFailure)
	if af == nil && res.Error == timeout.ErrExceeded {
		af = &attemptFailure{err: &timeoutError{kind: timeoutAttempt, duration: p.declared.AttemptTimeout, destination: d.name}}
		p.tel.timedOut(ctx, d.name, timeoutAttempt)
		res = &common.PolicyResult[any]{Result: res.Result, Error: af, Done: true}
	}
	if af != nil {
		d.cb.RecordFailure()
		af.retryable = true
		af.dest = d.name
	} else {
		d.cb.RecordSuccess()
	}
	if seq != d.seq.Load() {
		p.tel.stateEvent(ctx, d.name, CircuitState(d.state.Load()))
	}
	return res
}
