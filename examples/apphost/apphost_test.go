package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/goaspire/goaspire/internal/otlptest"
	"github.com/goaspire/goaspire/testserver"
)

// TestScenario runs the launcher end to end, as `go run ./examples/apphost`
// does: real Postgres primary and replica, real Redis, two catalog
// instances and a gateway as separate processes, and every scenario step.
// The services export their telemetry over OTLP/gRPC, as under an Aspire
// AppHost, to a receiver of the test's own, which checks it afterwards
// (see checkTelemetry).
func TestScenario(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end scenario: skipped with -short")
	}
	for _, bin := range []string{"postgres", "initdb", "pg_basebackup", "redis-server"} {
		_, err := testserver.FindBinary(bin)
		testserver.SkipIfMissing(t, err) // a skip on a dev machine, a failure under CI
	}
	// The services inherit this process's environment; keep it hermetic.
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "OTEL_") || strings.HasPrefix(strings.ToLower(k), "connectionstrings__") {
			continue
		}
		env = append(env, kv)
	}
	rcv := otlptest.Start(t)
	env = append(env, "OTEL_EXPORTER_OTLP_ENDPOINT="+rcv.GRPCEndpoint, "OTEL_EXPORTER_OTLP_PROTOCOL=grpc")
	var faults []fault
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	var out bytes.Buffer
	err := run(ctx, &out, config{environ: env, faults: &faults})
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	wants := []string{"scenario passed", "Redis killed", "replica killed", "catalog-0 killed", "no password appears in their logs"}
	if !strings.Contains(out.String(), "rabbitmq-server is not installed") || os.Getenv("CI") != "" {
		wants = append(wants, "jobs-worker-1 killed", "RabbitMQ killed", "all 500 jobs done, none lost", "in the trace of its POST")
	}
	// The services in other languages: skipped on a machine without
	// python3 (pika, redis) or node, never under CI, where .ci/run
	// installs them.
	polyglotSkipped := strings.Contains(out.String(), "is not installed (apt-get install")
	if os.Getenv("CI") != "" || !polyglotSkipped {
		wants = append(wants, "Python publisher (redis-py", "each received once by each")
		if !strings.Contains(out.String(), "rabbitmq-server is not installed") || os.Getenv("CI") != "" {
			wants = append(wants, "Node consumer (amqplib", "20 tasks, each consumed once", "Node consumer stopped cleanly")
		}
	} else {
		t.Log("the polyglot part was skipped: python3 with pika and redis, or node and npm, is not installed")
	}
	for _, want := range wants {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	checkTelemetry(t, rcv, faults)
}

func TestInjectedConnection(t *testing.T) {
	e := injected{}
	e.connection("db-primary", `Host=127.0.0.1;Port=5433;Username=postgres;Password="p;w";Database=catalog`, postgresProperties)
	e.connection("cache", "127.0.0.1:6380,password=s3cret", redisProperties)
	want := map[string]string{
		"ConnectionStrings__db-primary": `Host=127.0.0.1;Port=5433;Username=postgres;Password="p;w";Database=catalog`,
		"DB_PRIMARY_HOST":               "127.0.0.1",
		"DB_PRIMARY_PORT":               "5433",
		"DB_PRIMARY_USERNAME":           "postgres",
		"DB_PRIMARY_PASSWORD":           "p;w",
		"DB_PRIMARY_DATABASENAME":       "catalog",
		"ConnectionStrings__cache":      "127.0.0.1:6380,password=s3cret",
		"CACHE_HOST":                    "127.0.0.1",
		"CACHE_PORT":                    "6380",
		"CACHE_PASSWORD":                "s3cret",
		"CACHE_URI":                     "redis://:s3cret@127.0.0.1:6380",
	}
	for k, v := range want {
		if e[k] != v {
			t.Errorf("%s = %q, want %q", k, e[k], v)
		}
	}
	if len(e) != len(want) {
		t.Errorf("injected %d variables, want %d: %v", len(e), len(want), e)
	}
}
