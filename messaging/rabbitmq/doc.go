// Package rabbitmq is a RabbitMQ client on github.com/rabbitmq/amqp091-go
// for services run by an Aspire AppHost, Kubernetes or a shell: it reads
// Aspire's connection string and settings, and adds what amqp091-go leaves
// to its users.
//
//   - Recovery: a [Client] reconnects with exponential backoff when the
//     connection is lost, declares again the exchanges, queues and bindings
//     declared through it, and resumes its consumers, by itself.
//   - Confirmed publishing: [Client.Publish] sends persistent messages in
//     confirm mode and returns nil only once the broker has confirmed the
//     message. A message unconfirmed when the connection drops is published
//     again on the next connection (at-least-once: deduplicate by
//     MessageID); Publish fails only when ctx ends first, the message is
//     mandatory and unroutable, or the broker refuses it. Messages are
//     not mandatory by default, as in RabbitMQ's clients: one that no
//     queue takes is dropped by the broker; set Message.Mandatory, or
//     Config.Mandatory for the whole client, to get [ErrUnroutable]. A ctx without a deadline gets
//     PublishConfirmTimeout (default 20 s), after which Publish fails with
//     ErrConfirmTimeout: a silent broker cannot hold a caller forever.
//   - Consuming: [Client.Consume] runs a [Handler] per message with a
//     prefetch and a concurrency limit; nil acknowledges, an error delivers
//     the message again, then rejects it to the queue's dead-letter queue
//     ([Queue].DeadLetterQueue) once the handler has been called
//     ConsumeOptions.MaxAttempts times for it (at once for an error made
//     by [Permanent], see [IsPermanent]): exactly that many on classic
//     and quorum queues alike, as the client counts failures in a header of
//     its own and never adds the quorum queue's x-delivery-count. A message
//     the broker redelivers because a consumer died holding it keeps its
//     attempt number (bound a message that crashes the process with the
//     quorum queue's x-delivery-limit in [Queue].Args). Cancelling Consume's
//     context stops it gracefully: handlers already running finish and are
//     acknowledged before the channel closes.
//   - Telemetry: W3C trace context travels in message headers; the producer
//     span "publish {destination}" and the consumer span "process {queue}"
//     are one trace, with the attributes messaging.system=rabbitmq,
//     messaging.operation and messaging.destination.name. Counters for
//     published, delivered, failed, redelivered and dead-lettered messages,
//     a processing-duration histogram and a readiness check
//     ([Client.HealthCheck]) complete it.
//   - [PublishJSON] and [ConsumeJSON] cover the common case of typed JSON
//     messages; Publish and Consume take raw bytes.
//   - Queues shared with services in other languages: every side must
//     declare a queue alike, or the broker refuses the second declaration
//     (PRECONDITION_FAILED; pika's queue_declare is non-durable by
//     default, amqplib's assertQueue and a zero [Queue] durable). Declare
//     it as its owner does ([Queue].Transient for pika's), or set
//     [Queue].Passive to use it as it exists: a missing one is
//     [ErrQueueNotFound], and Consume waits for its owner to declare it
//     again after a broker restart.
//
// # Configuration
//
// As with pgx, parse a configuration, then open it: [LoadConfig] reads
// ConnectionStrings__{name} (amqp://user:password@host:port/vhost or
// amqps://; Aspire 13's {NAME}_URI or {NAME}_HOST, _PORT, _USERNAME and
// _PASSWORD work too) and the settings of Aspire.RabbitMQ.Client under
// Aspire:RabbitMQ:Client, then Aspire:RabbitMQ:Client:{name}
// (ConnectionString, MaxConnectRetryCount, DisableHealthChecks,
// DisableTracing, and those below); [New] opens the client. A [Config] can
// also be built by hand.
//
//	Aspire:RabbitMQ:Client[:{name}]:WaitOnOpen                             make New wait this long for the
//	                                                                       broker (default 0: connect in
//	                                                                       the background)
//	Aspire:RabbitMQ:Client[:{name}]:Mandatory                              publish every message mandatory
//	                                                                       (default false)
//	Aspire:RabbitMQ:Client[:{name}]:PublishConfirmTimeout                  bound of a Publish whose
//	                                                                       ctx has no deadline (default 20s)
//	Aspire:RabbitMQ:Client[:{name}]:ConnectionFactory:RequestedHeartbeat   AMQP heartbeat, whole seconds
//	                                                                       (default 4s; RabbitMQ.Client's name)
//
// On a servicedefaults App, package integrations/aspirerabbitmq does both
// with the App's configuration, telemetry, logger and health registry, and
// closes the Client at the App's shutdown.
//
// # Startup
//
// Opening never fails because the broker is down or still starting: New
// returns at once and the client connects in the background, with the
// backoff of its reconnects and without limit. Until it is connected,
// Publish waits within its ctx (or PublishConfirmTimeout) and fails by it,
// the Declare methods wait within theirs, Consume starts once connected,
// and [Client.HealthCheck] reports Unhealthy with the reason
// ("connecting", and the last error), so the instance stays out of
// rotation without crash-looping. Set WaitOnOpen (Config.WaitOnOpen) to
// make New wait for the broker instead, retrying MaxConnectRetryCount
// times (Aspire's default 5), and fail when it does not come: that is
// the only use of MaxConnectRetryCount. Declare topology at startup with
// a ctx that can wait for the broker (or in a worker, before consuming).
//
// # Under a partition
//
// A broker that goes silent (no RST, no FIN) is noticed by the heartbeat:
// amqp091-go closes a connection after 1.5 heartbeats without a frame, 6 s
// with the default, and the client then reconnects and [Client.HealthCheck]
// reports Unhealthy (so /health turns within 10 s). A Publish waits for the
// confirm at most until its ctx's deadline, or PublishConfirmTimeout when
// it has none, and fails with [ErrConfirmTimeout] (which also wraps
// context.DeadlineExceeded); a message it returned nil for is never lost.
// A write to a silent broker that makes no progress for 1.5 heartbeats
// fails and drops the connection (amqp091-go writes without a deadline,
// and would otherwise hold the channel, and every publisher, for good);
// publishers waiting behind a blocked write give up at their deadline.
// Returns of unroutable messages are taken off the connection as they
// arrive, whether or not their publisher still waits: publishers that gave
// up before their confirm (any number of them) cannot stall the connection,
// and a Publish that waits for its confirm learns of its return
// (ErrUnroutable).
//
// Errors name the key at fault and never contain the password; a Config
// and a Client print, log and marshal with the password masked.
package rabbitmq
