package grpcresolver_test

import (
	"log"

	"google.golang.org/grpc"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/discovery/grpcresolver"
)

// A gRPC client of the "users" service, whose instances an AppHost named
// in services__users__grpc__0..N (or USERS_GRPC), balanced round-robin.
func Example() {
	cfg, err := discovery.Load()
	if err != nil {
		log.Fatal(err)
	}
	conn, err := grpc.NewClient("aspire:///users",
		grpc.WithResolvers(grpcresolver.NewBuilder(discovery.NewResolver(cfg))),
		// TLS for https endpoints, plaintext for http ones.
		grpc.WithTransportCredentials(grpcresolver.Credentials(nil)),
		grpc.WithDefaultServiceConfig(grpcresolver.RoundRobin),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	// users := userspb.NewUserServiceClient(conn) ...
}
