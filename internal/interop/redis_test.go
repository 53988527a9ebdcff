package interop_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"testing"
	"time"

	"github.com/goaspire/goaspire/integrations/aspireredis"
	"github.com/goaspire/goaspire/messaging/redisevents"
	"github.com/goaspire/goaspire/servicedefaults/servicedefaultstest"
	"github.com/goaspire/goaspire/testserver"
)

// payloads are what the Python side publishes or receives: the patterns'
// event, JSON objects of other services that look like goaspire's
// envelope, text that is not ASCII, bytes that are not UTF-8.
var payloads = []string{
	"user.created:123",
	`{"user":123}`,
	`{"envelope":"goaspire.v1","data":"x","user":123}`,
	`{"Envelope":"goaspire.v1","Data":"x"}`,
	`{"envelope":"goaspire.v1"}`,
	"café ✓",
	"\xff\xfe",
}

// redisApp opens the App's Redis client as a Go service does from
// ConnectionStrings__cache; the Python scripts read CACHE_URI, both as an
// Aspire 13 AppHost injects them.
func redisApp(t *testing.T) (*servicedefaultstest.App, []string, *testserver.Redis) {
	srv := testserver.NewRedis(t)
	app := servicedefaultstest.NewUnstarted(t, nil, map[string]string{"ConnectionStrings:cache": srv.ConnectionString()})
	return app, []string{"CACHE_URI=" + srv.URL()}, srv
}

// TestRedisPythonPublisherToGoSubscriber: redis-py's
// publish('events', 'user.created:123') (and the other payloads) reaches a
// redisevents subscriber as exactly those bytes, not taken for an envelope.
func TestRedisPythonPublisherToGoSubscriber(t *testing.T) {
	python(t)
	app, env, _ := redisApp(t)
	ctx := context.Background()
	rdb, err := aspireredis.Client(ctx, app, "cache")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan redisevents.Event, len(payloads))
	sub, err := redisevents.Subscribe(ctx, rdb, func(_ context.Context, ev redisevents.Event) error {
		got <- ev
		return nil
	}, []string{"events"})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	lines := run(t, env, "redis_publisher.py", append([]string{"events"}, payloads...)...)
	for _, l := range lines {
		if l != "PUBLISHED 1" {
			t.Fatalf("publisher: %q, want one receiver per message", lines)
		}
	}
	for _, want := range payloads {
		select {
		case ev := <-got:
			if string(ev.Data) != want || ev.Enveloped || ev.Channel != "events" {
				t.Errorf("got %q (enveloped %v) on %q, want %q as published", ev.Data, ev.Enveloped, ev.Channel, want)
			}
		case <-time.After(time.Minute):
			t.Fatalf("no event for %q", want)
		}
	}
}

// TestRedisGoPublisherToPythonSubscriber: with WithRawPayload a redis-py
// subscriber gets exactly the published bytes; without it, the default,
// it gets the JSON envelope, whose "data" member holds the payload.
func TestRedisGoPublisherToPythonSubscriber(t *testing.T) {
	python(t)
	app, env, _ := redisApp(t)
	ctx := context.Background()
	rdb, err := aspireredis.Client(ctx, app, "cache")
	if err != nil {
		t.Fatal(err)
	}
	sub := startScript(t, env, "redis_subscriber.py", "events", "8")
	sub.Line("READY")
	for _, p := range payloads {
		if n, err := redisevents.Publish(ctx, rdb, "events", []byte(p), redisevents.WithRawPayload()); err != nil || n != 1 {
			t.Fatalf("Publish(raw %q) = %d, %v", p, n, err)
		}
		got, err := hex.DecodeString(sub.Line("MSG "))
		if err != nil || string(got) != p {
			t.Errorf("Python subscriber got %q, want %q exactly", got, p)
		}
	}
	if _, err := redisevents.Publish(ctx, rdb, "events", []byte("user.created:123")); err != nil {
		t.Fatal(err)
	}
	raw, err := hex.DecodeString(sub.Line("MSG "))
	if err != nil {
		t.Fatal(err)
	}
	var env1 struct {
		Envelope string            `json:"envelope"`
		Data     string            `json:"data"`
		Headers  map[string]string `json:"headers"`
	}
	if err := json.Unmarshal(raw, &env1); err != nil || env1.Envelope != redisevents.EnvelopeVersion || env1.Data != "user.created:123" {
		t.Errorf("default Publish: Python got %s, want the envelope of user.created:123", raw)
	}
	sub.Wait()
}
