package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/internal/poll"
	"github.com/goaspire/goaspire/testserver"
)

// proxied connects a Client to the shared node through a fault proxy. The
// proxy heals before the client closes (cleanups run last-in first-out),
// so Close does not wait on a silent network.
func proxied(t *testing.T, modify ...func(*Config)) (*Client, *testserver.FaultProxy) {
	t.Helper()
	b := needBroker(t)
	p := testserver.NewFaultProxy(t, b.Addr())
	u := strings.Replace(b.URL(), b.Addr(), p.Addr(), 1)
	c := newClient(t, append([]func(*Config){func(cfg *Config) { cfg.URL = u }}, modify...)...)
	t.Cleanup(p.Heal)
	return c, p
}

// TestPublishWithoutDeadlineEndsAtConfirmTimeout: with the broker silent,
// a Publish whose context has no deadline fails at PublishConfirmTimeout
// with ErrConfirmTimeout, and every message confirmed before is kept.
func TestPublishWithoutDeadlineEndsAtConfirmTimeout(t *testing.T) {
	const confirmTimeout = time.Second
	c, p := proxied(t, func(cfg *Config) { cfg.PublishConfirmTimeout = confirmTimeout })
	q := queueName(t, "q")
	if err := c.DeclareQueue(t.Context(), Queue{Name: q}); err != nil {
		t.Fatal(err)
	}
	const before = 20
	for i := range before {
		if err := c.Publish(context.Background(), "", q, Message{Body: []byte(fmt.Sprint(i))}); err != nil {
			t.Fatalf("publish %d before the partition: %v", i, err)
		}
	}

	p.Set(testserver.Silent)
	start := time.Now()
	err := c.Publish(context.Background(), "", q, Message{Body: []byte("during")})
	took := time.Since(start)
	t.Logf("Publish with the broker silent: %v after %v", err, took)
	if !errors.Is(err, ErrConfirmTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want ErrConfirmTimeout and context.DeadlineExceeded", err)
	}
	if !strings.Contains(err.Error(), "PublishConfirmTimeout") {
		t.Errorf("error does not name the setting: %v", err)
	}
	if took > confirmTimeout+1500*time.Millisecond {
		t.Fatalf("Publish returned after %v, want about the %v confirm timeout", took, confirmTimeout)
	}

	// Nothing that returned nil is lost.
	p.Heal()
	ch := bare(t)
	poll.Until(t, 30*time.Second, "the confirmed messages in the queue", func() bool {
		qi, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		return qi.Messages >= before
	})
}

// TestHealthUnhealthyWithinTenSecondsOfSilence: with every default
// (DefaultHeartbeat, the handler's defaults), /health stops answering
// Healthy within 10 s of the broker going silent.
func TestHealthUnhealthyWithinTenSecondsOfSilence(t *testing.T) {
	c, p := proxied(t, func(cfg *Config) { cfg.Heartbeat = 0 })
	r := health.NewRegistry()
	if err := r.Register(c.HealthCheck()); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(r.Handler(health.HandlerOptions{}))
	t.Cleanup(srv.Close)
	probe := func() int {
		resp, err := http.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := probe(); code != 200 {
		t.Fatalf("before the partition: %d", code)
	}

	p.Set(testserver.Silent)
	start := time.Now()
	poll.Until(t, 30*time.Second, "/health to turn Unhealthy", func() bool { return probe() == 503 })
	took := time.Since(start)
	t.Logf("/health Unhealthy %v after the broker went silent", took)
	if took > 10*time.Second {
		t.Fatalf("/health turned Unhealthy after %v, want within 10s", took)
	}
}

// TestDefaultsNoticeSilenceInTime checks the arithmetic the 10 s bar rests
// on: amqp091-go closes a connection after 1.5 heartbeats of silence, and
// a probe answers within the handler's ResponseTimeout.
func TestDefaultsNoticeSilenceInTime(t *testing.T) {
	if d := DefaultHeartbeat*3/2 + health.DefaultResponseTimeout; d > 7*time.Second {
		t.Fatalf("a silent broker is noticed after up to %v with the defaults, want ≤ 7s (bar: 10s)", d)
	}
	if DefaultPublishConfirmTimeout <= 0 || DefaultPublishConfirmTimeout > 30*time.Second {
		t.Fatalf("DefaultPublishConfirmTimeout = %v, want (0, 30s]", DefaultPublishConfirmTimeout)
	}
}

func TestLoadConfigPartitionSettings(t *testing.T) {
	base := map[string]string{"ConnectionStrings:mq": "amqp://rabbit"}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	for _, tc := range []struct {
		name          string
		values        map[string]string
		wantHeartbeat time.Duration
		wantConfirm   time.Duration
		wantKey       string // an error naming it
	}{
		{name: "defaults", values: with()},
		{name: "general", values: with("Aspire:RabbitMQ:Client:ConnectionFactory:RequestedHeartbeat", "00:00:05", "Aspire:RabbitMQ:Client:PublishConfirmTimeout", "3s"),
			wantHeartbeat: 5 * time.Second, wantConfirm: 3 * time.Second},
		{name: "named wins", values: with("Aspire:RabbitMQ:Client:PublishConfirmTimeout", "3s", "Aspire:RabbitMQ:Client:mq:PublishConfirmTimeout", "7s",
			"Aspire:RabbitMQ:Client:mq:ConnectionFactory:RequestedHeartbeat", "2s"),
			wantHeartbeat: 2 * time.Second, wantConfirm: 7 * time.Second},
		{name: "bad confirm timeout", values: with("Aspire:RabbitMQ:Client:mq:PublishConfirmTimeout", "0"), wantKey: "Aspire:RabbitMQ:Client:mq:PublishConfirmTimeout"},
		{name: "unparsable confirm timeout", values: with("Aspire:RabbitMQ:Client:PublishConfirmTimeout", "soon"), wantKey: "Aspire:RabbitMQ:Client:PublishConfirmTimeout"},
		{name: "sub-second heartbeat", values: with("Aspire:RabbitMQ:Client:ConnectionFactory:RequestedHeartbeat", "500ms"), wantKey: "Aspire:RabbitMQ:Client:ConnectionFactory:RequestedHeartbeat"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := LoadConfig(discovery.FromMap(tc.values), "mq")
			if tc.wantKey != "" {
				var ke *discovery.KeyError
				if !errors.As(err, &ke) || !strings.Contains(err.Error(), tc.wantKey) {
					t.Fatalf("err = %v, want a KeyError naming %s", err, tc.wantKey)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Heartbeat != tc.wantHeartbeat || c.PublishConfirmTimeout != tc.wantConfirm {
				t.Fatalf("Heartbeat %v, PublishConfirmTimeout %v; want %v, %v", c.Heartbeat, c.PublishConfirmTimeout, tc.wantHeartbeat, tc.wantConfirm)
			}
		})
	}
}

// TestPublishUnderSilenceDoesNotFreeze: large messages fill the socket
// buffers towards a silent broker, so a write blocks. Every Publish still
// ends (those waiting to send at their deadline, the one writing once its
// write has made no progress for 1.5 heartbeats), the connection is
// reported lost, and once the network heals the client publishes again.
func TestPublishUnderSilenceDoesNotFreeze(t *testing.T) {
	const heartbeat = 2 * time.Second // newClient's
	c, p := proxied(t, func(cfg *Config) { cfg.Heartbeat = heartbeat })
	q := queueName(t, "q")
	if err := c.DeclareQueue(t.Context(), Queue{Name: q, Transient: true}); err != nil {
		t.Fatal(err)
	}
	p.Set(testserver.Silent)
	body := make([]byte, 4<<20)
	const publishers, deadline = 16, time.Second
	took := make(chan time.Duration, publishers)
	for range publishers {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			start := time.Now()
			if err := c.Publish(ctx, "", q, Message{Body: body}); err == nil {
				t.Error("a Publish to a silent broker returned nil")
			}
			took <- time.Since(start)
		}()
	}
	var worst time.Duration
	watchdog := time.After(60 * time.Second)
	for range publishers {
		select {
		case d := <-took:
			worst = max(worst, d)
		case <-watchdog:
			t.Fatalf("Publish calls still blocked after 60s: the client froze")
		}
	}
	t.Logf("worst Publish with a 1s deadline and full socket buffers: %v", worst)
	if bound := deadline + heartbeat*3/2 + 2*time.Second; worst > bound {
		t.Fatalf("a Publish took %v, want ≤ %v (deadline + 1.5 heartbeats + margin)", worst, bound)
	}
	poll.Until(t, 30*time.Second, "the connection reported lost", func() bool { return !c.Connected() })

	p.Heal()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := c.Publish(ctx, "", q, Message{Body: []byte("after")}); err != nil {
		t.Fatalf("Publish after healing: %v", err)
	}
}

// TestCloseDuringPartition: Close returns promptly while the client is
// reconnecting to a broker that accepts connections and never answers
// (the handshake would wait for its 30 s deadline; a dial to a silent
// one, for its 30 s timeout: both end with Close).
func TestCloseDuringPartition(t *testing.T) {
	c, p := proxied(t)
	p.Set(testserver.Blackhole)
	poll.Until(t, 30*time.Second, "the connection reported lost", func() bool { return !c.Connected() })
	// The stalled old connection and the new one, whose handshake hangs.
	poll.Until(t, 30*time.Second, "a reconnect in progress", func() bool { return p.Conns() >= 2 })
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- c.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(40 * time.Second):
		t.Fatal("Close still blocked after 40s")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("Close took %v during a partition, want < 2s", took)
	}
}
