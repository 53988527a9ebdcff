package redisevents_test

import (
	"context"
	"fmt"
	"log"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/goaspire/goaspire/cache"
	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/messaging/redisevents"
)

func ExampleSubscribe() {
	ctx := context.Background()
	// In a service: rdb, err := aspireredis.Client(ctx, app, "cache").
	// Alone: the cache package's client from the connection an AppHost
	// injects.
	cfg, err := discovery.Load()
	if err != nil {
		log.Fatal(err)
	}
	rc, err := cache.LoadRedisConfig(cfg, "cache")
	if err != nil {
		log.Fatal(err)
	}
	rdb, err := cache.NewRedis(ctx, rc)
	if err != nil {
		log.Fatal(err)
	}
	defer rdb.Close()

	// Subscribe returns once Redis confirmed the subscription; run it in
	// an App.Go worker so a Redis outage at start is retried.
	sub, err := redisevents.Subscribe(ctx, rdb, func(ctx context.Context, ev redisevents.Event) error {
		log.Printf("event on %s: %s", ev.Channel, ev.Data)
		return nil
	}, []string{"events"})
	if err != nil {
		log.Print(err)
		return
	}
	defer sub.Close()

	if _, err := redisevents.Publish(ctx, rdb, "events", []byte("user.created:123")); err != nil {
		log.Print(err)
	}
}

// Encode and Decode are the envelope Publish and Subscribe use, for code
// that sends or receives through a client of its own.
func ExampleEncode() {
	prop := redisevents.WithPropagator(propagation.TraceContext{})
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	ctx := trace.ContextWithSpanContext(context.Background(),
		trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled}))

	msg, err := redisevents.Encode(ctx, []byte("user.created:123"), prop)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(msg))

	got, ev := redisevents.Decode(context.Background(), "events", string(msg), prop)
	fmt.Println(string(ev.Data), ev.Enveloped, trace.SpanContextFromContext(got).TraceID())

	// A plain message (redis-cli, another language's client) is passed on
	// as it is.
	_, ev = redisevents.Decode(context.Background(), "events", "user.deleted:7", prop)
	fmt.Println(string(ev.Data), ev.Enveloped)
	// Output:
	// {"envelope":"goaspire.v1","headers":{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},"data":"user.created:123"}
	// user.created:123 true 4bf92f3577b34da6a3ce929d0e0e4736
	// user.deleted:7 false
}

// A subscriber in another language (a Python service's
// redis.from_url(os.environ["ConnectionStrings__cache"]).pubsub()) reads
// the payload as it is published: send it raw. A message such a service
// publishes reaches a Subscribe handler exactly as sent, with
// Event.Enveloped false.
func ExampleWithRawPayload() {
	ctx := context.Background()
	cfg, err := discovery.Load()
	if err != nil {
		log.Fatal(err)
	}
	rc, err := cache.LoadRedisConfig(cfg, "cache")
	if err != nil {
		log.Fatal(err)
	}
	rdb, err := cache.NewRedis(ctx, rc)
	if err != nil {
		log.Fatal(err)
	}
	defer rdb.Close()

	// The Python subscriber's get_message()["data"] is b"user.created:123".
	if _, err := redisevents.Publish(ctx, rdb, "events", []byte("user.created:123"), redisevents.WithRawPayload()); err != nil {
		log.Print(err)
	}
}
