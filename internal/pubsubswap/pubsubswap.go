// Package pubsubswap moves a Redis subscription to a new connection
// without losing or repeating a message: the make-before-break handover
// that keeps pub/sub connections on current credentials when the client's
// credentials rotate (go-redis re-authenticates pooled connections only).
//
// Redis runs commands one at a time and writes a published message to
// every subscriber in that same order. So the old and the new connection
// are both subscribed to a private marker channel, the new one to every
// channel (or pattern) of the old one as well, and once the server counts
// both on the marker, one marker message is published. Everything
// published before the marker reaches the old connection before the
// marker, everything after it the new one after the marker: the reader
// delivers from the old connection until it reads the marker, then closes
// it and delivers from the new one what follows its marker.
package pubsubswap

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/goaspire/goaspire/internal/fallback"
)

// MarkerPrefix starts the name of every marker channel; readers skip the
// messages of such channels (a pattern subscription may match them).
const MarkerPrefix = "__goaspire:handover:"

// IsMarker reports whether msg was published on a marker channel.
func IsMarker(msg *redis.Message) bool { return strings.HasPrefix(msg.Channel, MarkerPrefix) }

// Rotator is what a credentials provider offers to tell subscribers it
// handed out new credentials (cache.CredentialsProvider implements it).
type Rotator interface {
	Rotated() <-chan struct{}
}

// RotatorOf returns the Rotator of rdb's StreamingCredentialsProvider, or
// nil when it has none, or when rdb is not a *redis.Client: a cluster
// client may subscribe a new connection on another node, which does not
// keep the order of messages across the two connections.
func RotatorOf(rdb redis.UniversalClient) Rotator {
	c, ok := rdb.(*redis.Client)
	if !ok {
		return nil
	}
	r, _ := c.Options().StreamingCredentialsProvider.(Rotator)
	return r
}

// Handover is one move in progress.
type Handover struct {
	// Marker is the marker channel.
	Marker string
	// New is the new PubSub, subscribed to the marker and to every
	// channel of the old one. Nothing has read it since its
	// subscriptions were confirmed.
	New *redis.PubSub

	rdb redis.UniversalClient
	old *redis.PubSub
}

// OpenFunc makes the new PubSub, subscribed to the channels or patterns
// of the old one, and returns it with how many subscription confirmations
// it will read (one per channel or pattern).
type OpenFunc func(ctx context.Context) (*redis.PubSub, int)

// Prepare subscribes old to a new marker channel and makes the new PubSub
// with open; it returns once the new PubSub's subscriptions are confirmed
// and the server counts both connections on the marker. Messages the new
// PubSub received meanwhile were published before the marker and are
// dropped. On error nothing is left subscribed to the marker.
func Prepare(ctx context.Context, rdb redis.UniversalClient, old *redis.PubSub, open OpenFunc) (*Handover, error) {
	marker := MarkerPrefix + rand.Text()
	if err := old.Subscribe(ctx, marker); err != nil {
		return nil, fmt.Errorf("subscribe the old connection to the marker: %w", err)
	}
	h := &Handover{Marker: marker, rdb: rdb, old: old}
	nps, n := open(ctx)
	h.New = nps
	err := nps.Subscribe(ctx, marker)
	for n++; err == nil && n > 0; {
		var msg any
		msg, err = nps.Receive(ctx)
		if _, ok := msg.(*redis.Subscription); ok {
			n--
		}
	}
	for err == nil {
		var counts map[string]int64
		counts, err = rdb.PubSubNumSub(ctx, marker).Result()
		if err == nil && counts[marker] >= 2 {
			return h, nil
		}
		if err == nil && !sleep(ctx, 5*time.Millisecond) {
			err = ctx.Err()
		}
	}
	h.Abort()
	return nil, fmt.Errorf("subscribe a new connection: %w", err)
}

// Publish publishes the marker. Publishing it again is harmless.
func (h *Handover) Publish(ctx context.Context) error {
	return h.rdb.Publish(ctx, h.Marker, "").Err()
}

// Abort closes the new PubSub and unsubscribes the old one from the
// marker; the old one stays as it was.
func (h *Handover) Abort() {
	_ = h.New.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = h.old.Unsubscribe(ctx, h.Marker)
}

// IsOwnMarker reports whether msg is this handover's marker.
func (h *Handover) IsOwnMarker(msg *redis.Message) bool {
	return msg.Channel == h.Marker && msg.Pattern == ""
}

// Finish unsubscribes the new PubSub from the marker, once its reader has
// read it (or given up on it).
func (h *Handover) Finish(ctx context.Context) {
	_ = h.New.Unsubscribe(ctx, h.Marker)
}

// Options tune Watch.
type Options struct {
	// Logger reports failed handovers (once per rotation, never a secret).
	Logger *slog.Logger
	// What names the subscription in logs.
	What string
	// MinRetry and MaxRetry bound the backoff between failed attempts.
	MinRetry, MaxRetry time.Duration
}

// Watch runs until ctx ends: after each rotation of r it prepares a
// handover from current() with open, hands it to install and publishes
// the marker, retrying a failed preparation with backoff while the old
// connection carries on. install returns a channel closed once the reader
// has moved to the new PubSub (or dropped the handover); Watch waits for
// it before watching for the next rotation.
func Watch(ctx context.Context, rdb redis.UniversalClient, r Rotator, opt Options, current func() *redis.PubSub, open OpenFunc, install func(*Handover) <-chan struct{}) {
	opt.Logger = fallback.Logger(opt.Logger)
	if opt.MinRetry <= 0 {
		opt.MinRetry = 100 * time.Millisecond
	}
	if opt.MaxRetry < opt.MinRetry {
		opt.MaxRetry = max(10*time.Second, opt.MinRetry)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.Rotated():
		}
		backoff := opt.MinRetry
		for attempt := 1; ; attempt++ {
			err := handover(ctx, rdb, current(), open, install)
			if err == nil || ctx.Err() != nil {
				switch {
				case err != nil:
				case attempt > 1:
					opt.Logger.Info(opt.What+": moved to a connection with the new credentials", "attempts", attempt)
				default:
					opt.Logger.Debug(opt.What + ": moved to a connection with the new credentials")
				}
				break
			}
			if attempt == 1 {
				opt.Logger.Warn(opt.What+": could not move to a connection with the new credentials; keeping the old one and retrying", "error", err)
			}
			if !sleep(ctx, backoff) {
				return
			}
			backoff = min(backoff*2, opt.MaxRetry)
		}
	}
}

func handover(ctx context.Context, rdb redis.UniversalClient, old *redis.PubSub, open OpenFunc, install func(*Handover) <-chan struct{}) error {
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	h, err := Prepare(pctx, rdb, old, open)
	cancel()
	if err != nil {
		return err
	}
	done := install(h)
	// Once installed the reader owns h; publish until it lands.
	backoff := 10 * time.Millisecond
	for {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := h.Publish(pctx)
		cancel()
		if err == nil {
			break
		}
		if errors.Is(err, redis.ErrClosed) || !sleep(ctx, backoff) {
			return nil
		}
		backoff = min(backoff*2, time.Second)
	}
	select {
	case <-done:
	case <-ctx.Done():
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
