// Package aspirerabbitmq opens the RabbitMQ client of a connection an
// Aspire AppHost (or Kubernetes, or a shell) configures, on a
// servicedefaults App: the counterpart of .NET Aspire's
// Aspire.RabbitMQ.Client integration. The client ([rabbitmq.Client])
// reports through the App's telemetry and logger, registers its readiness
// check and is closed by the App's Shutdown.
//
//	app, err := servicedefaults.Add(ctx, mux)
//	...
//	mq, err := aspirerabbitmq.Client(ctx, app, "messaging")
//
// Package rabbitmq stays usable without an App: [rabbitmq.LoadConfig] and
// [rabbitmq.New] are what Client calls.
package aspirerabbitmq

import (
	"context"
	"strings"

	"github.com/goaspire/goaspire/messaging/rabbitmq"
	"github.com/goaspire/goaspire/servicedefaults"
)

// scope is the instrumentation scope of the client's log records (the
// Aspire dashboard's Category).
const scope = "github.com/goaspire/goaspire/messaging/rabbitmq"

// Client returns the RabbitMQ client of the connection called name on h
// (ConnectionStrings:name as amqp:// or amqps://, or Aspire 13's NAME_URI /
// NAME_HOST ...; settings from Aspire:RabbitMQ:Client and
// Aspire:RabbitMQ:Client:{name}, see [rabbitmq.LoadConfig]), opened on
// first use and shared afterwards.
//
// Client does not wait for the broker: it returns at once and the client
// connects in the background, so a broker that is down or still starting
// never fails the service's startup. Until connected, publishes wait
// within their ctx (or PublishConfirmTimeout) and fail by it, consumers
// start once connected, and the readiness check is Unhealthy
// ("connecting"). Set Aspire:RabbitMQ:Client[:{name}]:WaitOnOpen (a
// duration) to make Client wait for the first connection instead,
// retrying MaxConnectRetryCount times (default 5) within it and ctx, and
// fail when it does not come. Once connected, the client reconnects by
// itself, declaring its topology again and resuming its consumers.
// An amqps:// broker is verified against the App's trusted roots (the
// system roots plus SSL_CERT_FILE and SSL_CERT_DIR) unless configure sets
// a TLSConfig.
// Messages are published non-mandatory unless the message (Mandatory) or
// Aspire:RabbitMQ:Client[:{name}]:Mandatory says otherwise.
//
// configure, if given, runs once, when the name is first opened: after
// the configuration was read and the App's telemetry and logger were set
// on it, before the client connects. It is where code sets what the
// configuration does not, or overrides it: publish defaults
// (PublishConfirmTimeout, Mandatory), WaitOnOpen, the heartbeat, a TLSConfig, the reconnect
// backoff. Later calls for the same name return the first client, whatever
// configure they pass.
//
// The client reports through the App's telemetry (publish and process
// spans in one trace, messaging metrics) and logger (instrumentation scope
// github.com/goaspire/goaspire/messaging/rabbitmq), registers its readiness
// check "rabbitmq:{name}" (off with DisableHealthChecks; Unhealthy while
// reconnecting, or what Aspire:RabbitMQ:Client[:{name}]:HealthCheckFailureStatus
// or Config.HealthCheckFailureStatus says: Unhealthy or Degraded) and is closed by
// Shutdown, after the App's workers have returned. Consume from a worker
// (App.Go), or cancel the consumers' context in an OnShutdown hook
// registered after this call, so their in-flight messages are acknowledged
// before the connection closes. Errors name the key at fault and never
// contain the password; once Shutdown has closed the clients they match
// servicedefaults.ErrClosed.
func Client(ctx context.Context, h servicedefaults.Host, name string, configure ...func(*rabbitmq.Config)) (*rabbitmq.Client, error) {
	return servicedefaults.OpenClient(ctx, h, "rabbitmq", name, func(ctx context.Context) (servicedefaults.Opened[*rabbitmq.Client], error) {
		cfg, err := rabbitmq.LoadConfig(h.Config(), name)
		if err != nil {
			return servicedefaults.Opened[*rabbitmq.Client]{}, err
		}
		cfg.TracerProvider = h.TracerProvider()
		cfg.MeterProvider = h.MeterProvider()
		cfg.Propagator = h.Propagator()
		cfg.Logger = h.ComponentLogger(scope)
		if strings.HasPrefix(strings.ToLower(cfg.URL), "amqps:") {
			// Read only for TLS: the roots cost a bundle parse.
			cfg.RootCAs = h.RootCAs()
		}
		for _, f := range configure {
			if f != nil {
				f(cfg)
			}
		}
		c, err := rabbitmq.New(ctx, cfg)
		if err != nil {
			return servicedefaults.Opened[*rabbitmq.Client]{}, err
		}
		return servicedefaults.Opened[*rabbitmq.Client]{
			Client: c,
			Checks: c.HealthChecks(),
			Close:  func(context.Context) error { return c.Close() },
		}, nil
	})
}
