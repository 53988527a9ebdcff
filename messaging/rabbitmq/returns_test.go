package rabbitmq

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/goaspire/goaspire/testserver"
)

// TestAbandonedUnroutablePublishesDoNotStall: more unroutable (returned)
// messages than the returns buffer holds, all from publishers that gave up
// before their confirm arrived, do not stall the connection: once they
// have all come back, a routable Publish is confirmed promptly and an
// unroutable one still fails with ErrUnroutable.
//
// The network is silent while they are published, so that every publisher
// gives up (its ctx ends) before the broker has answered; the broker
// answers them all, returns and confirms, once it heals.
func TestAbandonedUnroutablePublishesDoNotStall(t *testing.T) {
	// A long heartbeat: the silence must not drop the connection, whose
	// returns are what the test is about.
	c, p := proxied(t, func(cfg *Config) { cfg.Heartbeat = 60 * time.Second; cfg.Mandatory = true })
	q := queueName(t, "q")
	if err := c.DeclareQueue(t.Context(), Queue{Name: q, Transient: true}); err != nil {
		t.Fatal(err)
	}
	nowhere := queueName(t, "nowhere") // no such queue: mandatory publishes come back

	p.Set(testserver.Silent)
	// Publish until well over returnBuffer were sent (a loaded machine
	// sends fewer per round: a publisher may give up before its turn).
	const publishers, target = 100, returnBuffer + 1000
	var sent atomic.Int64 // publishes sent, then abandoned for want of a confirm
	var wg sync.WaitGroup
	giveUp := time.Now().Add(60 * time.Second)
	for range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for sent.Load() < target && time.Now().Before(giveUp) {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
				err := c.Publish(ctx, "", nowhere, Message{Body: []byte("lost")})
				cancel()
				switch {
				case err == nil:
					t.Error("a Publish to a silent broker returned nil")
				case errorIsNotConfirmed(err):
					sent.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d unroutable publishes sent and abandoned (returns buffer: %d)", sent.Load(), returnBuffer)
	if sent.Load() <= returnBuffer {
		t.Fatalf("only %d publishes sent, want more than %d to test an overflow", sent.Load(), returnBuffer)
	}

	p.Heal()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	start := time.Now()
	err := c.Publish(ctx, "", q, Message{Body: []byte("routable")})
	took := time.Since(start)
	t.Logf("routable Publish after the returns: %v after %v", err, took)
	if err != nil {
		t.Fatalf("routable Publish after %d abandoned returns: %v after %v", sent.Load(), err, took)
	}
	// Every return and confirm of the abandoned publishes crosses the
	// healed loopback before this one's: seconds at most, even loaded.
	if took > 10*time.Second {
		t.Errorf("routable Publish took %v, want < 10s: the connection stalled", took)
	}
	if err := c.Publish(ctx, "", nowhere, Message{Body: []byte("x")}); !errors.Is(err, ErrUnroutable) {
		t.Errorf("unroutable Publish afterwards: %v, want ErrUnroutable", err)
	}
	if !c.Connected() {
		t.Error("connection lost")
	}
}

// errorIsNotConfirmed reports whether a Publish failed after sending its
// message, waiting for the confirm (rather than before sending it).
func errorIsNotConfirmed(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) && strings.Contains(err.Error(), "not confirmed")
}
