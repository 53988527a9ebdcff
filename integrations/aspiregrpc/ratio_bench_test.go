package aspiregrpc_test

import (
	"context"
	"io"
	"testing"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/goaspire/goaspire/integrations/aspiregrpc"
	"github.com/goaspire/goaspire/internal/benchratio"
	"github.com/goaspire/goaspire/internal/grpctest"
	"github.com/goaspire/goaspire/internal/grpctest/echopb"
	"github.com/goaspire/goaspire/servicedefaults"
	"github.com/goaspire/goaspire/servicedefaults/servicedefaultstest"
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
//	go test -run '^$' -bench BenchmarkGRPCClientRatio -benchtime 3000x -v ./integrations/aspiregrpc
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
		a := servicedefaultstest.NewUnstarted(b, nil, map[string]string{"services__echo__grpc__0": "http://" + srv.Addr},
			servicedefaults.WithLogWriter(io.Discard))
		var h servicedefaults.Host = a.App
		if sdk {
			tp, mp := benchSDK(b)
			h = sdkHost{a.App, tp, mp}
		}
		cc, err := aspiregrpc.Client(context.Background(), h, "echo")
		if err != nil {
			b.Fatal(err)
		}
		return echopb.NewEchoClient(cc)
	}
	tp, mp := benchSDK(b)
	plainOtel := bare(grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelgrpc.WithTracerProvider(tp), otelgrpc.WithMeterProvider(mp))))
	call := func(c echopb.EchoClient, deadline time.Duration) func(b *testing.B) {
		if _, err := c.Get(context.Background(), req); err != nil { // connect outside the rounds
			b.Fatal(err)
		}
		return func(b *testing.B) {
			ctx, cancel := context.Background(), context.CancelFunc(nil)
			if deadline > 0 {
				ctx, cancel = context.WithTimeout(ctx, deadline)
			}
			_, err := c.Get(ctx, req)
			if cancel != nil {
				cancel()
			}
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	benchratio.ComparePairs(b, 8,
		benchratio.Side{Name: "off/bare", Op: call(bare(), 0)},
		benchratio.Side{Name: "off/app", Op: call(app(false), 0)},
		benchratio.Side{Name: "off/bare-deadline", Op: call(bare(), 5*time.Second)},
		benchratio.Side{Name: "off/app-deadline", Op: call(app(false), 5*time.Second)},
		benchratio.Side{Name: "sdk/otelgrpc", Op: call(plainOtel, 0)},
		benchratio.Side{Name: "sdk/app", Op: call(app(true), 0)},
	)
}

// sdkHost is an App whose telemetry is a recording SDK.
type sdkHost struct {
	*servicedefaults.App
	tp *sdktrace.TracerProvider
	mp *sdkmetric.MeterProvider
}

func (h sdkHost) TracerProvider() trace.TracerProvider { return h.tp }
func (h sdkHost) MeterProvider() metric.MeterProvider  { return h.mp }

// discardExporter drops the spans it is given.
type discardExporter struct{}

func (discardExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discardExporter) Shutdown(context.Context) error                             { return nil }

// benchSDK is a recording SDK: spans into a batch processor with a
// discarding exporter, metrics into a reader never collected.
func benchSDK(b *testing.B) (*sdktrace.TracerProvider, *sdkmetric.MeterProvider) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(discardExporter{}))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	b.Cleanup(func() { _ = tp.Shutdown(context.Background()); _ = mp.Shutdown(context.Background()) })
	return tp, mp
}
