package servicedefaults

import (
	"context"

	"github.com/goaspire/goaspire/messaging/rabbitmq"
)

// RabbitMQ returns the RabbitMQ client of the connection called name
// (ConnectionStrings:name as amqp:// or amqps://, or Aspire 13's NAME_URI /
// NAME_HOST ...; settings from Aspire:RabbitMQ:Client and
// Aspire:RabbitMQ:Client:{name}), opened on first use and shared
// afterwards. The first connection is retried MaxConnectRetryCount times
// (default 5) with backoff; after that the client reconnects by itself,
// declaring its topology again and resuming its consumers.
//
// The client reports through the App's telemetry (publish and process
// spans in one trace, messaging metrics), registers its readiness check
// "rabbitmq:{name}" (off with DisableHealthChecks) and is closed by
// Shutdown. Stop consumers first (run them with App.Go, or cancel their
// context in an OnShutdown hook registered after this call) so their
// in-flight messages are acknowledged. Errors name the key at fault and
// never contain the password.
func (a *App) RabbitMQ(name string) (*rabbitmq.Client, error) {
	return a.RabbitMQContext(context.Background(), name)
}

// RabbitMQContext is App.RabbitMQ with ctx bounding the open (its
// connection retries included), as for DBContext.
func (a *App) RabbitMQContext(ctx context.Context, name string) (*rabbitmq.Client, error) {
	return openOnce(ctx, a, "rabbitmq", name, func(ctx context.Context) (opened[*rabbitmq.Client], error) {
		cfg, err := rabbitmq.LoadConfig(a.cfg, name)
		if err != nil {
			return opened[*rabbitmq.Client]{}, err
		}
		cfg.TracerProvider = a.tel.tp
		cfg.MeterProvider = a.tel.mp
		cfg.Propagator = a.tel.prop
		cfg.Logger = a.componentLogger(scopeRabbitMQ)
		c, err := rabbitmq.New(ctx, cfg)
		if err != nil {
			return opened[*rabbitmq.Client]{}, err
		}
		return opened[*rabbitmq.Client]{client: c, checks: c.HealthChecks(), close: c.Close}, nil
	})
}
