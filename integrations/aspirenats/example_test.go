package aspirenats_test

import (
	"context"
	"io"
	"log"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/integrations/aspirenats"
	natsmsg "github.com/goaspire/goaspire/messaging/nats"
	"github.com/goaspire/goaspire/servicedefaults"
)

func ExampleConn() {
	ctx := context.Background()
	cfg := discovery.FromMap(map[string]string{"ConnectionStrings:events": "nats://127.0.0.1:4222"})
	app, err := servicedefaults.Add(ctx, nil, servicedefaults.WithConfig(cfg), servicedefaults.WithLogWriter(io.Discard))
	if err != nil {
		log.Fatal(err)
	}
	defer app.Shutdown(ctx)

	nc, err := aspirenats.Conn(ctx, app, "events") // *nats.Conn, reconnecting, health-checked
	if err != nil {
		log.Fatal(err)
	}
	// A consumer worker: it subscribes until shutdown begins; Shutdown
	// waits for it, then drains the connection.
	app.Go("order-events", func(ctx context.Context) error {
		_, err := natsmsg.Subscribe(ctx, nc, "orders.*", func(ctx context.Context, msg *nats.Msg) error {
			app.Logger().InfoContext(ctx, "order event", "subject", msg.Subject)
			return nil
		})
		if err != nil {
			return err // restarted with backoff
		}
		<-ctx.Done()
		return nil
	})
}

// nats.go options the configuration does not hold, set in code: configure
// runs once, on the configuration read from the App, before the
// connection opens; its Options are applied last.
func ExampleConn_configure() {
	ctx := context.Background()
	app, err := servicedefaults.Add(ctx, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer app.Shutdown(ctx)

	nc, err := aspirenats.Conn(ctx, app, "events", func(c *natsmsg.Config) {
		c.PingInterval = 5 * time.Second
		c.Options = append(c.Options, nats.UserCredentials("/run/secrets/events.creds"))
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := natsmsg.Publish(ctx, nc, "orders.created", []byte(`{"id":"o-1"}`)); err != nil {
		log.Fatal(err)
	}
}
