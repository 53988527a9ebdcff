package cqrs

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/health"
)

// Defaults of the DB settings, applied by New to the zero fields of a
// Config.
const (
	// DefaultCheckInterval is how often replicas are checked.
	DefaultCheckInterval = 2 * time.Second
	// DefaultMaxLag is how far behind the primary a replica may be and
	// stay in rotation.
	DefaultMaxLag = 10 * time.Second
	// DefaultRetryInitial is the first wait of the startup connect retry.
	DefaultRetryInitial = 250 * time.Millisecond
	// DefaultRetryMax is the longest wait between startup connect attempts.
	DefaultRetryMax = 10 * time.Second
)

// Config configures a DB: its primary, its replicas, how reads are routed
// among them, and where telemetry goes. Build it with [LoadConfig] from
// configuration, or by hand: every zero field takes the default named in
// its comment, and only Primary.Config is required.
type Config struct {
	// Name names the DB in logs, metrics (goaspire.cqrs.db) and errors.
	// Empty means the primary's Name.
	Name string
	// Primary is the primary's pool, for writes and for reads when no
	// replica is usable.
	Primary PoolConfig
	// Replicas are the streaming replicas' pools, in the order Replicas
	// reports them. Their ConnectRetry and WaitOnOpen are not used: a
	// replica connects lazily, and the checker puts it in rotation once
	// it answers.
	Replicas []PoolConfig

	// ReadYourWrites makes every read through the DB see every write made
	// earlier through it, not only those of its session. See the package
	// documentation.
	ReadYourWrites bool
	// CheckInterval is how often replicas are checked
	// (DefaultCheckInterval, 2 s).
	CheckInterval time.Duration
	// CheckTimeout bounds one check (default: CheckInterval, at least 1 s).
	CheckTimeout time.Duration
	// ReadAttemptTimeout bounds one attempt of a read on a replica, when
	// another server could take the read over
	// (DefaultReadAttemptTimeout, 2 s); negative means no bound. A read
	// the replica does not answer in time runs again on another replica
	// or the primary, where only the caller's deadline or the command
	// timeout bounds it: set it above the slowest read you send to
	// replicas.
	ReadAttemptTimeout time.Duration
	// MaxLag is how far behind the primary a replica may be and stay in
	// rotation (DefaultMaxLag, 10 s); negative means no bound.
	MaxLag time.Duration
	// MaxLagBytes is the same bound in bytes of WAL; zero means no bound.
	MaxLagBytes int64
	// WaitOnOpen, when positive, makes New wait up to that long for the
	// first successful connection to the primary, failing with an error
	// wrapping ErrNotReady if it does not come. Zero does not wait: the
	// pool connects lazily and retries in the background.
	WaitOnOpen time.Duration
	// DisableMetrics turns off the DB's routing metrics (goaspire.cqrs.*);
	// each pool's own metrics follow its PoolConfig.DisableMetrics.
	DisableMetrics bool

	// TracerProvider and MeterProvider receive query spans and pool and
	// routing metrics (default: the OpenTelemetry globals). Logger reports
	// connection and replica state changes (default: slog.Default()). A
	// pool's own providers and logger, when set, win for that pool.
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	Logger         *slog.Logger
}

// PoolConfig configures one pool: its pgx configuration and the
// Aspire:Npgsql settings of the connection. Build it with
// [LoadPoolConfig], or by hand with Config from [ParseConnectionString] or
// pgxpool.ParseConfig; every other zero field takes its default.
type PoolConfig struct {
	// Name is the connection name ("db-primary"). It names the pool in
	// health checks ("postgres:{Name}"), metrics
	// (db.client.connection.pool.name), logs and errors, and is a key of
	// DB.Keyed. Empty means "postgres".
	Name string
	// Source is the configuration key or variable the connection string
	// came from ("ConnectionStrings:db-primary", "DB_PRIMARY_URI"), named
	// by errors about the connection; LoadPoolConfig sets it.
	Source string
	// Config is the pgx pool configuration, made by pgxpool.ParseConfig
	// or ParseConnectionString (pgx requires it). New copies it before
	// adding its tracer, so a Config can be used for several opens.
	Config *pgxpool.Config

	// CommandTimeout bounds each statement of a DB through this pool
	// whose context has no deadline (a caller's deadline, earlier or
	// later, wins), as Npgsql's Command Timeout does: the statement then
	// fails with an error wrapping ErrCommandTimeout. Zero means the
	// connection's statement_timeout when it sets one (the connection
	// string's Command Timeout), else DefaultCommandTimeout (30 s);
	// negative means no bound. LoadPoolConfig sets it from the Command
	// Timeout keyword (0 there: no bound), overridden by the
	// CommandTimeout setting.
	CommandTimeout time.Duration

	// DisableHealthChecks leaves the pool's check out of HealthChecks.
	DisableHealthChecks bool
	// HealthCheckFailureStatus is the status the pool's check reports
	// when the server cannot be reached: health.Unhealthy or
	// health.Degraded. Empty means Unhealthy for a primary (or a lone
	// pool) and Degraded for a read replica. LoadPoolConfig and
	// LoadConfig read it from HealthCheckFailureStatus.
	HealthCheckFailureStatus health.Status
	// DisableTracing turns off query spans.
	DisableTracing bool
	// DisableMetrics turns off the pool's metrics.
	DisableMetrics bool

	// Authentication is how the connection proves who it is: empty (the
	// default) for the connection string's password, or a Credentials
	// hook an integration installs when the string has none;
	// AuthenticationPassword for the password only;
	// AuthenticationAwsIam or AuthenticationEntraID for the tokens of
	// integrations/aspireaws or integrations/aspireazure, whose configure
	// functions install the hook (NewPool fails when none did).
	// LoadPoolConfig and LoadConfig read it from the Authentication
	// setting (Aspire:Npgsql[:{name}]:Authentication), case-insensitively.
	Authentication string
	// Credentials, when set, gives the user and password of each new
	// physical connection of the pool, replacing the connection string's
	// password: a short-lived token of AWS RDS IAM or Microsoft Entra ID
	// (see integrations/aspireaws and integrations/aspireazure). The pool
	// calls it from pgx's BeforeConnect, after any BeforeConnect set on
	// Config, with the host, port, database and user of that connection.
	// Its error makes the connection fail with a *CredentialsError, which
	// Ping, queries and the pool's health check return.
	Credentials CredentialsFunc

	// ConnectRetry shapes the background retry of the first connection.
	ConnectRetry ConnectRetry
	// WaitOnOpen, when positive, makes NewPool wait up to that long for
	// the first connection (see Config.WaitOnOpen, which New uses).
	WaitOnOpen time.Duration

	// TracerProvider, MeterProvider and Logger are as in Config; for a
	// pool of a DB, nil ones take the DB's.
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	Logger         *slog.Logger

	// userDefault is the user pgx filled in because the connection string
	// named none; "" when it named one.
	userDefault string
}

// ConnectRetry is the exponential backoff of a pool's first connection.
type ConnectRetry struct {
	// InitialInterval is the first wait (DefaultRetryInitial, 250 ms).
	InitialInterval time.Duration
	// MaxInterval caps the wait (DefaultRetryMax, 10 s, and never less
	// than InitialInterval).
	MaxInterval time.Duration
	// MaxElapsed, when positive, stops the retry (not the pool) after
	// that long.
	MaxElapsed time.Duration
}

// LoadConfig reads the DB called name from cfg, in one pass over its
// settings, as the package documentation describes: the primary is
// Aspire:Npgsql:{name}:Primary, else the connection called name, else
// "{name}-primary"; the replicas are Aspire:Npgsql:{name}:Replicas:Names
// (a list, or a comma-separated string), else every connection whose name
// starts with "{name}-replica" (ConnectionStrings__db-replica-east, or
// Aspire 13's DB_REPLICA_EAST_URI), in name order. DB settings are read
// from Aspire:Npgsql:{name}, then Aspire:Npgsql; a connection's from its
// own section, then the DB's, then Aspire:Npgsql.
//
// With Aspire's production patterns' ConnectionStrings__db-primary, __db-replica-east and
// __db-replica-west, LoadConfig(cfg, "db") returns all three. The
// telemetry fields are left nil; set them before calling New.
//
// Errors name the key or variable at fault (errors.As gives a
// *discovery.KeyError) and never contain a password.
func LoadConfig(cfg *discovery.Config, name string) (*Config, error) {
	if cfg == nil {
		cfg = discovery.FromMap(nil)
	}
	if strings.TrimSpace(name) == "" {
		return nil, errors.New("cqrs: LoadConfig: empty DB name")
	}
	primary, replicas, err := resolveNames(cfg, name)
	if err != nil {
		return nil, err
	}
	c := &Config{Name: name}
	if err := readDBSettings(settingsLayers(cfg, name), c); err != nil {
		return nil, err
	}
	load := func(conn string) (PoolConfig, error) {
		conn = strings.TrimSpace(conn)
		if conn == "" {
			return PoolConfig{}, fmt.Errorf("cqrs: DB %q: %w", name, &discovery.KeyError{
				Key: SettingsSection + ":" + name + ":Replicas:Names", Err: errors.New("empty connection name")})
		}
		l := settingsLayers(cfg, conn, name)
		if strings.EqualFold(conn, name) {
			l = settingsLayers(cfg, conn)
		}
		return loadPool(cfg, conn, l)
	}
	if c.Primary, err = load(primary); err != nil {
		return nil, err
	}
	c.WaitOnOpen, c.Primary.WaitOnOpen = c.Primary.WaitOnOpen, 0
	for _, r := range replicas {
		p, err := load(r)
		if err != nil {
			return nil, err
		}
		c.Replicas = append(c.Replicas, p)
	}
	return c, nil
}

// LoadPoolConfig reads the single connection called name from cfg: the
// connection string from ConnectionStrings:{name} or the other forms the
// package documentation lists, the settings from Aspire:Npgsql:{name},
// then Aspire:Npgsql. Errors are as for LoadConfig.
func LoadPoolConfig(cfg *discovery.Config, name string) (*PoolConfig, error) {
	if cfg == nil {
		cfg = discovery.FromMap(nil)
	}
	if strings.TrimSpace(name) == "" {
		return nil, errors.New("cqrs: LoadPoolConfig: empty connection name")
	}
	p, err := loadPool(cfg, name, settingsLayers(cfg, name))
	if err != nil {
		return nil, err
	}
	return &p, nil
}

func loadPool(cfg *discovery.Config, name string, l layers) (PoolConfig, error) {
	pc, source, cmd, named, err := resolveConnectionUser(cfg, name, l)
	if err != nil {
		return PoolConfig{}, err
	}
	p := PoolConfig{Name: name, Source: source, Config: pc, CommandTimeout: cmd}
	if !named {
		p.userDefault = pc.ConnConfig.User
	}
	if err := readPoolSettings(l, &p); err != nil {
		return PoolConfig{}, &ConnectionError{Name: name, Source: source, Err: err}
	}
	return p, nil
}
