package servicedefaults

import (
	"context"
	"crypto/x509"
	"log/slog"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/health"
)

// Host is what a client integration needs of an App to open its client:
// the configuration, service discovery, the telemetry providers, a logger
// per component, the health registry, shutdown hooks, the trusted roots
// and open-once-per-name.
// *App implements it; the integration packages (integrations/aspirepostgres,
// integrations/aspireredis, integrations/aspirerabbitmq,
// integrations/aspirenats, integrations/aspiregrpc) take a Host, so a
// service links only the integrations it imports, as .NET Aspire's client
// integrations extend the host builder.
//
// Host may gain methods before v1; implement it by embedding an *App.
type Host interface {
	// Config returns the configuration the App was made with.
	Config() *discovery.Config
	// Resolver returns the App's service-endpoint resolver, which
	// Shutdown closes.
	Resolver() *discovery.Resolver
	// TracerProvider, MeterProvider and Propagator are the App's
	// telemetry, to hand to the client.
	TracerProvider() trace.TracerProvider
	MeterProvider() metric.MeterProvider
	Propagator() propagation.TextMapPropagator
	// ComponentLogger returns a logger for the records of a client
	// library, under its own instrumentation scope (the dashboard's
	// Category), through the App's console and OTel log handlers.
	ComponentLogger(scope string) *slog.Logger
	// Health returns the App's health registry.
	Health() *health.Registry
	// OnShutdown registers a hook Shutdown runs (see App.OnShutdown).
	OnShutdown(f func(context.Context) error)
	// RootCAs returns the roots the App trusts for TLS: nil for the
	// system roots, or the system roots plus SSL_CERT_FILE and
	// SSL_CERT_DIR from the configuration. The first call in the process
	// may parse the CA bundle: call it when the client opens, not ahead.
	// The pool is shared: Clone it before adding to it.
	RootCAs() *x509.CertPool
	// UsesGlobals reports whether the App installs its telemetry and
	// logger as the process-wide defaults (false under WithoutGlobals):
	// an integration whose library keeps a process-wide logger routes it
	// to the App's only then.
	UsesGlobals() bool
	// OpenClient returns the client of kind called name, calling open
	// on first use; see OpenClient, its typed form.
	OpenClient(ctx context.Context, kind, name string, open func(context.Context) (Opened[any], error)) (any, error)
}

// Opened is a client an integration opened, with what the App does with
// it: registers Checks (a check whose name is already registered is
// skipped, so a connection shared by two clients is checked once) and
// runs Close at Shutdown.
type Opened[T any] struct {
	Client T
	Checks []health.Check
	// Close releases the client. Shutdown calls it with its own context,
	// after the server has drained and the App's workers have returned,
	// in reverse order of opening: a client opened on top of another
	// (a cache on a Redis client) closes first. Close may be nil.
	Close func(context.Context) error
}

// OpenClient returns the client of kind called name on h, opening it with
// open on first use and sharing it afterwards: its checks are registered
// and its Close runs at Shutdown. Each name is opened once, by the first
// caller, without holding a lock shared with other names; concurrent
// callers of the same name wait for that open or for their own ctx. A
// failed open is not remembered: the next call tries again.
//
// open's context ends with ctx or when Shutdown closes the clients. Errors
// are prefixed with kind and name ("postgres \"db\": ...") unless they
// name the connection (quoted) already, so that the name appears once;
// once Shutdown has closed the clients they match ErrClosed.
func OpenClient[T any](ctx context.Context, h Host, kind, name string, open func(context.Context) (Opened[T], error)) (T, error) {
	var zero T
	c, err := h.OpenClient(ctx, kind, name, func(ctx context.Context) (Opened[any], error) {
		o, err := open(ctx)
		if err != nil {
			return Opened[any]{}, err
		}
		return Opened[any]{Client: o.Client, Checks: o.Checks, Close: o.Close}, nil
	})
	if err != nil {
		return zero, err
	}
	return c.(T), nil
}

// OpenClient implements Host: see the function OpenClient.
func (a *App) OpenClient(ctx context.Context, kind, name string, open func(context.Context) (Opened[any], error)) (any, error) {
	return openOnce(ctx, a, kind, name, open)
}

// ComponentLogger implements Host: a logger for the records of the
// library whose instrumentation scope (its import path, by convention) is
// scope, written to the App's console and OTel log pipeline.
func (a *App) ComponentLogger(scope string) *slog.Logger { return a.componentLogger(scope) }

// RootCAs implements Host: the roots the App trusts for TLS, nil meaning
// the system roots. Add does not read them: the first call reads the
// system roots plus the certificates of SSL_CERT_FILE and of the files in
// SSL_CERT_DIR, once per process for the same values, unless those values
// are the process environment's, which Go's system roots hold already
// (nil then). The pool is shared by every App of the process: do not add
// to it (Clone it). If SSL_CERT_FILE can no longer be read (Add checked
// it), RootCAs logs a warning naming it and returns the other roots.
func (a *App) RootCAs() *x509.CertPool {
	pool, err := a.roots.pool()
	if err != nil {
		a.roots.warnOnce.Do(func() {
			a.logger.Warn("reading the trusted roots failed; trusting the system roots and SSL_CERT_DIR", "variable", "SSL_CERT_FILE", "error", err)
		})
	}
	return pool
}

// UsesGlobals implements Host: whether Add installed the App's telemetry
// and logger as the process-wide defaults (not under WithoutGlobals).
func (a *App) UsesGlobals() bool { return a.globals }
