package aspiregrpc_test

import (
	"context"
	"io"
	"testing"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/goaspire/goaspire/integrations/aspiregrpc"
	"github.com/goaspire/goaspire/internal/grpctest"
	"github.com/goaspire/goaspire/internal/grpctest/echopb"
	"github.com/goaspire/goaspire/servicedefaults"
	"github.com/goaspire/goaspire/servicedefaults/servicedefaultstest"
)

// BenchmarkGRPCClient measures one unary call on loopback to a plain
// grpc-go server: "off/bare" is grpc.NewClient with no options but
// plaintext, "off/bare-deadline" the same with a 30 s deadline on each
// call (what a caller's deadline costs client and server: Client's own
// timeouts are not sent to the server), "off/app" is Client with
// telemetry off (discovery, round_robin, the retries and timeouts,
// keepalive, trace-context propagation); "sdk/otelgrpc" is the bare
// client with plain otelgrpc over a recording SDK (benchSDK), "sdk/app"
// is Client over the same SDK.
//
//	go test -run '^$' -bench 'BenchmarkGRPCClient$' -benchmem ./integrations/aspiregrpc
//
// BenchmarkGRPCClientRatio runs the same sides in interleaved rounds.
func BenchmarkGRPCClient(b *testing.B) {
	srv := grpctest.Start(b, "bench", nil)
	req := &echopb.EchoRequest{Message: "hello"}
	runWith := func(b *testing.B, cc *grpc.ClientConn, deadline time.Duration) {
		c := echopb.NewEchoClient(cc)
		ctx := context.Background()
		if _, err := c.Get(ctx, req); err != nil { // connect outside the loop
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			ctx, cancel := ctx, context.CancelFunc(func() {})
			if deadline > 0 {
				ctx, cancel = context.WithTimeout(ctx, deadline)
			}
			_, err := c.Get(ctx, req)
			cancel()
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	run := func(b *testing.B, cc *grpc.ClientConn) { runWith(b, cc, 0) }
	bare := func(b *testing.B, opts ...grpc.DialOption) *grpc.ClientConn {
		cc, err := grpc.NewClient(srv.Addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cc.Close() })
		return cc
	}
	newApp := func(b *testing.B) *servicedefaultstest.App {
		return servicedefaultstest.NewUnstarted(b, nil, map[string]string{"services__echo__grpc__0": "http://" + srv.Addr},
			servicedefaults.WithLogWriter(io.Discard))
	}
	client := func(b *testing.B, h servicedefaults.Host) *grpc.ClientConn {
		cc, err := aspiregrpc.Client(context.Background(), h, "echo")
		if err != nil {
			b.Fatal(err)
		}
		return cc
	}

	b.Run("off/bare", func(b *testing.B) { run(b, bare(b)) })
	b.Run("off/bare-deadline", func(b *testing.B) { runWith(b, bare(b), 30*time.Second) })
	b.Run("off/app", func(b *testing.B) { run(b, client(b, newApp(b))) })
	b.Run("sdk/otelgrpc", func(b *testing.B) {
		tp, mp := benchSDK(b)
		run(b, bare(b, grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelgrpc.WithTracerProvider(tp), otelgrpc.WithMeterProvider(mp)))))
	})
	b.Run("sdk/app", func(b *testing.B) {
		tp, mp := benchSDK(b)
		run(b, client(b, sdkHost{newApp(b).App, tp, mp}))
	})
}
