package servicedefaults

import (
	"log/slog"

	"go.opentelemetry.io/otel"
	otellog "go.opentelemetry.io/otel/log"
	"go.opentelemetry.io/otel/log/global"
	lognoop "go.opentelemetry.io/otel/log/noop"
	"go.opentelemetry.io/otel/propagation"
)

// WithoutGlobals makes Add leave process-wide state alone: it does not
// install the App's providers and propagator as the OpenTelemetry globals
// (otel.SetTracerProvider, otel.SetMeterProvider, otel.SetTextMapPropagator,
// global.SetLoggerProvider, otel.SetErrorHandler), does not replace
// slog's default logger and does not set the Go memory limit from the
// container's (MemoryLimitKey); integrations that route a library's process-wide
// logger to the App's (integrations/aspireredis, go-redis's) leave it alone
// too (see Host.UsesGlobals). Several Apps can then live in one process,
// each exporting to its own receivers.
//
// Everything the App makes (its handler, HTTP, gRPC, database, Redis,
// cache, RabbitMQ and NATS clients) reports through the App's own
// providers either way. Libraries of your own should be handed
// App.TracerProvider, App.MeterProvider, App.Propagator and App.Logger
// explicitly: a library reading the globals sees whatever the process set
// there (no-ops by default). The traced helpers of messaging/nats and
// messaging/redisevents are such libraries: pass them
// WithTracerProvider(app.TracerProvider()) and WithPropagator(app.Propagator()).
func WithoutGlobals() Option { return func(o *options) { o.noGlobals = true } }

// installGlobals makes the App's telemetry and logger the process-wide
// defaults and sets the Go memory limit from the container's. Add calls
// it last, once nothing can fail, unless WithoutGlobals.
func (a *App) installGlobals() {
	otel.SetTracerProvider(a.tel.tp)
	otel.SetMeterProvider(a.tel.mp)
	otel.SetTextMapPropagator(a.tel.prop)
	if a.tel.lp != nil {
		global.SetLoggerProvider(a.tel.lp)
	}
	// SDK errors (failed exports mostly) go to the console only: sending
	// them through the OTel log pipeline that may be what is failing
	// would loop.
	consoleLogger := slog.New(a.logs.console)
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		consoleLogger.Warn("OpenTelemetry error", "error", a.tel.scrub(err.Error()))
	}))
	slog.SetDefault(a.user)
	a.applyMemoryLimit()
}

// Propagator returns the App's text map propagator (W3C trace context and
// baggage, or what OTEL_PROPAGATORS names), to hand to client libraries.
func (a *App) Propagator() propagation.TextMapPropagator { return a.tel.prop }

// LoggerProvider returns the App's OpenTelemetry logger provider (a no-op
// one when logs are not exported), to hand to log bridges of your own.
// App.Logger already writes through it.
func (a *App) LoggerProvider() otellog.LoggerProvider {
	if a.tel.lp == nil {
		return lognoop.NewLoggerProvider()
	}
	return a.tel.lp
}
