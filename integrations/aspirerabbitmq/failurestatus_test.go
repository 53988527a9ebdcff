package aspirerabbitmq_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/integrations/aspirerabbitmq"
	"github.com/goaspire/goaspire/internal/poll"
	"github.com/goaspire/goaspire/messaging/rabbitmq"
	"github.com/goaspire/goaspire/servicedefaults/servicedefaultstest"
	"github.com/goaspire/goaspire/testserver"
)

// TestHealthCheckFailureStatus: while the broker cannot be reached the
// check "rabbitmq:messaging" fails Unhealthy, or with the status
// HealthCheckFailureStatus sets (by key or in code).
func TestHealthCheckFailureStatus(t *testing.T) {
	srv := needBroker(t)
	for _, tc := range []struct {
		name      string
		settings  map[string]string
		configure func(*rabbitmq.Config)
		want      health.Status
	}{
		{name: "default", want: health.Unhealthy},
		{name: "named key", settings: map[string]string{
			"Aspire:RabbitMQ:Client:messaging:HealthCheckFailureStatus": "Degraded",
		}, want: health.Degraded},
		{name: "in code", settings: map[string]string{
			"Aspire:RabbitMQ:Client:HealthCheckFailureStatus": "degraded",
		}, configure: func(c *rabbitmq.Config) { c.HealthCheckFailureStatus = health.Unhealthy }, want: health.Unhealthy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			proxy := testserver.NewFaultProxy(t, srv.Addr())
			values := map[string]string{
				"ConnectionStrings__messaging": strings.Replace(srv.URL(), srv.Addr(), proxy.Addr(), 1),
				// Connected when Client returns, so the check starts Healthy.
				"Aspire:RabbitMQ:Client:messaging:WaitOnOpen": "00:00:30",
			}
			for k, v := range tc.settings {
				values[k] = v
			}
			app := servicedefaultstest.NewUnstarted(t, nil, values)
			t.Cleanup(proxy.Heal) // before the App's Shutdown closes the client
			var configure []func(*rabbitmq.Config)
			if tc.configure != nil {
				configure = append(configure, tc.configure)
			}
			if _, err := aspirerabbitmq.Client(t.Context(), app, "messaging", configure...); err != nil {
				t.Fatal(err)
			}
			if s := entry(app.Health().Run(context.Background(), nil), "rabbitmq:messaging"); s.Status != health.Healthy {
				t.Fatalf("rabbitmq:messaging while connected = %s (%s)", s.Status, s.Error)
			}
			proxy.Set(testserver.Silent)
			proxy.Reset()
			var e health.Entry
			poll.Until(t, time.Minute, "the check to fail", func() bool {
				e = entry(app.Health().Run(context.Background(), nil), "rabbitmq:messaging")
				return e.Status != health.Healthy
			})
			if e.Status != tc.want || !strings.Contains(e.Error, `"messaging"`) {
				t.Errorf("rabbitmq:messaging with the broker out of reach = %s %q, want %s naming the connection", e.Status, e.Error, tc.want)
			}
		})
	}
}

// TestHealthCheckFailureStatusBadValue: another value is an error naming
// the key.
func TestHealthCheckFailureStatusBadValue(t *testing.T) {
	key := "Aspire:RabbitMQ:Client:messaging:HealthCheckFailureStatus"
	app := servicedefaultstest.NewUnstarted(t, nil, map[string]string{
		"ConnectionStrings__messaging": "amqp://guest:guest@127.0.0.1:1/",
		key:                            "Fine",
	})
	_, err := aspirerabbitmq.Client(t.Context(), app, "messaging")
	if err == nil || !strings.Contains(err.Error(), key) {
		t.Fatalf("Client with %s=Fine: %v, want an error naming the key", key, err)
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
