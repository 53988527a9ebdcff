// Package footprint measures what goaspire costs a service against the same
// service written on net/http with the OpenTelemetry SDK, and guards the
// dependencies of the core package.
//
// The two programs are in testdata: goaspire (servicedefaults.Add, a
// handler calling another service through App.HTTPClient) and plain
// (net/http, the OpenTelemetry SDK's tracer, meter and logger providers,
// the OTLP exporters of every signal over HTTP and gRPC, otelhttp, the
// otelslog bridge and runtime metrics, exporting only when an OTLP endpoint
// is set, as a plain program does). Both serve GET /health.
//
// TestFootprint compares them side by side, in interleaved rounds: a cold
// go build (a fresh GOCACHE each time, the usual module cache), the
// binary's size (plain and with -trimpath -ldflags=-s -w), the time from
// starting the stripped binary to its first /health 200 (with PORT,
// SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt and
// SSL_CERT_DIR=/etc/ssl/certs, and nothing else, in its environment;
// median and p90 of many runs, and the CPU time used until then, which a
// busy machine moves less) and its resident memory (VmRSS after a second
// idle). It logs each side's figures, their ratios and the goals
// (build and binary within 1.10x, start within 1.25x, RSS within 1.15x).
// It takes minutes, so it runs only when asked:
//
//	GOASPIRE_FOOTPRINT=1 go test ./internal/footprint -run Footprint -v -timeout 60m
//
// GOASPIRE_FOOTPRINT=strict also fails the test when a goal is missed.
// GOASPIRE_FOOTPRINT_BUILDS (default 3; 0 skips the cold builds, the
// longest part), GOASPIRE_FOOTPRINT_STARTS (default 41) and
// GOASPIRE_FOOTPRINT_RSS (default 9) set the number of runs of each side.
// The load average is logged: on a machine busy with other work the
// figures, the cold builds' above all, say little.
//
// TestCoreDependencies, which always runs, fails when
// github.com/goaspire/goaspire/servicedefaults links a client library
// (pgx, go-redis, amqp091-go, nats.go) or otelgrpc, or grpc's health or
// reflection packages, naming the import that pulls each one in.
package footprint
