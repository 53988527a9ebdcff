// Command catalog is the example product catalog: an HTTP API over
// Postgres (writes to the primary, reads from replicas) behind a two-tier
// cache (in-process L1 over Redis L2), set up by goaspire the way an Aspire
// .NET service is set up by AddServiceDefaults.
//
// It expects what an Aspire AppHost injects:
//
//	ConnectionStrings__db-primary, ConnectionStrings__db-replica-*  (or DB_PRIMARY_URI, ...)
//	ConnectionStrings__cache                                         (or CACHE_URI, ...)
//	PORT                                                             (WithHttpEndpoint(env: "PORT"))
//	OTEL_EXPORTER_OTLP_ENDPOINT and friends                          (optional)
//
// Endpoints:
//
//	GET  /products/{id}   through the cache, then a read replica
//	PUT  /products/{id}   the primary, then invalidates both cache tiers and every instance's L1
//	POST /orders          a transaction on the primary; honours Idempotency-Key
//	GET  /stats           cache tiers, replica rotation and the events received, for the demo
//	GET  /health, /alive  probes
//
// It subscribes to the Redis channel "events" and counts what is published
// there, by Go services (goaspire's envelope) or others (a Python
// service's r.publish('events', 'user.created:123'), received as is).
package main

import (
	"context"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"

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
	mux := http.NewServeMux()
	app, err := servicedefaults.Add(ctx, mux)
	if err != nil {
		return err
	}
	defer app.Shutdown(context.Background())

	svc, err := newService(ctx, app)
	if err != nil {
		return err
	}
	svc.routes(mux)
	return app.Run(ctx)
}
