// Command apphost plays the Aspire AppHost on one machine: it starts a
// throwaway Postgres primary and streaming replica and a Redis (or uses the
// ones the environment names), builds and starts two catalog instances, two
// users (gRPC) instances and a gateway with exactly the variables an Aspire
// AppHost injects, waits for
// their /health, runs a short scripted scenario that prints what happened,
// then stops everything.
//
// Beside the Go services it runs services in other languages, as an
// AppHost with AddNpmApp and AddPythonApp would, from
// examples/apphost/polyglot: a Python producer (pika) sends tasks to a
// Node.js consumer (amqplib, express for /health) through the jobs
// example's RabbitMQ (ConnectionStrings__messaging), and a Python publisher
// (redis-py) broadcasts raw events ("user.created:…") on the Redis channel
// "events", which the catalogs receive with redisevents.Subscribe. It needs
// python3 with pika and redis (Debian: python3-pika python3-redis) and node
// with npm; it runs `npm ci` in examples/apphost/polyglot when its
// node_modules is missing. Without them that part is skipped, with a line
// saying what is missing.
//
//	go run ./examples/apphost            # run the scenario and exit
//	go run ./examples/apphost -keep      # then keep everything running until Ctrl-C
//
// With OTEL_EXPORTER_OTLP_ENDPOINT set (an Aspire dashboard, a collector)
// the services export their telemetry there, with the development batch
// delays Aspire sets. With ConnectionStrings__db-primary,
// ConnectionStrings__db-replica-east and ConnectionStrings__cache set, those
// servers are used instead of throwaway ones, and the steps that kill and
// restart servers are skipped.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	keep := flag.Bool("keep", false, "after the scenario, keep everything running until interrupted")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Stdout, config{keep: *keep, environ: os.Environ()}); err != nil {
		fmt.Fprintln(os.Stderr, "apphost:", err)
		os.Exit(1)
	}
}
