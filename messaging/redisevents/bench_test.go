package redisevents_test

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/goaspire/goaspire/messaging/redisevents"
	"github.com/goaspire/goaspire/testserver"
)

// BenchmarkPublish compares Publish (span, envelope) with go-redis's bare
// PUBLISH of the same payload, side by side on one client; each is a round
// trip to a local Redis. Run with -count to interleave the sides.
func BenchmarkPublish(b *testing.B) {
	srv := testserver.NewRedis(b)
	rdb := client(b, srv)
	ctx := context.Background()
	data := []byte(`{"user":123,"event":"user.created"}`)
	sdk := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
	defer sdk.Shutdown(ctx)
	opts := []redisevents.PublishOption{redisevents.WithTracerProvider(sdk), redisevents.WithPropagator(propagation.TraceContext{})}
	b.Run("bare", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := rdb.Publish(ctx, "bench", data).Err(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("helper-sdk-tracer", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := redisevents.Publish(ctx, rdb, "bench", data, opts...); err != nil {
				b.Fatal(err)
			}
		}
	})
}
