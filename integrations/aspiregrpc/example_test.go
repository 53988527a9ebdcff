package aspiregrpc_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/integrations/aspiregrpc"
	"github.com/goaspire/goaspire/servicedefaults"
)

// A service serving gRPC: services registered on the App's gRPC server are
// served by App.Run, on the HTTP port unless GRPC_PORT names one of their
// own; another service calls it by name.
func ExampleServer() {
	ctx := context.Background()
	app, err := servicedefaults.Add(ctx, nil,
		servicedefaults.WithConfig(discovery.FromMap(nil)), servicedefaults.WithLogWriter(io.Discard))
	if err != nil {
		log.Fatal(err)
	}
	gs, err := aspiregrpc.Server(app)
	if err != nil {
		log.Fatal(err)
	}
	_ = gs // userspb.RegisterUserServiceServer(gs, &server{}) ...; grpc.health.v1 is built in

	ln, err := net.Listen("tcp", "127.0.0.1:0") // app.Run(ctx) in a real service
	if err != nil {
		log.Fatal(err)
	}
	go app.Serve(ctx, ln)

	// Another service calls it by name; the AppHost injects where it is.
	caller, err := servicedefaults.Add(ctx, nil, servicedefaults.WithLogWriter(io.Discard),
		servicedefaults.WithConfig(discovery.FromMap(map[string]string{
			"services__users__grpc__0": "http://" + ln.Addr().String(),
		})))
	if err != nil {
		log.Fatal(err)
	}
	conn, err := aspiregrpc.Client(ctx, caller, "users")
	if err != nil {
		log.Fatal(err)
	}
	// userspb.NewUserServiceClient(conn) ...
	rep, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(rep.GetStatus())

	caller.Shutdown(ctx)
	app.Shutdown(ctx)
	// Output: SERVING
}

// A client whose settings are adjusted in code after they were read from
// the configuration: a shorter total timeout, and a dial option of the
// caller's.
func ExampleClient() {
	ctx := context.Background()
	app, err := servicedefaults.Add(ctx, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer app.Shutdown(ctx)

	conn, err := aspiregrpc.Client(ctx, app, "users", func(s *aspiregrpc.ClientSettings) {
		s.TotalRequestTimeout = 5 * time.Second
		s.DialOptions = append(s.DialOptions, grpc.WithUserAgent("orders/1.0"))
	})
	if err != nil {
		log.Fatal(err)
	}
	_ = conn // userspb.NewUserServiceClient(conn) ...
}
