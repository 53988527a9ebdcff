package natsmsg_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"

	"github.com/goaspire/goaspire/discovery"
	natsmsg "github.com/goaspire/goaspire/messaging/nats"
)

func ExampleLoadConfig() {
	// An AppHost injects ConnectionStrings__events; here it is given
	// explicitly. New would then connect (and keep reconnecting).
	cfg := discovery.FromMap(map[string]string{
		"ConnectionStrings:events": "nats://app:s3cret@nats-0:4222,nats://app:s3cret@nats-1:4222",
	})
	c, err := natsmsg.LoadConfig(cfg, "events")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(c) // the password is masked

	// A bad key is a *discovery.KeyError naming it, without the password.
	_, err = natsmsg.LoadConfig(discovery.FromMap(map[string]string{
		"ConnectionStrings:events": "http://app:s3cret@nats-0:4222",
	}), "events")
	var keyErr *discovery.KeyError
	if errors.As(err, &keyErr) {
		fmt.Println(keyErr.Key, strings.Contains(err.Error(), "s3cret"))
	}
	// Output:
	// nats "events" servers=nats://nats-0:4222,nats://nats-1:4222 user=app password=***
	// ConnectionStrings:events false
}

func ExampleNew() {
	// Without discovery: a Config built by hand. New returns at once and
	// connects in the background, reconnecting forever.
	nc, err := natsmsg.New(context.Background(), &natsmsg.Config{
		Name:    "events",
		Servers: []string{"nats://nats-0:4222", "nats://nats-1:4222"},
		Token:   "s3cret",
		Logger:  slog.Default(),
		Options: []nats.Option{nats.PingInterval(20 * time.Second)}, // nats.go's own, applied last
	})
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
}

func ExamplePublish() {
	ctx := context.Background()
	c := &natsmsg.Config{Name: "events", Servers: []string{"nats://127.0.0.1:4222"}}
	nc, err := natsmsg.New(ctx, c)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()

	// The consumer: each message is handled in a span of the producer's
	// trace.
	_, err = natsmsg.QueueSubscribe(ctx, nc, "orders.*", "billing", func(ctx context.Context, msg *nats.Msg) error {
		log.Printf("order event %s: %s", msg.Subject, msg.Data)
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	// The producer: the trace context of ctx travels in the headers.
	if err := natsmsg.Publish(ctx, nc, "orders.created", []byte(`{"id":42}`)); err != nil {
		log.Print(err)
	}
}

// The shared options are values of both kinds: build them once and pass
// them to either side; WithLogger goes to the subscribe side only.
func ExampleOption() {
	ctx := context.Background()
	nc, err := natsmsg.New(ctx, &natsmsg.Config{Servers: []string{"nats://127.0.0.1:4222"}})
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()

	tp := natsmsg.WithTracerProvider(otel.GetTracerProvider())
	prop := natsmsg.WithPropagator(propagation.TraceContext{})
	logger := natsmsg.WithLogger(slog.Default())

	_, err = natsmsg.Subscribe(ctx, nc, "orders.*", func(ctx context.Context, msg *nats.Msg) error {
		return nil
	}, tp, prop, logger)
	if err != nil {
		log.Fatal(err)
	}
	if err := natsmsg.Publish(ctx, nc, "orders.created", []byte(`{"id":42}`), tp, prop); err != nil {
		log.Print(err)
	}
}
