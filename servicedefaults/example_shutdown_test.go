package servicedefaults_test

import (
	"context"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/goaspire/goaspire/servicedefaults"
)

// A service behind a Kubernetes Service: on SIGTERM it keeps serving for
// 5 s with /health at 503, so the endpoints controller removes the pod
// before the drain starts. A second SIGTERM (or Ctrl-C) exits at once.
func ExampleWithShutdownDelay() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	mux := http.NewServeMux()
	app, err := servicedefaults.Add(ctx, mux, servicedefaults.WithShutdownDelay(5*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	if err := app.Run(ctx); err != nil {
		log.Print(err) // a HookTimeoutError names a client close that was abandoned
	}
}

// Opening a database that must answer within the service's start-up
// budget: with Aspire:Npgsql:ConnectRetry:WaitOnOpen set, the open waits
// for the first connection, bounded here by ctx. Other names (Redis,
// another database) open meanwhile without waiting for it.
func ExampleApp_DBContext() {
	app, err := servicedefaults.Add(context.Background(), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer app.Shutdown(context.Background())

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	db, err := app.DBContext(ctx, "db")
	if err != nil {
		log.Fatal(err) // names the connection; context.DeadlineExceeded when ctx ran out
	}
	_ = db
}
