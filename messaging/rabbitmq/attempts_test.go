package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/goaspire/goaspire/internal/poll"
)

// TestMaxAttemptsCountsHandlerCallsOnce: a handler that always fails is
// called exactly MaxAttempts times, numbered 1..MaxAttempts, and the
// message then reaches the dead-letter queue once, on a classic and on a
// quorum queue, also when the broker delivered it before to a consumer that
// died holding it (the quorum queue's own x-delivery-count is then 1 and
// travels in the headers; it must not be counted on top of the client's).
func TestMaxAttemptsCountsHandlerCallsOnce(t *testing.T) {
	const maxAttempts = 4
	for _, tc := range []struct {
		name   string
		quorum bool
		died   bool // a consumer took the message and died before acking it
	}{
		{"classic", false, false},
		{"quorum", true, false},
		{"classic, after a consumer died", false, true},
		{"quorum, after a consumer died", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			c := newClient(t)
			q := Queue{Name: queueName(t, "q"), DeadLetterQueue: queueName(t, "dlq"), Quorum: tc.quorum}
			if err := c.DeclareQueue(ctx, q); err != nil {
				t.Fatal(err)
			}
			if err := c.Publish(ctx, "", q.Name, Message{Body: []byte("job"), MessageID: "m1"}); err != nil {
				t.Fatal(err)
			}
			if tc.died {
				dieHolding(ctx, t, q.Name)
			}

			var mu sync.Mutex
			var attempts []int
			stop := consume(t, c, q.Name, ConsumeOptions{MaxAttempts: maxAttempts}, func(_ context.Context, d Delivery) error {
				mu.Lock()
				attempts = append(attempts, d.Attempt)
				mu.Unlock()
				return errors.New("boom")
			})
			ch := bare(t)
			dead := func() int {
				qi, err := ch.QueueDeclarePassive(q.DeadLetterQueue, true, false, false, false, nil)
				if err != nil {
					t.Fatal(err)
				}
				return qi.Messages
			}
			poll.Until(t, 30*time.Second, "the message in the dead-letter queue", func() bool { return dead() > 0 })
			if err := stop(); err != nil {
				t.Fatal(err)
			}

			mu.Lock()
			defer mu.Unlock()
			want := make([]int, maxAttempts)
			for i := range want {
				want[i] = i + 1
			}
			t.Logf("handler calls, by Delivery.Attempt: %v", attempts)
			if fmt.Sprint(attempts) != fmt.Sprint(want) {
				t.Errorf("handler called %d times with attempts %v, want %d times: %v", len(attempts), attempts, maxAttempts, want)
			}
			if n := dead(); n != 1 {
				t.Errorf("dead-letter queue holds %d messages, want 1", n)
			}
			if qi, err := ch.QueueDeclarePassive(q.Name, true, false, false, false, quorumArgs(q)); err != nil || qi.Messages != 0 {
				t.Errorf("queue after the test: %+v, %v", qi, err)
			}
		})
	}
}

// dieHolding takes the one message of queue on a connection of its own and
// closes that connection without acknowledging it, as a consumer that
// crashed: the broker delivers the message again, with the redelivered
// flag (and x-delivery-count 1 on a quorum queue).
func dieHolding(ctx context.Context, t *testing.T, queue string) {
	t.Helper()
	conn, err := amqp.Dial(needBroker(t).URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	deliveries, err := ch.Consume(queue, "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-deliveries:
	case <-ctx.Done():
		t.Fatal("the message never reached the consumer that dies")
	}
	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}
}
