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
