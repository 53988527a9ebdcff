package servicedefaults_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/goaspire/goaspire/messaging/rabbitmq"
	"github.com/goaspire/goaspire/testserver"
)

func TestRabbitMQ(t *testing.T) {
	srv := testserver.NewRabbitMQ(t)
	for _, tc := range []struct {
		name      string
		values    map[string]string
		wantCheck bool
	}{
		{"connection string", map[string]string{"ConnectionStrings__messaging": srv.URL()}, true},
		{"Aspire 13 properties, health check off", map[string]string{
			"MESSAGING_HOST": "127.0.0.1", "MESSAGING_PORT": strings.TrimPrefix(srv.Addr(), "127.0.0.1:"),
			"MESSAGING_USERNAME": srv.User(), "MESSAGING_PASSWORD": srv.Password(),
			"Aspire__RabbitMQ__Client__messaging__DisableHealthChecks": "true",
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			app, logs := newApp(t, tc.values, nil)
			mq, err := app.RabbitMQ("messaging")
			if err != nil {
				t.Fatal(err)
			}
			if again, _ := app.RabbitMQ("messaging"); again != mq {
				t.Error("second RabbitMQ(messaging) made another client")
			}
			if got := strings.Contains(checkNames(app.Health().Checks()), "rabbitmq:messaging"); got != tc.wantCheck {
				t.Errorf("health checks %q: rabbitmq check registered = %v, want %v", checkNames(app.Health().Checks()), got, tc.wantCheck)
			}
			q := strings.ReplaceAll(t.Name(), "/", "-")
			if err := mq.DeclareQueue(ctx, rabbitmq.Queue{Name: q, Transient: true}); err != nil {
				t.Fatal(err)
			}
			// A consumer run as an App worker: Shutdown stops it (its
			// in-flight message is acknowledged) before closing the client.
			started, release := make(chan struct{}), make(chan struct{})
			handled := make(chan struct{}, 1)
			app.Go("consumer", func(ctx context.Context) error {
				return mq.Consume(ctx, q, rabbitmq.ConsumeOptions{}, func(context.Context, rabbitmq.Delivery) error {
					close(started)
					<-release
					handled <- struct{}{}
					return nil
				})
			})
			if err := mq.Publish(ctx, "", q, rabbitmq.Message{Body: []byte("x")}); err != nil {
				t.Fatal(err)
			}
			<-started
			done := make(chan error, 1)
			go func() { done <- app.Shutdown(ctx) }()
			time.Sleep(50 * time.Millisecond) // let Shutdown reach the worker
			close(release)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			select {
			case <-handled:
			default:
				t.Error("Shutdown returned before the in-flight handler finished")
			}
			if err := mq.Publish(ctx, "", q, rabbitmq.Message{}); !errors.Is(err, rabbitmq.ErrClosed) {
				t.Errorf("Publish after Shutdown = %v, want ErrClosed", err)
			}
			if strings.Contains(logs.String(), srv.Password()) {
				t.Error("the App's log holds the RabbitMQ password")
			}
		})
	}
}

func TestRabbitMQErrors(t *testing.T) {
	for _, tc := range []struct {
		name, key string
		values    map[string]string
	}{
		{"bad scheme", "ConnectionStrings:messaging", map[string]string{"ConnectionStrings__messaging": "http://guest:hunter2@localhost/"}},
		{"bad setting", "Aspire:RabbitMQ:Client:MaxConnectRetryCount", map[string]string{
			"ConnectionStrings__messaging": "amqp://guest:hunter2@localhost/", "Aspire__RabbitMQ__Client__MaxConnectRetryCount": "often"}},
		{"missing", "ConnectionStrings__messaging", map[string]string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app, _ := newApp(t, tc.values, nil)
			_, err := app.RabbitMQ("messaging")
			if err == nil || !strings.Contains(err.Error(), tc.key) || strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("RabbitMQ error = %v, want one naming %s and not the password", err, tc.key)
			}
		})
	}
}
