package servicedefaults_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"time"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/servicedefaults"
)

func ExampleApp_Go() {
	ctx := context.Background()
	cfg := discovery.FromMap(nil)
	app, err := servicedefaults.Add(ctx, nil, servicedefaults.WithConfig(cfg), servicedefaults.WithLogWriter(io.Discard))
	if err != nil {
		log.Fatal(err)
	}

	// An outbox relay: it runs until shutdown begins; if it fails it is
	// logged and restarted with backoff, and /alive reports it meanwhile.
	stopped := make(chan struct{})
	app.Go("outbox", func(ctx context.Context) error {
		defer close(stopped)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil // shutdown began: finish up and return
			case <-tick.C:
				// Relay pending rows; a returned error restarts the worker.
			}
		}
	}, servicedefaults.WorkerBackoff(time.Second, time.Minute))

	// app.Run(ctx) would run the workers until SIGTERM, serving /health
	// and /alive only when the configuration names a port (PORT, ...): a
	// worker has none by default. Shutdown ends the worker's context and
	// waits for it before closing clients.
	if err := app.Shutdown(ctx); err != nil {
		log.Fatal(err)
	}
	<-stopped
	fmt.Println("outbox stopped")
	// Output: outbox stopped
}
