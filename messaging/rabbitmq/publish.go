package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
)

// ErrUnroutable is returned by Publish for a mandatory message (see
// Message.Mandatory and Config.Mandatory) that the broker confirmed but
// could not route to any queue (it was returned, not stored).
var ErrUnroutable = errors.New("rabbitmq: message unroutable")

// ErrNacked is wrapped by the error Publish returns when the broker kept
// refusing the message (basic.nack) until the caller's deadline.
var ErrNacked = errors.New("rabbitmq: message nacked by the broker")

// ErrConfirmTimeout is wrapped by the error Publish returns when its
// context had no deadline and the message was not confirmed within
// Config.PublishConfirmTimeout (DefaultPublishConfirmTimeout): the broker
// is unreachable or silent, or the connection is blocked. The error also
// wraps context.DeadlineExceeded. The message may still reach the broker.
var ErrConfirmTimeout = errors.New("rabbitmq: publish not confirmed within the publish confirm timeout")

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
	// Mandatory has Publish fail with ErrUnroutable when no queue takes
	// the message (an exchange without a matching binding, a default
	// exchange's key naming no queue). Without it (the default, unless
	// Config.Mandatory is set), the broker drops such a message and
	// Publish succeeds, as RabbitMQ's clients do: a publisher deployed
	// before its consumers' queues exist loses those messages rather
	// than failing.
	Mandatory bool
}

// pending is one Publish waiting for its confirm. Only its own Publish
// call reads and sends it; it is sent again on a new channel when the
// connection drops before the confirm.
type pending struct {
	exchange, key string
	mandatory     bool
	msg           amqp.Publishing
	returned      bool // guarded by publisher.pmu
}

// pubChan is one confirm-mode publishing channel.
type pubChan struct {
	ch      *amqp.Channel
	conn    *amqp.Connection
	returns chan amqp.Return // drained by drainReturns only
	pending map[uint64]*pending

	// sync asks drainReturns to handle every return received so far and
	// then close the channel sent; returnsDone is closed once returns is
	// closed (the channel ended) and every return on it has been handled.
	sync        chan chan struct{}
	returnsDone chan struct{}

	gone chan struct{} // closed once the channel has ended and err is set
	err  error         // why: nil when the connection was lost (send again)
}

// ctxMutex is a mutex whose Lock can give up when a context ends.
type ctxMutex chan struct{}

// Lock locks m.
func (m ctxMutex) Lock() { m <- struct{}{} }

// LockContext locks m, or returns ctx's error if ctx ends first.
func (m ctxMutex) LockContext(ctx context.Context) error {
	select {
	case m <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Unlock unlocks m.
func (m ctxMutex) Unlock() { <-m }

// publisher owns the publishing channel.
type publisher struct {
	c *Client

	mu     ctxMutex // serializes sends and channel swaps; a send waits for it within its ctx
	cur    *pubChan
	ready  chan struct{} // closed once cur is set; replaced when cur is lost
	closed bool

	pmu sync.Mutex // guards pubChan.pending, pending.returned
}

func newPublisher(c *Client) *publisher {
	return &publisher{c: c, ready: make(chan struct{}), mu: make(ctxMutex, 1)}
}

// returnBuffer is how many returned (unroutable) messages may wait for
// drainReturns, which takes them off as they come: a burst larger than it
// only makes amqp091-go's reader wait for room.
const returnBuffer = 4096

// attach opens the publishing channel on conn.
func (p *publisher) attach(conn *amqp.Connection) error {
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	if err := ch.Confirm(false); err != nil {
		ch.Close()
		return err
	}
	pc := &pubChan{ch: ch, conn: conn, pending: map[uint64]*pending{}, gone: make(chan struct{}),
		sync: make(chan chan struct{}), returnsDone: make(chan struct{})}
	// amqp091-go hands a message's return to this buffer before it
	// processes the message's ack, so whoever sees the ack finds the
	// return here or handled already: see confirmed.
	pc.returns = ch.NotifyReturn(make(chan amqp.Return, returnBuffer))
	closes := ch.NotifyClose(make(chan *amqp.Error, 1))

	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		ch.Close()
		return ErrClosed
	}
	// The previous channel's watcher may not have seen its end yet (a new
	// connection can be up first): then ready is still closed.
	wasNone := p.cur == nil
	p.cur = pc
	if wasNone {
		close(p.ready)
	}
	p.c.wg.Add(2)
	go p.watch(pc, closes)
	go p.drainReturns(pc)
	return nil
}

// drainReturns takes every return of pc off its buffer as it arrives and
// marks the pending publish it belongs to, until the channel ends. Returns
// are drained here, not by the publishers that wait for them: a publisher
// whose ctx ends before its confirm never looks, and returns that nobody
// takes would fill the buffer, after which amqp091-go's reader waits 5 s
// for room for each further one (stalling every confirm, delivery and
// heartbeat of the connection) and then drops it (a returned message
// would be reported confirmed).
func (p *publisher) drainReturns(pc *pubChan) {
	defer p.c.wg.Done()
	defer close(pc.returnsDone)
	for {
		select {
		case r, ok := <-pc.returns:
			if !ok {
				return
			}
			p.markReturned(pc, r)
		case done := <-pc.sync:
			for drained := false; !drained; {
				select {
				case r, ok := <-pc.returns:
					if !ok {
						close(done)
						return
					}
					p.markReturned(pc, r)
				default:
					drained = true
				}
			}
			close(done)
		}
	}
}

// markReturned marks the publish r belongs to, if it still waits.
func (p *publisher) markReturned(pc *pubChan, r amqp.Return) {
	n, ok := r.Headers[seqHeader].(int64)
	if !ok {
		return
	}
	p.pmu.Lock()
	if pd := pc.pending[uint64(n)]; pd != nil {
		pd.returned = true
	}
	p.pmu.Unlock()
}

// watch waits for the end of pc. A channel closed with its connection
// lets its publishers send again on the next one; one closed by a channel
// error (a publish to a missing exchange) fails them with that error, and
// a new channel is opened on the same connection.
func (p *publisher) watch(pc *pubChan, closes <-chan *amqp.Error) {
	defer p.c.wg.Done()
	reason := <-closes
	p.mu.Lock()
	if p.cur == pc {
		p.cur = nil
		if !p.closed {
			p.ready = make(chan struct{})
		}
	}
	closed := p.closed
	p.mu.Unlock()

	channelError := reason != nil && !pc.conn.IsClosed() && !closed
	switch {
	case closed:
		pc.err = ErrClosed
	case channelError:
		pc.err = fmt.Errorf("channel closed by the broker: %w", reason)
	}
	close(pc.gone)
	if channelError {
		if err := p.attach(pc.conn); err != nil && !errors.Is(err, ErrClosed) {
			p.c.log.Warn("rabbitmq: reopening the publishing channel failed; closing the connection to recover", "error", err)
			pc.conn.Close()
		}
	}
}

// send publishes pd as soon as there is a channel, or fails when ctx ends,
// and returns the channel and the confirmation to wait for.
func (p *publisher) send(ctx context.Context, pd *pending) (*pubChan, uint64, *amqp.DeferredConfirmation, error) {
	for {
		// A send blocked writing to a silent broker holds the lock until
		// the write fails (see stallConn): the others wait within ctx.
		if err := p.mu.LockContext(ctx); err != nil {
			return nil, 0, nil, fmt.Errorf("not sent, the connection is blocked: %w", err)
		}
		if p.closed {
			p.mu.Unlock()
			return nil, 0, nil, ErrClosed
		}
		if pc := p.cur; pc != nil {
			seq := pc.ch.GetNextPublishSeqNo()
			pd.msg.Headers[seqHeader] = int64(seq)
			p.pmu.Lock()
			pd.returned = false
			pc.pending[seq] = pd
			p.pmu.Unlock()
			dc, err := pc.ch.PublishWithDeferredConfirm(pd.exchange, pd.key, pd.mandatory, false, pd.msg)
			p.mu.Unlock()
			if err == nil {
				return pc, seq, dc, nil
			}
			p.forget(pc, seq)
			// The channel ended under us: wait for its watcher.
			select {
			case <-ctx.Done():
				return nil, 0, nil, ctx.Err()
			case <-pc.gone:
			}
			if pc.err != nil {
				return nil, 0, nil, pc.err
			}
			continue
		}
		ready := p.ready
		p.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, 0, nil, ctx.Err()
		case <-ready:
		}
	}
}

func (p *publisher) forget(pc *pubChan, seq uint64) {
	p.pmu.Lock()
	delete(pc.pending, seq)
	p.pmu.Unlock()
}

// confirmed settles an acked publish: it was returned as unroutable if its
// return is among those received on pc. Every return is in the buffer
// before its message's ack is seen, so once drainReturns has handled all
// those received so far, pd is marked if it was returned.
func (p *publisher) confirmed(pc *pubChan, seq uint64, pd *pending) (returned bool) {
	done := make(chan struct{})
	select {
	case pc.sync <- done:
		<-done
	case <-pc.returnsDone:
	}
	p.pmu.Lock()
	defer p.pmu.Unlock()
	delete(pc.pending, seq)
	return pd.returned
}

func (p *publisher) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed && p.cur == nil {
		close(p.ready) // wake publishers waiting for a channel
	}
	p.closed = true
}

// Publish sends a persistent message to exchange with routing key key (to
// the queue named key when exchange is "") and waits until the broker
// confirms it. It returns nil only for a confirmed message; it returns an
// error when the message is not confirmed before ctx ends, is mandatory
// and unroutable (ErrUnroutable), or is refused on a channel error (a
// missing exchange). Until the client has a connection (the first one,
// or after a loss), Publish waits for it within ctx.
//
// A connection lost while waiting does not fail the call: the message is
// published again on the next connection, so a message may reach the broker
// twice (at-least-once delivery; give it a MessageID to deduplicate). After
// an error caused by ctx the message may still have reached the broker.
//
// A ctx without a deadline is given Config.PublishConfirmTimeout
// (DefaultPublishConfirmTimeout, 20 s): past it Publish fails with an
// error wrapping ErrConfirmTimeout, so a broker gone silent cannot hold a
// caller indefinitely.
//
// The publish is traced as a producer span "publish {destination}" whose
// trace context travels in the message headers.
func (c *Client) Publish(ctx context.Context, exchange, key string, m Message) error {
	headers := make(amqp.Table, len(m.Headers)+3)
	for k, v := range m.Headers {
		headers[k] = v
	}
	pd := &pending{
		exchange:  exchange,
		key:       key,
		mandatory: m.Mandatory || c.cfg.Mandatory,
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
	if c.confirmTimeout > 0 {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeoutCause(ctx, c.confirmTimeout, ErrConfirmTimeout)
			defer cancel()
		}
	}
	ctx, span := c.tel.startPublish(ctx, exchange, key, &pd.msg)
	err := c.publish(ctx, pd)
	if err != nil && ctx.Err() != nil && errors.Is(context.Cause(ctx), ErrConfirmTimeout) {
		err = fmt.Errorf("%w (%v, %s:PublishConfirmTimeout): %w", ErrConfirmTimeout, c.confirmTimeout, ConfigSection, err)
	}
	if err != nil {
		if c.tel.tracing { // else span is the caller's
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
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

// publish sends pd and waits for its outcome: confirmed, unroutable,
// refused, or ctx ended. A nack or a connection lost before the confirm
// sends it again.
func (c *Client) publish(ctx context.Context, pd *pending) error {
	for {
		pc, seq, dc, err := c.pub.send(ctx, pd)
		if err != nil {
			if err == ctx.Err() { //nolint:errorlint // only the bare error of waiting for a connection
				return fmt.Errorf("not connected: %w", err)
			}
			return err
		}
		select {
		case <-dc.Done():
		case <-ctx.Done():
			c.pub.forget(pc, seq)
			return fmt.Errorf("not confirmed: %w", ctx.Err())
		}
		if dc.Acked() {
			if c.pub.confirmed(pc, seq, pd) {
				return ErrUnroutable
			}
			return nil
		}
		c.pub.forget(pc, seq)
		if !pc.ch.IsClosed() {
			// A nack: the broker could not take it (an internal error).
			t := time.NewTimer(50 * time.Millisecond)
			select {
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("%w, and not confirmed when sent again: %w", ErrNacked, ctx.Err())
			case <-t.C:
			}
			continue
		}
		// The channel ended before the confirm: send again on the next
		// one, unless the broker closed it for an error.
		select {
		case <-ctx.Done():
			return fmt.Errorf("not confirmed: %w", ctx.Err())
		case <-pc.gone:
		}
		if pc.err != nil {
			return pc.err
		}
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
