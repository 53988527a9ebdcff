package rabbitmq

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// unreachable is a broker URL nothing listens on.
const unreachable = "amqp://guest:" + secret + "@127.0.0.1:1/"

// TestNewDoesNotWaitForTheBroker: without WaitOnOpen, New returns a Client
// for a broker that does not answer; it reports Unhealthy ("connecting",
// with the last error), a Publish fails by its ctx, a Consume waits for
// the connection until its ctx ends, and Close ends the background
// connect.
func TestNewDoesNotWaitForTheBroker(t *testing.T) {
	c, err := New(t.Context(), &Config{URL: unreachable, Name: "lazy", ReconnectDelay: 10 * time.Millisecond, MaxReconnectDelay: 50 * time.Millisecond})
	if err != nil {
		t.Fatalf("New with the broker down: %v", err)
	}
	defer c.Close()
	if c.Connected() {
		t.Fatal("connected to port 1")
	}

	// The check reports the state, and, once an attempt failed, why.
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := c.HealthCheck().Check(t.Context())
		if err == nil {
			t.Fatal("health check passes while never connected")
		}
		if !strings.Contains(err.Error(), "connecting") {
			t.Fatalf("health check error = %v, want it to say connecting", err)
		}
		if strings.Contains(err.Error(), secret) {
			t.Fatalf("health check error reveals the password: %v", err)
		}
		if strings.Contains(err.Error(), "last attempt") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("health check error = %v after 30s, want the last attempt's error", err)
		}
		time.Sleep(10 * time.Millisecond)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if err := c.Publish(ctx, "", "q", Message{Body: []byte("x")}); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "not connected") {
		t.Errorf("Publish while never connected = %v, want not connected: context.DeadlineExceeded", err)
	}
	if err := c.DeclareQueue(ctx, Queue{Name: "q"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("DeclareQueue while never connected = %v, want context.DeadlineExceeded", err)
	}
	if err := c.Consume(ctx, "q", ConsumeOptions{}, func(context.Context, Delivery) error { return nil }); err != nil {
		t.Errorf("Consume ended by its ctx while never connected = %v, want nil", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := c.Publish(t.Context(), "", "q", Message{Body: []byte("x")}); !errors.Is(err, ErrClosed) {
		t.Errorf("Publish after Close = %v, want ErrClosed", err)
	}
}

// TestNewWithoutDeadlinePublishEndsAtConfirmTimeout: a Publish without a
// deadline on a client that never connected fails at
// PublishConfirmTimeout.
func TestNewWithoutDeadlinePublishEndsAtConfirmTimeout(t *testing.T) {
	c, err := New(t.Context(), &Config{URL: unreachable, PublishConfirmTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Publish(context.Background(), "", "q", Message{Body: []byte("x")}); !errors.Is(err, ErrConfirmTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Publish = %v, want ErrConfirmTimeout and context.DeadlineExceeded", err)
	}
}

// TestWaitOnOpen: with WaitOnOpen, New waits for the broker and fails
// when it does not come: after MaxConnectRetryCount retries, or at
// WaitOnOpen, whichever comes first.
func TestWaitOnOpen(t *testing.T) {
	start := time.Now()
	_, err := New(t.Context(), &Config{URL: unreachable, WaitOnOpen: time.Minute, MaxConnectRetryCount: 2, ReconnectDelay: time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") || strings.Contains(err.Error(), secret) {
		t.Errorf("New after the retries = %v, want an error naming the host without the password", err)
	}
	if took := time.Since(start); took > 50*time.Second {
		t.Errorf("New took %v, want it to give up after 2 retries, not at WaitOnOpen", took)
	}

	_, err = New(t.Context(), &Config{URL: unreachable, WaitOnOpen: 200 * time.Millisecond, MaxConnectRetryCount: 1 << 20, ReconnectDelay: time.Millisecond, MaxReconnectDelay: 10 * time.Millisecond})
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "WaitOnOpen") || strings.Contains(err.Error(), secret) {
		t.Errorf("New past WaitOnOpen = %v, want context.DeadlineExceeded naming WaitOnOpen, without the password", err)
	}
}

// TestMandatory: a message no queue takes is dropped by the broker and
// Publish succeeds, unless the message or the client is mandatory.
func TestMandatory(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	c := newClient(t)
	ex := queueName(t, "ex")
	if err := c.DeclareExchange(ctx, Exchange{Name: ex, Kind: "fanout", Transient: true}); err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(ctx, ex, "", Message{Body: []byte("dropped")}); err != nil {
		t.Errorf("publish to an exchange without a queue = %v, want nil (not mandatory)", err)
	}
	if err := c.Publish(ctx, "", queueName(t, "nowhere"), Message{Body: []byte("dropped")}); err != nil {
		t.Errorf("publish to a missing queue = %v, want nil (not mandatory)", err)
	}
	if err := c.Publish(ctx, ex, "", Message{Body: []byte("x"), Mandatory: true}); !errors.Is(err, ErrUnroutable) {
		t.Errorf("mandatory publish to an exchange without a queue = %v, want ErrUnroutable", err)
	}

	m := newClient(t, func(cfg *Config) { cfg.Mandatory = true })
	if err := m.Publish(ctx, ex, "", Message{Body: []byte("x")}); !errors.Is(err, ErrUnroutable) {
		t.Errorf("publish on a Mandatory client to an exchange without a queue = %v, want ErrUnroutable", err)
	}

	// Bound, the exchange routes: mandatory or not, it succeeds.
	q := queueName(t, "q")
	if err := c.DeclareQueue(ctx, Queue{Name: q, Transient: true}); err != nil {
		t.Fatal(err)
	}
	if err := c.BindQueue(ctx, q, ex, "", nil); err != nil {
		t.Fatal(err)
	}
	for _, cl := range []*Client{c, m} {
		if err := cl.Publish(ctx, ex, "", Message{Body: []byte("kept"), Mandatory: true}); err != nil {
			t.Errorf("mandatory publish to a bound exchange = %v", err)
		}
	}
	if qi, err := bare(t).QueueDeclarePassive(q, false, false, false, false, nil); err != nil || qi.Messages != 2 {
		t.Errorf("queue holds %d messages (%v), want the 2 routed ones", qi.Messages, err)
	}
}
