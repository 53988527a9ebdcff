// Command jobs is the asynchronous-processing example of Aspire's production patterns: an API that
// accepts jobs and answers at once, and workers that process them from a
// RabbitMQ queue and record the results in Postgres. One binary plays
// either role, chosen by JOBS_ROLE, as two resources of an AppHost would.
//
// It expects what an Aspire AppHost injects:
//
//	ConnectionStrings__messaging   amqp://user:password@host:port/  (or MESSAGING_URI, ...)
//	ConnectionStrings__db          the Postgres database            (or DB_URI, ...)
//	PORT                           (WithHttpEndpoint(env: "PORT"))
//	JOBS_ROLE                      "api" (the default) or "worker"
//	JOBS_WORK_DELAY                how long one job takes, as a Go duration (default 20ms)
//	OTEL_EXPORTER_OTLP_ENDPOINT and friends (optional)
//
// API endpoints:
//
//	POST /process       {"input": n} → 202 Accepted, Location: /jobs/{id}
//	GET  /jobs/{id}     the job: queued, or done with its result
//	GET  /jobs/summary  counts, for the demo: jobs, done, effects applied
//
// Workers consume the "jobs" queue (failed jobs are retried, then moved to
// "jobs-dead") and serve only /health, /alive and GET /stats.
//
// Processing is idempotent by job id: a job delivered twice (after a worker
// died before acknowledging it, or a publish repeated across a broker
// restart) takes effect once, in the transaction that records its result.
package main

import (
	"context"
	"fmt"
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
	switch role := os.Getenv("JOBS_ROLE"); role {
	case "", "api":
		svc.apiRoutes(mux)
	case "worker":
		svc.startWorker(mux)
	default:
		return fmt.Errorf("JOBS_ROLE=%q: want api or worker", role)
	}
	return app.Run(ctx)
}
