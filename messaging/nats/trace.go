package natsmsg

import (
	"context"
	"fmt"
	"runtime/debug"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/goaspire/goaspire/internal/msgconv"
)

// scope is the instrumentation scope of the helpers' spans.
const scope = "github.com/goaspire/goaspire/messaging/nats"

// Handler processes one core NATS message. Its ctx carries the consumer
// span, a child of the producer's span when the message came with a trace
// context. A returned error (or a panic, which is recovered) is recorded
// on the span and logged; core NATS has no redelivery, so the message is
// not seen again.
type Handler func(ctx context.Context, msg *nats.Msg) error

// headerCarrier adapts nats.Header, whose keys are case-sensitive, to the
// OTel propagators.
type headerCarrier nats.Header

func (h headerCarrier) Get(key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func (h headerCarrier) Set(key, value string) { h[key] = []string{value} }

func (h headerCarrier) Keys() []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	return keys
}

// messaging attributes, as the OpenTelemetry messaging conventions and the
// Aspire dashboard read them.
func messagingAttrs(op, opType, subject string, size int) []attribute.KeyValue {
	attrs := msgconv.Append(make([]attribute.KeyValue, 0, 6), "nats", op, opType, subject)
	return append(attrs, attribute.Int("messaging.message.body.size", size))
}

// startPublish starts the producer span for msg and writes its context
// into msg's headers.
func startPublish(ctx context.Context, s *publishSettings, msg *nats.Msg) (context.Context, trace.Span) {
	ctx, span := s.tp.Tracer(scope).Start(ctx, "publish "+msg.Subject, trace.WithSpanKind(trace.SpanKindProducer))
	if span.IsRecording() {
		span.SetAttributes(messagingAttrs("publish", "send", msg.Subject, len(msg.Data))...)
	}
	s.prop.Inject(ctx, msgCarrier{msg})
	return ctx, span
}

// msgCarrier writes into a message's headers, making them only when there
// is something to write: a message without headers goes out as a plain
// PUB, cheaper than HPUB.
type msgCarrier struct{ msg *nats.Msg }

func (c msgCarrier) Get(key string) string { return headerCarrier(c.msg.Header).Get(key) }

func (c msgCarrier) Set(key, value string) {
	if c.msg.Header == nil {
		c.msg.Header = nats.Header{}
	}
	c.msg.Header[key] = []string{value}
}

func (c msgCarrier) Keys() []string { return headerCarrier(c.msg.Header).Keys() }

func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// Publish sends data on subject over core NATS (at most once), with a
// producer span "publish {subject}" whose trace context travels in the
// message's headers. It returns nats.go's error (the connection buffers
// publishes while it reconnects). Use PublishJetStream when the message
// must not be lost.
func Publish(ctx context.Context, nc *nats.Conn, subject string, data []byte, opts ...PublishOption) error {
	return PublishMsg(ctx, nc, &nats.Msg{Subject: subject, Data: data}, opts...)
}

// PublishMsg is Publish for a message with headers or a reply subject of
// its own; the trace context is added to msg.Header.
func PublishMsg(ctx context.Context, nc *nats.Conn, msg *nats.Msg, opts ...PublishOption) error {
	s := newPublishSettings(opts)
	_, span := startPublish(ctx, &s, msg)
	err := nc.PublishMsg(msg)
	endSpan(span, err)
	return err
}

// Subscribe calls h for each message on subject (wildcards allowed), each
// in a consumer span "process {subject}" continuing the producer's trace.
// Messages are handled one at a time, in order. The subscription ends
// (draining what was received) when ctx is done or when it is
// unsubscribed; it survives reconnects, as nats.go resubscribes. The
// handler's ctx has ctx's values but not its cancellation, so messages
// drained after ctx ends are still handled in full.
func Subscribe(ctx context.Context, nc *nats.Conn, subject string, h Handler, opts ...SubscribeOption) (*nats.Subscription, error) {
	return subscribe(ctx, nc, subject, "", h, opts)
}

// QueueSubscribe is Subscribe as a member of the queue group queue: each
// message goes to one member of the group (replicas sharing the work).
func QueueSubscribe(ctx context.Context, nc *nats.Conn, subject, queue string, h Handler, opts ...SubscribeOption) (*nats.Subscription, error) {
	return subscribe(ctx, nc, subject, queue, h, opts)
}

func subscribe(ctx context.Context, nc *nats.Conn, subject, queue string, h Handler, opts []SubscribeOption) (*nats.Subscription, error) {
	s := newSubscribeSettings(opts)
	log := s.logger.With("subject", subject)
	hctx := context.WithoutCancel(ctx) // messages drained after ctx ends still get a live ctx
	cb := func(msg *nats.Msg) {
		var extra []attribute.KeyValue
		if queue != "" {
			extra = append(extra, attribute.String("messaging.consumer.group.name", queue))
		}
		mctx, span := startProcess(hctx, &s, msg.Subject, msg.Header, len(msg.Data), extra)
		err := safeCall(func() error { return h(mctx, msg) })
		if err != nil {
			log.ErrorContext(mctx, "nats handler failed", "error", err, "message_subject", msg.Subject)
		}
		endSpan(span, err)
	}
	var sub *nats.Subscription
	var err error
	if queue == "" {
		sub, err = nc.Subscribe(subject, cb)
	} else {
		sub, err = nc.QueueSubscribe(subject, queue, cb)
	}
	if err != nil {
		return nil, fmt.Errorf("natsmsg: subscribe %q: %w", subject, err)
	}
	context.AfterFunc(ctx, func() { _ = sub.Drain() })
	return sub, nil
}

// startProcess starts a consumer span continuing the trace in header.
func startProcess(ctx context.Context, s *subscribeSettings, subject string, header nats.Header, size int, extra []attribute.KeyValue) (context.Context, trace.Span) {
	if header != nil {
		ctx = s.prop.Extract(ctx, headerCarrier(header))
	}
	ctx, span := s.tp.Tracer(scope).Start(ctx, "process "+subject, trace.WithSpanKind(trace.SpanKindConsumer))
	if span.IsRecording() {
		span.SetAttributes(append(messagingAttrs("process", "process", subject, size), extra...)...)
	}
	return ctx, span
}

// safeCall runs f, turning a panic into an error with its stack.
func safeCall(f func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("handler panicked: %v\n%s", p, debug.Stack())
		}
	}()
	return f()
}
