package main

import (
	"context"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/goaspire/goaspire/messaging/redisevents"
	"github.com/goaspire/goaspire/servicedefaults"
)

// recentEvents is how many received events GET /stats lists.
const recentEvents = 100

// events counts what other services broadcast on the Redis channel
// "events", such as a Python service's
// redis.from_url(os.environ["CACHE_URI"]).publish("events", "user.created:123"):
// a payload that is not goaspire's envelope reaches the handler as it is.
type events struct {
	mu       sync.Mutex
	received int64
	recent   []string // the last recentEvents payloads, oldest first
}

// EventStats is the "events" part of GET /stats.
type EventStats struct {
	Received int64    `json:"received"`
	Recent   []string `json:"recent"`
}

// subscribe runs the subscription in a worker of the App, which restarts
// it with backoff while Redis cannot be reached at first; once subscribed,
// go-redis subscribes again by itself after a reconnect.
func (e *events) subscribe(app *servicedefaults.App, rdb redis.UniversalClient) {
	app.Go("events", func(ctx context.Context) error {
		sub, err := redisevents.Subscribe(ctx, rdb, e.handle, []string{"events"},
			redisevents.WithTracerProvider(app.TracerProvider()),
			redisevents.WithPropagator(app.Propagator()),
			redisevents.WithLogger(app.Logger()))
		if err != nil {
			return err
		}
		<-sub.Done()
		return ctx.Err()
	})
}

func (e *events) handle(ctx context.Context, ev redisevents.Event) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.received++
	if len(e.recent) == recentEvents {
		e.recent = append(e.recent[:0], e.recent[1:]...)
	}
	e.recent = append(e.recent, string(ev.Data))
	return nil
}

func (e *events) stats() EventStats {
	e.mu.Lock()
	defer e.mu.Unlock()
	return EventStats{Received: e.received, Recent: append([]string{}, e.recent...)}
}
