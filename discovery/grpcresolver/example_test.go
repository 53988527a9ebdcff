package grpcresolver_test

import (
	"fmt"
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

// Lookup shows which instances a gRPC client of a service would use: here
// from configuration built by hand rather than from the environment.
func ExampleLookup() {
	cfg := discovery.FromMap(map[string]string{
		"services__users__http__0": "http://localhost:5100",
		"services__users__grpc__0": "http://localhost:5101",
		"services__users__grpc__1": "http://localhost:5102",
	})
	eps, err := grpcresolver.Lookup(discovery.NewResolver(cfg), "users")
	if err != nil {
		log.Fatal(err)
	}
	for _, ep := range eps {
		fmt.Println(ep.Scheme, ep.Host, ep.Source)
	}
	// Output:
	// http localhost:5101 services:users:grpc:0
	// http localhost:5102 services:users:grpc:1
}
