package natsmsg

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
)

// JetStreamHandler processes one JetStream message. Returning nil
// acknowledges it; returning an error (or panicking) negatively
// acknowledges it, so the server redelivers it, up to the consumer's
// MaxDeliver (with its BackOff delays). The handler must not Ack itself
// unless it returns ErrAcked.
type JetStreamHandler func(ctx context.Context, msg jetstream.Msg) error

// ErrAcked tells ConsumeJetStream that the handler settled the message
// itself (Ack, Nak, Term or InProgress), so nothing more is sent.
var ErrAcked = errors.New("natsmsg: message settled by the handler")

// PublishJetStream publishes data on subject to the stream that captures
// it and waits for the stream's acknowledgement, so the message is stored
// once PublishJetStream returns nil. A producer span "publish {subject}"
// is recorded and its trace context travels in the message's headers. The
// wait is bounded by ctx (and nats.go's JetStream timeout); an error means
// the message may not be stored: retry with the same nats.MsgId header
// (jetstream.WithMsgID) to let the stream drop a duplicate.
func PublishJetStream(ctx context.Context, js jetstream.JetStream, subject string, data []byte, opts ...PublishOption) (*jetstream.PubAck, error) {
	return PublishJetStreamMsg(ctx, js, &nats.Msg{Subject: subject, Data: data}, nil, opts...)
}

// PublishJetStreamMsg is PublishJetStream for a message with headers of
// its own, with nats.go's publish options (WithMsgID, WithExpectStream
// ...).
func PublishJetStreamMsg(ctx context.Context, js jetstream.JetStream, msg *nats.Msg, pubOpts []jetstream.PublishOpt, opts ...PublishOption) (*jetstream.PubAck, error) {
	s := newPublishSettings(opts)
	ctx, span := startPublish(ctx, &s, msg)
	ack, err := js.PublishMsg(ctx, msg, pubOpts...)
	if err == nil {
		span.SetAttributes(
			attribute.String("messaging.nats.stream", ack.Stream),
			attribute.Int64("messaging.nats.sequence", int64(ack.Sequence)),
		)
	}
	endSpan(span, err)
	if err != nil {
		return nil, fmt.Errorf("natsmsg: publish to %q: %w", msg.Subject, err)
	}
	return ack, nil
}

// ConsumeJetStream consumes cons (typically a durable consumer with
// AckExplicitPolicy, made with js.CreateOrUpdateConsumer) and calls h for
// each message in a consumer span "process {subject}" continuing the
// producer's trace, acknowledging it when h returns nil and asking for
// redelivery when it fails. Messages are handled one at a time.
//
// Consumption stops when ctx is done: messages already received are still
// handled and acknowledged (their ctx has ctx's values but not its
// cancellation); wait on the returned context's Closed channel for that to
// finish. nats.go's pull consumer survives reconnects by itself.
func ConsumeJetStream(ctx context.Context, cons jetstream.Consumer, h JetStreamHandler, opts ...SubscribeOption) (jetstream.ConsumeContext, error) {
	s := newSubscribeSettings(opts)
	hctx := context.WithoutCancel(ctx)
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		extra := []attribute.KeyValue{}
		if info := cons.CachedInfo(); info != nil {
			extra = append(extra,
				attribute.String("messaging.consumer.group.name", info.Name),
				attribute.String("messaging.nats.stream", info.Stream))
		}
		if md, err := msg.Metadata(); err == nil && md.NumDelivered > 1 {
			extra = append(extra, attribute.Int64("messaging.nats.delivered", int64(md.NumDelivered)))
		}
		mctx, span := startProcess(hctx, &s, msg.Subject(), msg.Headers(), len(msg.Data()), extra)
		err := safeCall(func() error { return h(mctx, msg) })
		switch {
		case errors.Is(err, ErrAcked):
			err = nil
		case err == nil:
			if aerr := msg.Ack(); aerr != nil {
				s.logger.WarnContext(mctx, "nats: ack failed; the message will be redelivered", "subject", msg.Subject(), "error", aerr)
			}
		default:
			s.logger.ErrorContext(mctx, "nats handler failed; asking for redelivery", "subject", msg.Subject(), "error", err)
			_ = msg.Nak()
		}
		endSpan(span, err)
	})
	if err != nil {
		return nil, fmt.Errorf("natsmsg: consume: %w", err)
	}
	context.AfterFunc(ctx, cc.Drain)
	return cc, nil
}
