// Package redisevents broadcasts events between services over Redis
// Pub/Sub (the "events" channel of the Aspire samples), with the trace
// context carried from publisher to subscriber.
//
// By default Publish wraps the payload in a small JSON envelope,
//
//	{"envelope":"goaspire.v1","headers":{"traceparent":"00-…"},"data":"user.created:123"}
//
// ("data_base64" replaces "data" for a payload that is not UTF-8), inside
// a producer span "publish {channel}". Subscribe unwraps it and runs the
// handler in a consumer span "process {channel}" of the same trace. A
// message that is not an envelope (published by redis-cli, a Python
// service's r.publish('events', 'user.created:123') ...) is handed to the
// handler as is, in a span of its own, so both kinds of publisher can share
// a channel: its bytes reach the handler exactly as published (Enveloped
// false); only a message that is exactly an envelope, as Publish writes
// it, is unwrapped. In the other direction, Publish with WithRawPayload
// sends the payload as it is, for subscribers in other languages, which
// would otherwise receive the envelope: the producer span is recorded, but
// no trace context travels with a raw payload.
//
// Redis Pub/Sub delivers at most once, to the subscribers connected at
// that moment: a message published while a subscriber is disconnected is
// not seen by it. go-redis reconnects a subscription by itself and
// subscribes again; Subscribe relies on that, with go-redis's periodic
// health-check PING finding connections that died silently. For messages
// that must not be lost use a queue (RabbitMQ, NATS JetStream) instead.
//
// On a client whose credentials expire (cache.RedisConfig.Credentials,
// Entra ID tokens), a subscription moves to a new connection,
// authenticated with the new credentials, each time they are refreshed,
// before the server closes the old one: the new connection subscribes to
// the same channels, one marker message is published to a private channel
// both connections listen to, and events are delivered from the old
// connection up to the marker and from the new one after it, so none is
// lost or delivered twice. go-redis does not re-authenticate pub/sub
// connections itself. A cluster client (redis.ClusterClient) does not
// move: its subscriptions reconnect when the server closes them.
//
// Each function takes only the options that configure it, so an option
// that would be ignored does not compile:
//
//	option                   Publish, PublishJSON  Subscribe, PSubscribe  Encode, Decode
//	WithTracerProvider       yes                   yes                    -
//	WithRawPayload           yes                   -                      -
//	WithPropagator           yes                   yes                    yes
//	WithLogger               -                     yes                    -
//	WithHealthCheckInterval  -                     yes                    -
//
// Publish and PublishJSON take PublishOption, Subscribe and PSubscribe
// SubscribeOption, Encode and Decode CodecOption. WithTracerProvider
// returns an Option (both a PublishOption and a SubscribeOption), and
// WithPropagator a PropagatorOption (all three), so one value can be passed
// to both sides:
//
//	prop := redisevents.WithPropagator(propagation.TraceContext{})
//	redisevents.Publish(ctx, rdb, "events", data, prop)
//	redisevents.Subscribe(ctx, rdb, h, []string{"events"}, prop, redisevents.WithLogger(logger))
package redisevents

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/goaspire/goaspire/internal/fallback"
	"github.com/goaspire/goaspire/internal/msgconv"
	"github.com/goaspire/goaspire/internal/pubsubswap"
)

// EnvelopeVersion marks a message as a goaspire envelope.
const EnvelopeVersion = "goaspire.v1"

// scope is the instrumentation scope of the spans.
const scope = "github.com/goaspire/goaspire/messaging/redisevents"

// envelope is the JSON form of a published event.
type envelope struct {
	Envelope   string            `json:"envelope"`
	Headers    map[string]string `json:"headers,omitempty"`
	Data       *string           `json:"data,omitempty"`
	DataBase64 []byte            `json:"data_base64,omitempty"`
}

// Event is one received message.
type Event struct {
	// Channel is the channel it was published on.
	Channel string
	// Pattern is the pattern that matched, for PSubscribe; "" otherwise.
	Pattern string
	// Data is the payload: the envelope's data, or the whole message when
	// it was not an envelope.
	Data []byte
	// Enveloped reports whether the message came in a goaspire envelope.
	Enveloped bool
}

// Handler handles one event. Its ctx carries the consumer span. An error
// or a panic is recorded on the span and logged; the event is not
// redelivered.
type Handler func(ctx context.Context, ev Event) error

// PublishOption configures Publish and PublishJSON. WithTracerProvider
// and WithPropagator return one.
type PublishOption interface{ applyPublish(*publishSettings) }

// SubscribeOption configures Subscribe and PSubscribe. WithTracerProvider,
// WithPropagator, WithLogger and WithHealthCheckInterval return one.
type SubscribeOption interface{ applySubscribe(*subscribeSettings) }

// CodecOption configures Encode and Decode. WithPropagator returns one.
type CodecOption interface{ applyCodec(*codecSettings) }

// Option is an option of both Publish and Subscribe: WithTracerProvider
// returns one.
type Option interface {
	PublishOption
	SubscribeOption
}

// PropagatorOption is the option WithPropagator returns; it applies to
// Publish, Subscribe, Encode and Decode.
type PropagatorOption interface {
	Option
	CodecOption
}

type codecSettings struct {
	prop propagation.TextMapPropagator
}

type publishSettings struct {
	tp   trace.TracerProvider
	prop propagation.TextMapPropagator
	raw  bool
}

type subscribeSettings struct {
	tp          trace.TracerProvider
	prop        propagation.TextMapPropagator
	logger      *slog.Logger
	healthCheck time.Duration
}

func newCodecSettings(opts []CodecOption) codecSettings {
	var s codecSettings
	for _, opt := range opts {
		if opt != nil {
			opt.applyCodec(&s)
		}
	}
	s.prop = fallback.Propagator(s.prop)
	return s
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
	s := subscribeSettings{healthCheck: DefaultHealthCheckInterval}
	for _, opt := range opts {
		if opt != nil {
			opt.applySubscribe(&s)
		}
	}
	s.tp = fallback.TracerProvider(s.tp)
	s.prop = fallback.Propagator(s.prop)
	s.logger = fallback.Logger(s.logger)
	return s
}

// DefaultHealthCheckInterval is how often an idle subscription PINGs Redis
// to find a connection that died without an error.
const DefaultHealthCheckInterval = 3 * time.Second

type tracerProviderOption struct{ tp trace.TracerProvider }

func (o tracerProviderOption) applyPublish(s *publishSettings)     { s.tp = o.tp }
func (o tracerProviderOption) applySubscribe(s *subscribeSettings) { s.tp = o.tp }

// WithTracerProvider sets the tracer provider of the producer and consumer
// spans (default: OpenTelemetry's global one). It applies to Publish,
// PublishJSON, Subscribe and PSubscribe; Encode and Decode record no span.
func WithTracerProvider(tp trace.TracerProvider) Option { return tracerProviderOption{tp} }

type propagatorOption struct{ p propagation.TextMapPropagator }

func (o propagatorOption) applyCodec(s *codecSettings)         { s.prop = o.p }
func (o propagatorOption) applyPublish(s *publishSettings)     { s.prop = o.p }
func (o propagatorOption) applySubscribe(s *subscribeSettings) { s.prop = o.p }

// WithPropagator sets how the trace context is written into and read from
// the envelope (default: OpenTelemetry's global propagator). It applies to
// every function of the package that takes options.
func WithPropagator(p propagation.TextMapPropagator) PropagatorOption {
	return propagatorOption{p}
}

type publishFunc func(*publishSettings)

func (f publishFunc) applyPublish(s *publishSettings) { f(s) }

// WithRawPayload makes Publish and PublishJSON send the data exactly as
// given, without the envelope, for subscribers in other languages (a
// Python service's pubsub.get_message() or a Node service's
// subscriber.on('message') then receive "user.created:123", not a JSON
// envelope). The producer span is still recorded, but no trace context
// travels: the subscriber's process span starts a trace of its own.
func WithRawPayload() PublishOption {
	return publishFunc(func(s *publishSettings) { s.raw = true })
}

type subscribeFunc func(*subscribeSettings)

func (f subscribeFunc) applySubscribe(s *subscribeSettings) { f(s) }

// WithLogger sets the logger for handler failures of Subscribe and
// PSubscribe (default: slog.Default()).
func WithLogger(l *slog.Logger) SubscribeOption {
	return subscribeFunc(func(s *subscribeSettings) { s.logger = l })
}

// WithHealthCheckInterval sets how often an idle subscription of Subscribe
// or PSubscribe PINGs Redis (default DefaultHealthCheckInterval); a
// connection that does not answer is replaced and the channels subscribed
// again. A non-positive d is ignored.
func WithHealthCheckInterval(d time.Duration) SubscribeOption {
	return subscribeFunc(func(s *subscribeSettings) {
		if d > 0 {
			s.healthCheck = d
		}
	})
}

func attrs(op, opType, channel string, size int) []attribute.KeyValue {
	attrs := msgconv.Append(make([]attribute.KeyValue, 0, 6), "redis", op, opType, channel)
	return append(attrs, attribute.Int("messaging.message.body.size", size))
}

// Encode returns the envelope of data carrying the trace context of ctx,
// as Publish sends it; for publishing through a pipeline of one's own.
func Encode(ctx context.Context, data []byte, opts ...CodecOption) ([]byte, error) {
	s := newCodecSettings(opts)
	return encode(ctx, s.prop, data)
}

func encode(ctx context.Context, prop propagation.TextMapPropagator, data []byte) ([]byte, error) {
	env := envelope{Envelope: EnvelopeVersion, Headers: map[string]string{}}
	prop.Inject(ctx, propagation.MapCarrier(env.Headers))
	if utf8.Valid(data) {
		str := string(data)
		env.Data = &str
	} else {
		env.DataBase64 = data
	}
	return json.Marshal(env)
}

// Decode returns the event in payload, unwrapping an envelope, and the
// context with the trace context it carried (parent unchanged otherwise).
func Decode(parent context.Context, channel, payload string, opts ...CodecOption) (context.Context, Event) {
	s := newCodecSettings(opts)
	return decode(parent, s.prop, channel, payload)
}

func decode(parent context.Context, prop propagation.TextMapPropagator, channel, payload string) (context.Context, Event) {
	ev := Event{Channel: channel, Data: []byte(payload)}
	env, ok := parseEnvelope(payload)
	if !ok {
		return parent, ev
	}
	switch {
	case env.Data != nil:
		ev.Data = []byte(*env.Data)
	default:
		ev.Data = env.DataBase64
	}
	ev.Enveloped = true
	if len(env.Headers) > 0 {
		parent = prop.Extract(parent, propagation.MapCarrier(env.Headers))
	}
	return parent, ev
}

// parseEnvelope reads payload as an envelope, exactly as encode writes
// one: a JSON object with the members "envelope" (EnvelopeVersion),
// "headers" (optional, an object of strings) and one of "data" and
// "data_base64", spelled in that case and nothing else. Anything else (a
// JSON object of another service that happens to have an "envelope" or a
// "data" member, a member spelled "Data", which encoding/json would match
// case-insensitively) is not an envelope, and Subscribe hands it over
// untouched.
func parseEnvelope(payload string) (envelope, bool) {
	var env envelope
	if !strings.HasPrefix(payload, "{") || !strings.Contains(payload, EnvelopeVersion) {
		return env, false
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal([]byte(payload), &members); err != nil {
		return env, false
	}
	for k := range members {
		switch k {
		case "envelope", "headers", "data", "data_base64":
		default:
			return env, false
		}
	}
	if err := json.Unmarshal(members["envelope"], &env.Envelope); err != nil || env.Envelope != EnvelopeVersion {
		return env, false
	}
	if h, ok := members["headers"]; ok {
		if err := json.Unmarshal(h, &env.Headers); err != nil || env.Headers == nil {
			return env, false
		}
	}
	data, hasData := members["data"]
	b64, hasB64 := members["data_base64"]
	switch {
	case hasData == hasB64:
		return env, false // encode writes exactly one
	case hasData:
		if err := json.Unmarshal(data, &env.Data); err != nil || env.Data == nil {
			return env, false
		}
	default:
		if err := json.Unmarshal(b64, &env.DataBase64); err != nil || env.DataBase64 == nil {
			return env, false
		}
	}
	return env, true
}

// Publish sends data on channel in an envelope carrying ctx's trace
// context, inside a producer span "publish {channel}", and returns how many
// subscribers received it (0 is not an error: Pub/Sub has no queue). With
// WithRawPayload it sends data as it is, without envelope nor trace
// context, for subscribers that are not goaspire's.
func Publish(ctx context.Context, rdb redis.UniversalClient, channel string, data []byte, opts ...PublishOption) (int64, error) {
	s := newPublishSettings(opts)
	ctx, span := s.tp.Tracer(scope).Start(ctx, "publish "+channel, trace.WithSpanKind(trace.SpanKindProducer))
	defer span.End()
	if span.IsRecording() {
		span.SetAttributes(attrs("publish", "send", channel, len(data))...)
	}
	var msg []byte
	var err error
	if s.raw {
		msg = data
	} else {
		msg, err = encode(ctx, s.prop, data)
	}
	if err == nil {
		var n int64
		n, err = rdb.Publish(ctx, channel, msg).Result()
		if err == nil {
			return n, nil
		}
	}
	span.RecordError(err)
	span.SetStatus(codes.Error, err.Error())
	return 0, fmt.Errorf("redisevents: publish to %q: %w", channel, err)
}

// PublishJSON publishes v encoded as JSON (see Publish).
func PublishJSON(ctx context.Context, rdb redis.UniversalClient, channel string, v any, opts ...PublishOption) (int64, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return 0, fmt.Errorf("redisevents: publish to %q: %w", channel, err)
	}
	return Publish(ctx, rdb, channel, data, opts...)
}

// Subscription is a running subscription made by Subscribe or PSubscribe.
type Subscription struct {
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// Subscribe subscribes to channels and calls h for each event, one at a
// time and in order, in a goroutine of its own. It returns once Redis has
// confirmed the subscription, so an event published after it returns is
// received; if Redis cannot be reached it returns that error (run it in a
// servicedefaults App.Go worker, which retries with backoff). From then on
// the subscription survives Redis restarts and network failures: go-redis
// reconnects and subscribes again by itself (events published meanwhile
// are missed, as Pub/Sub has no queue). When the client's credentials
// rotate, the subscription moves to a connection with the new ones
// without missing an event (see the package documentation).
//
// The subscription ends when ctx is done or Close is called. The handler's
// ctx has ctx's values but not its cancellation.
func Subscribe(ctx context.Context, rdb redis.UniversalClient, h Handler, channels []string, opts ...SubscribeOption) (*Subscription, error) {
	return subscribe(ctx, rdb, h, channels, false, opts)
}

// PSubscribe is Subscribe for channel patterns ("events.*").
func PSubscribe(ctx context.Context, rdb redis.UniversalClient, h Handler, patterns []string, opts ...SubscribeOption) (*Subscription, error) {
	return subscribe(ctx, rdb, h, patterns, true, opts)
}

func subscribe(ctx context.Context, rdb redis.UniversalClient, h Handler, names []string, pattern bool, opts []SubscribeOption) (*Subscription, error) {
	if len(names) == 0 {
		return nil, errors.New("redisevents: subscribe: no channels")
	}
	if h == nil {
		return nil, errors.New("redisevents: subscribe: nil handler")
	}
	s := newSubscribeSettings(opts)
	var ps *redis.PubSub
	if pattern {
		ps = rdb.PSubscribe(ctx, names...)
	} else {
		ps = rdb.Subscribe(ctx, names...)
	}
	// The confirmations of every channel, before any message.
	for range names {
		msg, err := ps.Receive(ctx)
		if err == nil {
			if _, ok := msg.(*redis.Subscription); !ok {
				err = fmt.Errorf("unexpected reply %T", msg)
			}
		}
		if err != nil {
			_ = ps.Close()
			return nil, fmt.Errorf("redisevents: subscribe to %q: %w", names, err)
		}
	}
	runCtx, cancel := context.WithCancel(ctx)
	sub := &Subscription{cancel: cancel, done: make(chan struct{})}
	r := &reader{
		rdb: rdb, s: &s, h: h, names: names, pattern: pattern,
		hctx: context.WithoutCancel(ctx), cur: ps,
		installs: make(chan install),
	}
	go r.run(runCtx, sub.done)
	return sub, nil
}

// handoverTimeout is how long the reader waits for the marker on the old
// connection before moving to the new one anyway (the old connection
// broke and missed it); a variable so tests can shorten it.
var handoverTimeout = 10 * time.Second

type install struct {
	h    *pubsubswap.Handover
	done chan struct{}
}

// reader delivers the messages of a subscription and, when the client's
// credentials rotate, moves it to a connection authenticated with the new
// ones (package pubsubswap): it delivers from the old connection until it
// reads the marker, then from the new one what follows the marker there.
type reader struct {
	rdb     redis.UniversalClient
	s       *subscribeSettings
	h       Handler
	names   []string
	pattern bool
	hctx    context.Context

	mu  sync.Mutex
	cur *redis.PubSub

	installs chan install
}

func (r *reader) current() *redis.PubSub {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur
}

func (r *reader) open(ctx context.Context) (*redis.PubSub, int) {
	if r.pattern {
		return r.rdb.PSubscribe(ctx, r.names...), len(r.names)
	}
	return r.rdb.Subscribe(ctx, r.names...), len(r.names)
}

func (r *reader) run(ctx context.Context, done chan struct{}) {
	defer close(done)
	var watchers sync.WaitGroup
	defer watchers.Wait()
	if rot := pubsubswap.RotatorOf(r.rdb); rot != nil {
		watchers.Add(1)
		go func() {
			defer watchers.Done()
			what := fmt.Sprintf("redisevents: subscription to %q", r.names)
			pubsubswap.Watch(ctx, r.rdb, rot, pubsubswap.Options{Logger: r.s.logger, What: what}, r.current, r.open,
				func(h *pubsubswap.Handover) <-chan struct{} {
					done := make(chan struct{})
					select {
					case r.installs <- install{h, done}:
					case <-ctx.Done():
						h.Abort()
						close(done)
					}
					return done
				})
		}()
	}
	ps := r.current()
	ch := ps.Channel(redis.WithChannelHealthCheckInterval(r.s.healthCheck))
	var (
		pending  *install             // a handover waiting for its marker on ps
		timeout  *time.Timer          // bounds that wait
		draining *pubsubswap.Handover // moved: drop until its marker
		timeoutC <-chan time.Time
	)
	move := func() {
		old := ps
		ps = pending.h.New
		r.mu.Lock()
		r.cur = ps
		r.mu.Unlock()
		ch = ps.Channel(redis.WithChannelHealthCheckInterval(r.s.healthCheck))
		_ = old.Close()
		draining = pending.h
		close(pending.done)
		pending = nil
		// The new connection may break and miss its marker too.
		timeout.Reset(handoverTimeout)
	}
	for {
		select {
		case <-ctx.Done():
			_ = ps.Close()
			if pending != nil {
				_ = pending.h.New.Close()
				close(pending.done)
			}
			return
		case in := <-r.installs:
			pending = &in
			timeout = time.NewTimer(handoverTimeout)
			timeoutC = timeout.C
		case <-timeoutC:
			if pending != nil {
				r.s.logger.Warn("redisevents: the old connection missed the handover marker; moved to the new connection", "channels", r.names)
				move()
			} else {
				r.s.logger.Warn("redisevents: the new connection missed the handover marker", "channels", r.names)
				draining = nil
				timeoutC = nil
			}
		case msg, ok := <-ch:
			if !ok {
				return
			}
			switch {
			case pending != nil && pending.h.IsOwnMarker(msg):
				move()
			case draining != nil:
				if draining.IsOwnMarker(msg) {
					fctx, cancel := context.WithTimeout(ctx, time.Second)
					draining.Finish(fctx)
					cancel()
					draining = nil
					timeout.Stop()
					timeoutC = nil
				}
			case pubsubswap.IsMarker(msg):
			default:
				handle(r.hctx, r.s, r.h, msg)
			}
		}
	}
}

func handle(parent context.Context, s *subscribeSettings, h Handler, msg *redis.Message) {
	ctx, ev := decode(parent, s.prop, msg.Channel, msg.Payload)
	ev.Pattern = msg.Pattern
	ctx, span := s.tp.Tracer(scope).Start(ctx, "process "+msg.Channel, trace.WithSpanKind(trace.SpanKindConsumer))
	defer span.End()
	if span.IsRecording() {
		span.SetAttributes(attrs("process", "process", msg.Channel, len(ev.Data))...)
	}
	err := func() (err error) {
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("handler panicked: %v\n%s", p, debug.Stack())
			}
		}()
		return h(ctx, ev)
	}()
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		s.logger.ErrorContext(ctx, "redis event handler failed", "channel", msg.Channel, "error", err)
	}
}

// Close ends the subscription and waits for the handler to return. It is
// safe to call more than once.
func (s *Subscription) Close() error {
	s.once.Do(s.cancel)
	<-s.done
	return nil
}

// Done is closed once the subscription has ended (ctx done or Close).
func (s *Subscription) Done() <-chan struct{} { return s.done }
