package natsmsg_test

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace/noop"

	natsmsg "github.com/goaspire/goaspire/messaging/nats"
	"github.com/goaspire/goaspire/testserver"
)

// BenchmarkPublish compares a core NATS publish through the helper (span
// and trace context in headers) with nats.go's bare Publish, side by side
// on one connection. Run with -count to interleave the sides.
func BenchmarkPublish(b *testing.B) {
	srv := testserver.NewNATS(b)
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	data := make([]byte, 256)
	ctx := context.Background()
	sdk := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample())) // recording, no exporter
	defer sdk.Shutdown(ctx)
	prop := natsmsg.WithPropagator(propagation.TraceContext{})
	sides := []struct {
		name string
		pub  func() error
	}{
		{"bare", func() error { return nc.Publish("bench", data) }},
		{"helper-noop-tracer", func() error {
			return natsmsg.Publish(ctx, nc, "bench", data, natsmsg.WithTracerProvider(noop.NewTracerProvider()), prop)
		}},
		{"helper-sdk-tracer", func() error {
			return natsmsg.Publish(ctx, nc, "bench", data, natsmsg.WithTracerProvider(sdk), prop)
		}},
	}
	for _, side := range sides {
		b.Run(side.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := side.pub(); err != nil {
					b.Fatal(err)
				}
			}
			if err := nc.Flush(); err != nil {
				b.Fatal(err)
			}
		})
	}
}
