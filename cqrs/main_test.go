package cqrs

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/goleak"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/internal/poll"
	"github.com/goaspire/goaspire/testserver"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// quietLogger drops the package's logs; tests that look at logs make their
// own.
var quietLogger = slog.New(slog.NewTextHandler(io.Discard, nil))

// cluster is a primary and one streaming replica for a test.
type cluster struct {
	primary, replica *testserver.Postgres
}

func newCluster(t testing.TB) cluster {
	t.Helper()
	p := testserver.NewPostgres(t)
	r := p.NewReplica(t)
	return cluster{primary: p, replica: r}
}

// config returns the configuration an AppHost would inject for Aspire's production patterns'
// names, with fast checks, plus extra.
func (c cluster) config(extra map[string]string) *discovery.Config {
	m := map[string]string{
		"ConnectionStrings__db-primary":               c.primary.ConnectionString(),
		"ConnectionStrings__db-replica-east":          c.replica.ConnectionString(),
		"Aspire__Npgsql__db__Replicas__CheckInterval": "100ms",
		"Aspire__Npgsql__db__Replicas__CheckTimeout":  "2s",
		"Aspire__Npgsql__ConnectTimeout":              "2s",
	}
	for k, v := range extra {
		m[k] = v
	}
	return discovery.FromMap(m)
}

// eventually polls cond until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, d, what, cond)
}

func inRotation(db *DB, name string) bool {
	for _, r := range db.Replicas() {
		if r.Name == name {
			return r.InRotation
		}
	}
	return false
}

// sumCounter adds the int64 sum data points of the named metric whose
// attributes include every one of want.
func sumCounter(t *testing.T, reader *sdkmetric.ManualReader, name string, want ...attribute.KeyValue) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			sum, ok := m.Data.(metricdata.Sum[int64])
			if !ok {
				continue
			}
		points:
			for _, dp := range sum.DataPoints {
				for _, kv := range want {
					if v, ok := dp.Attributes.Value(kv.Key); !ok || v != kv.Value {
						continue points
					}
				}
				total += dp.Value
			}
		}
	}
	return total
}

// metricNames returns the names of the metrics the reader has data for.
func metricNames(t *testing.T, reader *sdkmetric.ManualReader) map[string]bool {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			out[m.Name] = true
		}
	}
	return out
}
