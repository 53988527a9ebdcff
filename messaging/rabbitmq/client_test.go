package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/goaspire/goaspire/internal/otlptest"
)

// collector gathers deliveries by message ID.
type collector struct {
	mu   sync.Mutex
	seen map[string]int
	got  chan string
}

func newCollector() *collector {
	return &collector{seen: map[string]int{}, got: make(chan string, 10000)}
}

func (c *collector) handle(_ context.Context, d Delivery) error {
	c.mu.Lock()
	c.seen[d.MessageID]++
	c.mu.Unlock()
	c.got <- d.MessageID
	return nil
}

// waitFor waits until every id has been seen, failing the test when ctx
// ends first.
func (c *collector) waitFor(ctx context.Context, t *testing.T, ids []string) {
	t.Helper()
	for {
		c.mu.Lock()
		missing := 0
		for _, id := range ids {
			if c.seen[id] == 0 {
				missing++
			}
		}
		c.mu.Unlock()
		if missing == 0 {
			return
		}
		select {
		case <-c.got:
		case <-ctx.Done():
			t.Fatalf("%d of %d messages never consumed: %v", missing, len(ids), ctx.Err())
		}
	}
}

// consume runs Consume in the background until the test ends, and returns
// a function that stops it and reports its error.
func consume(t *testing.T, c *Client, queue string, opts ConsumeOptions, h Handler) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- c.Consume(ctx, queue, opts, h) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() { cancel(); err = <-errc })
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}

func TestPublishConsumeAcrossRestart(t *testing.T) {
	for _, tc := range []struct {
		name string
		kill bool
		q    Queue
	}{
		// A transient queue is gone after the restart: only the
		// re-declared topology lets the consumer resume.
		{"clean stop, transient queue", false, Queue{Transient: true}},
		{"clean stop, quorum queue", false, Queue{Quorum: true}},
		// A single-node quorum queue does not elect a leader again
		// after the node was killed (RabbitMQ 3.10): crash with a
		// classic durable queue.
		{"crash, durable queue", true, Queue{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
			defer cancel()
			pub, sub := newClient(t), newClient(t)
			tc.q.Name = queueName(t, "q")
			for _, c := range []*Client{pub, sub} {
				if err := c.DeclareQueue(ctx, tc.q); err != nil {
					t.Fatal(err)
				}
			}
			col := newCollector()
			stop := consume(t, sub, tc.q.Name, ConsumeOptions{Concurrency: 4}, col.handle)

			var before, after []string
			for i := range 20 {
				id := fmt.Sprintf("before-%d", i)
				if err := pub.Publish(ctx, "", tc.q.Name, Message{Body: []byte(id), MessageID: id}); err != nil {
					t.Fatal(err)
				}
				before = append(before, id)
			}
			col.waitFor(ctx, t, before)

			waiting := newClient(t)
			restartBroker(t, tc.kill, func() {
				// While the broker is down: the readiness check fails,
				// and Close wakes a Publish waiting for a connection.
				for pub.Connected() && ctx.Err() == nil {
					time.Sleep(10 * time.Millisecond)
				}
				if err := pub.HealthCheck().Check(ctx); err == nil {
					t.Error("health check passes with the broker down")
				}
				for waiting.Connected() && ctx.Err() == nil {
					time.Sleep(10 * time.Millisecond)
				}
				errc := make(chan error, 1)
				go func() { errc <- waiting.Publish(ctx, "", tc.q.Name, Message{Body: []byte("never")}) }()
				time.Sleep(50 * time.Millisecond) // let it wait for a channel
				waiting.Close()
				if err := <-errc; !errors.Is(err, ErrClosed) {
					t.Errorf("Publish waiting across Close = %v, want ErrClosed", err)
				}
			})

			for i := range 20 {
				id := fmt.Sprintf("after-%d", i)
				if err := pub.Publish(ctx, "", tc.q.Name, Message{Body: []byte(id), MessageID: id}); err != nil {
					t.Fatalf("publish after restart: %v", err)
				}
				after = append(after, id)
			}
			col.waitFor(ctx, t, after)
			if !pub.Connected() || !sub.Connected() {
				t.Error("clients not connected after recovery")
			}
			if err := pub.HealthCheck().Check(ctx); err != nil {
				t.Errorf("health after recovery: %v", err)
			}
			if err := stop(); err != nil {
				t.Errorf("Consume returned %v", err)
			}
		})
	}
}

// TestNoLossUnderCrash publishes from several goroutines while the broker
// is killed and restarted: every Publish returns nil, and every message is
// in the queue afterwards.
func TestNoLossUnderCrash(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	c := newClient(t)
	q := queueName(t, "q")
	if err := c.DeclareQueue(ctx, Queue{Name: q}); err != nil {
		t.Fatal(err)
	}
	// RabbitMQ writes a declaration to disk lazily: a queue declared
	// moments before a SIGKILL can be lost with its messages. A clean
	// restart first makes the queue durable, as a deployed queue is.
	restartBroker(t, false)
	const publishers, each = 8, 150
	var wg sync.WaitGroup
	errs := make(chan error, publishers*each)
	started := make(chan struct{}, publishers*each)
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id := fmt.Sprintf("%d-%d", p, i)
				if err := c.Publish(ctx, "", q, Message{Body: []byte(id), MessageID: id}); err != nil {
					errs <- fmt.Errorf("%s: %w", id, err)
				}
				started <- struct{}{}
			}
		}()
	}
	// Crash the broker once a third of the messages are confirmed.
	for range publishers * each / 3 {
		<-started
	}
	restartBroker(t, true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	col := newCollector()
	stop := consume(t, newClient(t), q, ConsumeOptions{Concurrency: 8, Prefetch: 200}, col.handle)
	var ids []string
	for p := range publishers {
		for i := range each {
			ids = append(ids, fmt.Sprintf("%d-%d", p, i))
		}
	}
	col.waitFor(ctx, t, ids)
	stop()
	dups := 0
	for _, n := range col.seen {
		if n > 1 {
			dups++
		}
	}
	t.Logf("%d messages, %d delivered more than once (re-published after the crash)", len(ids), dups)
}

func TestRedeliveryAndDeadLetter(t *testing.T) {
	for _, tc := range []struct {
		name         string
		quorum       bool
		failures     int  // handler fails this many times, then succeeds
		permanent    bool // the failure is Permanent
		wrapped      bool // and Permanent's error is wrapped again
		wantAttempts int  // attempts the handler sees
		wantDead     bool // ends in the dead-letter queue
	}{
		{"succeeds on the third attempt", false, 2, false, false, 3, false},
		{"always fails, classic queue", false, 100, false, false, 3, true},
		{"always fails, quorum queue", true, 100, false, false, 3, true},
		{"permanent failure", false, 100, true, false, 1, true},
		{"permanent failure, wrapped", false, 100, true, true, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			c := newClient(t)
			q := Queue{Name: queueName(t, "q"), DeadLetterQueue: queueName(t, "dlq"), Quorum: tc.quorum}
			if err := c.DeclareQueue(ctx, q); err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var attempts []int
			done := make(chan struct{}, 100)
			stop := consume(t, c, q.Name, ConsumeOptions{MaxAttempts: 3}, func(_ context.Context, d Delivery) error {
				mu.Lock()
				attempts = append(attempts, d.Attempt)
				n := len(attempts)
				mu.Unlock()
				defer func() { done <- struct{}{} }()
				if n <= tc.failures {
					err := errors.New("boom")
					if tc.permanent {
						err = Permanent(err)
					}
					if tc.wrapped {
						err = fmt.Errorf("job m1: %w", err)
					}
					return err
				}
				return nil
			})
			if err := c.Publish(ctx, "", q.Name, Message{Body: []byte("job"), MessageID: "m1"}); err != nil {
				t.Fatal(err)
			}
			for range tc.wantAttempts {
				select {
				case <-done:
				case <-ctx.Done():
					t.Fatalf("handler ran %d times, want %d", len(attempts), tc.wantAttempts)
				}
			}
			ch := bare(t)
			var dead amqp.Delivery
			if tc.wantDead {
				for {
					d, ok, err := ch.Get(q.DeadLetterQueue, true)
					if err != nil {
						t.Fatal(err)
					}
					if ok {
						dead = d
						break
					}
					select {
					case <-ctx.Done():
						t.Fatal("message never reached the dead-letter queue")
					case <-time.After(20 * time.Millisecond):
					}
				}
				if string(dead.Body) != "job" || dead.MessageId != "m1" {
					t.Errorf("dead letter = %q (id %q)", dead.Body, dead.MessageId)
				}
			}
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			want := make([]int, tc.wantAttempts)
			for i := range want {
				want[i] = i + 1
			}
			if fmt.Sprint(attempts) != fmt.Sprint(want) {
				t.Errorf("attempts = %v, want %v", attempts, want)
			}
			// Nothing is left in the queue once the consumer stopped.
			if qi, err := ch.QueueDeclarePassive(q.Name, true, false, false, false, quorumArgs(q)); err != nil || qi.Messages != 0 {
				t.Errorf("queue after the test: %+v, %v", qi, err)
			}
		})
	}
}

func quorumArgs(q Queue) amqp.Table {
	args := amqp.Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": q.DeadLetterQueue}
	if q.Quorum {
		args["x-queue-type"] = "quorum"
	}
	return args
}

// TestGracefulStop cancels Consume while handlers run: it returns only
// after they finish, their messages are acknowledged, and the messages
// prefetched but not started go back to the queue.
func TestGracefulStop(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	c := newClient(t)
	q := queueName(t, "q")
	if err := c.DeclareQueue(ctx, Queue{Name: q}); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if err := c.Publish(ctx, "", q, Message{Body: []byte(strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
	}
	release := make(chan struct{})
	running := make(chan struct{}, 10)
	var finished sync.WaitGroup
	finished.Add(2)
	var mu sync.Mutex
	handled := 0
	stop := consume(t, c, q, ConsumeOptions{Concurrency: 2, Prefetch: 10}, func(hctx context.Context, d Delivery) error {
		running <- struct{}{}
		<-release
		mu.Lock()
		handled++
		mu.Unlock()
		if hctx.Err() != nil {
			t.Errorf("handler context cancelled by the stop: %v", hctx.Err())
		}
		return nil
	})
	<-running
	<-running
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	select {
	case err := <-stopped:
		t.Fatalf("Consume returned (%v) while handlers were running", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	n := handled
	mu.Unlock()
	if n != 2 {
		t.Errorf("handled %d messages after the stop began, want the 2 in flight", n)
	}
	// The two in flight were acknowledged; the other eight are back.
	ch := bare(t)
	var qi amqp.Queue
	for {
		var err error
		if qi, err = ch.QueueDeclarePassive(q, true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		if qi.Messages == 8 || ctx.Err() != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if qi.Messages != 8 {
		t.Errorf("%d messages ready after the stop, want 8", qi.Messages)
	}
}

func TestPublishErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	c := newClient(t)
	if err := c.Publish(ctx, "", queueName(t, "nowhere"), Message{Body: []byte("x"), Mandatory: true}); !errors.Is(err, ErrUnroutable) {
		t.Errorf("mandatory publish to a missing queue: %v, want ErrUnroutable", err)
	}
	err := c.Publish(ctx, queueName(t, "no-exchange"), "k", Message{Body: []byte("x")})
	var ae *amqp.Error
	if !errors.As(err, &ae) || ae.Code != amqp.NotFound {
		t.Errorf("publish to a missing exchange: %v, want a 404 channel error", err)
	}
	// The client opened a new publishing channel.
	q := queueName(t, "q")
	if err := c.DeclareQueue(ctx, Queue{Name: q}); err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(ctx, "", q, Message{Body: []byte("x")}); err != nil {
		t.Errorf("publish after a channel error: %v", err)
	}
	if err := c.Consume(ctx, queueName(t, "missing"), ConsumeOptions{}, func(context.Context, Delivery) error { return nil }); err == nil {
		t.Error("Consume of a missing queue returned nil")
	}
	c.Close()
	if err := c.Publish(ctx, "", q, Message{}); !errors.Is(err, ErrClosed) {
		t.Errorf("publish after Close: %v, want ErrClosed", err)
	}
}

// TestTraceAcrossPublishConsume exports to a real OTLP receiver: the
// consumer span is a child of the producer span, in the same trace.
func TestTraceAcrossPublishConsume(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	rcv := otlptest.Start(t)
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(rcv.HTTPEndpoint+"/v1/traces"))
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer tp.Shutdown(context.Background())
	c := newClient(t, func(c *Config) {
		c.TracerProvider = tp
		c.Propagator = propagation.TraceContext{}
	})
	q := queueName(t, "jobs")
	if err := c.DeclareQueue(ctx, Queue{Name: q}); err != nil {
		t.Fatal(err)
	}
	type job struct{ ID int }
	got := make(chan job, 1)
	stop := make(chan error, 1)
	cctx, ccancel := context.WithCancel(ctx)
	go func() {
		stop <- ConsumeJSON(cctx, c, q, ConsumeOptions{}, func(_ context.Context, j job, d Delivery) error {
			if d.ContentType != "application/json" {
				t.Errorf("content type %q", d.ContentType)
			}
			got <- j
			return nil
		})
	}()
	if err := PublishJSON(ctx, c, "", q, job{ID: 7}, Message{MessageID: "job-7"}); err != nil {
		t.Fatal(err)
	}
	if j := <-got; j.ID != 7 {
		t.Errorf("got %+v", j)
	}
	ccancel()
	if err := <-stop; err != nil {
		t.Fatal(err)
	}
	otlptest.Wait(t, 10*time.Second, "both spans", func() bool {
		_, p := rcv.SpanNamed("publish " + q)
		_, s := rcv.SpanNamed("process " + q)
		return p && s
	})
	pub, _ := rcv.SpanNamed("publish " + q)
	proc, _ := rcv.SpanNamed("process " + q)
	if string(pub.Span.TraceId) != string(proc.Span.TraceId) {
		t.Errorf("publish and process spans in different traces")
	}
	if string(proc.Span.ParentSpanId) != string(pub.Span.SpanId) {
		t.Errorf("process span's parent is not the publish span")
	}
	for _, s := range []otlptest.Span{pub, proc} {
		for key, want := range map[string]string{
			"messaging.system":           "rabbitmq",
			"messaging.destination.name": q,
			"messaging.message.id":       "job-7",
		} {
			if got, _ := otlptest.Attr(s.Span.Attributes, key); got != want {
				t.Errorf("%s: %s = %q, want %q", s.Span.Name, key, got, want)
			}
		}
	}
	if op, _ := otlptest.Attr(pub.Span.Attributes, "messaging.operation"); op != "publish" {
		t.Errorf("publish span messaging.operation = %q", op)
	}
	if op, _ := otlptest.Attr(proc.Span.Attributes, "messaging.operation"); op != "process" {
		t.Errorf("process span messaging.operation = %q", op)
	}
}

// TestDisableTracing: no spans of the client's own, but the caller's trace
// context still travels to the consumer.
func TestDisableTracing(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	c := newClient(t, func(c *Config) {
		c.TracerProvider = tp
		c.DisableTracing = true
	})
	q := queueName(t, "q")
	if err := c.DeclareQueue(ctx, Queue{Name: q, Transient: true}); err != nil {
		t.Fatal(err)
	}
	got := make(chan trace.TraceID, 1)
	stop := consume(t, c, q, ConsumeOptions{}, func(hctx context.Context, _ Delivery) error {
		got <- trace.SpanContextFromContext(hctx).TraceID()
		return nil
	})
	pctx, parent := tp.Tracer("test").Start(ctx, "caller")
	if err := c.Publish(pctx, "", q, Message{Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	parent.End()
	if id := <-got; id != parent.SpanContext().TraceID() {
		t.Errorf("consumer saw trace %s, want the caller's %s", id, parent.SpanContext().TraceID())
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for _, s := range rec.Ended() {
		if s.Name() != "caller" {
			t.Errorf("span %q recorded with tracing disabled", s.Name())
		}
	}
}
