package interop_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/internal/poll"
	"github.com/goaspire/goaspire/messaging/rabbitmq"
)

// rabbitClient opens a client of the shared node from
// ConnectionStrings__messaging, as a Go service does, tracing into a
// recorder; the Python scripts read the same variable.
func rabbitClient(t *testing.T) (*rabbitmq.Client, []string, *tracetest.SpanRecorder, trace.TracerProvider) {
	t.Helper()
	url := rabbit(t).URL()
	rc, err := rabbitmq.LoadConfig(discovery.FromMap(map[string]string{"ConnectionStrings:messaging": url}), "messaging")
	if err != nil {
		t.Fatal(err)
	}
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	rc.TracerProvider, rc.Propagator = tp, propagation.TraceContext{}
	rc.WaitOnOpen = 2 * time.Minute
	c, err := rabbitmq.New(context.Background(), rc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return c, []string{"ConnectionStrings__messaging=" + url}, rec, tp
}

// queueLength reads how many messages the queue holds, outside the client
// under test.
func queueLength(t *testing.T, queue string) int {
	t.Helper()
	conn, err := amqp.Dial(rabbit(t).URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclarePassive(queue, false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	return q.Messages
}

// TestRabbitMQPikaProducerToGoConsumer is the patterns' Python producer
// (pika, queue_declare('tasks'): non-durable) feeding a Go consumer. The
// zero Queue is refused (the hazard); Queue.Passive consumes every message
// once, and continues the trace of a traceparent header pika's side set
// by hand.
func TestRabbitMQPikaProducerToGoConsumer(t *testing.T) {
	python(t)
	c, env, rec, _ := rabbitClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	queue := unique(t, "tasks")
	const n = 10
	const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	if lines := run(t, env, "pika_producer.py", queue, fmt.Sprint(n), traceparent); len(lines) == 0 || lines[len(lines)-1] != fmt.Sprint("PUBLISHED ", n) {
		t.Fatalf("producer: %q", lines)
	}

	err := c.DeclareQueue(ctx, rabbitmq.Queue{Name: queue})
	var ae *amqp.Error
	if !errors.As(err, &ae) || ae.Code != amqp.PreconditionFailed {
		t.Fatalf("DeclareQueue(durable) over pika's queue = %v; want PRECONDITION_FAILED", err)
	}
	if err := c.DeclareQueue(ctx, rabbitmq.Queue{Name: queue, Passive: true}); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	seen := map[string]int{}
	traces := map[string]string{}
	cctx, stop := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		errc <- c.Consume(cctx, queue, rabbitmq.ConsumeOptions{Concurrency: 2}, func(ctx context.Context, d rabbitmq.Delivery) error {
			var body struct{ ID int }
			if err := json.Unmarshal(d.Body, &body); err != nil || d.MessageID != fmt.Sprint("py-", body.ID) {
				t.Errorf("delivery %q id %q: %v", d.Body, d.MessageID, err)
			}
			mu.Lock()
			seen[d.MessageID]++
			traces[d.MessageID] = trace.SpanContextFromContext(ctx).TraceID().String()
			mu.Unlock()
			return nil
		})
	}()
	poll.Until(t, 2*time.Minute, "every message consumed", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == n
	})
	stop()
	if err := <-errc; err != nil {
		t.Fatalf("Consume = %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	for i := range n {
		id := fmt.Sprint("py-", i)
		if seen[id] != 1 {
			t.Errorf("message %s consumed %d times", id, seen[id])
		}
		if traces[id] != "4bf92f3577b34da6a3ce929d0e0e4736" {
			t.Errorf("message %s handled in trace %s, not the producer's", id, traces[id])
		}
	}
	if l := queueLength(t, queue); l != 0 {
		t.Errorf("%d messages left in the queue", l)
	}
	var process int
	for _, s := range rec.Ended() {
		if s.SpanKind() == trace.SpanKindConsumer && s.Parent().SpanID().String() == "00f067aa0ba902b7" {
			process++
		}
	}
	if process != n {
		t.Errorf("%d consumer spans are children of the producer's span, want %d", process, n)
	}
}

// TestRabbitMQGoPublisherToPikaConsumer: our Publish to the queue a pika
// consumer declared (non-durable), used with Queue.Passive, reaches it
// once per message, with the publish span's trace context in the
// traceparent header.
func TestRabbitMQGoPublisherToPikaConsumer(t *testing.T) {
	python(t)
	c, env, rec, tp := rabbitClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	queue := unique(t, "tasks")
	const n = 10
	consumer := startScript(t, env, "pika_consumer.py", queue, fmt.Sprint(n))
	consumer.Line("READY")
	if err := c.DeclareQueue(ctx, rabbitmq.Queue{Name: queue, Passive: true}); err != nil {
		t.Fatal(err)
	}
	pctx, parent := tp.Tracer("interop").Start(ctx, "send tasks")
	for i := range n {
		id := fmt.Sprint("go-", i)
		if err := c.Publish(pctx, "", queue, rabbitmq.Message{Body: []byte(id), MessageID: id, Mandatory: true}); err != nil {
			t.Fatal(err)
		}
	}
	parent.End()
	publishSpans := map[string]bool{}
	for _, s := range rec.Ended() {
		if s.SpanKind() == trace.SpanKindProducer {
			publishSpans[s.SpanContext().SpanID().String()] = true
		}
	}
	seen := map[string]int{}
	for range n {
		var m struct {
			Body, MessageID, Traceparent string
		}
		line := consumer.Line("MSG ")
		if err := json.Unmarshal([]byte(line), &struct {
			Body        *string `json:"body"`
			MessageID   *string `json:"message_id"`
			Traceparent *string `json:"traceparent"`
		}{&m.Body, &m.MessageID, &m.Traceparent}); err != nil {
			t.Fatalf("consumer line %q: %v", line, err)
		}
		seen[m.MessageID]++
		if m.Body != m.MessageID {
			t.Errorf("message %s: body %q", m.MessageID, m.Body)
		}
		parts := strings.Split(m.Traceparent, "-")
		if len(parts) != 4 || parts[1] != parent.SpanContext().TraceID().String() || !publishSpans[parts[2]] {
			t.Errorf("message %s: traceparent %q, want the trace %s and a publish span of ours", m.MessageID, m.Traceparent, parent.SpanContext().TraceID())
		}
	}
	consumer.Wait()
	for i := range n {
		if id := fmt.Sprint("go-", i); seen[id] != 1 {
			t.Errorf("message %s consumed %d times", id, seen[id])
		}
	}
	if l := queueLength(t, queue); l != 0 {
		t.Errorf("%d messages left in the queue", l)
	}
}
