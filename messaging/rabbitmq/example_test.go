package rabbitmq_test

import (
	"context"
	"log"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/messaging/rabbitmq"
)

// Parse the configuration an AppHost injects, then connect.
func ExampleLoadConfig() {
	cfg, err := discovery.Load() // ConnectionStrings__messaging=amqp://guest:guest@localhost:5672/
	if err != nil {
		log.Fatal(err)
	}
	rc, err := rabbitmq.LoadConfig(cfg, "messaging")
	if err != nil {
		log.Fatal(err) // names the key at fault, never the password
	}
	mq, err := rabbitmq.New(context.Background(), rc)
	if err != nil {
		log.Fatal(err)
	}
	defer mq.Close()
}

type Order struct {
	ID    string  `json:"id"`
	Total float64 `json:"total"`
}

// Publish a typed message and wait for the broker's confirm.
func ExamplePublishJSON() {
	ctx := context.Background()
	mq, err := rabbitmq.New(ctx, &rabbitmq.Config{URL: "amqp://guest:guest@localhost:5672/"})
	if err != nil {
		log.Fatal(err)
	}
	defer mq.Close()
	// Declared topology is declared again after every reconnect.
	if err := mq.DeclareQueue(ctx, rabbitmq.Queue{Name: "orders", DeadLetterQueue: "orders-dead"}); err != nil {
		log.Fatal(err)
	}
	o := Order{ID: "o-1", Total: 42}
	if err := rabbitmq.PublishJSON(ctx, mq, "", "orders", o, rabbitmq.Message{MessageID: o.ID}); err != nil {
		log.Fatal(err) // not confirmed before ctx ended, or unroutable
	}
}

// Consume until ctx ends; cancelling it lets the handlers in flight finish
// and be acknowledged.
func ExampleConsumeJSON() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mq, err := rabbitmq.New(ctx, &rabbitmq.Config{URL: "amqp://guest:guest@localhost:5672/"})
	if err != nil {
		log.Fatal(err)
	}
	defer mq.Close()
	err = rabbitmq.ConsumeJSON(ctx, mq, "orders", rabbitmq.ConsumeOptions{Concurrency: 4, MaxAttempts: 5},
		func(ctx context.Context, o Order, d rabbitmq.Delivery) error {
			log.Printf("order %s (attempt %d)", o.ID, d.Attempt)
			return nil // ack; an error is retried, then dead-lettered
		})
	if err != nil {
		log.Fatal(err)
	}
}
