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
	a.res.mu.Lock()
	defer a.res.mu.Unlock()
	return openOnce(a, "rabbitmq", name, func() (opened[*rabbitmq.Client], error) {
		cfg, err := rabbitmq.LoadConfig(a.cfg, name)
		if err != nil {
			return opened[*rabbitmq.Client]{}, err
		}
		cfg.TracerProvider = a.tel.tp
		cfg.MeterProvider = a.tel.mp
		cfg.Propagator = a.tel.prop
		cfg.Logger = a.logger
		c, err := rabbitmq.New(context.Background(), cfg)
		if err != nil {
			return opened[*rabbitmq.Client]{}, err
		}
		return opened[*rabbitmq.Client]{c, c.HealthChecks(), c.Close}, nil
	})
}
