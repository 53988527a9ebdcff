package cqrs

import (
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// Option configures OpenPool, Open and OpenDB. Options set in code override
// the configuration.
type Option func(*options)

type options struct {
	tp        trace.TracerProvider
	mp        metric.MeterProvider
	logger    *slog.Logger
	configure func(name string, c *pgxpool.Config) error

	waitOnOpen     *time.Duration
	readYourWrites *bool
	checkInterval  *time.Duration
	maxLag         *time.Duration
}

// WithTracerProvider sets where query spans go (default: the global
// provider).
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(o *options) { o.tp = tp }
}

// WithMeterProvider sets where pool and routing metrics go (default: the
// global provider).
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(o *options) { o.mp = mp }
}

// WithLogger sets the logger for connection and replica state changes
// (default: slog.Default()).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

// WithPoolConfig lets code adjust each pool's pgx configuration after the
// connection string and settings are applied and before the pool is made:
// register types in AfterConnect, set a QueryExecMode, and so on. name is
// the connection name. An error fails the open.
func WithPoolConfig(f func(name string, c *pgxpool.Config) error) Option {
	return func(o *options) { o.configure = f }
}

// WithWaitOnOpen makes the open wait up to d for the first successful
// connection to the primary, failing if it does not come (overrides
// ConnectRetry:WaitOnOpen). Zero, the default, does not wait: the pool
// connects lazily and retries in the background.
func WithWaitOnOpen(d time.Duration) Option {
	return func(o *options) { o.waitOnOpen = &d }
}

// WithReadYourWrites makes every read through the DB see every write made
// earlier through it, not only those of its session (overrides
// ReadYourWrites). See the package documentation.
func WithReadYourWrites(on bool) Option {
	return func(o *options) { o.readYourWrites = &on }
}

// WithCheckInterval sets how often replicas are checked (overrides
// Replicas:CheckInterval).
func WithCheckInterval(d time.Duration) Option {
	return func(o *options) { o.checkInterval = &d }
}

// WithMaxLag sets how far behind the primary a replica may be and stay in
// rotation; zero means no bound (overrides Replicas:MaxLag).
func WithMaxLag(d time.Duration) Option {
	return func(o *options) { o.maxLag = &d }
}

func buildOptions(opts []Option) options {
	var o options
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	if o.tp == nil {
		o.tp = otel.GetTracerProvider()
	}
	if o.mp == nil {
		o.mp = otel.GetMeterProvider()
	}
	if o.logger == nil {
		o.logger = slog.Default()
	}
	return o
}
