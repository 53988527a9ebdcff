// Package cqrs gives a Go service pooled PostgreSQL access from the
// connection strings an Aspire AppHost injects, and a DB with keyed
// primary and replica handles for a read/write (CQRS) split: reads go to
// healthy, caught-up streaming replicas, writes to the primary.
//
// # Entry points
//
// As with pgxpool, parse a config, then open it:
//
//	c, err := cqrs.LoadConfig(cfg, "db") // *cqrs.Config: primary and replica *pgxpool.Configs, routing settings
//	c.TracerProvider, c.Logger = tp, logger // adjust in code as needed
//	db, err := cqrs.New(ctx, c)           // *cqrs.DB
//
// In detail:
//
//   - [LoadConfig] reads a DB by name ("db": Aspire's production patterns' db-primary,
//     db-replica-east, db-replica-west) from configuration in one pass,
//     into a [Config]; [New] opens it. A Config can also be built by hand,
//     without discovery: each [PoolConfig] needs only its Config (from
//     ParseConnectionString or pgxpool.ParseConfig), every other zero field
//     is a default.
//   - [LoadPoolConfig] and [NewPool] do the same for one pool (a [Pool],
//     embedding *pgxpool.Pool), with tracing, pool metrics, a
//     first-connect retry and a health check.
//   - [ParseConnectionString] turns an Npgsql keyword string or a
//     postgres:// URL into a *pgxpool.Config.
//   - A DB has [DB.Primary], [DB.Replica], [DB.Keyed]("primary" /
//     "replica" / a connection name), [DB.Query] and [DB.QueryRow], which
//     send read-only statements to a replica (with failover) and the rest
//     to the primary, write methods that record WAL positions ([DB.Exec],
//     [DB.CopyFrom], [DB.SendBatch], [DB.Begin]), the explicit handles
//     [DB.Reader] and [DB.Writer], [DB.HealthChecks] and [DB.Close].
//   - [WithSession] and [Middleware] make read-your-writes sessions;
//     [WithMinLSN] makes reads wait for a position learned elsewhere
//     (a cache.Cache does it for loads after an invalidation; see Caches
//     over replicas); [WithPrimary] sends a context's statements to the
//     primary.
//
// Package integrations/aspirepostgres builds aspirepostgres.DB(ctx, app,
// name) on LoadConfig and New and aspirepostgres.Pool(ctx, app, name) on
// LoadPoolConfig and NewPool, setting the App's tracer and meter providers
// and logger in the Config, registering HealthChecks with the App, and
// calling Close from its Shutdown. cqrs itself does not depend on
// servicedefaults.
//
// Errors about configuration name the key or variable at fault:
// errors.As(err, &keyErr) with a *discovery.KeyError gives it (a
// [ConnectionError] unwraps to one), and no error contains a password.
//
// # Where a connection comes from
//
// For the connection called name, the first of these that is set:
//
//	ConnectionStrings:{name}              ConnectionStrings__db-primary=Host=...;Password=...
//	{NAME}_URI                            DB_PRIMARY_URI=postgresql://user:pass@host:5432/db   (Aspire 13+)
//	{NAME}_HOST, _PORT, _USERNAME,        DB_PRIMARY_HOST=..., DB_PRIMARY_PORT=...             (Aspire 13+)
//	  _PASSWORD, _DATABASENAME
//	Aspire:Npgsql:{name}:ConnectionString
//	Aspire:Npgsql:ConnectionString
//
// ({NAME} is the name upper-cased with characters outside [A-Za-z0-9_]
// replaced by '_', as Aspire writes it.) Errors name the key or variable at
// fault and never contain a password.
//
// # Settings
//
// Settings are read from "Aspire:Npgsql:{name}" and then "Aspire:Npgsql"
// (the more specific wins), like Aspire.Npgsql's NpgsqlSettings, so one
// appsettings.json serves .NET and Go services. For a DB, a connection's
// settings are looked up under its own name, then the DB's name, then the
// unnamed section. Durations take .NET TimeSpan text ("00:00:30") or Go
// durations ("30s"). Code overrides configuration by changing the Config
// LoadConfig returns before calling New.
//
//	Key (under Aspire:Npgsql[:{name}])   Default         Meaning
//	ConnectionString                     -               connection string, when ConnectionStrings:{name} is not set
//	DisableHealthChecks                  false           leave the pool's (or replica's) health check out
//	HealthCheckFailureStatus             see right       status of a failed check: Unhealthy or Degraded (any case);
//	                                                     default Unhealthy for a primary, Degraded for a replica
//	DisableTracing                       false           no query spans
//	DisableMetrics                       false           no pool or routing metrics
//	MaxConnections                       string or 100   pool size (overrides Maximum Pool Size)
//	MinConnections                       string or 0     connections kept open (overrides Minimum Pool Size)
//	MinIdleConnections                   0               idle connections kept ready
//	MaxConnectionLifetime                string or 1h    connections are replaced after this long
//	MaxConnectionLifetimeJitter          0               random extra lifetime, so replacements spread out
//	MaxConnectionIdleTime                string or 300s  idle connections are closed after this long
//	HealthCheckPeriod                    string or 10s   how often the pool prunes idle and expired connections
//	ConnectTimeout                       string or 15s   connect timeout (overrides Timeout)
//	CommandTimeout                       string or 30s   client-side limit of a statement whose context has no deadline
//	                                                     (overrides Command Timeout; 0: none); see Time limits
//	ConnectRetry:InitialInterval         250ms           first wait of the startup connect retry
//	ConnectRetry:MaxInterval             10s             longest wait between startup attempts
//	ConnectRetry:MaxElapsed              0 (no limit)    stop the startup retry (not the pool) after this long
//	ConnectRetry:WaitOnOpen              0 (no wait)     make the open wait this long for the database, failing with ErrNotReady
//	Authentication                       unset           Password, AwsIam or EntraId (any case); see Token authentication
//
//	Key (under Aspire:Npgsql[:{db}])     Default         Meaning
//	Primary                              see LoadConfig  the primary's connection name
//	Replicas:Names                       see LoadConfig  the replicas' connection names (a list, or comma-separated)
//	Replicas:CheckInterval               2s              how often replicas are checked
//	Replicas:CheckTimeout                max(interval,1s) time limit of one check
//	Replicas:ReadAttemptTimeout          2s              time limit of a read on a replica before it fails over (0: none)
//	Replicas:MaxLag                      10s             a replica further behind leaves the rotation (0: no bound)
//	Replicas:MaxLagBytes                 0 (no bound)    the same bound in bytes of WAL
//	ReadYourWrites                       false           every read sees every earlier write through the DB
//
// "string or N" means: the connection string's value if it sets one, else
// N.
//
// # Npgsql keywords
//
// Keywords are case-insensitive and spaces in them are ignored ("User ID",
// "userid"); values may be quoted with ' or ". Every Npgsql keyword is
// accepted; an unknown one is an error naming it. Their pgx meaning:
//
//	Host, Server                     host list "h1,h2:5433,[::1]:5434,/socket/dir"; a host's own port wins over Port
//	Port                             5432
//	Database, DB                     database
//	Username, User Name, User ID,    user
//	  UserId, Uid, User
//	Password, PSW, PWD               password (never in ConnString, errors or logs)
//	Passfile                         passfile
//	SSL Mode, SslMode                Disable, Allow, Prefer (default), Require, VerifyCA, VerifyFull: libpq's sslmode
//	Trust Server Certificate         accepted: pgx, like libpq, validates nothing under Prefer/Require unless a
//	                                 Root Certificate is given; an error with VerifyCA/VerifyFull, as in Npgsql
//	Root Certificate                 sslrootcert
//	SSL Certificate, SSL Key,        sslcert, sslkey, sslpassword
//	  SSL Password
//	SSL Negotiation                  Postgres, Direct: sslnegotiation
//	Channel Binding                  Disable, Prefer, Require: channel_binding
//	Require Auth                     Password, MD5, GSS, SSPI, ScramSHA256, None (each may be negated with '!'): require_auth
//	Kerberos Service Name, KrbSrvName krbsrvname
//	Timeout                          connect timeout in seconds (default 15; 0: none)
//	Command Timeout                  seconds (default 30; 0: none): the client-side limit of a statement whose context has
//	                                 no deadline, as in Npgsql (see Time limits); when set and not 0, also sent as the
//	                                 statement_timeout parameter (server-side). Unset, no parameter is sent, so poolers
//	                                 that refuse startup parameters keep working.
//	Minimum Pool Size, MinPoolSize   MinConns (default 0)
//	Maximum Pool Size, MaxPoolSize   MaxConns (default 100)
//	Connection Idle Lifetime         MaxConnIdleTime in seconds (default 300)
//	Connection Pruning Interval      HealthCheckPeriod in seconds (default 10)
//	Connection Lifetime,             MaxConnLifetime in seconds (0: no limit; unset: pgx's 1 h)
//	  Load Balance Timeout
//	Keepalive                        TCP keepalive idle time in seconds (pgx sends no keepalive queries)
//	Tcp Keepalive                    TCP keepalive on/off
//	Tcp Keepalive Time, Interval     TCP keepalive idle time and probe interval, in milliseconds
//	Target Session Attributes        any, primary, standby, prefer-standby, read-write, read-only: target_session_attrs;
//	                                 prefer-primary only with one host (pgx has no prefer-primary)
//	Load Balance Hosts               true: each new connection starts at the next host of the list
//	Application Name                 application_name
//	Search Path                      search_path
//	Timezone                         timezone
//	Options                          options ("-c name=value ...")
//	Client Encoding, Encoding        UTF8 only (pgx needs it); anything else is an error
//	Pooling                          true only: cqrs always pools
//	Integrated Security,             false only: GSS needs a provider registered in code; Go's TLS has no CRL check
//	  Check Certificate Revocation
//	GSS Encryption Mode              Disable or Prefer (pgx never encrypts with GSS); Require is an error
//	Server Compatibility Mode        None, NoTypeLoading (pgx loads no types anyway); Redshift is an error
//	Replication Mode                 Off only
//	Enlist, Multiplexing, and the    accepted and ignored: Go has no ambient transactions; pgx does not multiplex,
//	  tuning keywords                sizes its own buffers and caches prepared statements itself. The tuning
//	                                 keywords are Max Auto Prepare, Auto Prepare Min Usages, Read/Write Buffer Size,
//	                                 Socket Receive/Send Buffer Size, No Reset On Close, Write Coalescing Buffer
//	                                 Threshold Bytes, Internal Command Timeout, Cancellation Timeout, Host Recheck
//	                                 Seconds, Load Table Composites, Array Nullability Mode, Include Realm,
//	                                 Persist Security Info, EF Template Database, EF Admin Database
//	Include Error Detail             accepted: pgx always fills PgError.Detail (its Error text leaves it out)
//	Log Parameters                   accepted: query parameters are never recorded, by design
//
// A keyword's value is checked even when the keyword is ignored. In URL
// form, pgx parses the URL with libpq's rules (and its pool_* parameters);
// unknown query parameters become server parameters, as in pgx. The
// Npgsql pool defaults above apply to both forms. As in Npgsql and libpq,
// the PG* environment variables and ~/.pgpass supply what a connection
// string leaves out (pgx reads them).
//
// # Startup
//
// Opening never fails because the database is still starting: pools
// connect lazily, and a background loop pings the primary with exponential
// backoff, logging once when it is not reachable and once when it is.
// Until then queries fail and the health check reports Unhealthy. Set
// ConnectRetry:WaitOnOpen (Config.WaitOnOpen) to make the open wait for the
// database instead.
//
// A server that answers but refuses the connection (a wrong password or
// unknown user, SQLSTATE 28P01 or 28000; an unknown database, 3D000; no
// CONNECT privilege, 42501) is a configuration error, not an outage: the
// loop logs it once at Error, naming the connection and the SQLSTATE
// (never the password), retries only every ConnectRetry:MaxInterval, and
// the health check reports Unhealthy with the server's reason
// ("refused by the server: password authentication failed for user ...").
//
// # Token authentication
//
// In production on Azure or AWS the password of a connection is a token
// that lives minutes: PoolConfig.Credentials is called for each new
// physical connection of the pool (from pgx's BeforeConnect, after any
// BeforeConnect of the pool's own), with the host, port, database and
// user of that connection ([ConnTarget]; the user is empty when the
// connection string names none), and returns the user and password to
// log in with. Set it on the primary and on each replica: a token is
// issued for one host. Packages integrations/aspireaws (RDS IAM) and
// integrations/aspireazure (Microsoft Entra ID) install it according to
// the Authentication setting. A hook that fails makes the connection
// fail with a *CredentialsError naming it, which Ping, queries and the
// health check return; the startup loop logs it once and retries with
// backoff. A token the server refuses is a refusal as above. Errors
// never contain the token.
//
// # Read routing
//
// [DB.Query] and [DB.QueryRow] send a statement to a replica only when its
// text shows it is read-only, and everything else to the primary, as a
// write. sqlc's pgx/v5 code sends ":one" and ":many" statements, INSERT,
// UPDATE and DELETE ... RETURNING among them, through QueryRow and Query,
// and ":exec", ":execrows" and ":execresult" through Exec, so
// queries.New(db) works as it does on a single pool. A statement is
// read-only when, after leading whitespace and comments (-- and nested
// /* */), it starts with SELECT, WITH, VALUES, SHOW or TABLE and, outside
// string constants, quoted identifiers, dollar quotes and comments, holds
// none of INSERT, UPDATE, DELETE, MERGE, INTO, FOR SHARE, FOR KEY SHARE
// (FOR [NO KEY] UPDATE is caught by UPDATE), no second statement, and no
// call of a function known to write or to need the primary. Those are, by
// family: sequences (nextval, setval, currval, lastval); notifications and
// transaction ids (pg_notify, txid_current, pg_current_xact_id); the
// large-object writers (lo_creat, lo_create, lo_import, lo_unlink,
// lo_from_bytea, lo_put, lo_truncate*, lowrite); index maintenance
// (brin_summarize_*, brin_desummarize_range, gin_clean_pending_list);
// pg_import_system_collations; advisory locks (pg_advisory_*,
// pg_try_advisory_*); dblink*; WAL and replication (pg_current_wal*,
// pg_switch_wal, pg_logical_emit_message, pg_log_standby_snapshot,
// pg_create_* (replication slots, restore points),
// pg_drop_replication_slot, pg_copy_*, pg_replication_slot_advance,
// pg_logical_slot_*, pg_replication_origin_*); and the functions that act
// on the server they run on, which on a replica would act on the wrong
// one: pg_promote and pg_wal_replay_*, pg_terminate_backend and
// pg_cancel_backend (a primary's pid names an unrelated session on a
// replica), pg_reload_conf, pg_rotate_logfile,
// pg_log_backend_memory_contexts, pg_stat_reset*, pg_backup_start,
// pg_backup_stop, pg_start_backup and pg_stop_backup. Whatever it cannot tell (an unterminated
// literal, a string constant with a backslash, whose end depends on
// standard_conforming_strings, a U&"..." identifier, EXPLAIN, a prepared
// statement's name) goes to the primary. The answer is
// cached per SQL text in the DB (up to about 1 MiB of text, emptied when
// full), so a repeated statement costs one lock-free map lookup (tens of
// nanoseconds) and no allocation.
//
// The text cannot show that a SELECT calls a function of yours that
// writes. The replica refuses it with SQLSTATE 25006
// (read_only_sql_transaction; 55000, "recovery is in progress", for a
// built-in function that needs the primary), and the read then runs once
// on the primary: it succeeds, a read-your-writes session records its
// write, and [ReadStats].Refused (the goaspire.cqrs.reads metric with
// reason=replica_refused_write) counts it. Running it again is safe: a
// standby changes nothing, and the refused statement failed before it
// did anything (an effect outside the database, such as a function that
// calls another server through dblink, is the exception). Each such read
// costs a round trip to a replica first: make it with a context from
// [WithPrimary], or through [DB.Writer], and a rising Refused count shows
// where to. [DB.Reader] and [DB.Writer] are handles that
// each satisfy sqlc's DBTX with the split in the type (Aspire's production patterns'
// [FromKeyedServices("replica")] and ("primary")): a Reader sends every
// statement to a replica as a read, a Writer every statement to the
// primary as a write. Batches ([DB.SendBatch]) and copies ([DB.CopyFrom])
// go to the primary.
//
// [DB.Replica] picks the next replica in rotation round-robin (an atomic
// increment and a load: about 5 ns under parallel load); with none in
// rotation it returns the primary, and the goaspire.cqrs.reads metric
// counts the read with fallback=true. A background checker queries every
// replica each Replicas:CheckInterval (and sooner when a read finds one
// down or behind) and takes it out of rotation when it is unreachable, not
// in recovery (promoted, or not a replica), or further behind than
// Replicas:MaxLag or Replicas:MaxLagBytes; it is put back after its next
// good check.
//
// Lag is measured against the primary's WAL position, sampled at each
// check: a replica that has replayed up to position L lags by the time
// since the primary was first seen past L. Unlike now() -
// pg_last_xact_replay_timestamp(), this does not count an idle primary as
// lag, and it grows while replay is paused and the primary moves on.
//
// [DB.Query] and [DB.QueryRow] add failover: a read that fails on a replica
// with a connection error (or a recovery conflict) takes the replica out of
// rotation at once and runs again on the next replica or the primary, so
// killing a replica under load returns no error to callers. A query that
// has started returning rows is not retried.
//
// # Read your writes
//
// A context made with [WithSession] (or by [Middleware], one per HTTP
// request) is a read-your-writes session. Every statement that goes to
// the primary as a write ([DB.Exec], [DB.CopyFrom], [DB.SendBatch],
// transactions from [DB.Begin], what [DB.Query] and [DB.QueryRow] send to
// the primary, and all of [DB.Writer]'s) records pg_current_wal_insert_lsn()
// once it has finished, in a session (one small query on the primary);
// reads in the session then go only to a
// replica whose last checked replay position is at or past it, else to the
// primary. Writes made directly through Primary() can be recorded with
// [DB.RecordWrite]. [SessionLSN] and [WithSessionLSN] carry a session's
// position across requests. With ReadYourWrites on, every write through
// the DB is recorded for every context, so all reads see all earlier
// writes: simpler, but under a steady write load most reads then go to the
// primary. Outside sessions, with ReadYourWrites off, writes cost nothing
// extra.
//
// Read-your-writes covers the writes made through one DB in one process.
// For a position learned elsewhere (another instance's write),
// [WithMinLSN] makes a context whose reads go only to a replica that has
// replayed it, else to the primary, without starting a session.
//
// # Caches over replicas
//
// A cache.Cache (package github.com/goaspire/goaspire/cache) carries these
// positions between instances, so that an invalidated entry is never
// reloaded from a replica that has not replayed the write behind the
// invalidation. A Set or Remove (or RemoveByTag, Clear) made with a
// session's context carries the session's latest write's position: in
// Redis with the removal's tombstone, and in the invalidation message to
// every instance. The next load of the key, on any instance, within a
// minute, runs its loader with a context that requires that position, as
// WithMinLSN does: the loader's DB.QueryRow (Query, Reader) reads a
// replica only once the replica checker has seen it replay the write,
// else the primary, counted as reason=min_lsn. Nothing else is needed:
//
//	mux.Handle("PUT /products/{id}", cqrs.Middleware(put)) // each request a session
//	// in put: the write records its position in the request's session ...
//	err := db.QueryRow(ctx, "UPDATE products SET price = $2 WHERE id = $1 RETURNING ...", id, price).Scan(...)
//	// ... which the invalidation carries to every instance.
//	err = products.Remove(ctx, key)
//	// in get, on any instance: the loader's context requires the position.
//	p, err := products.GetOrLoad(ctx, key, func(ctx context.Context) (Product, error) {
//		return loadProduct(ctx, db, id) // db.QueryRow(ctx, "SELECT ...")
//	})
//
// A write made outside a session (through Primary(), or with
// ReadYourWrites alone) has no position in its context: record it with
// [DB.RecordWrite] in a session, or pass [WithSessionLSN] a position read
// on the primary (pg_current_wal_insert_lsn() after the commit) to the
// cache's call. Without replicas, without a session or without a write,
// nothing changes.
//
// # Time limits
//
// A server that goes silent (a partition: no answer, no reset) must not
// hold a caller for ever, so every statement of a DB ([DB.Exec],
// [DB.Query], [DB.QueryRow], [DB.SendBatch], [DB.CopyFrom], [DB.Begin] and
// the statements, Commit and Rollback of its transactions, [DB.Reader] and
// [DB.Writer]) whose context has no deadline runs with one: the
// connection's command timeout (CommandTimeout, else the connection
// string's Command Timeout, else [DefaultCommandTimeout], 30 s, as in
// Npgsql). A statement that runs into it fails with an error wrapping both
// [ErrCommandTimeout] and context.DeadlineExceeded. A caller's own
// deadline, earlier or later, always wins: pass one for a statement that
// may run longer. The server-side statement_timeout, which a silent server
// cannot enforce, is no substitute. Pools taken directly ([DB.Primary],
// [DB.Replica], [DB.Keyed], [Pool]) are plain pgx pools: there the
// caller's context alone bounds a statement.
//
// A read on a replica runs with Replicas:ReadAttemptTimeout
// ([DefaultReadAttemptTimeout], 2 s) as well, when another server could
// take it over: a replica that does not answer in time (or until the first
// row, for Query) is left for another replica or the primary, and the
// checker is asked to look at it. Writes are never retried. A read slower
// than the attempt timeout therefore ends up on the primary: set the
// timeout above the slowest read you send to replicas, or 0 for none.
//
// Connections are made within ConnectTimeout (15 s, Npgsql's Timeout) and
// the caller's deadline. Each replica check has Replicas:CheckTimeout, so a
// silent replica leaves the rotation within about one check time limit;
// a replica that leaves the rotation has its pooled connections dropped,
// and it comes back at its first good check after the network heals.
// After statements time out against a silent server, pgx cleans their
// connections up in the background (a cancel request, then a drain),
// for at most 15 s, and Close waits for that.
//
// # Health
//
// [Pool.HealthChecks] and [DB.HealthChecks] return health.Check values
// named "postgres:{connection}", tagged ready: the primary (or a lone
// pool) reports Unhealthy when it cannot be reached; a replica reports
// Degraded when it is down, not in recovery or lagging.
//
// # Telemetry
//
// Queries become OpenTelemetry spans through github.com/exaring/otelpgx
// (under a recording parent span, such as an HTTP request's), with the
// statement text and the db.client.operation.duration histogram; query
// arguments are never recorded, and acquire spans are off. Spans carry
// both db.system and db.system.name (postgresql), since the Aspire
// dashboard reads the former. A statement is one span: the prepare pgx
// runs the first time a statement is used on a connection is a "prepare"
// event on it, and only an explicit Prepare gets a span of its own,
// "prepare {operation}". Each pool
// reports db.client.connection.count (state idle/used),
// db.client.connection.max, db.client.connection.idle.min and the
// cumulative pgxpool.acquires, pgxpool.acquire_duration,
// pgxpool.empty_acquires, pgxpool.canceled_acquires and
// pgxpool.new_connections, labelled db.client.connection.pool.name; these
// are ours rather than otelpgx.RecordStats because its registration cannot
// be removed when a pool closes. A DB reports goaspire.cqrs.reads (target,
// fallback, reason: no_replica_in_rotation, read_your_writes, no_replicas,
// replica_refused_write, min_lsn; see [ReadStats]), goaspire.cqrs.replica.healthy,
// goaspire.cqrs.replica.lag (s) and goaspire.cqrs.replica.lag_bytes.
package cqrs
