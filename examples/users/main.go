// Command users is the example users service, the Go gRPC server of Aspire's production patterns:
// UserService.GetUser served by aspiregrpc.Server, so it gets tracing,
// panic recovery, grpc.health.v1 and a graceful stop. App.Run serves it
// on its own port when the AppHost injects one (GRPC_PORT, or
// Aspire__ServiceDefaults__Grpc__Port), else on the HTTP port (PORT)
// next to /health and /alive.
//
// Every answer carries the instance's name in the "served-by" response
// header, so a caller can see which instance answered.
package main

import (
	"context"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/goaspire/goaspire/examples/users/userspb"
	"github.com/goaspire/goaspire/integrations/aspiregrpc"
	"github.com/goaspire/goaspire/servicedefaults"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context) error {
	app, err := servicedefaults.Add(ctx, http.NewServeMux())
	if err != nil {
		return err
	}
	defer app.Shutdown(context.Background())

	gs, err := aspiregrpc.Server(app)
	if err != nil {
		return err
	}
	userspb.RegisterUserServiceServer(gs, &server{instance: instanceName(app)})
	return app.Run(ctx)
}

// instanceName is service.instance.id from OTEL_RESOURCE_ATTRIBUTES (what
// the AppHost injects), else the host name.
func instanceName(app *servicedefaults.App) string {
	for _, kv := range strings.Split(app.Config().String("OTEL_RESOURCE_ATTRIBUTES"), ",") {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.TrimSpace(k) == "service.instance.id" {
			return strings.TrimSpace(v)
		}
	}
	host, _ := os.Hostname()
	return host
}

type server struct {
	userspb.UnimplementedUserServiceServer
	instance string
}

// GetUser answers the patterns' sample user for any positive id.
func (s *server) GetUser(ctx context.Context, req *userspb.UserRequest) (*userspb.UserResponse, error) {
	_ = grpc.SetHeader(ctx, metadata.Pairs("served-by", s.instance))
	if req.GetId() <= 0 {
		return nil, status.Error(codes.InvalidArgument, "id must be positive")
	}
	return &userspb.UserResponse{Id: req.GetId(), Name: "John Doe"}, nil
}
