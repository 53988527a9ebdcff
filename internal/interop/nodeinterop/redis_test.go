package nodeinterop

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/goaspire/goaspire/messaging/redisevents"
	"github.com/goaspire/goaspire/testserver"
)

// payloads are published both ways: text as Aspire's samples send it,
// JSON that is not our envelope, and bytes that are not UTF-8.
var payloads = [][]byte{
	[]byte("user.created:123"),
	[]byte(`{"event":"user.created","id":123}`),
	{0x00, 0xff, 0xfe, 'x', 0x80},
}

func newRedis(t *testing.T) (*testserver.Redis, redis.UniversalClient) {
	t.Helper()
	needNode(t)
	srv := testserver.NewRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), Password: srv.Password()})
	t.Cleanup(func() { rdb.Close() })
	return srv, rdb
}

// TestGoPublishNodeSubscribe: a node-redis subscriber receives our
// WithRawPayload publishes byte for byte, and our default publishes as the
// goaspire.v1 JSON envelope whose headers.traceparent is the Go producer
// span's: what a Node subscriber must unwrap to continue the trace.
func TestGoPublishNodeSubscribe(t *testing.T) {
	srv, rdb := newRedis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	opts := []redisevents.PublishOption{redisevents.WithTracerProvider(tp), redisevents.WithPropagator(propagation.TraceContext{})}

	sub := startNode(t, []string{"REDIS_URL=" + srv.URL()}, "redis-sub", "events")
	var ready struct{ Ready bool }
	sub.next(&ready)
	publish := func(ctx context.Context, data []byte, more ...redisevents.PublishOption) {
		t.Helper()
		n, err := redisevents.Publish(ctx, rdb, "events", data, append(opts, more...)...)
		if err != nil || n != 1 {
			t.Fatalf("Publish: %d receivers, %v", n, err)
		}
	}
	for _, p := range payloads {
		publish(ctx, p, redisevents.WithRawPayload())
	}
	// Enveloped, in a span of the test's whose child is the producer span.
	pctx, parent := tp.Tracer("test").Start(ctx, "user created")
	publish(pctx, []byte("user.created:123"))
	parent.End()
	publish(ctx, []byte("END"), redisevents.WithRawPayload())

	var got [][]byte
	for {
		var line struct{ Base64 string }
		sub.next(&line)
		b, err := base64.StdEncoding.DecodeString(line.Base64)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) == "END" {
			break
		}
		got = append(got, b)
	}
	sub.wait()
	if len(got) != len(payloads)+1 {
		t.Fatalf("node received %d messages, want %d: %q", len(got), len(payloads)+1, got)
	}
	for i, p := range payloads {
		if string(got[i]) != string(p) {
			t.Errorf("raw publish %d: node received %q, want %q exactly", i, got[i], p)
		}
	}
	var env struct {
		Envelope string
		Headers  map[string]string
		Data     string
	}
	if err := json.Unmarshal(got[len(payloads)], &env); err != nil {
		t.Fatalf("the enveloped publish reached node as %q: %v", got[len(payloads)], err)
	}
	var producer sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.SpanKind() == trace.SpanKindProducer && s.Parent().SpanID() == parent.SpanContext().SpanID() {
			producer = s
		}
	}
	if producer == nil {
		t.Fatal("no producer span")
	}
	want := fmt.Sprintf("00-%s-%s-01", producer.SpanContext().TraceID(), producer.SpanContext().SpanID())
	if env.Envelope != redisevents.EnvelopeVersion || env.Data != "user.created:123" || env.Headers["traceparent"] != want {
		t.Errorf("the enveloped publish reached node as %+v; want data user.created:123 and traceparent %s", env, want)
	}
}

// TestNodePublishGoSubscribe: what node-redis publishes reaches our
// Subscribe unchanged, as a non-enveloped event (no trace context travels
// with it: the consumer span starts a trace of its own).
func TestNodePublishGoSubscribe(t *testing.T) {
	srv, rdb := newRedis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	var (
		mu  sync.Mutex
		got []redisevents.Event
		all = make(chan struct{})
	)
	sub, err := redisevents.Subscribe(ctx, rdb, func(ctx context.Context, ev redisevents.Event) error {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, ev)
		if len(got) == len(payloads) {
			close(all)
		}
		if !trace.SpanContextFromContext(ctx).IsValid() {
			return fmt.Errorf("no span in the handler's context")
		}
		return nil
	}, []string{"events"}, redisevents.WithTracerProvider(tp))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	args := []string{"redis-pub", "events"}
	for _, p := range payloads {
		args = append(args, base64.StdEncoding.EncodeToString(p))
	}
	pub := startNode(t, []string{"REDIS_URL=" + srv.URL()}, args...)
	var published struct{ Receivers []int }
	pub.next(&published)
	pub.wait()
	for i, n := range published.Receivers {
		if n != 1 {
			t.Errorf("node's publish %d reached %d subscribers, want 1", i, n)
		}
	}
	select {
	case <-all:
	case <-time.After(lineTimeout):
		t.Fatalf("Subscribe handled %d of %d events within %s", len(got), len(payloads), lineTimeout)
	}
	sub.Close()
	mu.Lock()
	defer mu.Unlock()
	for i, p := range payloads {
		if string(got[i].Data) != string(p) || got[i].Enveloped || got[i].Channel != "events" {
			t.Errorf("event %d: %+v, want %q exactly, not enveloped", i, got[i], p)
		}
	}
	for _, s := range rec.Ended() {
		if s.Name() == "process events" && s.Parent().IsValid() {
			t.Errorf("a consumer span of a Node publish has parent %s: no trace context travels with a raw payload", s.Parent().SpanID())
		}
	}
}
