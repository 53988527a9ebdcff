package cache

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/goaspire/goaspire/internal/pubsubswap"
)

// subscriber is what a cache gives the bus.
type subscriber interface {
	// onMessage handles one invalidation message on the cache's channel.
	onMessage(payload string)
	// onReconnect is called when the subscription was lost and is back:
	// messages may have been missed.
	onReconnect()
}

// bus is the one Pub/Sub connection shared by every cache on one Redis
// client. It subscribes to each cache's invalidation channel, hands
// messages to the caches, and tells them when it had to reconnect.
//
// go-redis reconnects a PubSub by itself and resubscribes; the bus reads
// with Receive so it sees the subscription confirmations that follow a
// reconnection. It also pings when idle, and replaces a connection that
// stops answering (a half-open TCP connection never errors by itself).
//
// When the client's credentials rotate (a CredentialsProvider), the bus
// moves its subscription to a connection authenticated with the new
// credentials before the old ones expire (package pubsubswap): no
// reconnection, so the caches keep their L1.
type bus struct {
	rdb    redis.UniversalClient
	logger *slog.Logger

	mu   sync.Mutex
	refs int
	subs map[string]map[subscriber]struct{} // channel -> caches
	ps   *redis.PubSub
	// next is the handover to a new connection in progress, if any, and
	// moved is closed once run has moved to it (or dropped it).
	next  *pubsubswap.Handover
	moved chan struct{}
	ioMu  sync.Mutex // serializes (un)subscribing, which does I/O
	// syncs are the (un)subscriptions still running after their caller
	// stopped waiting (see sync).
	syncs sync.WaitGroup
	watch sync.WaitGroup // the handover watcher

	idle time.Duration // busIdle when the bus started

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

// Timings of the bus; variables so tests can shorten them.
var (
	busIdle       = 10 * time.Second // ping after this long without traffic
	busMinBackoff = 50 * time.Millisecond
	busMaxBackoff = 2 * time.Second
	// subscribeTimeout bounds (un)subscribing from New and Close.
	subscribeTimeout = 250 * time.Millisecond
)

var buses = struct {
	mu sync.Mutex
	m  map[redis.UniversalClient]*bus
}{m: map[redis.UniversalClient]*bus{}}

// joinBus subscribes s to channel on the bus of rdb, starting the bus if
// needed. No I/O happens under buses.mu or b.mu, so neither dispatching
// messages nor making caches on other clients waits on Redis.
func joinBus(rdb redis.UniversalClient, channel string, s subscriber, logger *slog.Logger) *bus {
	buses.mu.Lock()
	b := buses.m[rdb]
	if b == nil {
		ctx, cancel := context.WithCancel(context.Background())
		b = &bus{
			rdb:    rdb,
			logger: logger,
			subs:   map[string]map[subscriber]struct{}{},
			idle:   busIdle,
			ctx:    ctx,
			cancel: cancel,
			done:   make(chan struct{}),
			// Without channels, Subscribe only makes the PubSub.
			ps: rdb.Subscribe(ctx),
		}
		buses.m[rdb] = b
		go b.run()
		if r := pubsubswap.RotatorOf(rdb); r != nil {
			b.watch.Add(1)
			go func() {
				defer b.watch.Done()
				pubsubswap.Watch(ctx, rdb, r, pubsubswap.Options{Logger: logger, What: "cache: invalidation subscription"},
					b.current, b.open, b.install)
			}()
		}
	}
	b.mu.Lock()
	b.refs++
	set := b.subs[channel]
	first := set == nil
	if first {
		set = map[subscriber]struct{}{}
		b.subs[channel] = set
	}
	set[s] = struct{}{}
	b.mu.Unlock()
	buses.mu.Unlock()
	if first {
		b.sync(channel)
	}
	return b
}

// sync brings the server's subscription to channel in line with b.subs,
// waiting for it at most subscribeTimeout. Calls are serialized by ioMu,
// and each sends what is wanted when it runs, so a join and a leave
// racing on one channel end in the state of the last one. Subscribing
// does not fail when Redis is down: go-redis records the channel and
// subscribes when it connects; the short timeout keeps New and Close
// from waiting on an unreachable server.
//
// The wait is bounded here rather than by the context alone: go-redis
// holds the PubSub's lock while it dials for a Receive (run's), and a
// dial through a silent network lasts the client's DialTimeout. The
// subscription then goes on in the background and ends with that dial.
func (b *bus) sync(channel string) {
	done := make(chan struct{})
	b.syncs.Add(1)
	go func() {
		defer b.syncs.Done()
		defer close(done)
		b.syncNow(channel)
	}()
	t := time.NewTimer(subscribeTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

func (b *bus) syncNow(channel string) {
	b.ioMu.Lock()
	defer b.ioMu.Unlock()
	b.mu.Lock()
	want := b.subs[channel] != nil
	pss := []*redis.PubSub{b.ps}
	if b.next != nil {
		pss = append(pss, b.next.New)
	}
	b.mu.Unlock()
	ctx, cancel := context.WithTimeout(b.ctx, subscribeTimeout)
	defer cancel()
	for _, ps := range pss {
		if want {
			_ = ps.Subscribe(ctx, channel)
		} else {
			_ = ps.Unsubscribe(ctx, channel)
		}
	}
}

func (b *bus) current() *redis.PubSub {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ps
}

// channels returns the channels the caches want.
func (b *bus) channels() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	channels := make([]string, 0, len(b.subs))
	for ch := range b.subs {
		channels = append(channels, ch)
	}
	return channels
}

// open makes the PubSub a handover moves to.
func (b *bus) open(ctx context.Context) (*redis.PubSub, int) {
	channels := b.channels()
	return b.rdb.Subscribe(ctx, channels...), len(channels)
}

// install hands h to run, which moves to h.New when it reads h's marker
// on the current PubSub. Caches that joined or left while h was prepared
// are subscribed or unsubscribed on h.New here; from now on sync does
// both PubSubs.
func (b *bus) install(h *pubsubswap.Handover) <-chan struct{} {
	b.ioMu.Lock()
	defer b.ioMu.Unlock()
	moved := make(chan struct{})
	b.mu.Lock()
	b.next, b.moved = h, moved
	b.mu.Unlock()
	ctx, cancel := context.WithTimeout(b.ctx, subscribeTimeout)
	defer cancel()
	if channels := b.channels(); len(channels) > 0 {
		_ = h.New.Subscribe(ctx, channels...)
	}
	return moved
}

// takeNext returns the handover in progress, if any, and forgets it.
func (b *bus) takeNext() *pubsubswap.Handover {
	b.mu.Lock()
	defer b.mu.Unlock()
	h := b.next
	if h != nil {
		b.next = nil
		close(b.moved)
	}
	return h
}

// moveTo makes h.New the bus's PubSub and closes old.
func (b *bus) moveTo(h *pubsubswap.Handover, old *redis.PubSub) {
	b.mu.Lock()
	b.ps = h.New
	b.mu.Unlock()
	_ = old.Close()
}

// leave unsubscribes s and stops the bus after its last user.
func (b *bus) leave(channel string, s subscriber) {
	buses.mu.Lock()
	b.mu.Lock()
	b.refs--
	last := b.refs == 0
	emptied := false
	if set := b.subs[channel]; set != nil {
		delete(set, s)
		if len(set) == 0 {
			delete(b.subs, channel)
			emptied = true
		}
	}
	if last {
		delete(buses.m, b.rdb)
	}
	ps := b.ps
	b.mu.Unlock()
	buses.mu.Unlock()
	if !last {
		if emptied {
			b.sync(channel)
		}
		return
	}
	b.cancel()
	_ = ps.Close()
	<-b.done
	b.syncs.Wait()
	b.watch.Wait()
	// run may have replaced the PubSub meanwhile.
	b.mu.Lock()
	_ = b.ps.Close()
	b.mu.Unlock()
	if h := b.takeNext(); h != nil {
		_ = h.New.Close()
	}
}

// run reads the subscription until the bus stops.
func (b *bus) run() {
	defer close(b.done)
	backoff := busMinBackoff
	broken := false      // the connection failed since the last subscription
	pingPending := false // a ping is unanswered
	// draining is the handover run moved to: its marker is still to come
	// on the new PubSub, and what comes before it was read on the old one.
	var draining *pubsubswap.Handover
	for {
		b.mu.Lock()
		ps := b.ps
		b.mu.Unlock()
		msg, err := ps.ReceiveTimeout(b.ctx, b.idle)
		if b.ctx.Err() != nil {
			return
		}
		var ne net.Error
		if err != nil && !errors.Is(err, redis.ErrClosed) && !(errors.As(err, &ne) && ne.Timeout()) {
			draining = nil // the marker may be lost with the connection
			if h := b.takeNext(); h != nil {
				// The old connection broke during a handover: the new
				// one was subscribed before, so move to it and read it
				// all (an invalidation read twice is harmless).
				b.moveTo(h, ps)
				pingPending, broken = false, false
				ctx, cancel := context.WithTimeout(b.ctx, subscribeTimeout)
				h.Finish(ctx)
				cancel()
				continue
			}
		}
		if err != nil {
			switch {
			case errors.As(err, &ne) && ne.Timeout() && !pingPending:
				pingPending = true
				ctx, cancel := context.WithTimeout(b.ctx, b.idle)
				_ = ps.Ping(ctx)
				cancel()
				continue
			case errors.As(err, &ne) && ne.Timeout():
				// No answer to the ping: the connection is dead without
				// knowing it. Replace the PubSub.
				b.logger.Debug("cache: invalidation subscription is silent; reconnecting")
				b.replace()
			case errors.Is(err, redis.ErrClosed):
				// The Redis client was closed under us; the caches
				// carry on with L1 and their loaders.
				b.logger.Warn("cache: the Redis client was closed; cross-instance invalidation stopped")
				<-b.ctx.Done()
				return
			}
			pingPending = false
			if !broken {
				b.logger.Warn("cache: invalidation subscription lost; reconnecting", "error", err)
			}
			broken = true
			if !sleepCtx(b.ctx, backoff/2+rand.N(backoff/2+1)) {
				return
			}
			backoff = min(backoff*2, busMaxBackoff)
			continue
		}
		pingPending = false
		backoff = busMinBackoff
		switch m := msg.(type) {
		case *redis.Subscription:
			if broken && m.Kind == "subscribe" {
				broken = false
				b.logger.Info("cache: invalidation subscription restored")
				b.reconnected()
			}
		case *redis.Message:
			b.mu.Lock()
			next := b.next
			b.mu.Unlock()
			switch {
			case next != nil && next.IsOwnMarker(m):
				b.takeNext()
				b.moveTo(next, ps)
				draining = next
			case draining != nil:
				if draining.IsOwnMarker(m) {
					ctx, cancel := context.WithTimeout(b.ctx, subscribeTimeout)
					draining.Finish(ctx)
					cancel()
					draining = nil
				}
			case pubsubswap.IsMarker(m):
			default:
				b.dispatch(m.Channel, m.Payload)
			}
		}
	}
}

// replace closes the current PubSub and opens a new one on the same
// channels. The new one is made without I/O under the lock; subscribing
// (which dials) happens outside it, bounded, and is retried by the next
// Receive if Redis does not answer.
func (b *bus) replace() {
	b.ioMu.Lock()
	defer b.ioMu.Unlock()
	if h := b.takeNext(); h != nil {
		// The connection replacing the silent one dials with the
		// current credentials: drop the handover.
		h.Abort()
	}
	ps := b.rdb.Subscribe(b.ctx)
	b.mu.Lock()
	old := b.ps
	b.ps = ps
	channels := make([]string, 0, len(b.subs))
	for ch := range b.subs {
		channels = append(channels, ch)
	}
	b.mu.Unlock()
	_ = old.Close()
	ctx, cancel := context.WithTimeout(b.ctx, subscribeTimeout)
	_ = ps.Subscribe(ctx, channels...)
	cancel()
}

func (b *bus) dispatch(channel, payload string) {
	b.mu.Lock()
	set := b.subs[channel]
	targets := make([]subscriber, 0, len(set))
	for s := range set {
		targets = append(targets, s)
	}
	b.mu.Unlock()
	for _, s := range targets {
		s.onMessage(payload)
	}
}

func (b *bus) reconnected() {
	b.mu.Lock()
	var targets []subscriber
	for _, set := range b.subs {
		for s := range set {
			targets = append(targets, s)
		}
	}
	b.mu.Unlock()
	for _, s := range targets {
		s.onReconnect()
	}
}

// sleepCtx sleeps for d or until ctx ends; it reports whether it slept
// the whole time.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
