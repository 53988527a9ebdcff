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
// A Config may also be built by hand. servicedefaults' App.NATS does both,
// registers HealthCheck and drains the connection at shutdown.
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
// Passwords and tokens never appear in errors, logs or a printed Config.
package natsmsg
