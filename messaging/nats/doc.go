// Package natsmsg connects to NATS from Aspire's configuration and carries
// the trace context across NATS messages, as .NET Aspire's NATS client
// integration (Aspire.NATS.Net) does for .NET services.
//
// Its import path ends in "nats" but the package is named natsmsg, so it
// never shadows nats.go's package nats, which code using it imports too:
//
//	import (
//		"github.com/nats-io/nats.go"
//		"github.com/nats-io/nats.go/jetstream"
//
//		natsmsg "github.com/goaspire/goaspire/messaging/nats"
//	)
//
// The pgx pattern: LoadConfig parses the connection called name
// (ConnectionStrings__{name}: nats://[user:password@]host:port, several
// URLs separated by commas; settings Aspire:NATS:Net[:{name}]), then New
// opens it and returns nats.go's own *nats.Conn, which reconnects forever.
// A Config may also be built by hand. On a servicedefaults App, package
// integrations/aspirenats does both with the App's configuration, logger
// and trusted roots, registers HealthCheck and drains the connection at
// the App's shutdown.
//
// nats.go has no OpenTelemetry support, so the helpers here add it: Publish
// and PublishJetStream record a producer span "publish {subject}" and write
// the W3C trace context into the message headers; Subscribe,
// QueueSubscribe and ConsumeJetStream read it and run the handler in a
// consumer span "process {subject}" of the same trace. Spans carry
// messaging.system=nats, messaging.operation, messaging.destination.name
// and the other messaging attributes the Aspire dashboard shows. Core NATS
// delivers at most once; use JetStream (PublishJetStream, which waits for
// the stream's acknowledgement, and ConsumeJetStream on a durable consumer,
// which acknowledges after the handler succeeds) where a message must not
// be lost.
//
// Each helper takes only the options that configure it, so an option that
// would be ignored does not compile:
//
//	option              Publish, PublishMsg,          Subscribe, QueueSubscribe,
//	                    PublishJetStream[Msg]         ConsumeJetStream
//	WithTracerProvider  yes                           yes
//	WithPropagator      yes                           yes
//	WithLogger          -                             yes
//
// The publish helpers take PublishOption, the subscribe helpers
// SubscribeOption; WithTracerProvider and WithPropagator return an Option,
// which is both, so one value can be passed to either side.
//
// # Startup
//
// Opening never fails because the server is down or still starting: New
// returns at once and the connection connects in the background, as it
// reconnects after a loss, without limit. Until then HealthCheck reports
// Unhealthy ("connecting", with the last error), core publishes are
// buffered by nats.go, a request or PublishJetStream waits for its answer
// within its ctx and fails by it, and subscriptions start once connected.
// Set WaitOnOpen to make New wait for the first connection instead, and
// fail when it does not come:
//
//	Aspire:NATS:Net[:{name}]:WaitOnOpen     make New wait this long for a server (default 0: no wait)
//
// # Under a partition
//
// nats.go pings the server every 2 minutes by default, so a server gone
// silent (no RST, no FIN) would leave the connection, and /health,
// looking fine for minutes. New pings every PingInterval (default 2 s) and
// declares the connection stale after MaxPingOut (default 2) unanswered
// pings: within (MaxPingOut+1) × PingInterval = 6 s the connection starts
// reconnecting and HealthCheck reports Unhealthy (Degraded with
// HealthCheckFailureStatus=Degraded, as Aspire's NATS check reports a
// reconnecting connection). The keys, in Aspire:NATS:Net and
// Aspire:NATS:Net:{name}, take NATS.Net's NatsOpts names:
//
//	Aspire:NATS:Net[:{name}]:PingInterval   client ping interval (default 2s)
//	Aspire:NATS:Net[:{name}]:MaxPingOut     unanswered pings before reconnecting (default 2)
//
// Passwords and tokens never appear in errors, logs or a printed Config.
package natsmsg
