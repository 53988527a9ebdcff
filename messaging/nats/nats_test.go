package natsmsg_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/internal/poll"
	"github.com/goaspire/goaspire/internal/syncbuf"
	natsmsg "github.com/goaspire/goaspire/messaging/nats"
	"github.com/goaspire/goaspire/testserver"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// syncBuffer is a goroutine-safe log sink.
type syncBuffer = syncbuf.Buffer

// connect loads the server's connection string as an AppHost injects it
// and opens it, closing it when the test ends.
func connect(t *testing.T, srv *testserver.NATS) (*nats.Conn, *natsmsg.Config, *syncBuffer) {
	t.Helper()
	cfg, err := natsmsg.LoadConfig(discovery.FromMap(map[string]string{"ConnectionStrings:events": srv.URL()}), "events")
	if err != nil {
		t.Fatal(err)
	}
	cfg.ReconnectWait = 20 * time.Millisecond
	logs := &syncBuffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	nc, err := natsmsg.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc, cfg, logs
}

// recorder returns an in-memory span recorder and the options of both
// sides that trace into it with W3C trace context.
func recorder() (*tracetest.SpanRecorder, natsmsg.Option, natsmsg.Option) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	return rec, natsmsg.WithTracerProvider(tp), natsmsg.WithPropagator(propagation.TraceContext{})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, 15*time.Second, what, cond)
}

func attrs(s sdktrace.ReadOnlySpan) map[attribute.Key]string {
	m := map[attribute.Key]string{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value.String()
	}
	return m
}

func checkStatus(t *testing.T, check health.Check, want health.Status) {
	t.Helper()
	r := health.NewRegistry()
	if err := r.Register(check); err != nil {
		t.Fatal(err)
	}
	if got := r.Run(context.Background(), nil).Entries[0].Status; got != want {
		t.Errorf("health %s, want %s", got, want)
	}
}

func TestPublishSubscribeCarriesTrace(t *testing.T) {
	srv := testserver.NewNATS(t)
	rec, tp, prop := recorder()
	nc, _, _ := connect(t, srv)

	tests := []struct {
		name  string
		queue string
	}{
		{"subscribe", ""},
		{"queue subscribe", "workers"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Each subtest has its own subjects: the previous subtest's
			// subscription may still be draining when this one publishes,
			// and must not receive (and trace) this message too.
			prefix := "orders." + strings.ReplaceAll(tt.name, " ", "-")
			subject := prefix + ".created"
			got := make(chan trace.SpanContext, 1)
			h := func(ctx context.Context, msg *nats.Msg) error {
				if string(msg.Data) != "hello" {
					t.Errorf("data %q", msg.Data)
				}
				got <- trace.SpanContextFromContext(ctx)
				return nil
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var err error
			if tt.queue == "" {
				_, err = natsmsg.Subscribe(ctx, nc, prefix+".>", h, tp, prop)
			} else {
				_, err = natsmsg.QueueSubscribe(ctx, nc, prefix+".>", tt.queue, h, tp, prop)
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
			rec.Reset()
			if err := natsmsg.Publish(context.Background(), nc, subject, []byte("hello"), tp, prop); err != nil {
				t.Fatal(err)
			}
			consumerCtx := <-got
			cancel()
			waitFor(t, "two spans", func() bool { return len(rec.Ended()) == 2 })
			var pub, proc sdktrace.ReadOnlySpan
			for _, s := range rec.Ended() {
				switch s.SpanKind() {
				case trace.SpanKindProducer:
					pub = s
				case trace.SpanKindConsumer:
					proc = s
				}
			}
			if pub == nil || proc == nil {
				t.Fatalf("spans %v", rec.Ended())
			}
			if pub.Name() != "publish "+subject || proc.Name() != "process "+subject {
				t.Errorf("names %q, %q", pub.Name(), proc.Name())
			}
			if proc.Parent().SpanID() != pub.SpanContext().SpanID() || proc.SpanContext().TraceID() != pub.SpanContext().TraceID() {
				t.Error("the consumer span is not the producer span's child")
			}
			if consumerCtx.SpanID() != proc.SpanContext().SpanID() {
				t.Error("the handler's ctx does not carry the consumer span")
			}
			for _, s := range []sdktrace.ReadOnlySpan{pub, proc} {
				a := attrs(s)
				if a["messaging.system"] != "nats" || a["messaging.destination.name"] != subject || a["messaging.operation"] == "" {
					t.Errorf("%s attributes %v", s.Name(), a)
				}
			}
			if tt.queue != "" && attrs(proc)["messaging.consumer.group.name"] != tt.queue {
				t.Errorf("consumer group %v", attrs(proc))
			}
		})
	}
}

func TestSubscribeHandlerFailure(t *testing.T) {
	srv := testserver.NewNATS(t)
	rec, tp, prop := recorder()
	nc, _, logs := connect(t, srv)
	logger := natsmsg.WithLogger(slog.New(slog.NewTextHandler(logs, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tests := []struct {
		name string
		h    natsmsg.Handler
		want string
	}{
		{"error", func(context.Context, *nats.Msg) error { return errors.New("bad order") }, "bad order"},
		{"panic", func(context.Context, *nats.Msg) error { panic("nil order") }, "handler panicked: nil order"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec.Reset()
			subject := "fail." + tt.name
			sub, err := natsmsg.Subscribe(ctx, nc, subject, tt.h, tp, prop, logger)
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Unsubscribe()
			_ = nc.Flush()
			if err := natsmsg.Publish(ctx, nc, subject, nil, tp, prop); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the consumer span", func() bool {
				for _, s := range rec.Ended() {
					if s.SpanKind() == trace.SpanKindConsumer {
						return true
					}
				}
				return false
			})
			for _, s := range rec.Ended() {
				if s.SpanKind() == trace.SpanKindConsumer && !strings.Contains(s.Status().Description, tt.want) {
					t.Errorf("consumer span status %+v", s.Status())
				}
			}
			if !strings.Contains(logs.String(), tt.want) {
				t.Errorf("failure not logged:\n%s", logs)
			}
		})
	}
}

func TestReconnectAndHealth(t *testing.T) {
	srv := testserver.NewNATS(t)
	nc, cfg, logs := connect(t, srv)
	check := natsmsg.HealthCheck(cfg.Name, nc)
	if check.Name != "nats:events" || !strings.Contains(strings.Join(check.Tags, ","), health.TagReady) {
		t.Errorf("check %q tags %v", check.Name, check.Tags)
	}
	waitFor(t, "connected", nc.IsConnected)
	checkStatus(t, check, health.Healthy)

	received := make(chan string, 16)
	if _, err := natsmsg.Subscribe(context.Background(), nc, "ping", func(_ context.Context, m *nats.Msg) error {
		received <- string(m.Data)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()

	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "reconnecting", func() bool { return !nc.IsConnected() })
	checkStatus(t, check, health.Unhealthy)

	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "reconnected", nc.IsConnected)
	checkStatus(t, check, health.Healthy)
	// The subscription was resumed: a message published now arrives.
	if err := natsmsg.Publish(context.Background(), nc, "ping", []byte("after restart")); err != nil {
		t.Fatal(err)
	}
	if got := <-received; got != "after restart" {
		t.Errorf("received %q", got)
	}
	// nats.go runs the connection handlers that log on a goroutine of its
	// own, after the state they report has changed.
	for _, want := range []string{"nats disconnected; reconnecting", "nats reconnected"} {
		waitFor(t, "the log line "+strconv.Quote(want), func() bool { return strings.Contains(logs.String(), want) })
	}
	nc.Close()
	checkStatus(t, check, health.Unhealthy)
	if strings.Contains(logs.String(), srv.Password()) {
		t.Error("the log shows the password")
	}
}

// TestNewBeforeServerIsUp: New returns a connection with the server down
// (the server is started only after it returned); the check is Unhealthy,
// connecting; a JetStream publish with a deadline fails by it; a
// subscription made before the server came works once connected. With
// WaitOnOpen, New waits for the server and fails when it does not come.
func TestNewBeforeServerIsUp(t *testing.T) {
	srv := testserver.NewNATS(t)
	if err := srv.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}

	cfg, err := natsmsg.LoadConfig(discovery.FromMap(map[string]string{
		"ConnectionStrings:events":          srv.URL(),
		"Aspire:NATS:Net:events:WaitOnOpen": "300ms",
	}), "events")
	if err != nil {
		t.Fatal(err)
	}
	cfg.ReconnectWait = 20 * time.Millisecond
	if nc, err := natsmsg.New(context.Background(), cfg); err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "WaitOnOpen") || strings.Contains(err.Error(), srv.Password()) {
		if nc != nil {
			nc.Close()
		}
		t.Errorf("New with WaitOnOpen and the server down = %v, want context.DeadlineExceeded naming WaitOnOpen, without the password", err)
	}

	nc, cfg, _ := connect(t, srv)
	check := natsmsg.HealthCheck(cfg.Name, nc)
	checkStatus(t, check, health.Unhealthy)
	r := health.NewRegistry()
	_ = r.Register(check)
	if e := r.Run(context.Background(), nil).Entries[0]; !strings.Contains(e.Error, "connecting") {
		t.Errorf("health error %q, want it to say connecting", e.Error)
	}
	received := make(chan string, 1)
	if _, err := natsmsg.Subscribe(context.Background(), nc, "early", func(_ context.Context, m *nats.Msg) error {
		received <- string(m.Data)
		return nil
	}); err != nil {
		t.Fatalf("Subscribe before the server is up: %v", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, err = natsmsg.PublishJetStream(ctx, js, "orders.1", []byte("lost"))
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("PublishJetStream with the server down = %v, want context.DeadlineExceeded", err)
	}

	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "connected once the server came", nc.IsConnected)
	checkStatus(t, check, health.Healthy)
	ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "LAZY", Subjects: []string{"orders.>"}, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	if _, err := natsmsg.PublishJetStream(ctx, js, "orders.1", []byte("kept")); err != nil {
		t.Errorf("PublishJetStream once the server is up: %v", err)
	}
	if err := natsmsg.Publish(ctx, nc, "early", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-received:
		if got != "hello" {
			t.Errorf("received %q", got)
		}
	case <-ctx.Done():
		t.Error("the subscription made before the server came received nothing")
	}
}

func TestWrongPasswordIsNotShown(t *testing.T) {
	srv := testserver.NewNATS(t)
	cfg := &natsmsg.Config{Name: "events", Servers: []string{"nats://" + srv.Addr()}, User: srv.User(), Password: secret, ReconnectWait: 10 * time.Millisecond}
	logs := &syncBuffer{}
	cfg.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	nc, err := natsmsg.New(context.Background(), cfg)
	if err != nil {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error shows the password: %v", err)
		}
		return
	}
	defer nc.Close()
	waitFor(t, "an authorization error logged", func() bool { return strings.Contains(strings.ToLower(logs.String()), "authorization") })
	if strings.Contains(logs.String(), secret) {
		t.Errorf("log shows the password:\n%s", logs)
	}
	// The health check says why it is not connected.
	r := health.NewRegistry()
	_ = r.Register(natsmsg.HealthCheck("events", nc))
	waitFor(t, "the health check to name the authorization error", func() bool {
		e := r.Run(context.Background(), nil).Entries[0]
		if e.Status != health.Unhealthy || strings.Contains(e.Error, secret) {
			t.Fatalf("health %s %q, want Unhealthy (never connected) without the password", e.Status, e.Error)
		}
		return strings.Contains(strings.ToLower(e.Error), "authorization")
	})
}

func TestNewRejectsEmptyConfig(t *testing.T) {
	for _, c := range []*natsmsg.Config{nil, {Name: "x"}} {
		if _, err := natsmsg.New(context.Background(), c); err == nil {
			t.Errorf("New(%v) succeeded", c)
		}
	}
}

// jetStream makes a stream ORDERS on orders.> and a durable consumer.
func jetStream(t *testing.T, nc *nats.Conn, maxDeliver int) (jetstream.JetStream, jetstream.Consumer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "ORDERS", Subjects: []string{"orders.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, "ORDERS", jetstream.ConsumerConfig{
		Durable: "billing", AckPolicy: jetstream.AckExplicitPolicy, MaxDeliver: maxDeliver, AckWait: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	return js, cons
}

func TestJetStreamAckRedeliveryAndTrace(t *testing.T) {
	srv := testserver.NewNATS(t)
	rec, tp, prop := recorder()
	nc, _, _ := connect(t, srv)
	js, cons := jetStream(t, nc, 3)

	ack, err := natsmsg.PublishJetStream(context.Background(), js, "orders.created", []byte("o-1"), tp, prop)
	if err != nil {
		t.Fatal(err)
	}
	if ack.Stream != "ORDERS" || ack.Sequence != 1 {
		t.Errorf("ack %+v", ack)
	}
	type delivery struct {
		data string
		n    uint64
		sc   trace.SpanContext
	}
	got := make(chan delivery, 8)
	ctx, cancel := context.WithCancel(context.Background())
	cc, err := natsmsg.ConsumeJetStream(ctx, cons, func(ctx context.Context, msg jetstream.Msg) error {
		md, _ := msg.Metadata()
		got <- delivery{string(msg.Data()), md.NumDelivered, trace.SpanContextFromContext(ctx)}
		if md.NumDelivered == 1 {
			return errors.New("transient")
		}
		return nil
	}, tp, prop)
	if err != nil {
		t.Fatal(err)
	}
	next := func() delivery {
		select {
		case d := <-got:
			return d
		case <-time.After(15 * time.Second):
			t.Fatal("no delivery")
			return delivery{}
		}
	}
	first, second := next(), next()
	cancel()
	<-cc.Closed()
	if first.data != "o-1" || first.n != 1 || second.data != "o-1" || second.n != 2 {
		t.Errorf("deliveries %+v, %+v: want o-1 redelivered once after the failure", first, second)
	}
	if first.sc.TraceID() != second.sc.TraceID() {
		t.Error("the redelivery is not in the producer's trace")
	}
	// Acked: the consumer has nothing pending.
	info, err := cons.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending != 0 || info.NumPending != 0 {
		t.Errorf("ack pending %d, pending %d: want the message acknowledged", info.NumAckPending, info.NumPending)
	}
	var pub sdktrace.ReadOnlySpan
	var procs []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		switch s.SpanKind() {
		case trace.SpanKindProducer:
			pub = s
		case trace.SpanKindConsumer:
			procs = append(procs, s)
		}
	}
	if pub == nil || len(procs) != 2 {
		t.Fatalf("spans: producer %v, %d consumers", pub != nil, len(procs))
	}
	for _, p := range procs {
		if p.Parent().SpanID() != pub.SpanContext().SpanID() {
			t.Error("a consumer span is not the producer's child")
		}
		if a := attrs(p); a["messaging.consumer.group.name"] != "billing" || a["messaging.nats.stream"] != "ORDERS" {
			t.Errorf("consumer attributes %v", a)
		}
	}
	if procs[0].Status().Code != 1 /* Error */ && procs[1].Status().Code != 1 {
		t.Error("the failed delivery's span is not an error")
	}
}

func TestJetStreamSurvivesServerRestart(t *testing.T) {
	srv := testserver.NewNATS(t)
	nc, _, _ := connect(t, srv)
	js, cons := jetStream(t, nc, 5)
	const n = 20
	for i := range n {
		if _, err := natsmsg.PublishJetStream(context.Background(), js, "orders.created", fmt.Appendf(nil, "o-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	// Acknowledged messages are on disk: a crash loses none of them.
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "reconnected", nc.IsConnected)

	var mu sync.Mutex
	seen := map[string]bool{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cc, err := natsmsg.ConsumeJetStream(ctx, cons, func(_ context.Context, msg jetstream.Msg) error {
		mu.Lock()
		seen[string(msg.Data())] = true
		mu.Unlock()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every message consumed", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == n
	})
	cancel()
	<-cc.Closed()
}

func TestPublishJetStreamWithoutStreamFails(t *testing.T) {
	srv := testserver.NewNATS(t)
	nc, _, _ := connect(t, srv)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = natsmsg.PublishJetStream(ctx, js, "nowhere", []byte("x"))
	if !errors.Is(err, jetstream.ErrNoStreamResponse) || !strings.Contains(err.Error(), `"nowhere"`) {
		t.Errorf("err = %v, want ErrNoStreamResponse naming the subject", err)
	}
}
