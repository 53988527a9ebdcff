package servicedefaults_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/servicedefaults"
)

// A service serving gRPC: services registered on App.GRPCServer are served
// by App.Run, on the HTTP port unless GRPC_PORT names one of their own.
func ExampleApp_GRPCServer() {
	ctx := context.Background()
	app, err := servicedefaults.Add(ctx, nil,
		servicedefaults.WithConfig(discovery.FromMap(nil)), servicedefaults.WithLogWriter(io.Discard))
	if err != nil {
		log.Fatal(err)
	}
	gs := app.GRPCServer()
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
	conn, err := caller.GRPCClient("users")
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
