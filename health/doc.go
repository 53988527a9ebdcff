// Package health is goaspire's health-check registry and its /health and
// /alive endpoints, built on github.com/hellofresh/health-go/v5.
//
// Every goaspire package exposes its checks as Check values; a Registry
// holds them and runs them, and Registry.Handler serves them over HTTP.
// servicedefaults.Add maps the two endpoints .NET Aspire's ServiceDefaults
// maps:
//
//	/health  every check            200 Healthy/Degraded, 503 Unhealthy
//	/alive   checks tagged TagLive  (a "self" check is always there)
//
// Checks of dependencies (databases, caches, other services) are tagged
// TagReady, not TagLive: a failing dependency makes the service not ready,
// it is no reason to restart it.
//
// # What it adds to health-go
//
// health-go v5 runs the checks of one run concurrently and aggregates
// their status (a SkipOnErr check makes the result "Partially Available").
// goaspire uses it for that, and adds what it lacks:
//
//   - ASP.NET Core's three statuses: a failing check reports its
//     FailureStatus (Unhealthy by default, or Degraded), and only
//     Unhealthy answers 503 (health-go answers 503 only for its
//     "Unavailable", and only JSON);
//   - tags, so /alive runs only the live checks;
//   - a timeout that cancels the check's context (health-go's does not,
//     and leaks the goroutine of a check that outlives it), and recovery
//     from a check that panics;
//   - result caching and request coalescing in the handler: concurrent
//     probes share one run (health-go serializes Measure calls under one
//     mutex), and a report is reused for HandlerOptions.CacheDuration;
//   - an answer on time under a partition: a probe waits for the run at
//     most HandlerOptions.ResponseTimeout (DefaultResponseTimeout, 800 ms,
//     under Kubernetes' 1 s probe timeout), then answers with each check's
//     last completed result while the run goes on, bounded by each check's
//     Timeout; a check that has never completed counts as failing with its
//     FailureStatus (error NoResultYet), so a service is not reported
//     ready before its checks said so. A check that ignores its context is
//     not started again while its abandoned call is still running;
//   - the report's status is its worst entry's, so a StatusError's own
//     status (Degraded while a client reconnects) decides, not only the
//     check's FailureStatus;
//   - redaction: error texts in reports and logs go through Scrub, so a
//     driver error quoting a connection URL, "Password=...", a JSON
//     "password" member, an Azure SAS signature or a bearer token does
//     not leak it;
//   - logging of status transitions, not of every probe;
//   - ready-made checks through the application's own clients (PgxPool,
//     Redis, HTTP) where health-go's checks/pgx5 and checks/redis dial a
//     new connection on every probe.
//
// # Output
//
// By default a handler writes only the status word as text/plain, which is
// what ASP.NET Core writes and what orchestrators need. With
// HandlerOptions.Detailed it writes the JSON report in the shape of the
// HealthChecks UI response writer:
//
//	{"status":"Degraded","totalDuration":"00:00:00.0021534",
//	 "entries":{"self":{"status":"Healthy","duration":"00:00:00.0000031","tags":["live"]},
//	            "cache":{"status":"Degraded","description":"dial tcp 127.0.0.1:6380: connect: connection refused",
//	                     "duration":"00:00:00.0020910","tags":["ready"]}}}
//
// # Configuration
//
// The package reads no configuration itself. servicedefaults configures
// the registry and handlers from these keys (see its documentation):
//
//	Aspire:ServiceDefaults:HealthChecks:DetailedOutput  JSON report (default: true in Development only)
//	Aspire:ServiceDefaults:HealthChecks:CacheDuration   report reuse (default: 2s, 0 in Development)
//	Aspire:ServiceDefaults:HealthChecks:Timeout         per-check default timeout (default: 5s)
//	Aspire:ServiceDefaults:HealthChecks:ResponseTimeout longest wait of a probe for a run (default: 800ms)
package health
