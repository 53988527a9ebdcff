package servicedefaults

import (
	"context"
	"crypto/tls"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/goaspire/goaspire/health"
	natsmsg "github.com/goaspire/goaspire/messaging/nats"
)

// NATS returns nats.go's connection to the NATS resource called name
// (ConnectionStrings:name: nats://[user:password@]host:port, several URLs
// separated by commas; or Aspire 13's NAME_URI / NAME_HOST ...; settings
// from Aspire:NATS:Net and Aspire:NATS:Net:{name}, see
// natsmsg.LoadConfig), opened on first use and shared afterwards. NATS
// need not be up: the connection retries and reconnects forever, logging
// through the App's logger. TLS servers (tls://, or a server that requires
// TLS) are trusted through the system roots plus SSL_CERT_FILE and
// SSL_CERT_DIR, where Aspire puts its development certificate.
//
// Its health check "nats:{name}" (off with
// Aspire:NATS:Net:DisableHealthChecks) is Degraded while reconnecting and
// Unhealthy once closed. Shutdown drains it (pending publishes are sent,
// subscriptions finish the messages they hold) within its bound, after the
// App's workers have returned, then closes it.
//
// The traced helpers of package natsmsg (Publish, Subscribe,
// PublishJetStream, ConsumeJetStream ...) use OpenTelemetry's global
// tracer provider and propagator unless given others, and Add installs the
// App's as the globals. Under WithoutGlobals, hand them over explicitly:
// natsmsg.WithTracerProvider(app.TracerProvider()) and
// natsmsg.WithPropagator(app.Propagator()) (the same for redisevents).
func (a *App) NATS(name string) (*nats.Conn, error) {
	return a.NATSContext(context.Background(), name)
}

// NATSContext is App.NATS with ctx bounding the open, as for DBContext.
func (a *App) NATSContext(ctx context.Context, name string) (*nats.Conn, error) {
	return openOnce(ctx, a, "nats", name, func(ctx context.Context) (opened[*nats.Conn], error) {
		c, err := natsmsg.LoadConfig(a.cfg, name)
		if err != nil {
			return opened[*nats.Conn]{}, err
		}
		c.Logger = a.componentLogger(scopeNATS)
		if pool := a.RootCAs(); pool != nil {
			// Used for tls:// servers and servers that require TLS; a
			// plain nats:// server is still reached in the clear.
			c.Options = append(c.Options, func(o *nats.Options) error {
				o.TLSConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
				return nil
			})
		}
		nc, err := natsmsg.New(ctx, c)
		if err != nil {
			return opened[*nats.Conn]{}, err
		}
		var checks []health.Check
		if !c.DisableHealthChecks {
			checks = append(checks, natsmsg.HealthCheck(name, nc))
		}
		return opened[*nats.Conn]{
			client: nc,
			checks: checks,
			close:  func() error { nc.Close(); return nil },
			drain:  func(ctx context.Context) error { return drainNATS(ctx, nc) },
		}, nil
	})
}

// drainNATS drains nc and waits, within ctx, for it to close; past ctx, or
// when it cannot drain (closed, reconnecting), it closes it at once.
func drainNATS(ctx context.Context, nc *nats.Conn) error {
	closed := nc.StatusChanged(nats.CLOSED)
	defer nc.RemoveStatusListener(closed)
	if err := nc.Drain(); err != nil {
		nc.Close()
		return nil
	}
	select {
	case <-closed:
		return nil
	case <-ctx.Done():
		nc.Close()
		return fmt.Errorf("servicedefaults: draining nats: %w", ctx.Err())
	}
}
