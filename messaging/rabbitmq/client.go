package rabbitmq

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/internal/fallback"
	"github.com/goaspire/goaspire/resilience"
)

// ErrClosed is returned by operations on a closed Client.
var ErrClosed = errors.New("rabbitmq: client closed")

// ErrQueueNotFound is wrapped by the error DeclareQueue returns for a
// Passive queue that does not exist (the broker's NOT_FOUND, 404, which
// the error wraps too as an *amqp.Error).
var ErrQueueNotFound = errors.New("rabbitmq: queue not found")

// Client is a RabbitMQ connection that recovers by itself. When the
// connection is lost it reconnects with exponential backoff, declares again
// the exchanges, queues and bindings declared through it, re-publishes the
// messages the broker had not confirmed, and resumes its consumers. It is
// safe for concurrent use; close it with Close.
type Client struct {
	cfg  Config
	name string
	url  string // holds the password; never printed
	amqp amqp.Config
	log  *slog.Logger
	tel  *telemetry
	pub  *publisher

	confirmTimeout time.Duration      // bound of a Publish without deadline; 0: none
	stopDial       context.CancelFunc // ends dials in progress and closes every connection; called by Close

	mu       sync.Mutex
	conn     *amqp.Connection // nil while disconnected
	changed  chan struct{}    // closed and replaced whenever conn changes
	closed   bool
	topology []declaration

	everConnected bool  // a connection was up once; guarded by mu
	lastErr       error // the last failed connection attempt; guarded by mu

	done chan struct{} // closed by Close
	wg   sync.WaitGroup
}

// declaration is one recorded piece of topology, declared again after a
// reconnect.
type declaration struct {
	id      string
	declare func(ch *amqp.Channel) error
	// passive is the name of a queue declared passively (Queue.Passive),
	// which another service owns: after a reconnect it may be missing
	// until its owner declares it again, and Consume waits for it.
	passive string
}

// New returns a Client for the broker of cfg, which keeps a connection
// up until Close. A nil cfg is the zero Config. Errors name the setting at
// fault and never contain the password.
//
// By default New does not wait for the broker: it returns at once and
// connects in the background, retrying with backoff without limit, as it
// does after a lost connection. Until the first connection, Publish,
// the Declare methods and Consume wait for it within their ctx (Publish
// within Config.PublishConfirmTimeout when its ctx has no deadline), and
// HealthCheck reports Unhealthy ("connecting"). A broker that is down or
// still starting therefore never fails the open, and a service that only
// publishes to it starts and serves the rest of its work.
//
// With cfg.WaitOnOpen set, New waits for the first connection as it used
// to: it retries cfg.MaxConnectRetryCount times with backoff, within
// WaitOnOpen and ctx, and fails with the last error when none succeeds.
func New(ctx context.Context, cfg *Config) (*Client, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	c := &Client{cfg: *cfg, changed: make(chan struct{}), done: make(chan struct{})}
	if c.cfg.URL == "" {
		c.cfg.URL = "amqp://guest:guest@localhost:5672/"
	}
	c.name = c.cfg.Name
	if c.name == "" {
		c.name = "rabbitmq"
	}
	if err := checkURL(c.cfg.URL); err != nil {
		return nil, fmt.Errorf("rabbitmq %q: %w", c.name, &discovery.KeyError{Key: "URL", Err: err})
	}
	uri, err := amqp.ParseURI(c.cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("rabbitmq %q: URL: %w: %v", c.name, ErrConnectionString, err)
	}
	c.url = c.cfg.URL
	c.log = fallback.Logger(c.cfg.Logger)
	c.log = c.log.With("rabbitmq", c.name)
	heartbeat := c.cfg.Heartbeat
	if heartbeat <= 0 {
		heartbeat = DefaultHeartbeat
	}
	switch {
	case c.cfg.PublishConfirmTimeout == 0:
		c.confirmTimeout = DefaultPublishConfirmTimeout
	case c.cfg.PublishConfirmTimeout > 0:
		c.confirmTimeout = c.cfg.PublishConfirmTimeout
	}
	// Dials and connections live until Close, not until New's ctx ends.
	dialCtx, stopDial := context.WithCancel(context.WithoutCancel(ctx))
	c.stopDial = stopDial
	c.amqp = amqp.Config{
		Heartbeat:       heartbeat,
		TLSClientConfig: c.cfg.TLSConfig,
		Properties:      amqp.Table{"connection_name": c.name, "product": "goaspire"},
		Dial:            dialer(dialCtx, heartbeat*3/2),
	}
	if uri.Scheme == "amqps" && c.amqp.TLSClientConfig == nil {
		c.amqp.TLSClientConfig = &tls.Config{ServerName: uri.Host, MinVersion: tls.VersionTLS12}
	}
	if c.tel, err = newTelemetry(&c.cfg, uri.Host, uri.Port); err != nil {
		stopDial()
		return nil, err
	}
	c.pub = newPublisher(c)

	if c.cfg.WaitOnOpen <= 0 {
		// Lazy: connect in the background; publishes, declarations and
		// consumers wait for the connection within their ctx.
		c.wg.Add(1)
		go c.supervise(nil)
		return c, nil
	}
	conn, err := c.connectFirst(ctx, uri.Host)
	if err != nil {
		stopDial()
		return nil, err
	}
	if err := c.setConn(conn); err != nil {
		conn.Close()
		stopDial()
		return nil, fmt.Errorf("rabbitmq %q: %w", c.name, err)
	}
	c.wg.Add(1)
	go c.supervise(conn)
	return c, nil
}

// errWaitOnOpen is the cause of connectFirst's context when
// Config.WaitOnOpen runs out.
var errWaitOnOpen = errors.New("not connected within WaitOnOpen")

// connectFirst is New's wait for the first connection (Config.WaitOnOpen):
// it retries cfg.MaxConnectRetryCount times with backoff, within
// WaitOnOpen and ctx, and returns the last error when it gives up.
func (c *Client) connectFirst(ctx context.Context, host string) (*amqp.Connection, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, c.cfg.WaitOnOpen, errWaitOnOpen)
	defer cancel()
	bo := c.backoff()
	for attempt := 0; ; attempt++ {
		conn, err := c.dial()
		if err == nil {
			return conn, nil
		}
		if attempt >= c.cfg.MaxConnectRetryCount {
			return nil, fmt.Errorf("rabbitmq %q: connect to %s: %w", c.name, host, err)
		}
		c.log.Debug("rabbitmq connect failed; retrying", "attempt", attempt+1, "error", err)
		t := time.NewTimer(bo.Next())
		select {
		case <-ctx.Done():
			t.Stop()
			if errors.Is(context.Cause(ctx), errWaitOnOpen) {
				return nil, fmt.Errorf("rabbitmq %q: connect to %s: %w %v (%s:WaitOnOpen): %w (last error: %v)",
					c.name, host, errWaitOnOpen, c.cfg.WaitOnOpen, ConfigSection, ctx.Err(), err)
			}
			return nil, fmt.Errorf("rabbitmq %q: connect to %s: %w (last error: %v)", c.name, host, ctx.Err(), err)
		case <-t.C:
		}
	}
}

// dialer bounds the TCP connect and the handshakes to 30 s, as amqp091-go
// does by default. Its connections fail a write that makes no progress for
// stall (see stallConn); when ctx ends (Client.Close), a dial in progress
// gives up and its connections close, so that Close never waits for a
// dial or a handshake stalled by a silent broker.
func dialer(ctx context.Context, stall time.Duration) func(network, addr string) (net.Conn, error) {
	return func(network, addr string) (net.Conn, error) {
		d := net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
		conn, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		// The deadline covers the TLS and AMQP handshakes; amqp091-go
		// clears it once the connection is open.
		if err := conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
			conn.Close()
			return nil, err
		}
		sc := &stallConn{Conn: conn, stall: stall}
		sc.stop = context.AfterFunc(ctx, func() { conn.Close() })
		return sc, nil
	}
}

// stallConn fails a write that makes no progress for stall (1.5
// heartbeats, the silence amqp091-go allows on reads). amqp091-go writes
// without a deadline: to a silent broker, a write blocks once the socket
// buffers are full, holding the channel's lock, and the connection's
// shutdown after the heartbeat timeout waits for that lock, so without
// this the connection, and every publisher, would freeze for good. Large
// writes go in chunks with a deadline each, so a slow but moving network
// never trips it.
type stallConn struct {
	net.Conn
	stall time.Duration
	stop  func() bool // stops closing the connection with the dial context
}

// Close closes the connection.
func (c *stallConn) Close() error {
	c.stop()
	return c.Conn.Close()
}

// stallChunk is the most written under one deadline.
const stallChunk = 64 << 10

// Write writes b in chunks, each under a deadline of c.stall.
func (c *stallConn) Write(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		end := min(n+stallChunk, len(b))
		if err := c.Conn.SetWriteDeadline(time.Now().Add(c.stall)); err != nil {
			return n, err
		}
		m, err := c.Conn.Write(b[n:end])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (c *Client) backoff() *resilience.Backoff {
	delay, maxDelay := c.cfg.ReconnectDelay, c.cfg.MaxReconnectDelay
	if delay <= 0 {
		delay = 100 * time.Millisecond
	}
	if maxDelay <= 0 {
		maxDelay = 5 * time.Second
	}
	return resilience.NewBackoff(resilience.RetryOptions{BackoffType: resilience.BackoffExponential, UseJitter: true, Delay: delay, MaxDelay: maxDelay})
}

// dial opens a connection and declares the recorded topology on it.
func (c *Client) dial() (*amqp.Connection, error) {
	conn, err := amqp.DialConfig(c.url, c.amqp)
	if err != nil {
		return nil, safeError(err, c.url)
	}
	c.mu.Lock()
	topology := append([]declaration(nil), c.topology...)
	c.mu.Unlock()
	if len(topology) > 0 {
		ch, err := conn.Channel()
		if err != nil {
			conn.Close()
			return nil, err
		}
		for _, d := range topology {
			if err := d.declare(ch); err != nil {
				if d.passive != "" && errors.Is(err, ErrQueueNotFound) {
					// A non-durable queue of another service does not
					// survive a broker restart; its owner declares it
					// again when it reconnects, and Consume waits.
					c.log.Warn("rabbitmq: queue used passively does not exist after reconnect; waiting for the service that owns it to declare it again",
						"queue", d.passive, "error", err)
				} else {
					// A declaration the broker refuses (a queue that
					// now exists with other arguments) closes the channel;
					// report it and carry on with the others.
					c.log.Error("rabbitmq: declaring topology again after reconnect failed", "entity", d.id, "error", err)
				}
				if ch, err = conn.Channel(); err != nil {
					conn.Close()
					return nil, err
				}
				continue
			}
		}
		ch.Close()
	}
	return conn, nil
}

// safeError returns err with any occurrence of the URL's password removed:
// amqp091-go errors do not quote the URL today, and must not start to leak
// it through us.
func safeError(err error, rawURL string) error {
	if uri, perr := amqp.ParseURI(rawURL); perr == nil && uri.Password != "" && strings.Contains(err.Error(), uri.Password) {
		return errors.New(strings.ReplaceAll(err.Error(), uri.Password, "***"))
	}
	return err
}

// setConn makes conn current: the publisher opens its channel on it and
// waiting consumers and publishers are woken.
func (c *Client) setConn(conn *amqp.Connection) error {
	if err := c.pub.attach(conn); err != nil {
		return err
	}
	c.mu.Lock()
	if c.closed {
		// Close ran while this connection was being opened: the caller
		// closes it, which ends the publishing channel's watcher.
		c.mu.Unlock()
		return ErrClosed
	}
	c.conn = conn
	c.everConnected = true
	c.lastErr = nil
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
	return nil
}

// current returns the connection (nil while disconnected) and a channel
// closed when it changes.
func (c *Client) current() (*amqp.Connection, <-chan struct{}, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, nil, ErrClosed
	}
	return c.conn, c.changed, nil
}

// supervise connects (when conn is nil: New did not wait for it) and
// reconnects whenever the connection is lost, until Close.
func (c *Client) supervise(conn *amqp.Connection) {
	defer c.wg.Done()
	if conn == nil {
		if conn = c.reconnect(true); conn == nil {
			return
		}
		c.log.Info("rabbitmq connected")
	}
	for {
		lost := conn.NotifyClose(make(chan *amqp.Error, 1))
		var reason *amqp.Error
		select {
		case reason = <-lost:
		case <-c.done:
			return
		}
		c.mu.Lock()
		c.conn = nil
		close(c.changed)
		c.changed = make(chan struct{})
		c.mu.Unlock()
		c.log.Warn("rabbitmq connection lost; reconnecting", "error", reasonText(reason))
		start := time.Now()
		if conn = c.reconnect(false); conn == nil {
			return
		}
		c.tel.reconnects.Add(context.Background(), 1)
		c.log.Info("rabbitmq connection recovered", "after", time.Since(start).Round(time.Millisecond))
	}
}

// reconnect dials with backoff, without limit, until a connection is up
// and current; it returns nil when Close comes first. first is the
// client's first connection: tried at once, and its first failure is
// logged as a warning.
func (c *Client) reconnect(first bool) *amqp.Connection {
	bo := c.backoff()
	for attempt := 0; ; attempt++ {
		if !first || attempt > 0 {
			t := time.NewTimer(bo.Next())
			select {
			case <-c.done:
				t.Stop()
				return nil
			case <-t.C:
			}
		}
		conn, err := c.dial()
		if err == nil {
			if err = c.setConn(conn); err == nil {
				return conn
			}
			conn.Close()
		}
		c.mu.Lock()
		c.lastErr = err
		closed := c.closed
		c.mu.Unlock()
		switch {
		case closed:
			return nil
		case first && attempt == 0:
			c.log.Warn("rabbitmq not reachable; connecting in the background", "error", err)
		case attempt == 0 || attempt%20 == 19:
			c.log.Debug("rabbitmq reconnect failed; retrying", "attempt", attempt+1, "error", err)
		}
	}
}

func reasonText(e *amqp.Error) string {
	if e == nil {
		return "closed"
	}
	return e.Error()
}

// channel opens a channel for one-off work, waiting for a connection until
// ctx ends.
func (c *Client) channel(ctx context.Context) (*amqp.Channel, error) {
	for {
		conn, changed, err := c.current()
		if err != nil {
			return nil, err
		}
		if conn != nil {
			ch, err := conn.Channel()
			if err == nil {
				return ch, nil
			}
			if !conn.IsClosed() {
				return nil, err
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("rabbitmq %q: not connected: %w", c.name, ctx.Err())
		case <-changed:
		case <-c.done:
			return nil, ErrClosed
		}
	}
}

// declare runs d on a fresh channel and records it, so that it is declared
// again on every reconnect. Declaring the same entity again replaces the
// record.
func (c *Client) declare(ctx context.Context, d declaration) error {
	for {
		ch, err := c.channel(ctx)
		if err != nil {
			return err
		}
		err = d.declare(ch)
		ch.Close()
		if err != nil {
			// Refused by the broker while the connection is fine: report
			// it. Lost with the connection: try again on the next one.
			if ctx.Err() != nil || c.Connected() {
				return fmt.Errorf("rabbitmq %q: declare %s: %w", c.name, d.id, err)
			}
			continue
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		for i, old := range c.topology {
			if old.id == d.id {
				c.topology[i] = d
				return nil
			}
		}
		c.topology = append(c.topology, d)
		return nil
	}
}

// Exchange describes an exchange to declare.
type Exchange struct {
	// Name is the exchange's name.
	Name string
	// Kind is "direct" (when empty), "fanout", "topic" or "headers".
	Kind string
	// Transient makes the exchange non-durable; the zero value survives a
	// broker restart.
	Transient bool
	// Args are extra arguments.
	Args amqp.Table
}

// DeclareExchange declares an exchange and records it, so that it is
// declared again after every reconnect. It waits for a connection until
// ctx ends.
func (c *Client) DeclareExchange(ctx context.Context, e Exchange) error {
	kind := e.Kind
	if kind == "" {
		kind = amqp.ExchangeDirect
	}
	return c.declare(ctx, declaration{id: "exchange " + e.Name, declare: func(ch *amqp.Channel) error {
		return ch.ExchangeDeclare(e.Name, kind, !e.Transient, false, false, false, e.Args)
	}})
}

// Queue describes a queue to declare.
//
// A queue shared with services in other languages must be declared with
// the same properties on every side, or the broker refuses the second
// declaration with PRECONDITION_FAILED (406): Python's pika declares
// queue_declare('tasks') non-durable (Transient here), Node's amqplib
// assertQueue('tasks') durable (the zero value here), and a dead-letter
// queue or a quorum type set on one side is an argument the others must
// repeat. A service that joins a queue another one owns sets Passive and
// uses the queue as it is.
type Queue struct {
	// Name is the queue's name.
	Name string
	// Transient makes the queue non-durable (its messages are lost when
	// the broker restarts); the zero value is durable.
	Transient bool
	// Quorum declares a replicated quorum queue (x-queue-type=quorum)
	// instead of a classic one.
	Quorum bool
	// DeadLetterQueue, when set, is declared too (durable), and messages
	// rejected for good (see ConsumeOptions.MaxAttempts) are routed to it.
	DeadLetterQueue string
	// Args are extra arguments.
	Args amqp.Table
	// Passive uses the queue as it exists, whatever its durability and
	// arguments, without declaring it (queue.declare with the passive
	// flag): for a queue another service owns, such as the non-durable
	// queue of a Python service's pika queue_declare('tasks'), which a
	// durable declaration here would have the broker refuse. DeclareQueue
	// then only checks that the queue exists, and fails with an error
	// wrapping ErrQueueNotFound when it does not (start its owner first,
	// or retry). Transient, Quorum, DeadLetterQueue and Args must be left
	// unset: the owner decides them; a message the handler rejects for
	// good goes to the queue's own dead-letter exchange, if it has one.
	//
	// The queue stays recorded: after a reconnect it is checked again,
	// and when it is missing (a non-durable queue does not survive a
	// broker restart) the client logs a warning and Consume on it waits,
	// retrying with backoff, until its owner declares it again, instead
	// of failing as it does for a queue that was never declared.
	Passive bool
}

// DeclareQueue declares a queue (and its dead-letter queue) and records it,
// so that it is declared again after every reconnect. It waits for a
// connection until ctx ends. With Queue.Passive set it only checks that
// the queue exists (see Passive). A queue that exists with other
// properties is refused by the broker with PRECONDITION_FAILED; the
// error, an *amqp.Error with Code 406, says which property differs.
func (c *Client) DeclareQueue(ctx context.Context, q Queue) error {
	if q.Passive {
		return c.declarePassive(ctx, q)
	}
	args := amqp.Table{}
	for k, v := range q.Args {
		args[k] = v
	}
	if q.Quorum {
		args["x-queue-type"] = amqp.QueueTypeQuorum
	}
	if q.DeadLetterQueue != "" {
		args["x-dead-letter-exchange"] = ""
		args["x-dead-letter-routing-key"] = q.DeadLetterQueue
		if err := c.declare(ctx, declaration{id: "queue " + q.DeadLetterQueue, declare: func(ch *amqp.Channel) error {
			_, err := ch.QueueDeclare(q.DeadLetterQueue, true, false, false, false, nil)
			return mismatch(err)
		}}); err != nil {
			return err
		}
	}
	return c.declare(ctx, declaration{id: "queue " + q.Name, declare: func(ch *amqp.Channel) error {
		_, err := ch.QueueDeclare(q.Name, !q.Transient, false, false, false, args)
		return mismatch(err)
	}})
}

// mismatch adds to a PRECONDITION_FAILED refusal of a queue declaration
// what to do about it.
func mismatch(err error) error {
	var ae *amqp.Error
	if errors.As(err, &ae) && ae.Code == amqp.PreconditionFailed {
		return fmt.Errorf("%w (the queue exists with other properties: declare it as the service that owns it does, e.g. Transient for the non-durable queue of pika's queue_declare, or set Queue.Passive to use it as it is)", err)
	}
	return err
}

// declarePassive checks that q exists and records it (see Queue.Passive).
func (c *Client) declarePassive(ctx context.Context, q Queue) error {
	var set []string
	if q.Transient {
		set = append(set, "Transient")
	}
	if q.Quorum {
		set = append(set, "Quorum")
	}
	if q.DeadLetterQueue != "" {
		set = append(set, "DeadLetterQueue")
	}
	if len(q.Args) > 0 {
		set = append(set, "Args")
	}
	switch {
	case q.Name == "":
		return fmt.Errorf("rabbitmq %q: declare queue: Passive needs the Name of an existing queue", c.name)
	case len(set) > 0:
		return fmt.Errorf("rabbitmq %q: declare queue %q: Passive uses the queue as it exists, so %s must be left unset", c.name, q.Name, strings.Join(set, ", "))
	}
	return c.declare(ctx, declaration{id: "queue " + q.Name + " (passive)", passive: q.Name, declare: func(ch *amqp.Channel) error {
		_, err := ch.QueueDeclarePassive(q.Name, false, false, false, false, nil)
		var ae *amqp.Error
		if errors.As(err, &ae) && ae.Code == amqp.NotFound {
			return fmt.Errorf("%w: %q does not exist (Queue.Passive uses a queue another service declares: start that service first, or retry): %w", ErrQueueNotFound, q.Name, err)
		}
		return err
	}})
}

// passive reports whether queue was declared passively through c.
func (c *Client) passive(queue string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, d := range c.topology {
		if d.passive == queue {
			return true
		}
	}
	return false
}

// BindQueue binds a queue to an exchange with a routing key and records
// the binding, so that it is declared again after every reconnect.
func (c *Client) BindQueue(ctx context.Context, queue, exchange, key string, args amqp.Table) error {
	return c.declare(ctx, declaration{id: fmt.Sprintf("binding %s->%s[%s]", exchange, queue, key), declare: func(ch *amqp.Channel) error {
		return ch.QueueBind(queue, key, exchange, false, args)
	}})
}

// Connected reports whether the client has a connection at the moment.
func (c *Client) Connected() bool {
	conn, _, err := c.current()
	return err == nil && conn != nil && !conn.IsClosed()
}

// HealthCheck is the readiness check of the connection, named
// "rabbitmq:{name}": Unhealthy until the first connection ("connecting",
// with the last error) and while the client is reconnecting, so the
// instance stays out of rotation without being restarted. It reads the
// connection's state and sends nothing: a broker gone silent is noticed
// by the heartbeat, within 1.5 × Config.Heartbeat (6 s with
// DefaultHeartbeat), and the check turns Unhealthy then. Config's
// HealthCheckFailureStatus replaces Unhealthy when set.
func (c *Client) HealthCheck() health.Check {
	return health.Check{
		Name:          "rabbitmq:" + c.name,
		Tags:          []string{health.TagReady},
		FailureStatus: c.cfg.HealthCheckFailureStatus,
		Check: func(context.Context) error {
			if c.Connected() {
				return nil
			}
			c.mu.Lock()
			ever, last := c.everConnected, c.lastErr
			c.mu.Unlock()
			state := "reconnecting"
			if !ever {
				state = "connecting, never connected yet"
			}
			if last != nil {
				return fmt.Errorf("rabbitmq %q: not connected (%s; last attempt: %v)", c.name, state, last)
			}
			return fmt.Errorf("rabbitmq %q: not connected (%s)", c.name, state)
		},
	}
}

// HealthChecks returns HealthCheck, or nothing when the configuration
// disables health checks.
func (c *Client) HealthChecks() []health.Check {
	if c.cfg.DisableHealthChecks {
		return nil
	}
	return []health.Check{c.HealthCheck()}
}

// Close stops reconnecting and closes the connection. Publishes still
// waiting for a confirm fail with ErrClosed; stop consumers (cancel their
// context and let Consume return) before closing, so that their in-flight
// messages are acknowledged. Close is safe to call more than once.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	close(c.done)
	conn := c.conn
	c.conn = nil
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
	var err error
	if conn != nil {
		err = conn.Close()
		if errors.Is(err, amqp.ErrClosed) {
			err = nil
		}
	}
	// A reconnect in progress (a dial or handshake stalled by a silent
	// broker) gives up now instead of at its 30 s timeout.
	c.stopDial()
	c.wg.Wait()
	c.pub.close()
	return err
}

// String describes the client without its password.
func (c *Client) String() string {
	state := "disconnected"
	if c.Connected() {
		state = "connected"
	}
	return fmt.Sprintf("rabbitmq.Client{%s %s, %s}", c.name, c.cfg.redactedURL(), state)
}

// GoString is String, for %#v.
func (c *Client) GoString() string { return c.String() }

// LogValue implements slog.LogValuer without the password.
func (c *Client) LogValue() slog.Value {
	return slog.GroupValue(slog.String("name", c.name), slog.String("url", c.cfg.redactedURL()), slog.Bool("connected", c.Connected()))
}

// MarshalJSON implements json.Marshaler without the password.
func (c *Client) MarshalJSON() ([]byte, error) { return c.cfg.MarshalJSON() }
