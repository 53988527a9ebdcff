package resilience

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/failsafe-go/failsafe-go/bulkhead"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"go.opentelemetry.io/otel/attribute"
)

// CircuitState is a circuit breaker's state.
type CircuitState int

// Circuit breaker states, with the values the
// goaspire.resilience.breaker.state gauge reports.
const (
	CircuitClosed   CircuitState = CircuitState(circuitbreaker.ClosedState)
	CircuitOpen     CircuitState = CircuitState(circuitbreaker.OpenState)
	CircuitHalfOpen CircuitState = CircuitState(circuitbreaker.HalfOpenState)
)

// String returns the state's name: closed, open or half_open.
func (s CircuitState) String() string {
	switch s {
	case CircuitClosed:
		return "closed"
	case CircuitOpen:
		return "open"
	case CircuitHalfOpen:
		return "half_open"
	}
	return "unknown"
}

// destination is what the pipeline keeps per destination authority: its
// circuit breaker and, for the hedging pipeline, its concurrency limiter.
type destination struct {
	name     string
	cb       circuitbreaker.CircuitBreaker[any]
	limiter  bulkhead.Bulkhead[any] // nil unless per-destination limits apply
	permits  int
	queued   atomic.Int64
	seq      atomic.Uint64 // bumped on every state change
	state    atomic.Int32  // CircuitState
	lastUsed atomic.Int64  // unix nanoseconds
	attrs    attribute.Set
}

// maxDestinations bounds the registry: past it, idle closed breakers are
// dropped so a client calling many hosts cannot grow it without limit.
const maxDestinations = 1024

type destinations struct {
	opts    CircuitBreakerOptions
	permits int // per-destination concurrency limit, 0 for none
	queue   int // per-destination queue limit
	tel     *telemetry

	m  sync.Map // string -> *destination
	n  atomic.Int64
	mu sync.Mutex // serializes creation and sweeping
}

func (ds *destinations) get(name string, now time.Time) *destination {
	if v, ok := ds.m.Load(name); ok {
		d := v.(*destination)
		d.lastUsed.Store(now.UnixNano())
		return d
	}
	ds.mu.Lock()
	defer ds.mu.Unlock()
	if v, ok := ds.m.Load(name); ok {
		return v.(*destination)
	}
	if ds.n.Load() >= maxDestinations {
		ds.sweep(now)
	}
	d := ds.newDestination(name)
	d.lastUsed.Store(now.UnixNano())
	ds.m.Store(name, d)
	ds.n.Add(1)
	return d
}

// sweep drops closed breakers idle for longer than a sampling window plus
// a break: they hold no information any more.
func (ds *destinations) sweep(now time.Time) {
	idle := now.Add(-(ds.opts.SamplingDuration + ds.opts.BreakDuration)).UnixNano()
	ds.m.Range(func(k, v any) bool {
		d := v.(*destination)
		if CircuitState(d.state.Load()) == CircuitClosed && d.lastUsed.Load() < idle {
			ds.m.Delete(k)
			ds.n.Add(-1)
		}
		return true
	})
}

func (ds *destinations) lookup(name string) (*destination, bool) {
	v, ok := ds.m.Load(name)
	if !ok {
		return nil, false
	}
	return v.(*destination), true
}

// isOpen reports whether the breaker of destination name is open (not
// half-open: that one lets a trial call through).
func (ds *destinations) isOpen(name string) bool {
	d, ok := ds.lookup(name)
	return ok && CircuitState(d.state.Load()) == CircuitOpen
}

func (ds *destinations) each(f func(*destination)) {
	ds.m.Range(func(_, v any) bool {
		f(v.(*destination))
		return true
	})
}

func (ds *destinations) newDestination(name string) *destination {
	d := &destination{name: name, permits: ds.permits}
	if ds.tel != nil && ds.tel.pipeline != "" {
		d.attrs = attribute.NewSet(attrDestination.String(name), attrPipeline.String(ds.tel.pipeline))
	} else {
		d.attrs = attribute.NewSet(attrDestination.String(name))
	}
	o := ds.opts
	d.cb = circuitbreaker.NewBuilder[any]().
		// Polly's breaker: open when, within the window, at least
		// MinimumThroughput calls were made and the failure ratio
		// reached FailureRatio.
		WithFailureRateThreshold(o.FailureRatio, uint(o.MinimumThroughput), o.SamplingDuration).
		WithDelay(o.BreakDuration).
		// Half-open lets one trial call through; its outcome closes or
		// reopens the breaker, as Polly does.
		WithSuccessThreshold(1).
		OnStateChanged(func(e circuitbreaker.StateChangedEvent) {
			from, to := CircuitState(e.OldState), CircuitState(e.NewState)
			d.state.Store(int32(to))
			d.seq.Add(1)
			if ds.tel != nil {
				// The event's own Metrics read the breaker's counts
				// without its lock, racing calls that record
				// outcomes meanwhile (failsafe-go v0.9.8); the
				// breaker's Metrics take the lock.
				m := d.cb.Metrics()
				ds.tel.stateChanged(name, from, to, m.FailureRate(), m.Executions(), o.BreakDuration)
			}
		}).
		Build()
	if ds.permits > 0 {
		d.limiter = bulkhead.New[any](uint(ds.permits))
	}
	return d
}
