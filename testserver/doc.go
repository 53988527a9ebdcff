// Package testserver starts throwaway PostgreSQL (with streaming
// replicas), Redis (plain, TLS, replica, Sentinel, Cluster), RabbitMQ and
// NATS servers on 127.0.0.1, as processes (no Docker), for tests: yours
// and goaspire's own. [FaultProxy] sits in front of any of them to make it
// go silent, black-hole new connections or add latency, the failures a
// network partition causes. [ManagedIdentity] stands in for the managed
// identity endpoint of Azure App Service and Container Apps, issuing
// JWT-shaped tokens to azidentity.
//
// It is a test helper, not a way to run databases in production. Every
// server gets a fresh temporary directory, a free port, and a random
// password, and never touches a system instance on the standard ports.
//
// The core API ([StartPostgres], [StartRedis], [StartRedisCluster] and the
// methods on [Postgres] and [Redis]) does not depend on package testing, so a
// program such as the examples launcher can use it. Redis topologies come
// from the one Redis starter: [Redis.StartReplica] (replicaof),
// [Redis.StartSentinel] (redis-server --sentinel monitoring the server) and
// [StartRedisCluster] (cluster-enabled nodes joined by redis-cli --cluster
// create); the servers of one topology share a password. The thin wrappers
// [NewPostgres], [Postgres.NewReplica], [NewRedis], [Redis.NewReplica],
// [Redis.NewSentinel] and [NewRedisCluster] take a [testing.TB]: they skip the test
// when a server binary is not installed (and only then, and never when the
// CI environment variable is set: then a missing binary fails the test, see
// [SkipIfMissing]), fail it on any other start error, and stop and remove the
// server in t.Cleanup.
//
// Binaries are looked up with [FindBinary]: on PATH, else in the
// highest-versioned /usr/lib/postgresql/*/bin, where Debian and Ubuntu
// install the PostgreSQL server programs. initdb and pg_basebackup are taken
// from the directory the chosen postgres really lives in when they are there,
// so that all three come from one installation.
//
// PostgreSQL refuses to run as root. When the process runs as root, the
// PostgreSQL programs run as the unprivileged "postgres" user and the
// temporary directory is handed to that user; otherwise they run as the
// current user. Redis runs as the current user, and so does a RabbitMQ node
// ([StartRabbitMQ]), root included, with its own node name, Erlang cookie,
// data directory and distribution port, no epmd and no plugins. A node takes
// several seconds to start: share one per test package, from TestMain.
//
// The lifecycle methods simulate what tests need: Stop shuts a server down
// cleanly, Kill crashes it with SIGKILL, and Start brings it back on the same
// port with the same data directory. Close stops the server and removes its
// directory. Every process started here is reaped.
package testserver
