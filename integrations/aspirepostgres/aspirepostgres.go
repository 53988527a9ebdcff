// Package aspirepostgres opens the PostgreSQL clients of package cqrs on a
// servicedefaults App, as .NET Aspire's Aspire.Npgsql client integration
// does on the host builder: from the connection strings and
// Aspire:Npgsql settings the AppHost injects, reporting through the App's
// telemetry and logger, checked by the App's health endpoints and closed
// by its Shutdown.
//
//	app, err := servicedefaults.Add(ctx, mux)
//	...
//	db, err := aspirepostgres.DB(ctx, app, "db")           // *cqrs.DB: primary and replicas
//	jobs, err := aspirepostgres.Pool(ctx, app, "jobs")     // *cqrs.Pool: one pgx pool
//
// [DB] returns the primary/replica database called name (see
// cqrs.LoadConfig for where its connections come from), [Pool] the single
// pool of one connection (see cqrs.LoadPoolConfig). Each is opened on the
// first call for its name and shared afterwards: the App keeps one client
// per name and kind, so a DB and a Pool of the same name are two clients,
// and a connection used both by a DB and by a Pool is health-checked once.
//
// # Configuring in code
//
// The optional configure functions run once, when the name is first
// opened: after the configuration was read and the App's tracer and meter
// providers and logger were set on it, and before the client opens. They
// set what configuration cannot express, as .NET's configureSettings
// does: pgx's AfterConnect or PrepareConn, pool sizes, ReadYourWrites,
// WaitOnOpen, or other telemetry. On a *cqrs.Config the primary's pgx
// configuration is c.Primary.Config and each replica's is
// c.Replicas[i].Config (all *pgxpool.Config), and the wait for the
// primary is c.WaitOnOpen (c.Primary.WaitOnOpen is not used); on a
// *cqrs.PoolConfig they are c.Config and c.WaitOnOpen:
//
//	db, err := aspirepostgres.DB(ctx, app, "db", func(c *cqrs.Config) {
//		c.Primary.Config.AfterConnect = registerTypes
//		for i := range c.Replicas {
//			c.Replicas[i].Config.AfterConnect = registerTypes
//		}
//		c.Primary.Config.MaxConns = 20
//		c.ReadYourWrites = true
//	})
//
// A token instead of a password (Azure Database for PostgreSQL with
// Microsoft Entra ID, Amazon RDS with IAM) comes from a configure
// function of integrations/aspireazure or integrations/aspireaws, which
// set cqrs.PoolConfig.Credentials on the primary and every replica:
//
//	db, err := aspirepostgres.DB(ctx, app, "db", aspireazure.PostgresAuth(app))
//
// The pool sets pgx's ConnConfig.Tracer itself unless both tracing and
// metrics are disabled, so a tracer set there is replaced. Later calls for
// the same name share the first client, whatever configure functions they
// pass: configure a name in one place.
package aspirepostgres

import (
	"context"

	"github.com/goaspire/goaspire/cqrs"
	"github.com/goaspire/goaspire/servicedefaults"
)

// The kinds under which the App keeps the clients, named by errors that
// do not name the connection already ("servicedefaults: postgres \"db\":
// ...") and by the Shutdown hooks that
// close them ("closing postgres-db \"db\"").
const (
	kindDB   = "postgres-db"
	kindPool = "postgres"
)

// scope is the instrumentation scope of the cqrs package's log records.
const scope = "github.com/goaspire/goaspire/cqrs"

// DB returns the primary/replica database called name on h, opened on
// first use and shared afterwards: its primary is the connection
// Aspire:Npgsql:{name}:Primary, else the one called name, else
// "{name}-primary"; its replicas are Aspire:Npgsql:{name}:Replicas:Names,
// else every connection named "{name}-replica*" (see cqrs.LoadConfig).
// Reads through it go to healthy replicas, writes to the primary.
//
// The DB reports through the App's telemetry and logs under the cqrs
// package's scope, registers a health check per node (primary down is
// Unhealthy, a replica down is Degraded, unless
// Aspire:Npgsql[:{connection}]:HealthCheckFailureStatus or the node's
// PoolConfig.HealthCheckFailureStatus says otherwise; off with
// Aspire:Npgsql:DisableHealthChecks) and is closed by the App's Shutdown.
// The database need not be up yet: the pools connect lazily and retry,
// unless Aspire:Npgsql:ConnectRetry:WaitOnOpen (c.WaitOnOpen in
// configure) makes the open wait for the primary.
//
// configure runs on the first open only, after the configuration was
// loaded and the App's telemetry and logger set, before cqrs.New: set the
// primary's pgx options on c.Primary.Config and each replica's on
// c.Replicas[i].Config. Later calls share the first DB whatever they pass.
//
// ctx bounds the open, or the wait for another caller's open of the same
// name; opening one name never holds up opening another. Errors name the
// configuration key or connection at fault, never a password; once the
// App has shut down they match servicedefaults.ErrClosed.
func DB(ctx context.Context, h servicedefaults.Host, name string, configure ...func(*cqrs.Config)) (*cqrs.DB, error) {
	return servicedefaults.OpenClient(ctx, h, kindDB, name, func(ctx context.Context) (servicedefaults.Opened[*cqrs.DB], error) {
		c, err := cqrs.LoadConfig(h.Config(), name)
		if err != nil {
			return servicedefaults.Opened[*cqrs.DB]{}, err
		}
		c.TracerProvider, c.MeterProvider, c.Logger = h.TracerProvider(), h.MeterProvider(), h.ComponentLogger(scope)
		for _, f := range configure {
			if f != nil {
				f(c)
			}
		}
		db, err := cqrs.New(ctx, c)
		if err != nil {
			return servicedefaults.Opened[*cqrs.DB]{}, err
		}
		return servicedefaults.Opened[*cqrs.DB]{
			Client: db,
			Checks: db.HealthChecks(),
			Close:  func(context.Context) error { db.Close(); return nil },
		}, nil
	})
}

// Pool returns the single pgx pool of the connection called name on h
// (ConnectionStrings:{name}, or Aspire 13's NAME_URI / NAME_HOST ...; see
// cqrs.LoadPoolConfig), opened on first use and shared afterwards, for a
// service with no read/write split. It reports through the App's
// telemetry, registers its health check (unless a DB on h already checks
// the same connection, or Aspire:Npgsql:DisableHealthChecks is set) and
// is closed by the App's Shutdown. Use p.Pool where a *pgxpool.Pool is
// wanted.
//
// configure runs on the first open only, after the configuration was
// loaded and the App's telemetry and logger set, before cqrs.NewPool: the
// pgx options are c.Config. Later calls share the first Pool whatever
// they pass. ctx and errors are as for DB.
func Pool(ctx context.Context, h servicedefaults.Host, name string, configure ...func(*cqrs.PoolConfig)) (*cqrs.Pool, error) {
	return servicedefaults.OpenClient(ctx, h, kindPool, name, func(ctx context.Context) (servicedefaults.Opened[*cqrs.Pool], error) {
		c, err := cqrs.LoadPoolConfig(h.Config(), name)
		if err != nil {
			return servicedefaults.Opened[*cqrs.Pool]{}, err
		}
		c.TracerProvider, c.MeterProvider, c.Logger = h.TracerProvider(), h.MeterProvider(), h.ComponentLogger(scope)
		for _, f := range configure {
			if f != nil {
				f(c)
			}
		}
		p, err := cqrs.NewPool(ctx, c)
		if err != nil {
			return servicedefaults.Opened[*cqrs.Pool]{}, err
		}
		return servicedefaults.Opened[*cqrs.Pool]{
			Client: p,
			Checks: p.HealthChecks(),
			Close:  func(context.Context) error { p.Close(); return nil },
		}, nil
	})
}
