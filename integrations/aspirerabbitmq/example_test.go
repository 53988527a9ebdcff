package aspirerabbitmq_test

import (
	"context"
	"errors"
	"log"
	"net/http"
	"time"

	"github.com/goaspire/goaspire/integrations/aspirerabbitmq"
	"github.com/goaspire/goaspire/messaging/rabbitmq"
	"github.com/goaspire/goaspire/servicedefaults"
)

type Job struct {
	ID    string `json:"id"`
	Input int    `json:"input"`
}

// A worker service: the queue is consumed by a supervised worker, so
// Shutdown lets the jobs in hand finish and be acknowledged before it
// closes the connection. ConnectionStrings__messaging comes from the
// AppHost.
func ExampleClient() {
	ctx := context.Background()
	mux := http.NewServeMux()
	app, err := servicedefaults.Add(ctx, mux)
	if err != nil {
		log.Fatal(err)
	}
	defer app.Shutdown(context.Background())

	mq, err := aspirerabbitmq.Client(ctx, app, "messaging")
	if err != nil {
		log.Fatal(err) // names the key at fault, never the password
	}
	if err := mq.DeclareQueue(ctx, rabbitmq.Queue{Name: "jobs", DeadLetterQueue: "jobs-dead"}); err != nil {
		log.Fatal(err)
	}
	app.Go("jobs", func(ctx context.Context) error {
		return rabbitmq.ConsumeJSON(ctx, mq, "jobs", rabbitmq.ConsumeOptions{Concurrency: 4},
			func(ctx context.Context, j Job, d rabbitmq.Delivery) error {
				if j.ID == "" {
					// No attempt can fix it: to jobs-dead at once.
					return rabbitmq.Permanent(errNoID)
				}
				return nil // process j idempotently (d.Attempt counts the tries)
			})
	})
	if err := app.Run(ctx); err != nil {
		log.Fatal(err)
	}
}

// Settings the configuration does not hold, set in code: configure runs
// once, on the configuration read from the App, before the client
// connects.
func ExampleClient_configure() {
	ctx := context.Background()
	app, err := servicedefaults.Add(ctx, http.NewServeMux())
	if err != nil {
		log.Fatal(err)
	}
	defer app.Shutdown(context.Background())

	mq, err := aspirerabbitmq.Client(ctx, app, "messaging", func(c *rabbitmq.Config) {
		// A Publish without a deadline fails with ErrConfirmTimeout
		// after 5 s instead of the default 20 s.
		c.PublishConfirmTimeout = 5 * time.Second
		c.MaxReconnectDelay = 2 * time.Second
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := rabbitmq.PublishJSON(ctx, mq, "", "jobs", Job{ID: "j-1", Input: 3}, rabbitmq.Message{MessageID: "j-1"}); err != nil {
		log.Fatal(err)
	}
}

var errNoID = errors.New("job without id")
