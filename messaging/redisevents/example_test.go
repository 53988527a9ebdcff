package redisevents_test

import (
	"context"
	"log"

	"github.com/redis/go-redis/v9"

	"github.com/goaspire/goaspire/messaging/redisevents"
)

func ExampleSubscribe() {
	ctx := context.Background()
	// In a service: rdb, err := app.Redis("cache").
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer rdb.Close()

	// Subscribe returns once Redis confirmed the subscription; run it in
	// an App.Go worker so a Redis outage at start is retried.
	sub, err := redisevents.Subscribe(ctx, rdb, func(ctx context.Context, ev redisevents.Event) error {
		log.Printf("event on %s: %s", ev.Channel, ev.Data)
		return nil
	}, []string{"events"})
	if err != nil {
		log.Print(err)
		return
	}
	defer sub.Close()

	if _, err := redisevents.Publish(ctx, rdb, "events", []byte("user.created:123")); err != nil {
		log.Print(err)
	}
}
