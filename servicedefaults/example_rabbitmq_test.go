package servicedefaults_test

import (
	"context"
	"log"
	"net/http"

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
func ExampleApp_RabbitMQ() {
	ctx := context.Background()
	mux := http.NewServeMux()
	app, err := servicedefaults.Add(ctx, mux)
	if err != nil {
		log.Fatal(err)
	}
	defer app.Shutdown(context.Background())

	mq, err := app.RabbitMQ("messaging")
	if err != nil {
		log.Fatal(err) // names the key at fault, never the password
	}
	if err := mq.DeclareQueue(ctx, rabbitmq.Queue{Name: "jobs", DeadLetterQueue: "jobs-dead"}); err != nil {
		log.Fatal(err)
	}
	app.Go("jobs", func(ctx context.Context) error {
		return rabbitmq.ConsumeJSON(ctx, mq, "jobs", rabbitmq.ConsumeOptions{Concurrency: 4},
			func(ctx context.Context, j Job, d rabbitmq.Delivery) error {
				return nil // process j idempotently (d.Attempt counts the tries)
			})
	})
	if err := app.Run(ctx); err != nil {
		log.Fatal(err)
	}
}
