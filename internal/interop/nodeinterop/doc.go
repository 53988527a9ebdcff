// Package nodeinterop holds the tests that run goaspire's messaging and
// HTTP clients against Node.js services using the libraries a Node service
// of an Aspire application uses: amqplib for RabbitMQ, node-redis for
// Redis Pub/Sub, express for HTTP. The Node side is testdata/interop.js,
// with the packages of examples/apphost/polyglot's lockfile (see package
// internal/polyglot). The package has no code of its own.
package nodeinterop
