package testserver

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
)

func TestRabbitMQ(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	r, err := StartRabbitMQ(ctx)
	if errors.Is(err, ErrBinaryNotFound) && os.Getenv("CI") == "" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	if got, want := r.URL(), fmt.Sprintf("amqp://goaspire:%s@127.0.0.1:%d/", r.Password(), r.Port()); got != want {
		t.Errorf("URL() = %q, want %q", got, want)
	}
	if r.Port() == 5672 {
		t.Errorf("node listens on the standard port")
	}
	for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
		if s := fmt.Sprintf(format, r); strings.Contains(s, r.Password()) {
			t.Errorf("Sprintf(%q) reveals the password: %s", format, s)
		}
	}

	// A confirmed persistent message in a durable queue survives a clean
	// stop and a crash; Start brings the node back on the same port. The
	// clean stop comes first: RabbitMQ writes its metadata (the queue's
	// declaration) to disk lazily, so a queue declared moments before a
	// SIGKILL can be lost with its messages, confirmed or not.
	publish := func(body string) {
		t.Helper()
		conn, err := amqp.Dial(r.URL())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ch.QueueDeclare("q", true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		if err := ch.Confirm(false); err != nil {
			t.Fatal(err)
		}
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", "q", false, false,
			amqp.Publishing{Body: []byte(body), DeliveryMode: amqp.Persistent})
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := dc.WaitContext(ctx); !ok || err != nil {
			t.Fatalf("publish not confirmed: %v %v", ok, err)
		}
	}
	get := func() string {
		t.Helper()
		conn, err := amqp.Dial(r.URL())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		d, ok, err := ch.Get("q", true)
		if err != nil || !ok {
			t.Fatalf("get: ok=%v err=%v", ok, err)
		}
		return string(d.Body)
	}
	for _, tc := range []struct {
		name string
		down func() error
	}{
		{"stop", func() error { return r.Stop(ctx) }},
		{"kill", r.Kill},
	} {
		publish(tc.name)
		if err := tc.down(); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if _, err := amqp.Dial(r.URL()); err == nil {
			t.Fatalf("%s: node still answers", tc.name)
		}
		if err := r.Start(ctx); err != nil {
			t.Fatalf("start after %s: %v", tc.name, err)
		}
		if got := get(); got != tc.name {
			t.Errorf("after %s: got message %q", tc.name, got)
		}
	}
	if err := r.Start(ctx); err == nil {
		t.Error("Start of a running node succeeded")
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(r.dir); !os.IsNotExist(err) {
		t.Errorf("temporary directory left behind: %v", err)
	}
}
