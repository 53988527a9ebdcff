// Package cache gives a Go service what Aspire's Redis client integration
// gives a .NET one, plus the two-tier cache such services otherwise write by
// hand:
//
//   - LoadRedisConfig and NewRedis: a go-redis v9 client from the
//     connection Aspire injects
//     (StackExchange.Redis strings, redis:// URLs or the Aspire 13
//     per-property variables), trusting Aspire's development certificate,
//     reconnecting by itself, traced, measured and health-checked;
//   - New: a generic two-tier cache, Cache[T], with a bounded in-process L1
//     in front of Redis (L2) in front of a loader, with stampede
//     protection across instances, fail-safe, eager refresh, a Redis
//     circuit breaker per client, tags and Clear, negative caching, and L1
//     invalidation across instances through Redis Pub/Sub.
//
// # Connecting
//
//	c, err := cache.LoadRedisConfig(cfg, "cache") // *cache.RedisConfig: go-redis options and settings
//	c.TracerProvider, c.MeterProvider = tp, mp    // adjust in code as needed (c.Options too)
//	rdb, err := cache.NewRedis(ctx, c)            // redis.UniversalClient
//
// A RedisConfig may also be built by hand, without discovery (Options from
// ParseConnectionString or written out; every zero field is a default).
// LoadRedisConfig reads, for the resource name "cache":
//
//	key                                                  meaning
//	ConnectionStrings:cache                              the connection (first choice)
//	CACHE_URI                                            Aspire 13: redis[s]://[:password@]host:port
//	CACHE_HOST, CACHE_PORT, CACHE_USERNAME,
//	CACHE_PASSWORD                                       Aspire 13 properties, when there is no URI
//	Aspire:StackExchange:Redis[:cache]:ConnectionString  fallback connection string
//	Aspire:StackExchange:Redis[:cache]:ConfigurationOptions:{Property}
//	                                                     overrides, by StackExchange.Redis
//	                                                     ConfigurationOptions property name
//	                                                     (ConnectTimeout, SyncTimeout, ClientName,
//	                                                     DefaultDatabase, Ssl, ...); an unknown one
//	                                                     is an error naming its key
//	Aspire:StackExchange:Redis[:cache]:DisableHealthChecks  no readiness check (default false)
//	Aspire:StackExchange:Redis[:cache]:HealthCheckFailureStatus
//	                                                     status of a failed readiness check: Unhealthy
//	                                                     or Degraded, any case (default: see
//	                                                     RedisConfig.HealthCheckFailureStatus)
//	Aspire:StackExchange:Redis[:cache]:DisableTracing       no command spans (default false)
//	Aspire:StackExchange:Redis[:cache]:DisableMetrics       no pool/command metrics (goaspire; default false)
//	Aspire:StackExchange:Redis[:cache]:PoolSize             go-redis pool size (goaspire; default 10 per CPU)
//	Aspire:StackExchange:Redis[:cache]:MinIdleConns         idle connections kept open (goaspire; default 0)
//	Aspire:StackExchange:Redis[:cache]:MaxRetries           command retries, -1 for none (goaspire; default 3)
//	SSL_CERT_FILE, SSL_CERT_DIR                          extra trusted CAs for TLS
//
// The named section "Aspire:StackExchange:Redis:cache" overrides the
// general one. Keys are read through discovery.Config, so they come from
// appsettings.json as well as the environment ("__" for ":").
//
// Connection string options (StackExchange.Redis names, case-insensitive),
// and what they mean here:
//
//	option                     effect in go-redis
//	host[:port] (several)      Addrs; default port 6379, 6380 with ssl, 26379 with serviceName.
//	                           Several endpoints make a cluster client (go-redis's
//	                           convention); with serviceName, Sentinel servers.
//	/path, unix:/path          a unix socket
//	password, user             Password, Username (ACL)
//	ssl, sslHost               TLS, server name to verify (default: each endpoint's host)
//	sslProtocols               TLS version range (Tls12|Tls13; Ssl2/Ssl3 are refused)
//	abortConnect               true: NewRedis pings first and fails if no server answers.
//	                           Default false (as Aspire): the service starts while Redis is down.
//	connectRetry               dial attempts per connection (default 3), with exponential backoff
//	connectTimeout             dial timeout in ms (default 5000)
//	syncTimeout, asyncTimeout  read/write timeout in ms: the larger of the two (default 5000)
//	defaultDatabase            DB (not with a cluster)
//	name                       ClientName (CLIENT SETNAME)
//	serviceName                Sentinel master name (a failover client); user and password
//	                           authenticate to the Sentinels too, as in StackExchange.Redis
//	protocol                   resp2 or resp3 (default: go-redis's, RESP3 with fallback)
//	setlib                     false: no CLIENT SETINFO
//	$COMMAND=                  disabling a command is accepted ($CLIENT= also disables
//	                           CLIENT SETINFO, $HELLO= forces RESP2); renaming one is an error
//	proxy                      None accepted; Twemproxy/Envoyproxy accepted with a warning
//	channelPrefix              accepted with a warning: go-redis does not prefix channels
//	allowAdmin, keepAlive, resolveDns, checkCertificateRevocation, configChannel,
//	configCheckSeconds, tiebreaker, version, highPriorityThreads, preserveAsyncOrder,
//	responseTimeout, writeBuffer
//	                           validated and accepted without effect: go-redis has no
//	                           counterpart (no admin-command gate, keep-alive and DNS are the
//	                           OS's, Go does not check revocation, no tie-breaker election),
//	                           or StackExchange.Redis itself ignores them
//	tunnel                     refused: go-redis has no HTTP tunnel
//
// A silent Redis (a partition: no reset, SYNs unanswered) costs a command
// on a client of NewRedis at most its context's deadline: the client
// takes socket deadlines from the context (ContextTimeoutEnabled), and
// go-redis returns when the context is done while it dials, waits for a
// pool connection or backs off between retries; dials, TLS handshakes
// included, end with the context too, and those go-redis goes on with in
// the background with DialTimeout each. Without a deadline a command waits
// for syncTimeout, then, for each of MaxRetries retries, for connectRetry
// dials of connectTimeout: about 50 s with the defaults. Give every call a
// deadline, or lower MaxRetries, connectRetry and the timeouts.
//
// URLs (redis://, rediss:// for TLS, tcp:// read as redis://) take the
// user and password from the user information, the database from the path,
// and the same options as query parameters. An unknown option is an error
// naming it; errors never quote a value. Because a StackExchange.Redis
// string cannot hold a ',' inside a password, an item after "password="
// that is not an option is reported as a probable password fragment
// without being shown.
//
// Commands are traced through redisotel with command names only (no
// arguments, so no AUTH secrets or cached values in spans). Dials and the
// connection handshake (HELLO, CLIENT SETINFO, CLIENT MAINT_NOTIFICATIONS
// ..., whose error replies from older servers go-redis ignores) are not
// traced: a command that had to dial shows the dial's failure in its own
// span, and a background reconnect makes no trace at all. Metrics follow
// the current database client conventions, in seconds and labelled
// db.client.connection.pool.name with the connection name:
// db.client.operation.duration, db.client.connection.create_time,
// db.client.connection.count (state idle/used), db.client.connection.max,
// db.client.connection.idle.max, db.client.connection.idle.min and
// db.client.connection.timeouts. Spans carry both db.system and
// db.system.name. The health check is an untraced, unmeasured PING
// through the client's own pool, tagged ready. go-redis connects lazily and
// redials by itself; it logs failed dials to stderr through its own global
// logger (redis.SetLogger changes that for the whole process).
//
// # The two-tier cache
//
//	products, err := cache.New[Product](rdb, "product", cache.Options{TTL: 10 * time.Minute})
//	defer products.Close()
//	p, err := products.GetOrLoad(ctx, id, func(ctx context.Context) (Product, error) {
//		return db.Product(ctx, id)
//	}, cache.WithTags("category:"+cat))
//
// Reads go to L1, then to Redis, then to the loader. L1 keeps values
// decoded, so a hit costs a map lookup and no decoding and does not
// allocate. Its bound is a number of entries (L1MaxEntries) or an estimated
// size (L1MaxBytes), enforced per shard by CLOCK (second-chance) eviction;
// its entries live for L1TTL, shorter than TTL, so a lost invalidation
// message costs at most L1TTL of staleness.
//
// Stampede protection: concurrent misses for a key in one process share
// one load, and the instances on one Redis share one load per key through
// a distributed lock (FusionCache's distributed locker). The read of a
// GetOrLoad is "SET {KeyPrefix}v:{key} {lock envelope} NX PX lease GET":
// on a hit it returns the value and writes nothing, as a GET would; on a
// miss it puts this instance's lock envelope under the key in the same
// round trip. The instance holding it loads and stores the value in its
// place with one script (one key, so on a cluster too) that stores it
// only while the envelope is there (or nothing is), and publishes
// "loaded" when another instance marked the envelope to say it waits; a
// Set or Remove made during the load replaced the envelope, so it stays.
// The others, which read
// the envelope, wait for that message or poll Redis (every 5 ms to
// 100 ms) with the same SET NX GET, taking the lock
// over if it expires. Where Redis holds a stale value or a tombstone
// instead, the lock is "SET {KeyPrefix}l:{key} token NX PX lease" after
// the read: one more round trip; on a single-node client a waiter then
// leaves a marker at "{KeyPrefix}w:{key}" and the holder publishes only
// when it finds one. Either way a load nobody waits for sends no message,
// except that on a cluster the holder of a lock key always publishes. A
// holder that dies releases the lock by expiry: the lease is a quarter of
// LockTimeout and is renewed while the load runs, every third of a lease,
// all the locks an instance holds in one pipelined round trip. A renewal
// that fails (an error, a timeout, the breaker open) is retried at the
// next tick; a lock is given up only when Redis says it no longer holds
// it. A waiter loads by itself
// after LockTimeout, when Redis fails or while the breaker is open: the
// lock saves loads, it is never needed for correctness. A miss of an
// absent key thus costs two round trips, as GET and SET would. Get, which
// never loads, reads with a plain GET and takes a lock envelope it finds
// for a miss. SET NX GET needs Redis 7.0 or later; a server that refuses it
// gets a GET, then the lock key. WithoutDistributedLock skips the
// lock for an entry, and a negative LockTimeout for the whole cache.
//
// The caller whose miss starts a load runs the loader on its own goroutine
// (no hand-off, no wake-up), and waits for it even if its context ends;
// the load's context keeps the caller's values but not its cancellation, so
// a caller giving up never cancels a load others wait for. Callers that
// join a load leave when their context ends. With a stale value and
// SoftTimeout, the load runs on a goroutine of its own so the caller can
// get the stale value at the soft timeout.
//
// Eager refresh: with EagerRefreshThreshold (say 0.9), the first L1 hit on
// a value older than that fraction of its TTL returns it at once and
// starts one background reload (under the distributed lock, so once per
// cluster; an instance that finds the lock taken leaves the refresh to its
// holder), so hot keys do not expire under load.
//
// Writes (Set, Remove, RemoveByTag, Clear) change both tiers here and
// publish an invalidation on "{KeyPrefix}invalidate", which every other
// instance applies to its L1 within milliseconds. All caches on one Redis
// client share one Pub/Sub connection. When that subscription is lost and
// comes back (Redis restarted, network cut, or a connection that went
// silent, detected by pinging), the instance empties its L1, since it may
// have missed messages. When the client's credentials rotate
// (RedisConfig.Credentials), the subscription moves to a connection
// authenticated with the new ones before the old ones expire, without
// missing a message, so L1 is kept.
//
// A load never overwrites a newer write, and no clock decides it: once a
// Set or Remove has reached Redis (when it returns, or when it is
// replayed), no load that started before it stores its value over it,
// whatever the instances' clocks say. A load stores its value only where
// Redis still holds what the load was loaded over: its own lock envelope,
// or what its read found there (a stale value, a tombstone, another
// instance's envelope, or nothing), compared by SHA-1 in the script that
// stores. A write made meanwhile changed that, so the load's value is not
// stored, nor put in L1. Each such store is conditional and safe to run
// twice, so one whose reply is lost (a timeout) has overwritten nothing
// newer. An eager refresh, which reads nothing first, asks Redis for the
// SHA-1 of what it holds before loading: one more round trip per refresh.
// Remove leaves a tombstone (for a minute) so that a load started before
// it cannot bring the value back. In the process, Set and Remove mark a
// load in progress for the key, and invalidations from other instances do
// too, so it does not fill L1.
//
// The one clock comparison left is between writes, in replays: each
// value records when it was created (its writer's wall clock, in Unix
// ms), and a write replayed after a Redis failure leaves in place a value
// created later than itself. With instance clocks apart by up to d, a
// replayed write can thus yield to a value written up to d before it.
//
// Fail-safe: Redis keeps each value FailSafeMaxAge beyond its TTL, in an
// envelope that records when it stops being fresh. When the loader fails,
// or outlasts SoftTimeout, a stale value from either tier is served instead
// of the error (and then for FailSafeThrottle, so a failing database is not
// hit by every request); with SoftTimeout the load goes on in the
// background and refreshes the cache. HardTimeout bounds every load. A
// loader returning ErrNotFound is never answered with a stale value; with
// NegativeTTL the "not found" is cached in both tiers.
//
// Redis failures never reach callers. Each Redis operation is bounded by
// L2Timeout, whole: dialing a connection, waiting for a pool turn and
// go-redis's own retries included, so a silent Redis (a partition: no
// reset, SYNs unanswered) costs a caller at most L2Timeout, and writes
// made meanwhile are queued at the same cost. go-redis dials on a context
// of its own and returns when the operation's ends, so dials go on in the
// background, each bounded by the client's DialTimeout (connectTimeout),
// and a connection made once the network heals serves the next probe. The
// socket deadlines come from the operation's context on clients with
// ContextTimeoutEnabled (those of NewRedis); on another client a silent
// Redis holds an operation for the client's ReadTimeout, and New logs a
// warning. One failure opens a breaker that skips Redis for
// BreakDuration, after which one call probes it. The breaker belongs to
// the Redis client: every cache on it shares it, and ClientBreaker returns
// it to other code using the client (callers of integrations/aspireredis's
// Client, say), which can read its state and feed it. Meanwhile reads use
// L1 and the loader, and writes are queued (last one per key wins, up to
// RecoveryQueue operations and RecoveryQueueBytes of values) and replayed
// until they go through, with backoff, without waiting for more traffic.
// A replayed Set or Remove leaves a value written later by another
// instance in place. A Set that does not fit the byte bound is replayed as
// a Remove of its key, so the older value is dropped from Redis; past the
// count bound writes are dropped, and the replay ends with a Clear as of
// the first dropped one, so that no older value is served. The loader's
// own errors are returned (unless fail-safe applies).
//
// Tags (FusionCache's scheme): an entry carries its tags and creation time.
// RemoveByTag records the time of the removal under "{KeyPrefix}t:{tag}"
// and publishes it: two commands whatever the number of entries, and
// nothing in Redis grows with tagged writes. Each instance drops matching
// entries from L1 by scanning it, and treats an entry read from Redis as
// expired (served only by fail-safe) when one of its tags was removed at
// or after it was created. Tag removal times are cached per instance for
// L1TTL, updated at once by the bus, and read from Redis (one pipelined
// GET) when unknown. Clear works the same way with one time for the whole
// cache ("{KeyPrefix}clear"), and empties every instance's L1.
//
// The coarse clock L1 reads instead of time.Now ticks every millisecond
// only while caches are being read; after a second without reads it stops,
// and the next read sets it to the precise time.
//
// Redis layout, for a cache named n with the default KeyPrefix
// "goaspire:cache:n:": values at "goaspire:cache:n:v:{key}" (and lock envelopes
// there while a key is loaded), locks over stale values at
// "goaspire:cache:n:l:{key}" (and markers of waiting instances at
// "goaspire:cache:n:w:{key}"), tag removal times at
// "goaspire:cache:n:t:{tag}", the Clear time at "goaspire:cache:n:clear",
// invalidations on "goaspire:cache:n:invalidate" as
// "2|{instance}|{k|l|t|c}|{argument}", where an invalidation that follows
// a database write has "{instance}@{WAL position, hex}" in place of
// "{instance}": releases that know no positions read it as another
// instance's id and apply the message as before. A Remove's tombstone
// carries the position as its payload, which they ignore. On a cluster
// client every script touches one key, so the layout works on Redis
// Cluster.
//
// Metrics (meter "github.com/goaspire/goaspire/cache", all with cache.name):
// goaspire.cache.hits and goaspire.cache.misses {cache.tier=l1|l2},
// goaspire.cache.loads {cache.outcome=success|error|not_found},
// goaspire.cache.position_loads,
// goaspire.cache.stale_served {cache.reason=error|timeout},
// goaspire.cache.invalidations_received, goaspire.cache.reconnects,
// goaspire.cache.errors {cache.tier=l2|codec}, goaspire.cache.l1.entries
// and goaspire.cache.l1.evictions. They are read from atomic counters in a
// callback, so the hot paths pay no instrument call; Cache.Stats returns
// the same counters. Spans: "cache.load" around each load, with attribute
// cache.result = loaded|stale|not_found|error and the loader's error; Redis
// commands get their spans from the client (NewRedis instruments it).
// Hits in either tier add no span of their own, and keys are not recorded.
//
// Known limits: a load that outlives its Remove's tombstone (a minute) can
// store the removed key's older value; a RemoveByTag is remembered in
// Redis for the longest TTL plus FailSafeMaxAge this instance has written;
// values are shared between callers, so treat them as immutable.
//
// # Over read replicas
//
// When the loader reads from streaming replicas (package cqrs's DB), a
// replica that has not yet replayed a write still has the old row: a load
// after the write's invalidation would put the old value back, on every
// instance, for the whole TTL. So an invalidation that follows a database
// write carries the write's position in the write-ahead log, and the
// loads it causes read only from a server that has replayed it:
//
//   - A Set, Remove, RemoveByTag or Clear made with a context that
//     records a write's position (a cqrs read-your-writes session that has
//     written: cqrs.Middleware, cqrs.WithSession, cqrs.WithSessionLSN)
//     carries the session's latest write's position. Set and Remove
//     remember it for the key on this instance, a Remove's tombstone keeps
//     it in Redis, and the invalidation message gives it to every other
//     instance, which remembers it for the key before dropping the key
//     from L1. RemoveByTag and Clear give theirs to every key of the cache.
//   - A load of the key within a minute of the write (the tombstone's
//     life), on any instance, whether it follows the message or finds the
//     tombstone first, runs its loader with a context that requires the
//     position: cqrs's DB.QueryRow (Query, Reader) with that context reads
//     a replica only once its checker has seen the replica replay the
//     write, else the primary. The cache does not import cqrs, nor cqrs
//     the cache: the position travels in the contexts. Stats.PositionLoads
//     (goaspire.cache.position_loads) counts such loads, and cqrs's
//     ReadStats.MinLSN and MinLSNReplica (goaspire.cqrs.reads,
//     reason=min_lsn) where they read.
//
// The guarantee: after an invalidation that carried a write's position
// has reached Redis (when Set or Remove returns, or when it is
// replayed), no instance caches, in L1 or Redis, a value loaded from a
// replica that had not replayed the write, for a minute after it; past
// that, a replica still behind is out of cqrs's rotation under its
// default Replicas:MaxLag (10 s), so the guarantee holds as long as
// MaxLag is set below a minute. A load that started before the
// invalidation does not store its value either (see above). What the
// guarantee does not cover: an instance serves the key from its L1 until
// the message reaches it (milliseconds; L1TTL when a message is lost), as
// after any write; and an instance that missed the message (started
// later, or reconnecting) knows the position only from a Remove's
// tombstone, so there a load after a tag removal or a Clear (Redis keeps
// no position for them), or after a Set whose value left Redis early
// (evicted, or a TTL shorter than the replica's lag), may read a lagging
// replica. Positions are remembered for up to 10,000
// keys per instance; past that the older half is folded into one position
// that applies to every key, as a tag removal's or a Clear's does: that
// may send more loads to the primary, never fewer. Without replicas,
// without a session, or for a write that recorded no position, a load
// reads as it did before.
package cache
