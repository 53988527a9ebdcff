package redisevents_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/goaspire/goaspire/cache"
	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/internal/poll"
	"github.com/goaspire/goaspire/internal/syncbuf"
	"github.com/goaspire/goaspire/messaging/redisevents"
	"github.com/goaspire/goaspire/testserver"
)

// go-redis's re-authentication workers (clients with expiring credentials)
// outlive Close by up to PoolTimeout.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/auth/streaming.(*ReAuthPoolHook).OnPut.func1"))
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer = syncbuf.Buffer

// client opens the server as integrations/aspireredis's Client does.
func client(t testing.TB, srv *testserver.Redis) redis.UniversalClient {
	t.Helper()
	c, err := cache.LoadRedisConfig(discovery.FromMap(map[string]string{"ConnectionStrings:cache": srv.ConnectionString()}), "cache")
	if err != nil {
		t.Fatal(err)
	}
	c.Logger = slog.New(slog.NewTextHandler(&syncBuffer{}, nil))
	rdb, err := cache.NewRedis(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// recorder returns a span recorder and the options of Publish and
// Subscribe that record into it with W3C trace context.
func recorder() (*tracetest.SpanRecorder, redisevents.Option, redisevents.PropagatorOption) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	return rec, redisevents.WithTracerProvider(tp), redisevents.WithPropagator(propagation.TraceContext{})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, 15*time.Second, what, cond)
}

type received struct {
	ev redisevents.Event
	sc trace.SpanContext
}

func collect(ch chan received) redisevents.Handler {
	return func(ctx context.Context, ev redisevents.Event) error {
		ch <- received{ev, trace.SpanContextFromContext(ctx)}
		return nil
	}
}

func next(t *testing.T, ch chan received) received {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(15 * time.Second):
		t.Fatal("no event received")
		return received{}
	}
}

func TestPublishSubscribeCarriesTrace(t *testing.T) {
	srv := testserver.NewRedis(t)
	rdb := client(t, srv)
	rec, tp, prop := recorder()
	got := make(chan received, 4)
	sub, err := redisevents.Subscribe(context.Background(), rdb, collect(got), []string{"events"}, tp, prop)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	tests := []struct {
		name string
		data []byte
	}{
		{"text", []byte("user.created:123")},
		{"json", []byte(`{"user":123}`)},
		{"binary", []byte{0xff, 0x00, 0xfe}},
		{"empty", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec.Reset()
			n, err := redisevents.Publish(context.Background(), rdb, "events", tt.data, tp, prop)
			if err != nil || n != 1 {
				t.Fatalf("Publish = %d, %v; want 1 receiver", n, err)
			}
			r := next(t, got)
			if !bytes.Equal(r.ev.Data, tt.data) || !r.ev.Enveloped || r.ev.Channel != "events" {
				t.Errorf("event %+v, want data %q enveloped", r.ev, tt.data)
			}
			waitFor(t, "both spans", func() bool { return len(rec.Ended()) == 2 })
			var pub, proc sdktrace.ReadOnlySpan
			for _, s := range rec.Ended() {
				switch s.SpanKind() {
				case trace.SpanKindProducer:
					pub = s
				case trace.SpanKindConsumer:
					proc = s
				}
			}
			if pub == nil || proc == nil || pub.Name() != "publish events" || proc.Name() != "process events" {
				t.Fatalf("spans %v", rec.Ended())
			}
			if proc.Parent().SpanID() != pub.SpanContext().SpanID() || r.sc.SpanID() != proc.SpanContext().SpanID() {
				t.Error("the consumer span is not the producer's child, or not in the handler's ctx")
			}
			for _, s := range []sdktrace.ReadOnlySpan{pub, proc} {
				found := map[string]string{}
				for _, kv := range s.Attributes() {
					found[string(kv.Key)] = kv.Value.String()
				}
				if found["messaging.system"] != "redis" || found["messaging.destination.name"] != "events" || found["messaging.operation"] == "" {
					t.Errorf("%s attributes %v", s.Name(), found)
				}
			}
		})
	}
}

func TestPlainMessagesAreDelivered(t *testing.T) {
	srv := testserver.NewRedis(t)
	rdb := client(t, srv)
	got := make(chan received, 4)
	sub, err := redisevents.PSubscribe(context.Background(), rdb, collect(got), []string{"ev*"})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	// As the Aspire sample's Python publisher sends them.
	for _, payload := range append([]string{"user.created:123", `{"data":"not an envelope"}`, `{"envelope":"goaspire.v1",broken`}, almostEnvelopes...) {
		if err := rdb.Publish(context.Background(), "events", payload).Err(); err != nil {
			t.Fatal(err)
		}
		r := next(t, got)
		if string(r.ev.Data) != payload || r.ev.Enveloped || r.ev.Pattern != "ev*" {
			t.Errorf("event %+v, want %q as is, from pattern ev*", r.ev, payload)
		}
	}
}

// almostEnvelopes are JSON objects of other services that look like an
// envelope but are not one as Publish writes it: Subscribe and Decode must
// hand them over untouched.
var almostEnvelopes = []string{
	`{"envelope":"goaspire.v1","data":"x","user":123}`,                  // a member of its own
	`{"Envelope":"goaspire.v1","Data":"x"}`,                             // other case (encoding/json would match it)
	`{"envelope":"goaspire.v1"}`,                                        // no data
	`{"envelope":"goaspire.v1","data":"x","data_base64":"eA=="}`,        // both data forms
	`{"envelope":"goaspire.v1","data":null}`,                            // null data
	`{"envelope":"goaspire.v1","data":7}`,                               // data not a string
	`{"envelope":"goaspire.v1","headers":{"traceparent":1},"data":"x"}`, // headers not strings
	`{"envelope":"goaspire.v1","headers":null,"data":"x"}`,              // null headers
	`{"envelope":"goaspire.v1","data":"x"} trailing`,                    // not one JSON value
	`{"kind":"goaspire.v1","payload":{"envelope":"goaspire.v1","data":"x"}}`,
}

// TestRawPayloadReachesOtherSubscribersAsIs checks that WithRawPayload
// publishes the bytes exactly as given (what a subscriber in another
// language receives), still with a producer span, and that a goaspire
// subscriber hands them over unchanged, not enveloped, in a trace of its
// own.
func TestRawPayloadReachesOtherSubscribersAsIs(t *testing.T) {
	srv := testserver.NewRedis(t)
	rdb := client(t, srv)
	rec, tp, prop := recorder()
	plain := rdb.Subscribe(context.Background(), "events")
	defer plain.Close()
	if _, err := plain.Receive(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := make(chan received, 4)
	sub, err := redisevents.Subscribe(context.Background(), rdb, collect(got), []string{"events"}, tp, prop)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	for _, payload := range append([]string{"user.created:123", "", "\xff\x00", `{"envelope":"goaspire.v1","data":"x"}`}, almostEnvelopes...) {
		rec.Reset()
		n, err := redisevents.Publish(context.Background(), rdb, "events", []byte(payload), tp, prop, redisevents.WithRawPayload())
		if err != nil || n != 2 {
			t.Fatalf("Publish = %d, %v; want 2 receivers", n, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		msg, err := plain.ReceiveMessage(ctx)
		cancel()
		if err != nil || msg.Payload != payload {
			t.Fatalf("plain subscriber got %q, %v; want %q", msg.Payload, err, payload)
		}
		r := next(t, got)
		wantEnveloped := payload == `{"envelope":"goaspire.v1","data":"x"}` // a raw payload that is an envelope stays one
		if !wantEnveloped && (string(r.ev.Data) != payload || r.ev.Enveloped) {
			t.Errorf("subscriber got %+v, want %q as is", r.ev, payload)
		}
		waitFor(t, "both spans", func() bool { return len(rec.Ended()) == 2 })
		var pub, proc sdktrace.ReadOnlySpan
		for _, s := range rec.Ended() {
			switch s.SpanKind() {
			case trace.SpanKindProducer:
				pub = s
			case trace.SpanKindConsumer:
				proc = s
			}
		}
		if pub == nil || proc == nil || pub.Name() != "publish events" {
			t.Fatalf("spans %v", rec.Ended())
		}
		if proc.SpanContext().TraceID() == pub.SpanContext().TraceID() {
			t.Error("a raw payload carried the trace context")
		}
	}
	typed := map[string]int{"user": 123}
	if _, err := redisevents.PublishJSON(context.Background(), rdb, "events", typed, redisevents.WithRawPayload()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if msg, err := plain.ReceiveMessage(ctx); err != nil || msg.Payload != `{"user":123}` {
		t.Errorf("PublishJSON raw: plain subscriber got %v, %v", msg, err)
	}
	next(t, got)
}

func TestHandlerFailureIsLoggedAndSubscriptionGoesOn(t *testing.T) {
	srv := testserver.NewRedis(t)
	rdb := client(t, srv)
	logs := &syncBuffer{}
	rec, tp, prop := recorder()
	logger := redisevents.WithLogger(slog.New(slog.NewTextHandler(logs, nil)))
	var mu sync.Mutex
	var seen []string
	sub, err := redisevents.Subscribe(context.Background(), rdb, func(_ context.Context, ev redisevents.Event) error {
		mu.Lock()
		seen = append(seen, string(ev.Data))
		mu.Unlock()
		switch string(ev.Data) {
		case "fail":
			return errors.New("cannot apply")
		case "panic":
			panic("nil map")
		}
		return nil
	}, []string{"events"}, tp, prop, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	for _, d := range []string{"fail", "panic", "ok"} {
		if _, err := redisevents.Publish(context.Background(), rdb, "events", []byte(d), tp, prop); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "three events", func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) == 3 })
	for _, want := range []string{"cannot apply", "handler panicked: nil map"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q", want)
		}
	}
	waitFor(t, "six spans", func() bool { return len(rec.Ended()) == 6 })
	errSpans := 0
	for _, s := range rec.Ended() {
		if s.Status().Code == 1 {
			errSpans++
		}
	}
	if errSpans != 2 {
		t.Errorf("%d error spans, want 2", errSpans)
	}
}

func TestSubscriptionSurvivesRedisRestart(t *testing.T) {
	tests := []struct {
		name string
		down func(*testserver.Redis) error
	}{
		{"kill", (*testserver.Redis).Kill},
		{"stop", func(r *testserver.Redis) error { return r.Stop(context.Background()) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := testserver.NewRedis(t)
			rdb := client(t, srv)
			got := make(chan received, 64)
			sub, err := redisevents.Subscribe(context.Background(), rdb, collect(got), []string{"events"},
				redisevents.WithHealthCheckInterval(50*time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			if _, err := redisevents.Publish(context.Background(), rdb, "events", []byte("before")); err != nil {
				t.Fatal(err)
			}
			if r := next(t, got); string(r.ev.Data) != "before" {
				t.Fatalf("got %q", r.ev.Data)
			}
			if err := tt.down(srv); err != nil {
				t.Fatal(err)
			}
			if err := srv.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			// Once go-redis has subscribed again, Redis counts a receiver.
			waitFor(t, "the subscription to be back", func() bool {
				n, err := redisevents.Publish(context.Background(), rdb, "events", []byte("probe"))
				return err == nil && n == 1
			})
			if _, err := redisevents.Publish(context.Background(), rdb, "events", []byte("after")); err != nil {
				t.Fatal(err)
			}
			for {
				r := next(t, got)
				if string(r.ev.Data) == "after" {
					break
				}
			}
		})
	}
}

func TestSubscribeFailsWhenRedisIsDown(t *testing.T) {
	srv := testserver.NewRedis(t)
	rdb := client(t, srv)
	if err := srv.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := redisevents.Subscribe(ctx, rdb, func(context.Context, redisevents.Event) error { return nil }, []string{"events"})
	if err == nil || !strings.Contains(err.Error(), "events") || strings.Contains(err.Error(), srv.Password()) {
		t.Errorf("Subscribe = %v, want an error naming the channel without the password", err)
	}
}

func TestSubscriptionEndsWithContext(t *testing.T) {
	srv := testserver.NewRedis(t)
	rdb := client(t, srv)
	ctx, cancel := context.WithCancel(context.Background())
	sub, err := redisevents.Subscribe(ctx, rdb, func(context.Context, redisevents.Event) error { return nil }, []string{"events"})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	<-sub.Done()
	n, err := redisevents.Publish(context.Background(), rdb, "events", []byte("x"))
	if err != nil || n != 0 {
		t.Errorf("Publish after the end = %d, %v; want no receiver", n, err)
	}
	if err := sub.Close(); err != nil {
		t.Error(err)
	}
}

func TestSubscribeMisuse(t *testing.T) {
	tests := []struct {
		name     string
		h        redisevents.Handler
		channels []string
		want     string
	}{
		{"no channels", func(context.Context, redisevents.Event) error { return nil }, nil, "no channels"},
		{"nil handler", nil, []string{"events"}, "nil handler"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := redisevents.Subscribe(context.Background(), nil, tt.h, tt.channels)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestDecode(t *testing.T) {
	prop := redisevents.WithPropagator(propagation.TraceContext{})
	const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	tests := []struct {
		payload   string
		data      string
		enveloped bool
		traced    bool
	}{
		{"plain", "plain", false, false},
		{`{"envelope":"goaspire.v1","data":"x"}`, "x", true, false},
		{`{"envelope":"goaspire.v1","headers":{"traceparent":"` + tp + `"},"data":"y"}`, "y", true, true},
		{`{"envelope":"goaspire.v1","data_base64":"/w=="}`, "\xff", true, false},
		{`{"envelope":"other","data":"x"}`, `{"envelope":"other","data":"x"}`, false, false},
		{`{"envelope":"goaspire.v1"`, `{"envelope":"goaspire.v1"`, false, false},
		{`{"envelope":"goaspire.v1","data":""}`, "", true, false},
		{`{"headers":{"traceparent":"` + tp + `"},"data_base64":"","envelope":"goaspire.v1"}`, "", true, true},
	}
	for _, p := range almostEnvelopes {
		tests = append(tests, struct {
			payload   string
			data      string
			enveloped bool
			traced    bool
		}{p, p, false, false})
	}
	for _, tt := range tests {
		ctx, ev := redisevents.Decode(context.Background(), "c", tt.payload, prop)
		if string(ev.Data) != tt.data || ev.Enveloped != tt.enveloped {
			t.Errorf("%s: event %+v", tt.payload, ev)
		}
		if traced := trace.SpanContextFromContext(ctx).IsValid(); traced != tt.traced {
			t.Errorf("%s: traced %v, want %v", tt.payload, traced, tt.traced)
		}
	}
	enc, err := redisevents.Encode(context.Background(), []byte("z"))
	if err != nil || !strings.Contains(string(enc), `"data":"z"`) {
		t.Errorf("Encode = %s, %v", enc, err)
	}
}
