package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
)

// attemptsHeader counts the failed attempts of a message that the client
// queued again after its handler failed. It is the only attempt count: see
// attemptOf.
const attemptsHeader = "x-goaspire-attempts"

// deliveryCountHeader is the quorum queue's own count of the deliveries of
// a message that ended without an ack. The client does not count it (see
// attemptOf) and leaves it out of the copies it queues again, where it
// would be stale.
const deliveryCountHeader = "x-delivery-count"

// DefaultMaxAttempts is how often a message is handled before it is
// rejected for good, when ConsumeOptions.MaxAttempts is zero.
const DefaultMaxAttempts = 5

// Delivery is one message handed to a Handler. The client acknowledges it:
// handlers must not.
type Delivery struct {
	// Queue is the queue it was consumed from.
	Queue string
	// Exchange and RoutingKey are where it was published to.
	Exchange, RoutingKey string
	// Body is the payload.
	Body []byte
	// ContentType, MessageID, CorrelationID, ReplyTo and Type are the
	// message properties of the same names.
	ContentType, MessageID, CorrelationID, ReplyTo, Type string
	// Headers are the application headers.
	Headers map[string]any
	// Timestamp is when it was published, if the publisher said.
	Timestamp time.Time
	// Attempt is 1 for the first delivery and counts the handler
	// failures before this one, on classic and quorum queues alike (the
	// quorum queue's x-delivery-count is not added). A delivery the broker
	// redelivers because a consumer died before settling it keeps its
	// attempt number (but has Redelivered set).
	Attempt int
	// Redelivered is the broker's redelivered flag.
	Redelivered bool
}

// Handler handles one delivery. Returning nil acknowledges it; an error
// has it delivered again, up to ConsumeOptions.MaxAttempts attempts in all,
// then rejected to the queue's dead-letter queue (or dropped, logged, if the
// queue has none). Wrap an error with Permanent to reject at once. A panic
// counts as an error.
type Handler func(ctx context.Context, d Delivery) error

// PermanentError marks a handler's failure that retrying cannot fix: the
// delivery is rejected to the dead-letter queue at once, without further
// attempts. Make one with Permanent; test for one with IsPermanent (or
// errors.As with a *PermanentError), which see through wrapping.
type PermanentError struct {
	// Err is the failure; Error returns its text, unchanged.
	Err error
}

// Error returns the text of e.Err.
func (e *PermanentError) Error() string {
	if e.Err == nil {
		return "rabbitmq: permanent failure"
	}
	return e.Err.Error()
}

// Unwrap returns e.Err, so errors.Is and errors.As see the failure.
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent wraps err in a *PermanentError, so that the delivery is
// rejected to the dead-letter queue at once, without further attempts (a
// message that cannot be decoded, say). The handler may wrap the result
// further (fmt.Errorf with %w): Consume still sees it. Permanent(nil) is
// nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// IsPermanent reports whether err, or an error it wraps, was made by
// Permanent: whether Consume rejects the delivery at once rather than
// trying it again. A handler's helper can use it to tell a caller's
// permanent failure from a transient one.
func IsPermanent(err error) bool {
	var perm *PermanentError
	return errors.As(err, &perm)
}

// ConsumeOptions configures Consume. The zero value works.
type ConsumeOptions struct {
	// Prefetch is how many unacknowledged messages the broker sends ahead
	// (basic.qos); zero means 2 × Concurrency, at least 10.
	Prefetch int
	// Concurrency is how many handlers run at once; zero means 1.
	Concurrency int
	// MaxAttempts is how often a message is handled before it is rejected
	// for good; zero means DefaultMaxAttempts.
	MaxAttempts int
	// ConsumerTag names the consumer to the broker; empty means one chosen
	// by the broker.
	ConsumerTag string
}

// Consume consumes queue until ctx ends, calling handler for each message
// and acknowledging it when handler returns nil (see Handler for errors).
// It survives connection loss: it waits for the client to reconnect and
// consumes again.
//
// When ctx ends, Consume stops taking new messages, waits for the handlers
// running at that moment to finish (their context is not cancelled by ctx)
// and acknowledges them, then closes its channel, so the broker gives the
// messages that were prefetched but not started to another consumer. It
// returns nil then; it returns an error only when the client is closed or
// the queue cannot be consumed (it does not exist, or options are invalid).
// A queue declared through the client with Queue.Passive is not its own:
// while it does not exist, Consume waits for its owner to declare it
// (again), retrying with backoff, rather than failing.
//
// Each delivery is traced as a consumer span "process {queue}" in the trace
// of the publish that sent it.
func (c *Client) Consume(ctx context.Context, queue string, opts ConsumeOptions, handler Handler) error {
	if handler == nil {
		return fmt.Errorf("rabbitmq %q: Consume %q: nil handler", c.name, queue)
	}
	if opts.Concurrency < 0 || opts.Prefetch < 0 || opts.MaxAttempts < 0 {
		return fmt.Errorf("rabbitmq %q: Consume %q: Concurrency, Prefetch and MaxAttempts must not be negative", c.name, queue)
	}
	if opts.Concurrency == 0 {
		opts.Concurrency = 1
	}
	if opts.Prefetch == 0 {
		opts.Prefetch = max(2*opts.Concurrency, 10)
	}
	if opts.MaxAttempts == 0 {
		opts.MaxAttempts = DefaultMaxAttempts
	}
	bo := c.backoff()
	missing := false // waiting for a passive queue to be declared again
	for {
		conn, changed, err := c.current()
		if err != nil {
			return err
		}
		if conn == nil {
			select {
			case <-ctx.Done():
				return nil
			case <-changed:
				continue
			}
		}
		stopped, err := c.consumeOn(ctx, conn, queue, opts, handler)
		if stopped {
			return nil
		}
		if err != nil {
			var ae *amqp.Error
			switch {
			case errors.As(err, &ae) && ae.Code == amqp.NotFound && !conn.IsClosed() && c.passive(queue):
				// Another service's queue, gone with a broker restart
				// or deleted: wait for its owner to declare it again.
				if !missing {
					c.log.Warn("rabbitmq consumer waits for the queue it uses passively to be declared again by the service that owns it", "queue", queue, "error", err)
				}
				missing = true
			case errors.As(err, &ae) && ae.Code == amqp.NotFound && !conn.IsClosed():
				return fmt.Errorf("rabbitmq %q: consume %q: %w", c.name, queue, err)
			default:
				c.log.Debug("rabbitmq consumer could not start; retrying", "queue", queue, "error", err)
			}
			t := time.NewTimer(bo.Next())
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
			continue
		}
		bo.Reset()
		missing = false
		c.log.Info("rabbitmq consumer lost its channel; resuming", "queue", queue)
	}
}

// consumeOn consumes on one channel of conn until ctx ends (stopped is
// true) or the channel is lost.
func (c *Client) consumeOn(ctx context.Context, conn *amqp.Connection, queue string, opts ConsumeOptions, handler Handler) (stopped bool, err error) {
	ch, err := conn.Channel()
	if err != nil {
		return false, err
	}
	defer ch.Close()
	if err := ch.Qos(opts.Prefetch, 0, false); err != nil {
		return false, err
	}
	deliveries, err := ch.Consume(queue, opts.ConsumerTag, false, false, false, false, nil)
	if err != nil {
		return false, err
	}
	stop := make(chan struct{})
	hctx := context.WithoutCancel(ctx) // handlers finish even when ctx ends
	var wg sync.WaitGroup
	for range opts.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				// Prefer stopping over taking another message.
				select {
				case <-stop:
					return
				default:
				}
				select {
				case <-stop:
					return
				case d, ok := <-deliveries:
					if !ok {
						return
					}
					c.handle(hctx, queue, opts, handler, &d)
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-ctx.Done():
		close(stop)
		<-done // in-flight handlers finish and acknowledge
		return true, nil
	case <-done: // the deliveries channel closed: channel or connection lost
		return false, nil
	}
}

// handle runs the handler for one delivery and settles it.
func (c *Client) handle(ctx context.Context, queue string, opts ConsumeOptions, handler Handler, d *amqp.Delivery) {
	start := time.Now()
	ctx, span := c.tel.startProcess(ctx, queue, d)
	attempt := attemptOf(d)
	destOpt := c.tel.destOpt(queue)
	c.tel.delivered.Add(ctx, 1, destOpt)

	err := c.runHandler(ctx, handler, Delivery{
		Queue: queue, Exchange: d.Exchange, RoutingKey: d.RoutingKey, Body: d.Body,
		ContentType: d.ContentType, MessageID: d.MessageId, CorrelationID: d.CorrelationId,
		ReplyTo: d.ReplyTo, Type: d.Type, Headers: d.Headers, Timestamp: d.Timestamp,
		Attempt: attempt, Redelivered: d.Redelivered,
	})
	if err == nil {
		if aerr := d.Ack(false); aerr != nil {
			// The channel is gone; the broker delivers the message again.
			c.log.Debug("rabbitmq ack failed; the message will be redelivered", "queue", queue, "error", aerr)
		}
	} else {
		if c.tel.tracing { // else span is the publisher's, from the headers
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		c.tel.failed.Add(ctx, 1, destOpt)
		c.settleFailure(ctx, queue, opts, d, attempt, err)
	}
	if c.tel.tracing {
		span.End()
	}
	if err != nil {
		c.tel.duration.Record(ctx, time.Since(start).Seconds(), metric.WithAttributes(systemAttr,
			attribute.String("messaging.destination.name", queue), attribute.String("error.type", "handler")))
	} else {
		c.tel.duration.Record(ctx, time.Since(start).Seconds(), destOpt)
	}
}

// runHandler calls handler, turning a panic into an error.
func (c *Client) runHandler(ctx context.Context, handler Handler, d Delivery) (err error) {
	defer func() {
		if r := recover(); r != nil {
			c.log.ErrorContext(ctx, "rabbitmq handler panicked", "queue", d.Queue, "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("handler panicked: %v", r)
		}
	}()
	return handler(ctx, d)
}

// settleFailure queues a failed delivery again, with its attempt count, or
// rejects it for good.
func (c *Client) settleFailure(ctx context.Context, queue string, opts ConsumeOptions, d *amqp.Delivery, attempt int, herr error) {
	dest := attribute.String("messaging.destination.name", queue)
	if attempt < opts.MaxAttempts && !IsPermanent(herr) {
		// Publish a copy carrying the attempt count, then ack the
		// original: classic queues keep no delivery count. A crash in
		// between delivers the message twice, never zero times.
		headers := make(amqp.Table, len(d.Headers)+1)
		for k, v := range d.Headers {
			headers[k] = v
		}
		delete(headers, deliveryCountHeader) // the broker's, of the original
		headers[attemptsHeader] = int64(attempt)
		pd := &pending{key: queue, msg: amqp.Publishing{
			Headers: headers, ContentType: d.ContentType, ContentEncoding: d.ContentEncoding,
			DeliveryMode: amqp.Persistent, Priority: d.Priority, CorrelationId: d.CorrelationId,
			ReplyTo: d.ReplyTo, Expiration: d.Expiration, MessageId: d.MessageId, Timestamp: d.Timestamp,
			Type: d.Type, UserId: d.UserId, AppId: d.AppId, Body: d.Body,
		}}
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := c.publish(pctx, pd)
		cancel()
		if err == nil {
			c.tel.redelivered.Add(ctx, 1, metric.WithAttributes(systemAttr, dest))
			c.log.WarnContext(ctx, "rabbitmq handler failed; message queued again", "queue", queue, "attempt", attempt, "max_attempts", opts.MaxAttempts, "error", herr)
			if aerr := d.Ack(false); aerr != nil {
				c.log.Debug("rabbitmq ack failed; the message will be redelivered", "queue", queue, "error", aerr)
			}
			return
		}
		// Could not queue the copy: let the broker redeliver the original
		// (with the same attempt number: it is handled once more).
		c.log.WarnContext(ctx, "rabbitmq handler failed; message requeued", "queue", queue, "attempt", attempt, "error", herr, "requeue_error", err)
		c.tel.redelivered.Add(ctx, 1, metric.WithAttributes(systemAttr, dest))
		_ = d.Nack(false, true)
		return
	}
	c.tel.deadLettered.Add(ctx, 1, metric.WithAttributes(systemAttr, dest))
	c.log.ErrorContext(ctx, "rabbitmq handler failed for good; message rejected to the dead-letter queue, if the queue has one", "queue", queue, "attempt", attempt, "error", herr)
	if err := d.Nack(false, false); err != nil {
		c.log.Debug("rabbitmq reject failed; the message will be redelivered", "queue", queue, "error", err)
	}
}

// attemptOf numbers a delivery: 1 + the handler failures recorded by the
// client in attemptsHeader. Attempts are counted this one way only, so that
// MaxAttempts means the same on classic and quorum queues: adding a quorum
// queue's x-delivery-count counted a redelivery after a consumer died
// twice (the count travelled on in the copies), dead-lettering messages
// before MaxAttempts handler calls. A process that crashes on a message is
// bounded by the queue's own x-delivery-limit (quorum queues), not by
// MaxAttempts.
func attemptOf(d *amqp.Delivery) int {
	return 1 + intHeader(d.Headers[attemptsHeader])
}

func intHeader(v any) int {
	switch n := v.(type) {
	case int64:
		return int(n)
	case int32:
		return int(n)
	case int:
		return n
	case int16:
		return int(n)
	case int8:
		return int(n)
	case uint8:
		return int(n)
	case uint16:
		return int(n)
	case uint32:
		return int(n)
	}
	return 0
}
