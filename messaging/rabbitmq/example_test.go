package rabbitmq_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"strings"
	"time"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/messaging/rabbitmq"
)

// Parse the configuration an AppHost injects, then connect.
func ExampleNew() {
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

// LoadConfig reads the connection and the Aspire:RabbitMQ:Client
// settings; the result can be adjusted, or built by hand, before New.
func ExampleLoadConfig() {
	cfg := discovery.FromMap(map[string]string{
		"ConnectionStrings__messaging":                        "amqp://app:s3cret@rabbit:5672/shop",
		"Aspire__RabbitMQ__Client__MaxConnectRetryCount":      "2",
		"Aspire__RabbitMQ__Client__messaging__DisableTracing": "true",
	})
	rc, err := rabbitmq.LoadConfig(cfg, "messaging")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(rc) // the password is masked
	rc.Heartbeat = 5 * time.Second

	// A bad key is a *discovery.KeyError naming it, without the password.
	_, err = rabbitmq.LoadConfig(discovery.FromMap(map[string]string{
		"ConnectionStrings__messaging": "http://app:s3cret@rabbit:5672/",
	}), "messaging")
	var keyErr *discovery.KeyError
	if errors.As(err, &keyErr) {
		fmt.Println(keyErr.Key, errors.Is(err, rabbitmq.ErrConnectionString), strings.Contains(err.Error(), "s3cret"))
	}
	// Output:
	// rabbitmq.Config{Name: "messaging", URL: "amqp://app:***@rabbit:5672/shop", MaxConnectRetryCount: 2, DisableHealthChecks: false, DisableTracing: true}
	// ConnectionStrings:messaging true false
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

// A handler marks the failures no retry can fix with Permanent: the
// delivery goes to the dead-letter queue at once. IsPermanent tells them
// apart, through any wrapping.
func ExampleIsPermanent() {
	validate := func(body []byte) error {
		if len(body) == 0 {
			return rabbitmq.Permanent(errors.New("empty job"))
		}
		return nil
	}
	err := fmt.Errorf("job 42: %w", validate(nil))
	fmt.Println(err)
	fmt.Println(rabbitmq.IsPermanent(err))

	var perm *rabbitmq.PermanentError
	if errors.As(err, &perm) {
		fmt.Println("cause:", perm.Err)
	}
	fmt.Println(rabbitmq.IsPermanent(errors.New("connection reset")))
	// Output:
	// job 42: empty job
	// true
	// cause: empty job
	// false
}

// A Go worker consumes the "tasks" queue a Python producer declares with
// pika's channel.queue_declare('tasks'), non-durable: declaring it durable
// (the zero Queue) would be refused with PRECONDITION_FAILED, so the worker
// uses it as it is.
func ExampleClient_DeclareQueue_passive() {
	ctx := context.Background()
	mq, err := rabbitmq.New(ctx, &rabbitmq.Config{URL: "amqp://guest:guest@localhost:5672/"})
	if err != nil {
		log.Fatal(err)
	}
	defer mq.Close()

	err = mq.DeclareQueue(ctx, rabbitmq.Queue{Name: "tasks", Passive: true})
	if errors.Is(err, rabbitmq.ErrQueueNotFound) {
		log.Print("the producer has not declared tasks yet; retry later")
		return
	}
	if err != nil {
		log.Fatal(err)
	}
	err = mq.Consume(ctx, "tasks", rabbitmq.ConsumeOptions{}, func(ctx context.Context, d rabbitmq.Delivery) error {
		log.Printf("task %s", d.Body)
		return nil
	})
	if err != nil {
		log.Print(err)
	}
}
