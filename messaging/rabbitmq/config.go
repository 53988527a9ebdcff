package rabbitmq

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/internal/redact"
)

// ConfigSection is the configuration section of the settings, as
// Aspire.RabbitMQ.Client names it. Settings are read from it, then from
// ConfigSection:{name}; later wins.
const ConfigSection = "Aspire:RabbitMQ:Client"

// DefaultMaxConnectRetryCount is Aspire's default number of retries of
// the first connection.
const DefaultMaxConnectRetryCount = 5

// DefaultHeartbeat is the AMQP heartbeat interval requested when
// Config.Heartbeat is zero. amqp091-go closes a connection on which nothing
// has been read for 1.5 intervals (three of its half-interval ticks), so a
// broker gone silent (a partition: no RST, no FIN) is noticed within
// 1.5 × 4 s = 6 s: the connection is then reported lost, HealthCheck turns
// Unhealthy and the client reconnects. RabbitMQ.Client's
// RequestedHeartbeat is 60 s and amqp091-go's 10 s (noticed after 15 s);
// both leave /health Healthy too long for a readiness probe.
const DefaultHeartbeat = 4 * time.Second

// DefaultPublishConfirmTimeout bounds Publish when its context has no
// deadline: how long it waits for a connection, the send and the broker's
// confirm, before failing with ErrConfirmTimeout. It is RabbitMQ.Client's
// default ContinuationTimeout, the time it gives a protocol operation.
const DefaultPublishConfirmTimeout = 20 * time.Second

// ErrConnectionString is wrapped by every error about a connection string
// that cannot be used.
var ErrConnectionString = errors.New("invalid RabbitMQ connection string")

// Config configures a [Client]. Build one by hand or with [LoadConfig].
// The zero value connects to amqp://localhost:5672/ as guest, in the
// background (New does not wait for the broker), publishing non-mandatory
// messages.
//
// URL holds the password: String, GoString, LogValue and MarshalJSON show
// it masked, so a Config can be logged or printed in any format.
type Config struct {
	// URL is the broker's amqp:// or amqps:// URL,
	// amqp://user:password@host:port/vhost; user name and password
	// percent-encoded. Empty means amqp://guest:guest@localhost:5672/.
	URL string
	// Name names the connection in health checks, logs and telemetry;
	// LoadConfig sets the connection name. Empty means "rabbitmq".
	Name string
	// WaitOnOpen, when positive, makes New wait up to that long for the
	// first connection, retrying it MaxConnectRetryCount times, and fail
	// when it does not come. Zero (the default) does not wait: New
	// returns at once and the client connects in the background.
	WaitOnOpen time.Duration
	// MaxConnectRetryCount is how many times New retries the first
	// connection before failing when it waits for it (WaitOnOpen); 0
	// tries once. LoadConfig's default is Aspire's, 5. Without
	// WaitOnOpen it is not used: the client retries in the background
	// without limit. Once connected, the client reconnects without limit.
	MaxConnectRetryCount int
	// Mandatory publishes every message as mandatory (see
	// Message.Mandatory): Publish fails with ErrUnroutable for a message
	// no queue takes. The default, as in RabbitMQ's clients, lets the
	// broker drop such a message and Publish succeed.
	Mandatory bool
	// DisableHealthChecks leaves HealthCheck's check out of
	// Client.HealthChecks, what integrations/aspirerabbitmq registers
	// with an App.
	DisableHealthChecks bool
	// HealthCheckFailureStatus is the status HealthCheck reports while
	// the client is not connected: health.Unhealthy (also when empty) or
	// health.Degraded, for a service that keeps serving without the
	// broker. LoadConfig reads it from HealthCheckFailureStatus.
	HealthCheckFailureStatus health.Status
	// DisableTracing turns off the publish and process spans; trace
	// context is still carried in message headers.
	DisableTracing bool
	// TLSConfig is used for amqps://; nil means RootCAs (else the system
	// roots) and the URL's host name.
	TLSConfig *tls.Config
	// RootCAs are the certificate authorities an amqps:// broker is
	// verified against when TLSConfig is nil; nil means the system roots.
	// aspirerabbitmq sets the App's roots (the system roots plus
	// SSL_CERT_FILE and SSL_CERT_DIR).
	RootCAs *x509.CertPool
	// Heartbeat is the AMQP heartbeat interval requested from the broker
	// (in whole seconds, at least 1 s; the broker may lower it); zero means
	// DefaultHeartbeat. A silent connection is noticed within 1.5
	// intervals, and a write that makes no progress for as long fails.
	// LoadConfig reads it from ConnectionFactory:RequestedHeartbeat.
	Heartbeat time.Duration
	// PublishConfirmTimeout bounds a Publish whose context has no deadline
	// (see DefaultPublishConfirmTimeout, used when it is zero); a negative
	// value leaves such a Publish unbounded. A context with a deadline
	// decides alone.
	PublishConfirmTimeout time.Duration
	// ReconnectDelay is the first delay of the exponential, jittered
	// reconnect backoff (zero means 100 ms); MaxReconnectDelay caps it
	// (zero means 5 s).
	ReconnectDelay, MaxReconnectDelay time.Duration
	// TracerProvider, MeterProvider and Propagator default to OTel's
	// globals, except that a Propagator left nil while the global one is
	// OTel's no-op default means W3C trace context and baggage.
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	Propagator     propagation.TextMapPropagator
	// Logger reports connection loss and recovery; nil means slog.Default.
	Logger *slog.Logger
}

// redactedURL is URL with the password masked.
func (c Config) redactedURL() string {
	if c.URL == "" {
		return ""
	}
	return redact.URL(c.URL)
}

// String describes the configuration with the password masked.
func (c Config) String() string {
	return fmt.Sprintf("rabbitmq.Config{Name: %q, URL: %q, MaxConnectRetryCount: %d, DisableHealthChecks: %t, DisableTracing: %t}",
		c.Name, c.redactedURL(), c.MaxConnectRetryCount, c.DisableHealthChecks, c.DisableTracing)
}

// GoString is String, for %#v.
func (c Config) GoString() string { return c.String() }

// LogValue implements slog.LogValuer with the password masked.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("name", c.Name),
		slog.String("url", c.redactedURL()),
		slog.Int("max_connect_retry_count", c.MaxConnectRetryCount),
		slog.Bool("disable_health_checks", c.DisableHealthChecks),
		slog.Bool("disable_tracing", c.DisableTracing),
	)
}

// MarshalJSON implements json.Marshaler with the password masked.
func (c Config) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Name                 string
		URL                  string
		MaxConnectRetryCount int
		DisableHealthChecks  bool
		DisableTracing       bool
	}{c.Name, c.redactedURL(), c.MaxConnectRetryCount, c.DisableHealthChecks, c.DisableTracing})
}

// LoadConfig reads the configuration of the connection called name, as
// Aspire.RabbitMQ.Client does: the settings ConnectionString,
// MaxConnectRetryCount, DisableHealthChecks, HealthCheckFailureStatus,
// DisableTracing, PublishConfirmTimeout, WaitOnOpen, Mandatory and
// ConnectionFactory:RequestedHeartbeat (the
// RabbitMQ.Client ConnectionFactory property Aspire binds from that
// subsection) from [ConfigSection], then from ConfigSection:{name}; then the connection
// string ConnectionStrings:{name} (with the other forms discovery knows,
// such as Aspire 13's NAME_URI, or NAME_HOST, NAME_PORT, NAME_USERNAME and
// NAME_PASSWORD) replaces the ConnectionString setting.
//
// Errors name the key at fault and never contain the password; an
// unusable connection string wraps [ErrConnectionString], a missing one
// [discovery.ErrNotFound].
func LoadConfig(cfg *discovery.Config, name string) (*Config, error) {
	if strings.TrimSpace(name) == "" {
		return nil, errors.New("rabbitmq: LoadConfig: empty connection name")
	}
	general := cfg.Section(ConfigSection)
	sections := []*discovery.Config{general, general.Section(name)}
	c := &Config{Name: name, MaxConnectRetryCount: DefaultMaxConnectRetryCount}
	var from string
	for _, sec := range sections {
		if v := strings.TrimSpace(sec.String("ConnectionString")); v != "" {
			c.URL, from = v, sec.Path()+":ConnectionString"
		}
		var err error
		if c.MaxConnectRetryCount, err = sec.Int("MaxConnectRetryCount", c.MaxConnectRetryCount); err != nil {
			return nil, fmt.Errorf("rabbitmq: %w", err)
		}
		if c.MaxConnectRetryCount < 0 {
			return nil, fmt.Errorf("rabbitmq: %w", &discovery.KeyError{Key: sec.Path() + ":MaxConnectRetryCount", Err: errors.New("must not be negative")})
		}
		if c.DisableHealthChecks, err = sec.Bool("DisableHealthChecks", c.DisableHealthChecks); err != nil {
			return nil, fmt.Errorf("rabbitmq: %w", err)
		}
		if v := strings.TrimSpace(sec.String("HealthCheckFailureStatus")); v != "" {
			if c.HealthCheckFailureStatus, err = health.ParseFailureStatus(v); err != nil {
				return nil, fmt.Errorf("rabbitmq: %w", &discovery.KeyError{Key: sec.Path() + ":HealthCheckFailureStatus", Err: err})
			}
		}
		if c.DisableTracing, err = sec.Bool("DisableTracing", c.DisableTracing); err != nil {
			return nil, fmt.Errorf("rabbitmq: %w", err)
		}
		if set(sec, "PublishConfirmTimeout") {
			if c.PublishConfirmTimeout, err = sec.Duration("PublishConfirmTimeout", 0); err != nil {
				return nil, fmt.Errorf("rabbitmq: %w", err)
			}
			if c.PublishConfirmTimeout <= 0 {
				return nil, fmt.Errorf("rabbitmq: %w", &discovery.KeyError{Key: sec.Path() + ":PublishConfirmTimeout", Err: errors.New("must be positive")})
			}
		}
		if set(sec, "WaitOnOpen") {
			if c.WaitOnOpen, err = sec.Duration("WaitOnOpen", 0); err != nil {
				return nil, fmt.Errorf("rabbitmq: %w", err)
			}
			if c.WaitOnOpen < 0 {
				return nil, fmt.Errorf("rabbitmq: %w", &discovery.KeyError{Key: sec.Path() + ":WaitOnOpen", Err: errors.New("must not be negative")})
			}
		}
		if c.Mandatory, err = sec.Bool("Mandatory", c.Mandatory); err != nil {
			return nil, fmt.Errorf("rabbitmq: %w", err)
		}
		if set(sec, "ConnectionFactory:RequestedHeartbeat") {
			if c.Heartbeat, err = sec.Duration("ConnectionFactory:RequestedHeartbeat", 0); err != nil {
				return nil, fmt.Errorf("rabbitmq: %w", err)
			}
			if c.Heartbeat < time.Second || c.Heartbeat%time.Second != 0 {
				return nil, fmt.Errorf("rabbitmq: %w", &discovery.KeyError{Key: sec.Path() + ":ConnectionFactory:RequestedHeartbeat", Err: errors.New("must be a whole number of seconds, at least 1s (AMQP negotiates it in seconds)")})
			}
		}
	}

	conn, err := cfg.Connection(name)
	p := conn.PropertyPrefix // the name's NAME_, or the portable alias's
	if p == "" {
		p = discovery.EnvName(name) + "_"
	}
	switch {
	case err == nil && strings.TrimSpace(conn.ConnectionString) != "":
		c.URL, from = strings.TrimSpace(conn.ConnectionString), conn.ConnectionStringKey
	case err == nil && conn.URI != "":
		c.URL, from = conn.URI, p+"URI"
		c.URL = withCredentials(c.URL, conn.Username, conn.Password)
	case err == nil && conn.Host != "":
		host := conn.Host
		if conn.Port != "" {
			host = net.JoinHostPort(strings.Trim(host, "[]"), conn.Port)
		}
		u := url.URL{Scheme: "amqp", Host: host, Path: "/"}
		if conn.Username != "" || conn.Password != "" {
			u.User = url.UserPassword(conn.Username, conn.Password)
		}
		c.URL, from = u.String(), p+"HOST"
	case c.URL == "":
		return nil, fmt.Errorf("rabbitmq: connection %q: %w: set ConnectionStrings__%s, %sURI, %sHOST, or %s:%s:ConnectionString",
			name, discovery.ErrNotFound, name, p, p, ConfigSection, name)
	}
	if err := checkURL(c.URL); err != nil {
		return nil, fmt.Errorf("rabbitmq: %w", &discovery.KeyError{Key: from, Err: err})
	}
	return c, nil
}

// set reports whether sec has a non-empty value for key.
func set(sec *discovery.Config, key string) bool {
	v, ok := sec.Lookup(key)
	return ok && strings.TrimSpace(v) != ""
}

// withCredentials adds user and password to a URL that has none.
func withCredentials(raw, user, password string) string {
	if user == "" && password == "" {
		return raw
	}
	u, err := url.Parse(raw)
	if err != nil || u.User != nil {
		return raw
	}
	u.User = url.UserPassword(user, password)
	return u.String()
}

// checkURL validates an AMQP URL without ever quoting it: it may hold a
// password.
func checkURL(raw string) error {
	scheme, _, ok := strings.Cut(raw, "://")
	if !ok {
		return fmt.Errorf("%w: not a URL (want amqp://user:password@host:port/vhost)", ErrConnectionString)
	}
	if s := strings.ToLower(scheme); s != "amqp" && s != "amqps" {
		return fmt.Errorf("%w: scheme %q is not amqp or amqps", ErrConnectionString, redact.Value("scheme", scheme))
	}
	if strings.ContainsAny(raw, " \t\r\n") {
		return fmt.Errorf("%w: contains white space", ErrConnectionString)
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error quotes the whole URL; keep only what went wrong,
		// and never a part of the user information.
		return fmt.Errorf("%w: does not parse as a URL (a user name or password with reserved characters such as @ : / ? # must be percent-encoded)", ErrConnectionString)
	}
	if u.Hostname() == "" {
		return fmt.Errorf("%w: no host", ErrConnectionString)
	}
	if port := u.Port(); port != "" {
		var n int
		if _, err := fmt.Sscanf(port, "%d", &n); err != nil || n < 1 || n > 65535 || fmt.Sprint(n) != port {
			return fmt.Errorf("%w: port %q is not a number from 1 to 65535", ErrConnectionString, port)
		}
	}
	for key := range u.Query() {
		switch key {
		case "heartbeat", "connection_timeout", "channel_max", "auth_mechanism",
			"certfile", "keyfile", "cacertfile", "server_name_indication":
		default:
			return fmt.Errorf("%w: unknown query parameter %q", ErrConnectionString, redact.Value(key, key))
		}
	}
	return nil
}
