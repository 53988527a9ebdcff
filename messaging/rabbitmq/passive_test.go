package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/goaspire/goaspire/internal/poll"
	"github.com/goaspire/goaspire/internal/syncbuf"
)

// TestPassiveUsesQueueAsItIs declares queues as services in other
// languages do, and checks that the zero Queue is refused for each (the
// hazard: PRECONDITION_FAILED, with a hint, on a channel the client
// recovers from), while Passive uses it as it is: each message published
// through the client is consumed once.
func TestPassiveUsesQueueAsItIs(t *testing.T) {
	tests := []struct {
		name    string
		durable bool
		args    amqp.Table
		differs string // the property the broker names
	}{
		// pika: channel.queue_declare('tasks').
		{"pika default, non-durable", false, nil, "durable"},
		// A durable queue whose owner set a dead-letter queue through
		// arguments (amqplib's deadLetterExchange, pika's arguments=).
		{"durable with dead-letter arguments", true, amqp.Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "elsewhere"}, "x-dead-letter-exchange"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			name := queueName(t, "q")
			owner := bare(t)
			if _, err := owner.QueueDeclare(name, tt.durable, false, false, false, tt.args); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _, _ = bare(t).QueueDelete(name, false, false, false) })
			c := newClient(t)

			err := c.DeclareQueue(ctx, Queue{Name: name})
			var ae *amqp.Error
			if !errors.As(err, &ae) || ae.Code != amqp.PreconditionFailed || !strings.Contains(err.Error(), tt.differs) || !strings.Contains(err.Error(), "Queue.Passive") {
				t.Fatalf("DeclareQueue(zero Queue) = %v; want PRECONDITION_FAILED naming %q, with the Passive hint", err, tt.differs)
			}
			if err := c.DeclareQueue(ctx, Queue{Name: name, Passive: true}); err != nil {
				t.Fatalf("DeclareQueue(Passive) = %v", err)
			}

			col := newCollector()
			consume(t, c, name, ConsumeOptions{}, col.handle)
			var ids []string
			for i := range 5 {
				id := fmt.Sprint("m", i)
				if err := c.Publish(ctx, "", name, Message{Body: []byte(id), MessageID: id, Mandatory: true}); err != nil {
					t.Fatal(err)
				}
				ids = append(ids, id)
			}
			col.waitFor(ctx, t, ids)
			col.mu.Lock()
			for id, n := range col.seen {
				if n != 1 {
					t.Errorf("message %s consumed %d times", id, n)
				}
			}
			col.mu.Unlock()
			// The queue is still as its owner declared it.
			if _, err := bare(t).QueueDeclare(name, tt.durable, false, false, false, tt.args); err != nil {
				t.Errorf("the owner's declaration is refused now: %v", err)
			}
		})
	}
}

func TestPassiveErrors(t *testing.T) {
	c := newClient(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	missing := queueName(t, "missing")
	err := c.DeclareQueue(ctx, Queue{Name: missing, Passive: true})
	var ae *amqp.Error
	if !errors.Is(err, ErrQueueNotFound) || !errors.As(err, &ae) || ae.Code != amqp.NotFound || !strings.Contains(err.Error(), fmt.Sprintf("%q", missing)) {
		t.Fatalf("DeclareQueue(missing, Passive) = %v; want ErrQueueNotFound naming the queue", err)
	}
	if c.passive(missing) {
		t.Error("a missing queue was recorded")
	}
	for _, tt := range []struct {
		q    Queue
		want string
	}{
		{Queue{Passive: true}, "Passive needs the Name"},
		{Queue{Name: "q", Passive: true, Transient: true}, "Transient must be left unset"},
		{Queue{Name: "q", Passive: true, Quorum: true, DeadLetterQueue: "dlq", Args: amqp.Table{"x": 1}}, "Quorum, DeadLetterQueue, Args must be left unset"},
	} {
		if err := c.DeclareQueue(ctx, tt.q); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("DeclareQueue(%+v) = %v; want %q", tt.q, err, tt.want)
		}
	}
	// The client is fine after the refusals (the broker closed only the
	// declaring channels).
	name := queueName(t, "after")
	if err := c.DeclareQueue(ctx, Queue{Name: name, Transient: true}); err != nil || !c.Connected() {
		t.Fatalf("DeclareQueue after errors = %v, connected %v", err, c.Connected())
	}
}

// TestConsumeWaitsForPassiveQueue deletes a queue used passively under a
// running consumer, as a broker restart loses a non-durable queue, and
// checks that Consume waits for the owner to declare it again instead of
// failing, and that a queue declared by nobody still fails Consume.
func TestConsumeWaitsForPassiveQueue(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	logs := &syncbuf.Buffer{}
	c := newClient(t, func(cfg *Config) { cfg.Logger = slog.New(slog.NewTextHandler(logs, nil)) })
	name := queueName(t, "q")
	owner := bare(t)
	if _, err := owner.QueueDeclare(name, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = bare(t).QueueDelete(name, false, false, false) })
	if err := c.DeclareQueue(ctx, Queue{Name: name, Passive: true}); err != nil {
		t.Fatal(err)
	}
	col := newCollector()
	stop := consume(t, c, name, ConsumeOptions{}, col.handle)
	if err := c.Publish(ctx, "", name, Message{Body: []byte("a"), MessageID: "a"}); err != nil {
		t.Fatal(err)
	}
	col.waitFor(ctx, t, []string{"a"})

	if _, err := owner.QueueDelete(name, false, false, false); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, time.Minute, "the consumer's warning", func() bool {
		return strings.Contains(logs.String(), "waits for the queue it uses passively")
	})
	if _, err := bare(t).QueueDeclare(name, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(ctx, "", name, Message{Body: []byte("b"), MessageID: "b"}); err != nil {
		t.Fatal(err)
	}
	col.waitFor(ctx, t, []string{"b"})
	if err := stop(); err != nil {
		t.Errorf("Consume = %v", err)
	}

	// Not declared through the client: Consume fails as before.
	err := c.Consume(ctx, queueName(t, "never"), ConsumeOptions{}, col.handle)
	var ae *amqp.Error
	if !errors.As(err, &ae) || ae.Code != amqp.NotFound {
		t.Errorf("Consume(undeclared queue) = %v; want NOT_FOUND", err)
	}
}

// TestPassiveQueueAcrossRestart restarts the broker under a consumer of a
// non-durable queue used passively: the queue is gone after the restart,
// the client says so and waits, and consumes again once the owner has
// declared the queue again.
func TestPassiveQueueAcrossRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	logs := &syncbuf.Buffer{}
	c := newClient(t, func(cfg *Config) { cfg.Logger = slog.New(slog.NewTextHandler(logs, nil)) })
	name := queueName(t, "q")
	if _, err := bare(t).QueueDeclare(name, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.DeclareQueue(ctx, Queue{Name: name, Passive: true}); err != nil {
		t.Fatal(err)
	}
	col := newCollector()
	stop := consume(t, c, name, ConsumeOptions{}, col.handle)
	restartBroker(t, false)
	poll.Until(t, 2*time.Minute, "the reconnect's warning", func() bool {
		return strings.Contains(logs.String(), "queue used passively does not exist after reconnect")
	})
	if _, err := bare(t).QueueDeclare(name, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = bare(t).QueueDelete(name, false, false, false) })
	if err := c.Publish(ctx, "", name, Message{Body: []byte("x"), MessageID: "x", Mandatory: true}); err != nil {
		t.Fatal(err)
	}
	col.waitFor(ctx, t, []string{"x"})
	if err := stop(); err != nil {
		t.Errorf("Consume = %v", err)
	}
	if strings.Contains(logs.String(), "declaring topology again after reconnect failed") {
		t.Errorf("a missing passive queue was logged as an error:\n%s", logs.String())
	}
}
