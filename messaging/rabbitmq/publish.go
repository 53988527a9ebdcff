package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
)

// ErrUnroutable is returned by Publish when the broker confirmed a message
// it could not route to any queue (it was returned, not stored).
var ErrUnroutable = errors.New("rabbitmq: message unroutable")

// ErrNacked is wrapped by the error Publish returns when the broker kept
// refusing the message (basic.nack) until the caller's deadline.
var ErrNacked = errors.New("rabbitmq: message nacked by the broker")

// seqHeader carries the publish sequence number, so that a returned
// (unroutable) message can be matched to its Publish call.
const seqHeader = "x-goaspire-seq"

// Message is what Publish sends. Messages are always persistent.
type Message struct {
	// Body is the payload.
	Body []byte
	// ContentType is its MIME type, such as "application/json".
	ContentType string
	// MessageID identifies the message, for consumers that deduplicate.
	MessageID string
	// CorrelationID and ReplyTo serve request/reply.
	CorrelationID, ReplyTo string
	// Type is an application-defined message type.
	Type string
	// Headers are application headers. The trace context is added to a
	// copy; the map is not modified.
	Headers map[string]any
	// Expiration, when positive, is the message TTL.
	Expiration time.Duration
}

// pending is one Publish waiting for its confirm.
type pending struct {
	exchange, key string
	msg           amqp.Publishing
	done          chan error // buffered 1; receives the outcome once
	abandoned     atomic.Bool
	returned      bool          // guarded by publisher.pmu
	ch            *amqp.Channel // the channel it was last sent on; guarded by publisher.pmu
	seq           uint64
}

// publisher owns the confirm-mode channel all publishes go through.
type publisher struct {
	c *Client

	mu     sync.Mutex // serializes sends and channel swaps
	ch     *amqp.Channel
	ready  chan struct{} // closed once ch is set; replaced when ch is lost
	closed bool

	pmu     sync.Mutex
	pending map[uint64]*pending // by delivery tag on ch
}

func newPublisher(c *Client) *publisher {
	return &publisher{c: c, ready: make(chan struct{}), pending: map[uint64]*pending{}}
}

// attach opens the publishing channel on conn and sends again, in their
// original order, the messages that were unconfirmed on the previous one.
func (p *publisher) attach(conn *amqp.Connection) error {
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	if err := ch.Confirm(false); err != nil {
		ch.Close()
		return err
	}
	// Returns are received unbuffered by the same goroutine as confirms:
	// amqp091-go sends a message's return before its ack, so the return is
	// handled first.
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 1024))
	returns := ch.NotifyReturn(make(chan amqp.Return))
	closes := ch.NotifyClose(make(chan *amqp.Error, 1))

	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		ch.Close()
		return ErrClosed
	}
	p.pmu.Lock()
	old := make([]*pending, 0, len(p.pending))
	for _, pd := range p.pending {
		old = append(old, pd)
	}
	clear(p.pending)
	p.pmu.Unlock()
	sort.Slice(old, func(i, j int) bool { return old[i].seq < old[j].seq })
	// The previous channel's watcher may not have seen its end yet (a new
	// connection can be up first): then ready is still closed.
	wasNone := p.ch == nil
	p.ch = ch
	p.c.wg.Add(1)
	go p.watch(conn, ch, confirms, returns, closes)
	resent := 0
	for _, pd := range old {
		if pd.abandoned.Load() {
			continue
		}
		if err := p.sendLocked(pd); err != nil {
			// The new channel is already gone; the watcher keeps what
			// was not sent for the next one.
			p.keep(pd)
			continue
		}
		resent++
	}
	if resent > 0 {
		p.c.log.Info("rabbitmq re-published messages unconfirmed before the connection was lost", "count", resent)
	}
	if wasNone {
		close(p.ready)
	}
	return nil
}

// keep puts a message back for the next channel.
func (p *publisher) keep(pd *pending) {
	p.pmu.Lock()
	p.pending[pd.seq|1<<63] = pd // not a delivery tag: kept apart until attach
	p.pmu.Unlock()
}

// watch completes publishes as confirms and returns arrive on ch, until ch
// closes. A channel closed with its connection leaves the unconfirmed
// messages for the next channel; one closed by a channel error (a publish
// to a missing exchange) fails them with that error.
func (p *publisher) watch(conn *amqp.Connection, ch *amqp.Channel, confirms <-chan amqp.Confirmation, returns <-chan amqp.Return, closes <-chan *amqp.Error) {
	defer p.c.wg.Done()
	for {
		select {
		case r, ok := <-returns:
			if !ok {
				returns = nil
				continue
			}
			if seq, ok := r.Headers[seqHeader].(int64); ok {
				p.pmu.Lock()
				if pd := p.pending[uint64(seq)]; pd != nil && pd.ch == ch {
					pd.returned = true
				}
				p.pmu.Unlock()
			}
		case cf, ok := <-confirms:
			if !ok {
				confirms = nil
				if returns == nil {
					p.lost(conn, ch, nil)
					return
				}
				continue
			}
			p.confirm(ch, cf)
		case reason := <-closes:
			// Drain what was already confirmed before the close.
			for cf := range confirms {
				p.confirm(ch, cf)
			}
			p.lost(conn, ch, reason)
			return
		}
	}
}

func (p *publisher) confirm(ch *amqp.Channel, cf amqp.Confirmation) {
	p.pmu.Lock()
	pd := p.pending[cf.DeliveryTag]
	if pd == nil || pd.ch != ch {
		p.pmu.Unlock()
		return
	}
	delete(p.pending, cf.DeliveryTag)
	returned := pd.returned
	p.pmu.Unlock()
	switch {
	case !cf.Ack:
		// The broker could not take it (an internal error): send it
		// again, off this goroutine, which must keep reading confirms.
		go p.retry(pd)
	case returned:
		pd.done <- ErrUnroutable
	default:
		pd.done <- nil
	}
}

// retry sends a nacked message again after a pause.
func (p *publisher) retry(pd *pending) {
	select {
	case <-time.After(50 * time.Millisecond):
	case <-p.c.done:
		pd.done <- ErrClosed
		return
	}
	if pd.abandoned.Load() {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ch == nil || p.sendLocked(pd) != nil {
		p.keep(pd)
	}
}

// lost handles the end of ch.
func (p *publisher) lost(conn *amqp.Connection, ch *amqp.Channel, reason *amqp.Error) {
	p.mu.Lock()
	if p.ch == ch {
		p.ch = nil
		if !p.closed {
			p.ready = make(chan struct{})
		}
	}
	closed := p.closed
	p.mu.Unlock()

	channelError := reason != nil && !conn.IsClosed() && !closed
	if !channelError && !closed {
		return // the messages wait in pending for the next channel
	}
	failWith := error(ErrClosed)
	if channelError {
		failWith = fmt.Errorf("rabbitmq: publish: channel closed by the broker: %w", reason)
	}
	p.pmu.Lock()
	var failed []*pending
	for tag, pd := range p.pending {
		if closed || (tag&(1<<63) == 0 && pd.ch == ch) {
			failed = append(failed, pd)
			delete(p.pending, tag)
		}
	}
	p.pmu.Unlock()
	for _, pd := range failed {
		pd.done <- failWith
	}
	if channelError {
		// The connection is fine: open a new publishing channel on it.
		if err := p.attach(conn); err != nil && !errors.Is(err, ErrClosed) {
			p.c.log.Warn("rabbitmq: reopening the publishing channel failed; closing the connection to recover", "error", err)
			conn.Close()
		}
	}
}

// sendLocked publishes pd on p.ch under p.mu and records it as pending.
func (p *publisher) sendLocked(pd *pending) error {
	ch := p.ch
	seq := ch.GetNextPublishSeqNo()
	pd.seq = seq
	pd.msg.Headers[seqHeader] = int64(seq)
	p.pmu.Lock()
	pd.ch, pd.returned = ch, false
	p.pending[seq] = pd
	p.pmu.Unlock()
	if err := ch.Publish(pd.exchange, pd.key, true, false, pd.msg); err != nil {
		p.pmu.Lock()
		delete(p.pending, seq)
		p.pmu.Unlock()
		return err
	}
	return nil
}

// send publishes pd as soon as there is a channel, or fails when ctx ends.
func (p *publisher) send(ctx context.Context, pd *pending) error {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return ErrClosed
		}
		if p.ch != nil {
			err := p.sendLocked(pd)
			p.mu.Unlock()
			if err == nil {
				return nil
			}
			// The channel died under us; its watcher resets p.ch.
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(5 * time.Millisecond):
			}
			continue
		}
		ready := p.ready
		p.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ready:
		}
	}
}

func (p *publisher) close() {
	p.mu.Lock()
	if !p.closed && p.ch == nil {
		close(p.ready) // wake publishers waiting for a channel
	}
	p.closed = true
	p.mu.Unlock()
	p.pmu.Lock()
	failed := make([]*pending, 0, len(p.pending))
	for tag, pd := range p.pending {
		failed = append(failed, pd)
		delete(p.pending, tag)
	}
	p.pmu.Unlock()
	for _, pd := range failed {
		select {
		case pd.done <- ErrClosed:
		default:
		}
	}
}

// Publish sends a persistent message to exchange with routing key key (to
// the queue named key when exchange is "") and waits until the broker
// confirms it. It returns nil only for a confirmed message; it returns an
// error when the message is not confirmed before ctx ends, is unroutable
// (ErrUnroutable), or is refused on a channel error (a missing exchange).
//
// A connection lost while waiting does not fail the call: the message is
// published again on the next connection, so a message may reach the broker
// twice (at-least-once delivery; give it a MessageID to deduplicate). After
// an error caused by ctx the message may still have reached the broker.
//
// The publish is traced as a producer span "publish {destination}" whose
// trace context travels in the message headers.
func (c *Client) Publish(ctx context.Context, exchange, key string, m Message) error {
	headers := make(amqp.Table, len(m.Headers)+3)
	for k, v := range m.Headers {
		headers[k] = v
	}
	pd := &pending{
		exchange: exchange,
		key:      key,
		done:     make(chan error, 1),
		msg: amqp.Publishing{
			Headers:       headers,
			ContentType:   m.ContentType,
			DeliveryMode:  amqp.Persistent,
			CorrelationId: m.CorrelationID,
			ReplyTo:       m.ReplyTo,
			MessageId:     m.MessageID,
			Type:          m.Type,
			Timestamp:     time.Now(),
			Body:          m.Body,
		},
	}
	if m.Expiration > 0 {
		pd.msg.Expiration = fmt.Sprint(m.Expiration.Milliseconds())
	}
	ctx, span := c.tel.startPublish(ctx, exchange, key, &pd.msg)
	err := c.publish(ctx, pd)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		c.tel.published.Add(ctx, 1, metric.WithAttributes(systemAttr,
			attribute.String("messaging.destination.name", destination(exchange, key)), attribute.String("error.type", errorType(err))))
	} else {
		c.tel.published.Add(ctx, 1, c.tel.destOpt(destination(exchange, key)))
	}
	if c.tel.tracing {
		span.End()
	}
	if err != nil {
		return fmt.Errorf("rabbitmq %q: publish to %q: %w", c.name, destination(exchange, key), err)
	}
	return nil
}

// publish sends pd and waits for its outcome.
func (c *Client) publish(ctx context.Context, pd *pending) error {
	if err := c.pub.send(ctx, pd); err != nil {
		pd.abandoned.Store(true)
		if errors.Is(err, ctx.Err()) {
			return fmt.Errorf("not connected: %w", err)
		}
		return err
	}
	select {
	case err := <-pd.done:
		return err
	case <-ctx.Done():
		pd.abandoned.Store(true)
		return fmt.Errorf("not confirmed: %w", ctx.Err())
	}
}

func errorType(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, ErrUnroutable):
		return "unroutable"
	case errors.Is(err, ErrClosed):
		return "closed"
	}
	return "_OTHER"
}
