package rabbitmq

import (
	"context"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/goaspire/goaspire/internal/fallback"
	"github.com/goaspire/goaspire/internal/memo"
	"github.com/goaspire/goaspire/internal/msgconv"
)

// scope is the instrumentation scope of spans and metrics.
const scope = "github.com/goaspire/goaspire/messaging/rabbitmq"

// system is the messaging.system of every span and measurement.
const system = "rabbitmq"

var systemAttr = attribute.String("messaging.system", system)

// telemetry holds the client's tracer, propagator and instruments.
type telemetry struct {
	tracer     trace.Tracer
	tracing    bool
	propagator propagation.TextMapPropagator
	server     []attribute.KeyValue // server.address, server.port

	published    metric.Int64Counter
	delivered    metric.Int64Counter
	failed       metric.Int64Counter
	redelivered  metric.Int64Counter
	deadLettered metric.Int64Counter
	duration     metric.Float64Histogram
	reconnects   metric.Int64Counter

	// destOpts caches the measurement option of each destination, so a
	// publish or a delivery builds no attribute set.
	destOpts memo.Bounded[string, metric.MeasurementOption]
}

// maxCachedDestinations bounds destOpts; past it options are built each
// time.
const maxCachedDestinations = 1024

// destOpt returns the measurement option for messaging.system and
// messaging.destination.name=dest.
func (t *telemetry) destOpt(dest string) metric.MeasurementOption {
	return t.destOpts.Get(dest, newDestOpt)
}

func newDestOpt(dest string) metric.MeasurementOption {
	return metric.WithAttributeSet(attribute.NewSet(systemAttr, attribute.String("messaging.destination.name", dest)))
}

func newTelemetry(c *Config, host string, port int) (*telemetry, error) {
	tp := fallback.TracerProvider(c.TracerProvider)
	mp := fallback.MeterProvider(c.MeterProvider)
	prop := c.Propagator
	if prop == nil {
		prop = otel.GetTextMapPropagator()
		if len(prop.Fields()) == 0 { // OTel's no-op default
			prop = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
		}
	}
	t := &telemetry{
		tracer:     tp.Tracer(scope),
		tracing:    !c.DisableTracing,
		propagator: prop,
		server:     []attribute.KeyValue{attribute.String("server.address", host), attribute.Int("server.port", port)},
		destOpts:   memo.Bounded[string, metric.MeasurementOption]{Max: maxCachedDestinations},
	}
	m := mp.Meter(scope)
	var errs [7]error
	t.published, errs[0] = m.Int64Counter("messaging.client.sent.messages", metric.WithUnit("{message}"),
		metric.WithDescription("Messages published and confirmed by the broker (error.type set when not)."))
	t.delivered, errs[1] = m.Int64Counter("messaging.client.consumed.messages", metric.WithUnit("{message}"),
		metric.WithDescription("Messages delivered to a handler."))
	t.failed, errs[2] = m.Int64Counter("rabbitmq.messages.failed", metric.WithUnit("{message}"),
		metric.WithDescription("Deliveries whose handler returned an error or panicked."))
	t.redelivered, errs[3] = m.Int64Counter("rabbitmq.messages.redelivered", metric.WithUnit("{message}"),
		metric.WithDescription("Failed deliveries queued again for another attempt."))
	t.deadLettered, errs[4] = m.Int64Counter("rabbitmq.messages.dead_lettered", metric.WithUnit("{message}"),
		metric.WithDescription("Deliveries rejected for good after their last attempt (to the dead-letter queue, if any)."))
	t.duration, errs[5] = m.Float64Histogram("messaging.process.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of handling one delivery."))
	t.reconnects, errs[6] = m.Int64Counter("rabbitmq.connection.recoveries", metric.WithUnit("{recovery}"),
		metric.WithDescription("Connections recovered after a loss."))
	for _, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("rabbitmq: metrics: %w", err)
		}
	}
	return t, nil
}

// destination is what the messaging conventions call the destination of a
// publish: the exchange, or for the default exchange the queue named by the
// routing key.
func destination(exchange, key string) string {
	if exchange == "" {
		return key
	}
	return exchange
}

// headerCarrier adapts message headers to the propagation API.
type headerCarrier amqp.Table

func (h headerCarrier) Get(key string) string {
	if v, ok := h[key].(string); ok {
		return v
	}
	return ""
}

func (h headerCarrier) Set(key, value string) { h[key] = value }

func (h headerCarrier) Keys() []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	return keys
}

// startPublish starts the producer span and writes the trace context into
// headers, which must not be nil.
func (t *telemetry) startPublish(ctx context.Context, exchange, key string, msg *amqp.Publishing) (context.Context, trace.Span) {
	span := trace.SpanFromContext(ctx)
	if t.tracing {
		dest := destination(exchange, key)
		ctx, span = t.tracer.Start(ctx, "publish "+dest, trace.WithSpanKind(trace.SpanKindProducer))
	}
	if span.IsRecording() {
		dest := destination(exchange, key)
		attrs := make([]attribute.KeyValue, 0, 8)
		attrs = msgconv.Append(attrs, system, "publish", "send", dest)
		attrs = append(attrs, attribute.String("messaging.rabbitmq.destination.routing_key", key))
		if msg.MessageId != "" {
			attrs = append(attrs, attribute.String("messaging.message.id", msg.MessageId))
		}
		attrs = append(attrs, t.server...)
		span.SetAttributes(attrs...)
	}
	t.propagator.Inject(ctx, headerCarrier(msg.Headers))
	return ctx, span
}

// startProcess starts the consumer span as a child of the trace context
// the message carries.
func (t *telemetry) startProcess(ctx context.Context, queue string, d *amqp.Delivery) (context.Context, trace.Span) {
	if d.Headers != nil {
		ctx = t.propagator.Extract(ctx, headerCarrier(d.Headers))
	}
	if !t.tracing {
		return ctx, trace.SpanFromContext(ctx)
	}
	ctx, span := t.tracer.Start(ctx, "process "+queue, trace.WithSpanKind(trace.SpanKindConsumer))
	if !span.IsRecording() {
		return ctx, span
	}
	attrs := make([]attribute.KeyValue, 0, 9)
	attrs = msgconv.Append(attrs, system, "process", "process", queue)
	attrs = append(attrs,
		attribute.String("messaging.rabbitmq.destination.routing_key", d.RoutingKey),
		attribute.Int64("messaging.rabbitmq.message.delivery_tag", int64(d.DeliveryTag)))
	if d.MessageId != "" {
		attrs = append(attrs, attribute.String("messaging.message.id", d.MessageId))
	}
	attrs = append(attrs, t.server...)
	span.SetAttributes(attrs...)
	return ctx, span
}
