package servicedefaults

import (
	"context"
	"io"
	"runtime"
	"slices"
	"testing"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/internal/grpctest"
	"github.com/goaspire/goaspire/internal/grpctest/echopb"
)

// BenchmarkGRPCClientRatio runs the sides of BenchmarkGRPCClient in
// interleaved rounds, so that load on a shared machine falls on every
// side alike, and logs each side's best and median ns/op and its
// allocs/op (client and server: they share the process), and the ratios
// of "off/app" to "off/bare" (telemetry off), of "off/app-deadline" to
// "off/bare-deadline" (the caller sets a 5 s deadline, earlier than the
// client's own 10 s attempt timeout, which then adds no timer), and of
// "sdk/app" to "sdk/otelgrpc" (a recording SDK). The figures are logged,
// so run it with -v:
//
//	go test -run '^$' -bench BenchmarkGRPCClientRatio -benchtime 3000x -v ./servicedefaults
func BenchmarkGRPCClientRatio(b *testing.B) {
	srv := grpctest.Start(b, "bench", nil)
	req := &echopb.EchoRequest{Message: "hello"}
	bare := func(opts ...grpc.DialOption) echopb.EchoClient {
		cc, err := grpc.NewClient(srv.Addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cc.Close() })
		return echopb.NewEchoClient(cc)
	}
	app := func(sdk bool) echopb.EchoClient {
		a, err := Add(context.Background(), nil,
			WithConfig(discovery.FromMap(map[string]string{"services__echo__grpc__0": "http://" + srv.Addr})),
			WithLogWriter(io.Discard))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = a.Shutdown(context.Background()) })
		if sdk {
			tp, mp := benchSDK(b)
			a.tel.tp, a.tel.mp, a.tel.tracing, a.tel.metering = tp, mp, true, true
		}
		cc, err := a.GRPCClient("echo")
		if err != nil {
			b.Fatal(err)
		}
		return echopb.NewEchoClient(cc)
	}
	tp, mp := benchSDK(b)
	plainOtel := bare(grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelgrpc.WithTracerProvider(tp), otelgrpc.WithMeterProvider(mp))))
	type side struct {
		name     string
		c        echopb.EchoClient
		deadline time.Duration
	}
	sides := []side{
		{"off/bare", bare(), 0},
		{"off/app", app(false), 0},
		{"off/bare-deadline", bare(), 5 * time.Second},
		{"off/app-deadline", app(false), 5 * time.Second},
		{"sdk/otelgrpc", plainOtel, 0},
		{"sdk/app", app(true), 0},
	}
	for _, s := range sides {
		if _, err := s.c.Get(context.Background(), req); err != nil { // connect outside the rounds
			b.Fatal(err)
		}
	}
	const rounds = 8
	ns := make([][]float64, len(sides))
	allocs := make([]float64, len(sides))
	for r := range rounds {
		for k := range sides {
			i := k
			if r%2 == 1 {
				i = len(sides) - 1 - k
			}
			s := sides[i]
			b.Run(s.name, func(b *testing.B) {
				b.ReportAllocs()
				var m0, m1 runtime.MemStats
				runtime.ReadMemStats(&m0)
				for b.Loop() {
					ctx, cancel := context.Background(), context.CancelFunc(nil)
					if s.deadline > 0 {
						ctx, cancel = context.WithTimeout(ctx, s.deadline)
					}
					_, err := s.c.Get(ctx, req)
					if cancel != nil {
						cancel()
					}
					if err != nil {
						b.Fatal(err)
					}
				}
				runtime.ReadMemStats(&m1)
				ns[i] = append(ns[i], float64(b.Elapsed().Nanoseconds())/float64(b.N))
				allocs[i] = float64(m1.Mallocs-m0.Mallocs) / float64(b.N)
			})
		}
	}
	if len(ns[0]) < rounds {
		return
	}
	for i, s := range sides {
		b.Logf("%-18s best %6.0f ns/op, median %6.0f ns/op, %5.1f allocs/op", s.name, slices.Min(ns[i]), benchMedian(ns[i]), allocs[i])
	}
	for i := 1; i < len(sides); i += 2 {
		b.Logf("%s / %s: best %.3fx, median %.3fx, %+.1f allocs/op", sides[i].name, sides[i-1].name,
			slices.Min(ns[i])/slices.Min(ns[i-1]), benchMedian(ns[i])/benchMedian(ns[i-1]), allocs[i]-allocs[i-1])
	}
}

// benchSDK is a recording SDK: spans into a batch processor with a
// discarding exporter, metrics into a reader never collected.
func benchSDK(b *testing.B) (*sdktrace.TracerProvider, *sdkmetric.MeterProvider) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(discardExporter{}))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	b.Cleanup(func() { _ = tp.Shutdown(context.Background()); _ = mp.Shutdown(context.Background()) })
	return tp, mp
}

func benchMedian(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
