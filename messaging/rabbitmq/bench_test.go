package rabbitmq

import (
	"context"
	"sync/atomic"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
)

// BenchmarkPublishConfirmed compares a confirmed, persistent publish
// through the Client with the same through bare amqp091-go (one shared
// channel in confirm mode, waiting for each message's deferred confirm),
// with one publisher and with several in parallel. Run with -count to
// interleave the sides.
func BenchmarkPublishConfirmed(b *testing.B) {
	ctx := context.Background()
	c := newClient(b)
	q := queueName(b, "bench")
	if err := c.DeclareQueue(ctx, Queue{Name: q}); err != nil {
		b.Fatal(err)
	}
	ch := bare(b)
	if err := ch.Confirm(false); err != nil {
		b.Fatal(err)
	}
	body := make([]byte, 256)
	purge := func(b *testing.B) {
		b.StopTimer()
		if _, err := ch.QueuePurge(q, false); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	bareOne := func(b *testing.B) {
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", q, true, false,
			amqp.Publishing{Body: body, DeliveryMode: amqp.Persistent, Headers: amqp.Table{}})
		if err != nil {
			b.Fatal(err)
		}
		if ok, err := dc.WaitContext(ctx); !ok || err != nil {
			b.Fatal("not confirmed", err)
		}
	}
	clientOne := func(b *testing.B) {
		if err := c.Publish(ctx, "", q, Message{Body: body}); err != nil {
			b.Fatal(err)
		}
	}
	// Rounds interleave the sides: -count would run each side's rounds
	// back to back, and the machine's load drifts.
	for range 3 {
		for _, mode := range []struct {
			name     string
			parallel int
		}{{"serial", 0}, {"parallel16", 16}} {
			benchPublishSides(b, mode.name, mode.parallel, bareOne, clientOne, purge)
		}
	}
}

func benchPublishSides(b *testing.B, mode string, parallel int, bareOne, clientOne func(*testing.B), purge func(*testing.B)) {
	for _, side := range []struct {
		name string
		one  func(*testing.B)
	}{{"amqp091", bareOne}, {"client", clientOne}} {
		b.Run(mode+"/"+side.name, func(b *testing.B) {
			b.ReportAllocs()
			defer purge(b)
			if parallel == 0 {
				for b.Loop() {
					side.one(b)
				}
				return
			}
			b.SetParallelism(parallel)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					side.one(b)
				}
			})
		})
	}
}

// BenchmarkConsume measures the per-message cost of consuming through the
// Client (handler call, span and metrics, ack) against a bare amqp091-go
// consume-and-ack loop on the same prefilled queue.
func BenchmarkConsume(b *testing.B) {
	ctx := context.Background()
	c := newClient(b)
	ch := bare(b)
	body := make([]byte, 256)
	fill := func(b *testing.B, q string, n int) {
		b.Helper()
		if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
			b.Fatal(err)
		}
		for range n {
			if err := ch.PublishWithContext(ctx, "", q, false, false, amqp.Publishing{Body: body}); err != nil {
				b.Fatal(err)
			}
		}
		// Wait until the broker holds them all.
		for {
			qi, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
			if err != nil {
				b.Fatal(err)
			}
			if qi.Messages >= n {
				return
			}
		}
	}
	b.Run("amqp091", func(b *testing.B) {
		q := queueName(b, "bench")
		fill(b, q, b.N)
		conn, err := amqp.Dial(needBroker(b).URL())
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		cch, err := conn.Channel()
		if err != nil {
			b.Fatal(err)
		}
		if err := cch.Qos(20, 0, false); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		deliveries, err := cch.Consume(q, "", false, false, false, false, nil)
		if err != nil {
			b.Fatal(err)
		}
		for range b.N {
			d := <-deliveries
			if err := d.Ack(false); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("client", func(b *testing.B) {
		q := queueName(b, "bench")
		fill(b, q, b.N)
		var n atomic.Int64
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		b.ReportAllocs()
		b.ResetTimer()
		go func() {
			defer close(done)
			_ = c.Consume(cctx, q, ConsumeOptions{Prefetch: 20}, func(context.Context, Delivery) error {
				if n.Add(1) == int64(b.N) {
					cancel()
				}
				return nil
			})
		}()
		<-done
		b.StopTimer()
		cancel()
	})
}
