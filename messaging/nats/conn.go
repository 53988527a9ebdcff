package natsmsg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/internal/fallback"
)

// PublishOption configures Publish, PublishMsg, PublishJetStream and
// PublishJetStreamMsg. WithTracerProvider and WithPropagator return one.
type PublishOption interface{ applyPublish(*publishSettings) }

// SubscribeOption configures Subscribe, QueueSubscribe and
// ConsumeJetStream. WithTracerProvider, WithPropagator and WithLogger
// return one.
type SubscribeOption interface{ applySubscribe(*subscribeSettings) }

// Option is an option of both the publish and the subscribe helpers:
// WithTracerProvider and WithPropagator return one. New takes everything
// from its Config instead.
type Option interface {
	PublishOption
	SubscribeOption
}

type publishSettings struct {
	tp   trace.TracerProvider
	prop propagation.TextMapPropagator
}

type subscribeSettings struct {
	tp     trace.TracerProvider
	prop   propagation.TextMapPropagator
	logger *slog.Logger
}

func newPublishSettings(opts []PublishOption) publishSettings {
	var s publishSettings
	for _, opt := range opts {
		if opt != nil {
			opt.applyPublish(&s)
		}
	}
	s.tp = fallback.TracerProvider(s.tp)
	s.prop = fallback.Propagator(s.prop)
	return s
}

func newSubscribeSettings(opts []SubscribeOption) subscribeSettings {
	var s subscribeSettings
	for _, opt := range opts {
		if opt != nil {
			opt.applySubscribe(&s)
		}
	}
	s.logger = fallback.Logger(s.logger)
	s.tp = fallback.TracerProvider(s.tp)
	s.prop = fallback.Propagator(s.prop)
	return s
}

type subscribeFunc func(*subscribeSettings)

func (f subscribeFunc) applySubscribe(s *subscribeSettings) { f(s) }

// WithLogger sets the logger for handler failures (and failed
// acknowledgements) of Subscribe, QueueSubscribe and ConsumeJetStream.
// Default: slog.Default(). The publish helpers log nothing, so it is not
// one of their options.
func WithLogger(l *slog.Logger) SubscribeOption {
	return subscribeFunc(func(s *subscribeSettings) { s.logger = l })
}

type tracerProviderOption struct{ tp trace.TracerProvider }

func (o tracerProviderOption) applyPublish(s *publishSettings)     { s.tp = o.tp }
func (o tracerProviderOption) applySubscribe(s *subscribeSettings) { s.tp = o.tp }

// WithTracerProvider sets the tracer provider of the helpers' producer and
// consumer spans. Default: OpenTelemetry's global one.
func WithTracerProvider(tp trace.TracerProvider) Option { return tracerProviderOption{tp} }

type propagatorOption struct{ p propagation.TextMapPropagator }

func (o propagatorOption) applyPublish(s *publishSettings)     { s.prop = o.p }
func (o propagatorOption) applySubscribe(s *subscribeSettings) { s.prop = o.p }

// WithPropagator sets how the helpers write and read the trace context in
// message headers. Default: OpenTelemetry's global propagator
// (servicedefaults installs W3C trace context and baggage there).
func WithPropagator(p propagation.TextMapPropagator) Option { return propagatorOption{p} }

// New connects to the servers of c and returns nats.go's own connection.
// The connection never gives up: if no server answers yet, New still
// returns it (nats.go's RetryOnFailedConnect), buffering publishes while it
// connects, and after a disconnect it reconnects forever to any of the
// servers, resubscribing by itself. Connection events (connected,
// disconnected, reconnected, closed, asynchronous errors such as a slow
// consumer) are logged through c.Logger with the connection's name; URLs
// in them carry no credentials. c.Options are applied after New's own
// nats.go options.
//
// It pings the server every c.PingInterval and reconnects after
// c.MaxPingOut unanswered pings (defaults 2 s and 2), so a silent server is
// noticed within 6 s.
//
// New does not wait for a server unless c.WaitOnOpen says so: then it
// waits up to that long (and within ctx) for the first connection, and
// fails, closing the connection, when it does not come. Otherwise New
// fails only on an invalid Config or when ctx is done. Until the first
// connection, HealthCheck reports Unhealthy ("connecting"), publishes are
// buffered (a request, or PublishJetStream, waits for its answer within
// its ctx), and subscriptions are made once connected. The caller closes
// the connection (Drain, then Close, for a graceful stop).
func New(ctx context.Context, c *Config) (*nats.Conn, error) {
	if c == nil || len(c.Servers) == 0 {
		return nil, errors.New("natsmsg: New: no servers in the Config")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("natsmsg: connect %q: %w", c.Name, err)
	}
	logger := fallback.Logger(c.Logger)
	log := logger.With("nats", c.Name)
	wait := c.ReconnectWait
	if wait <= 0 {
		wait = DefaultReconnectWait
	}
	ping, maxOut := c.PingInterval, c.MaxPingOut
	if ping <= 0 {
		ping = DefaultPingInterval
	}
	if maxOut <= 0 {
		maxOut = DefaultMaxPingOut
	}
	// The first failed attempt of a streak is a warning, the rest debug:
	// a server down for an hour must not flood the log.
	var failing atomic.Bool
	nopts := []nats.Option{
		nats.Name(c.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(wait),
		nats.RetryOnFailedConnect(true),
		// Notice a silent server within (maxOut+1) × ping.
		nats.PingInterval(ping),
		nats.MaxPingsOutstanding(maxOut),
		// Keep trying after authorization errors too: the server's
		// credentials may be rotated before the client's.
		nats.IgnoreAuthErrorAbort(),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			if err == nil {
				return
			}
			if failing.CompareAndSwap(false, true) {
				log.Warn("nats connection attempt failed; retrying", "error", scrub(err, c))
				return
			}
			log.Debug("nats connection attempt failed; retrying", "error", scrub(err, c))
		}),
		nats.ConnectHandler(func(nc *nats.Conn) {
			failing.Store(false)
			log.Info("nats connected", "url", nc.ConnectedUrlRedacted())
		}),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected; reconnecting", "error", scrub(err, c))
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			failing.Store(false)
			log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ClosedHandler(func(nc *nats.Conn) {
			if err := nc.LastError(); err != nil {
				log.Warn("nats connection closed", "error", scrub(err, c))
				return
			}
			log.Info("nats connection closed")
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			attrs := []any{"error", scrub(err, c)}
			if sub != nil {
				attrs = append(attrs, "subject", sub.Subject)
			}
			log.Error("nats asynchronous error", attrs...)
		}),
	}
	switch {
	case c.Token != "":
		nopts = append(nopts, nats.Token(c.Token))
	case c.User != "" || c.Password != "":
		nopts = append(nopts, nats.UserInfo(c.User, c.Password))
	}
	nopts = append(nopts, c.Options...)
	nc, err := nats.Connect(strings.Join(c.Servers, ","), nopts...)
	if err != nil {
		return nil, fmt.Errorf("natsmsg: connect %q: %s", c.Name, scrub(err, c))
	}
	if c.WaitOnOpen > 0 {
		if err := waitOnOpen(ctx, nc, c); err != nil {
			nc.Close()
			return nil, err
		}
	}
	return nc, nil
}

// waitOnOpen waits for nc's first connection within c.WaitOnOpen and ctx.
func waitOnOpen(ctx context.Context, nc *nats.Conn, c *Config) error {
	connected := nc.StatusChanged(nats.CONNECTED)
	defer nc.RemoveStatusListener(connected)
	if nc.IsConnected() {
		return nil
	}
	t := time.NewTimer(c.WaitOnOpen)
	defer t.Stop()
	var err error
	select {
	case <-connected:
		return nil
	case <-ctx.Done():
		err = ctx.Err()
	case <-t.C:
		err = fmt.Errorf("not connected within %v (%s:WaitOnOpen): %w", c.WaitOnOpen, ConfigSection, context.DeadlineExceeded)
	}
	if last := nc.LastError(); last != nil {
		return fmt.Errorf("natsmsg: connect %q: %w (last error: %s)", c.Name, err, scrub(last, c))
	}
	return fmt.Errorf("natsmsg: connect %q: %w", c.Name, err)
}

// scrub returns err's text without c's password or token.
func scrub(err error, c *Config) string {
	msg := err.Error()
	for _, secret := range []string{c.Password, c.Token} {
		if secret != "" {
			msg = strings.ReplaceAll(msg, secret, "***")
		}
	}
	return health.Scrub(msg)
}

// HealthCheck returns the connection's health check, called
// "nats:{name}" and tagged health.TagReady: Healthy while connected,
// Unhealthy otherwise: until the first connection ("connecting", with the
// last error), while reconnecting or draining, and once the connection is
// closed. (Aspire's NATS check reports a reconnecting connection
// Degraded; a service that keeps serving without NATS sets
// Config.HealthCheckFailureStatus, or HealthCheckFailureStatus in the
// configuration, to Degraded.) It reads the connection's state and sends
// nothing: a server gone silent is noticed by the pings of New's
// connection (Config.PingInterval, Config.MaxPingOut), within 6 s with the
// defaults, and the check then reports the connection reconnecting.
func HealthCheck(name string, nc *nats.Conn) health.Check {
	// Whether the connection was ever up, as far as the check saw: when
	// it was made, or at a probe. (nats.go's counters cannot tell: its
	// Reconnects counts TCP connections, refused credentials included.)
	var wasUp atomic.Bool
	if nc != nil && nc.IsConnected() {
		wasUp.Store(true)
	}
	return health.Check{
		Name: "nats:" + name,
		Tags: []string{health.TagReady},
		Check: func(context.Context) error {
			if nc == nil {
				return errors.New("no connection")
			}
			st := nc.Status()
			switch st {
			case nats.CONNECTED:
				wasUp.Store(true)
				return nil
			case nats.CLOSED:
				return health.WithStatus(health.Unhealthy, errors.New("connection closed"))
			}
			status, err := health.Unhealthy, fmt.Errorf("connection %s", strings.ToLower(st.String()))
			if !wasUp.Load() {
				status, err = health.Unhealthy, errors.New("connecting, never connected yet")
			}
			if last := nc.LastError(); last != nil {
				err = fmt.Errorf("%w: %s", err, last.Error())
			}
			return health.WithStatus(status, err)
		},
	}
}
