package aspirenats_test

import (
	"context"
	"strings"
	"testing"

	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/integrations/aspirenats"
	natsmsg "github.com/goaspire/goaspire/messaging/nats"
	"github.com/goaspire/goaspire/servicedefaults/servicedefaultstest"
	"github.com/goaspire/goaspire/testserver"
)

// TestHealthCheckFailureStatus: with the server killed, the check
// "nats:events" is Unhealthy while reconnecting, or the status
// HealthCheckFailureStatus sets (by key or in code).
func TestHealthCheckFailureStatus(t *testing.T) {
	for _, tc := range []struct {
		name      string
		settings  map[string]string
		configure func(*natsmsg.Config)
		want      health.Status
	}{
		{name: "default: reconnecting is Unhealthy", want: health.Unhealthy},
		{name: "named key", settings: map[string]string{
			"Aspire:NATS:Net:events:HealthCheckFailureStatus": "degraded",
		}, want: health.Degraded},
		{name: "in code", settings: map[string]string{
			"Aspire:NATS:Net:HealthCheckFailureStatus": "Degraded",
		}, configure: func(c *natsmsg.Config) { c.HealthCheckFailureStatus = health.Unhealthy }, want: health.Unhealthy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := testserver.NewNATS(t)
			values := map[string]string{"ConnectionStrings:events": srv.URL()}
			for k, v := range tc.settings {
				values[k] = v
			}
			app := servicedefaultstest.NewUnstarted(t, nil, values)
			var configure []func(*natsmsg.Config)
			if tc.configure != nil {
				configure = append(configure, tc.configure)
			}
			nc, err := aspirenats.Conn(t.Context(), app, "events", configure...)
			if err != nil {
				t.Fatal(err)
			}
			waitFor(t, "connected", nc.IsConnected)
			if err := srv.Kill(); err != nil {
				t.Fatal(err)
			}
			var e health.Entry
			waitFor(t, "the check to fail", func() bool {
				e = entry(app.Health().Run(context.Background(), nil), "nats:events")
				return e.Status != health.Healthy
			})
			if e.Status != tc.want {
				t.Errorf("nats:events with the server killed = %s %q, want %s", e.Status, e.Error, tc.want)
			}
		})
	}
}

// TestHealthCheckFailureStatusBadValue: another value is an error naming
// the key.
func TestHealthCheckFailureStatusBadValue(t *testing.T) {
	key := "Aspire:NATS:Net:events:HealthCheckFailureStatus"
	app := servicedefaultstest.NewUnstarted(t, nil, map[string]string{
		"ConnectionStrings:events": "nats://127.0.0.1:1",
		key:                        "Healthy",
	})
	_, err := aspirenats.Conn(t.Context(), app, "events")
	if err == nil || !strings.Contains(err.Error(), key) {
		t.Fatalf("Conn with %s=Healthy: %v, want an error naming the key", key, err)
	}
}

// entry returns the entry of the check called name in rep.
func entry(rep health.Report, name string) health.Entry {
	for _, e := range rep.Entries {
		if e.Name == name {
			return e
		}
	}
	return health.Entry{Name: name, Status: "missing"}
}
