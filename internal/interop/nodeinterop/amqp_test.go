package nodeinterop

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/goaspire/goaspire/messaging/rabbitmq"
)

// newRabbit connects a Client to the shared node with spans recorded in
// rec, waiting for the connection.
func newRabbit(t *testing.T) (*rabbitmq.Client, *tracetest.SpanRecorder) {
	t.Helper()
	b := needBroker(t)
	rec := tracetest.NewSpanRecorder()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := rabbitmq.New(ctx, &rabbitmq.Config{
		URL:            b.URL(),
		WaitOnOpen:     time.Minute,
		TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)),
		Propagator:     propagation.TraceContext{},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, rec
}

func attr(s sdktrace.ReadOnlySpan, key attribute.Key) string {
	for _, kv := range s.Attributes() {
		if kv.Key == key {
			return kv.Value.String()
		}
	}
	return ""
}

// TestGoPublishNodeConsume: messages our Client publishes to a queue it
// declared with the defaults are consumed by amqplib with its defaults
// (assertQueue durable, as our Queue is: no PRECONDITION_FAILED), each
// exactly once, persistent, and each carries in its AMQP headers the
// traceparent of the Go producer span that sent it, as a string amqplib
// hands over as is.
func TestGoPublishNodeConsume(t *testing.T) {
	needNode(t)
	c, rec := newRabbit(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const queue, n = "tasks", 20
	if err := c.DeclareQueue(ctx, rabbitmq.Queue{Name: queue}); err != nil {
		t.Fatal(err)
	}
	consumer := startNode(t, []string{"AMQP_URL=" + needBroker(t).URL()}, "amqp-consume", queue)
	var ready struct{ Ready bool }
	consumer.next(&ready)
	if !ready.Ready {
		t.Fatal("the consumer did not report ready")
	}
	for i := range n {
		m := rabbitmq.Message{Body: fmt.Appendf(nil, `{"task":%d}`, i), MessageID: fmt.Sprint("m-", i), ContentType: "application/json"}
		if err := c.Publish(ctx, "", queue, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Publish(ctx, "", queue, rabbitmq.Message{Body: []byte("END")}); err != nil {
		t.Fatal(err)
	}

	producers := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		if s.Name() == "publish "+queue && s.SpanKind() == trace.SpanKindProducer {
			producers[attr(s, "messaging.message.id")] = s
		}
	}
	seen := map[string]int{}
	for {
		var got struct {
			Body, MessageID string
			Headers         map[string]any
			Persistent      bool
			Done            bool
			Left            int
		}
		consumer.next(&got)
		if got.Done {
			if got.Left != 0 {
				t.Errorf("%d messages left in the queue after END", got.Left)
			}
			break
		}
		if got.Body == "END" {
			continue
		}
		seen[got.MessageID]++
		if !got.Persistent {
			t.Errorf("%s: not persistent", got.MessageID)
		}
		p, ok := producers[got.MessageID]
		if !ok {
			t.Errorf("%s: no Go producer span", got.MessageID)
			continue
		}
		want := fmt.Sprintf("00-%s-%s-01", p.SpanContext().TraceID(), p.SpanContext().SpanID())
		if tp, _ := got.Headers["traceparent"].(string); tp != want {
			t.Errorf("%s: headers %v: traceparent %v, want the producer span's %q", got.MessageID, got.Headers, got.Headers["traceparent"], want)
		}
	}
	consumer.wait()
	for i := range n {
		if id := fmt.Sprint("m-", i); seen[id] != 1 {
			t.Errorf("%s consumed %d times, want once", id, seen[id])
		}
	}
	if len(seen) != n {
		t.Errorf("consumed %d distinct messages, want %d: %v", len(seen), n, seen)
	}
}

// TestNodePublishGoConsume: amqplib carries no trace context by itself
// (without OpenTelemetry JS), but a Node producer that sets the W3C
// traceparent header by hand is continued by our consumer: its "process"
// span is a child of the Node span, in the same trace. A message without
// one starts a trace of its own. The bodies arrive unchanged.
func TestNodePublishGoConsume(t *testing.T) {
	needNode(t)
	c, rec := newRabbit(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const queue = "tasks-from-node"
	// amqplib's assertQueue default (durable) and ours agree, whichever
	// declares first.
	if err := c.DeclareQueue(ctx, rabbitmq.Queue{Name: queue}); err != nil {
		t.Fatal(err)
	}
	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	type delivery struct {
		rabbitmq.Delivery
		sc trace.SpanContext
	}
	var (
		mu   sync.Mutex
		got  = map[string]delivery{}
		all  = make(chan struct{})
		once sync.Once
	)
	cctx, stop := context.WithCancel(ctx)
	consumed := make(chan error, 1)
	go func() {
		consumed <- c.Consume(cctx, queue, rabbitmq.ConsumeOptions{}, func(ctx context.Context, d rabbitmq.Delivery) error {
			mu.Lock()
			defer mu.Unlock()
			got[d.MessageID] = delivery{d, trace.SpanContextFromContext(ctx)}
			if len(got) == 2 {
				once.Do(func() { close(all) })
			}
			return nil
		})
	}()
	msgs, _ := json.Marshal([]map[string]string{
		{"id": "traced", "body": `{"task":"resize","id":7}`, "traceparent": "00-" + traceID + "-" + parentID + "-01"},
		{"id": "untraced", "body": "user.created:123"},
	})
	startNode(t, []string{"AMQP_URL=" + needBroker(t).URL()}, "amqp-publish", queue, string(msgs)).wait()
	select {
	case <-all:
	case <-time.After(lineTimeout):
		t.Fatalf("Go consumed %d of 2 messages within %s", len(got), lineTimeout)
	}
	stop()
	if err := <-consumed; err != nil {
		t.Fatal(err)
	}

	mu.Lock()
	defer mu.Unlock()
	traced, untraced := got["traced"], got["untraced"]
	if string(traced.Body) != `{"task":"resize","id":7}` || string(untraced.Body) != "user.created:123" {
		t.Errorf("bodies %q and %q", traced.Body, untraced.Body)
	}
	if traced.sc.TraceID().String() != traceID {
		t.Errorf("the consumer span of the traced message is in trace %s, want the Node producer's %s", traced.sc.TraceID(), traceID)
	}
	if untraced.sc.TraceID().String() == traceID || !untraced.sc.IsValid() {
		t.Errorf("the untraced message's consumer span is in trace %s: want a new trace of its own", untraced.sc.TraceID())
	}
	found := 0
	for _, s := range rec.Ended() {
		if s.Name() != "process "+queue {
			continue
		}
		switch s.SpanContext().SpanID() {
		case traced.sc.SpanID():
			found++
			if p := s.Parent(); p.SpanID().String() != parentID || !p.IsRemote() {
				t.Errorf("the traced message's process span has parent %s (remote %v), want the Node span %s", p.SpanID(), p.IsRemote(), parentID)
			}
		case untraced.sc.SpanID():
			found++
			if s.Parent().IsValid() {
				t.Errorf("the untraced message's process span has parent %s, want none", s.Parent().SpanID())
			}
		}
	}
	if found != 2 {
		t.Errorf("found %d of the 2 handlers' process spans among the recorded spans", found)
	}
}
