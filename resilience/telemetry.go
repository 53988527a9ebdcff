package resilience

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/internal/fallback"
)

// The names below are the package's telemetry contract, listed in the
// package documentation for dashboards and alerts.

// scopeName is the instrumentation scope of this package's metrics.
const scopeName = "github.com/goaspire/goaspire/resilience"

// Metric names.
const (
	metricRetries            = "goaspire.resilience.retries"
	metricBreakerStateChange = "goaspire.resilience.breaker.state_changes"
	metricBreakerState       = "goaspire.resilience.breaker.state"
	metricRejections         = "goaspire.resilience.rejections"
	metricTimeouts           = "goaspire.resilience.timeouts"
	metricHedges             = "goaspire.resilience.hedges"
	metricEjections          = "goaspire.resilience.ejections"
)

// Attribute keys of the metrics and span events.
const (
	attrDestination = attribute.Key("destination")
	attrOutcome     = attribute.Key("outcome")
	attrPipeline    = attribute.Key("pipeline")
	attrAttempt     = attribute.Key("attempt")
	attrDelay       = attribute.Key("delay_ms")
)

// Span event names, added to the span active in the request's context.
const (
	eventRetry        = "goaspire.resilience.retry"
	eventBreakerState = "goaspire.resilience.breaker.state_change"
	eventRejected     = "goaspire.resilience.rejected"
	eventTimeout      = "goaspire.resilience.timeout"
	eventHedge        = "goaspire.resilience.hedge"
	eventEjection     = "goaspire.resilience.ejection"
)

// Outcome attribute values other than HTTP status codes.
const (
	outcomeTransportError   = "transport_error"
	outcomeError            = "error"
	outcomeAttemptTimeout   = "attempt_timeout"
	outcomeCircuitOpen      = "circuit_open"
	outcomeConcurrencyLimit = "concurrency_limit"
	outcomeNoAnswer         = "consecutive_failures"
)

type telemetry struct {
	pipeline     string
	logger       *slog.Logger
	retries      metric.Int64Counter
	stateChanges metric.Int64Counter
	rejections   metric.Int64Counter
	timeouts     metric.Int64Counter
	hedges       metric.Int64Counter
	ejections    metric.Int64Counter
	reg          metric.Registration
}

func newTelemetry(s *settings, dests *destinations) (*telemetry, error) {
	mp := fallback.MeterProvider(s.meter)
	logger := fallback.Logger(s.logger)
	m := mp.Meter(scopeName)
	t := &telemetry{pipeline: s.name, logger: logger}
	var err error
	if t.retries, err = m.Int64Counter(metricRetries, metric.WithUnit("{retry}"),
		metric.WithDescription("Retries scheduled after a transient failure.")); err != nil {
		return nil, err
	}
	if t.stateChanges, err = m.Int64Counter(metricBreakerStateChange, metric.WithUnit("{change}"),
		metric.WithDescription("Circuit breaker state changes; outcome is the new state.")); err != nil {
		return nil, err
	}
	if t.rejections, err = m.Int64Counter(metricRejections, metric.WithUnit("{call}"),
		metric.WithDescription("Calls refused without being tried: circuit_open or concurrency_limit.")); err != nil {
		return nil, err
	}
	if t.timeouts, err = m.Int64Counter(metricTimeouts, metric.WithUnit("{timeout}"),
		metric.WithDescription("Timeouts that fired; outcome is attempt or total.")); err != nil {
		return nil, err
	}
	if t.hedges, err = m.Int64Counter(metricHedges, metric.WithUnit("{attempt}"),
		metric.WithDescription("Hedged attempts started.")); err != nil {
		return nil, err
	}
	if t.ejections, err = m.Int64Counter(metricEjections, metric.WithUnit("{ejection}"),
		metric.WithDescription("Instances ejected by outlier detection after consecutive attempts without an answer.")); err != nil {
		return nil, err
	}
	gauge, err := m.Int64ObservableGauge(metricBreakerState, metric.WithUnit("{state}"),
		metric.WithDescription("Circuit breaker state per destination: 0 closed, 1 open, 2 half-open."))
	if err != nil {
		return nil, err
	}
	t.reg, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		dests.each(func(d *destination) {
			o.ObserveInt64(gauge, int64(d.state.Load()), metric.WithAttributeSet(d.attrs))
		})
		return nil
	}, gauge)
	if err != nil {
		return nil, err
	}
	return t, nil
}

func (t *telemetry) close() error {
	if t.reg != nil {
		return t.reg.Unregister()
	}
	return nil
}

func (t *telemetry) attrs(dest, outcome string) metric.MeasurementOption {
	if t.pipeline != "" {
		return metric.WithAttributes(attrDestination.String(dest), attrOutcome.String(outcome), attrPipeline.String(t.pipeline))
	}
	return metric.WithAttributes(attrDestination.String(dest), attrOutcome.String(outcome))
}

func (t *telemetry) event(ctx context.Context, name string, attrs ...attribute.KeyValue) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	if t.pipeline != "" {
		attrs = append(attrs, attrPipeline.String(t.pipeline))
	}
	span.AddEvent(name, trace.WithAttributes(attrs...))
}

func (t *telemetry) retry(ctx context.Context, dest, outcome string, attempt int, delay time.Duration) {
	t.retries.Add(ctx, 1, t.attrs(dest, outcome))
	t.event(ctx, eventRetry, attrDestination.String(dest), attrOutcome.String(outcome),
		attrAttempt.Int(attempt), attrDelay.Int64(delay.Milliseconds()))
}

func (t *telemetry) hedge(ctx context.Context, dest string, attempt int) {
	t.hedges.Add(ctx, 1, t.attrs(dest, "started"))
	t.event(ctx, eventHedge, attrDestination.String(dest), attrAttempt.Int(attempt))
}

func (t *telemetry) rejected(ctx context.Context, dest, outcome string) {
	t.rejections.Add(ctx, 1, t.attrs(dest, outcome))
	t.event(ctx, eventRejected, attrDestination.String(dest), attrOutcome.String(outcome))
}

func (t *telemetry) timedOut(ctx context.Context, dest string, kind timeoutKind) {
	t.timeouts.Add(ctx, 1, t.attrs(dest, kind.String()))
	t.event(ctx, eventTimeout, attrDestination.String(dest), attrOutcome.String(kind.String()))
}

// stateChanged records a breaker transition: once, from the breaker's
// listener, so it is counted and logged exactly once per transition.
func (t *telemetry) stateChanged(dest string, from, to CircuitState, failureRate float64, executions uint, breakFor time.Duration) {
	t.stateChanges.Add(context.Background(), 1, t.attrs(dest, to.String()))
	args := []any{slog.String("destination", dest), slog.String("from", from.String()), slog.String("to", to.String())}
	if t.pipeline != "" {
		args = append(args, slog.String("pipeline", t.pipeline))
	}
	switch to {
	case CircuitOpen:
		args = append(args, slog.Float64("failure_ratio", failureRate), slog.Uint64("calls", uint64(executions)), slog.Duration("break", breakFor))
		t.logger.Warn("resilience: circuit breaker opened", args...)
	case CircuitHalfOpen:
		t.logger.Info("resilience: circuit breaker half-open, trying one call", args...)
	default:
		t.logger.Info("resilience: circuit breaker closed", args...)
	}
}

// ejected records an instance's ejection: once, from the detector's
// callback.
func (t *telemetry) ejected(dest string, d time.Duration, failures int) {
	t.ejections.Add(context.Background(), 1, t.attrs(dest, outcomeNoAnswer))
	args := []any{slog.String("destination", dest), slog.Duration("ejection", d), slog.Int("consecutive_failures", failures)}
	if t.pipeline != "" {
		args = append(args, slog.String("pipeline", t.pipeline))
	}
	t.logger.Warn("resilience: instance ejected: it did not answer its last attempts; calls go to the other instances", args...)
}

// ejectionEvent adds an ejection to the span of the call whose attempt
// caused it.
func (t *telemetry) ejectionEvent(ctx context.Context, dest string) {
	t.event(ctx, eventEjection, attrDestination.String(dest), attrOutcome.String(outcomeNoAnswer))
}

// stateEvent adds the breaker's new state to the span of the call that
// saw the transition.
func (t *telemetry) stateEvent(ctx context.Context, dest string, to CircuitState) {
	t.event(ctx, eventBreakerState, attrDestination.String(dest), attrOutcome.String(to.String()))
}

// outcomeOf names an attempt's failure for the outcome attribute.
func outcomeOf(status int, err error) string {
	if err != nil {
		if _, ok := err.(*timeoutError); ok {
			return outcomeAttemptTimeout
		}
		return outcomeTransportError
	}
	return strconv.Itoa(status)
}

// unresolved logs, once per service name (the Resolver keeps count), a
// request to a service that is neither configured nor in DNS.
func (t *telemetry) unresolved(err *discovery.UnresolvedError) {
	t.logger.Warn("resilience: service is not configured and DNS does not know it; its requests fail without retries",
		"pipeline", t.pipeline, "service", err.Service, "variables", strings.Join(err.Variables, ", "))
}
