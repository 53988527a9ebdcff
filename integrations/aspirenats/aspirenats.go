// Package aspirenats opens nats.go's connection to a NATS resource an
// Aspire AppHost (or Kubernetes, or a shell) configures, on a
// servicedefaults App: the counterpart of .NET Aspire's Aspire.NATS.Net
// integration. The connection logs through the App's logger, trusts the
// App's roots for TLS, registers its health check and is drained by the
// App's Shutdown.
//
//	app, err := servicedefaults.Add(ctx, mux)
//	...
//	nc, err := aspirenats.Conn(ctx, app, "events")
//
// Package natsmsg (messaging/nats) stays usable without an App:
// [natsmsg.LoadConfig] and [natsmsg.New] are what Conn calls, and its
// traced helpers (Publish, Subscribe, PublishJetStream, ConsumeJetStream
// ...) work on the connection Conn returns.
package aspirenats

import (
	"context"
	"crypto/tls"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/goaspire/goaspire/health"
	natsmsg "github.com/goaspire/goaspire/messaging/nats"
	"github.com/goaspire/goaspire/servicedefaults"
)

// scope is the instrumentation scope of the connection's log records (the
// Aspire dashboard's Category).
const scope = "github.com/goaspire/goaspire/messaging/nats"

// Conn returns nats.go's connection to the NATS resource called name on h
// (ConnectionStrings:name: nats://[user:password@]host:port, several URLs
// separated by commas; or Aspire 13's NAME_URI / NAME_HOST ...; settings
// from Aspire:NATS:Net and Aspire:NATS:Net:{name}, see
// [natsmsg.LoadConfig]), opened on first use and shared afterwards. NATS
// need not be up: Conn returns at once and the connection connects in the
// background (its health check is Unhealthy, "connecting", until then),
// then reconnects forever, logging through the App's logger (instrumentation scope
// github.com/goaspire/goaspire/messaging/nats). TLS servers (tls://, or a
// server that requires TLS) are trusted through the App's roots: the
// system roots plus SSL_CERT_FILE and SSL_CERT_DIR, where Aspire puts its
// development certificate.
//
// configure, if given, runs once, when the name is first opened: after
// the configuration was read and the App's logger and roots were set on
// it, before the connection opens. It is where code adds nats.go options
// (Config.Options, applied last, so they win: a credentials file, NKeys,
// a TLS configuration of its own) or changes the ping settings. Later
// calls for the same name return the first connection, whatever configure
// they pass.
//
// Set Aspire:NATS:Net[:{name}]:WaitOnOpen (a duration) to make Conn wait
// for the first connection instead, and fail when it does not come.
//
// Its health check "nats:{name}" (off with
// Aspire:NATS:Net:DisableHealthChecks) is Unhealthy until the first
// connection, while reconnecting and once closed;
// Aspire:NATS:Net[:{name}]:HealthCheckFailureStatus
// (Config.HealthCheckFailureStatus) = Degraded keeps a service that
// survives NATS being away in rotation. Shutdown drains the connection (pending
// publishes are sent, subscriptions finish the messages they hold) within
// its bound, after the App's workers have returned, then closes it. Errors
// name the key at fault and never contain the password; once Shutdown has
// closed the clients they match servicedefaults.ErrClosed.
//
// The traced helpers of package natsmsg use OpenTelemetry's global tracer
// provider and propagator unless given others, and servicedefaults.Add
// installs the App's as the globals. Under servicedefaults.WithoutGlobals,
// hand them over explicitly: natsmsg.WithTracerProvider(app.TracerProvider())
// and natsmsg.WithPropagator(app.Propagator()).
func Conn(ctx context.Context, h servicedefaults.Host, name string, configure ...func(*natsmsg.Config)) (*nats.Conn, error) {
	return servicedefaults.OpenClient(ctx, h, "nats", name, func(ctx context.Context) (servicedefaults.Opened[*nats.Conn], error) {
		c, err := natsmsg.LoadConfig(h.Config(), name)
		if err != nil {
			return servicedefaults.Opened[*nats.Conn]{}, err
		}
		c.Logger = h.ComponentLogger(scope)
		if pool := h.RootCAs(); pool != nil {
			// Used for tls:// servers and servers that require TLS; a
			// plain nats:// server is still reached in the clear.
			c.Options = append(c.Options, func(o *nats.Options) error {
				o.TLSConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
				return nil
			})
		}
		for _, f := range configure {
			if f != nil {
				f(c)
			}
		}
		nc, err := natsmsg.New(ctx, c)
		if err != nil {
			return servicedefaults.Opened[*nats.Conn]{}, err
		}
		var checks []health.Check
		if !c.DisableHealthChecks {
			checks = append(checks, health.WithFailureStatus(natsmsg.HealthCheck(name, nc), c.HealthCheckFailureStatus))
		}
		return servicedefaults.Opened[*nats.Conn]{
			Client: nc,
			Checks: checks,
			Close:  func(ctx context.Context) error { return drain(ctx, nc) },
		}, nil
	})
}

// drain drains nc and waits, within ctx, for it to close; past ctx, or
// when it cannot drain (closed, reconnecting), it closes it at once.
func drain(ctx context.Context, nc *nats.Conn) error {
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
		return fmt.Errorf("aspirenats: draining: %w", ctx.Err())
	}
}
