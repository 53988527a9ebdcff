package aspirepostgres_test

import (
	"context"
	"strings"
	"testing"

	"github.com/goaspire/goaspire/cqrs"
	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/integrations/aspirepostgres"
	"github.com/goaspire/goaspire/servicedefaults/servicedefaultstest"
)

// TestHealthCheckFailureStatus: with neither server answering, the
// primary's check fails Unhealthy and a replica's Degraded unless
// HealthCheckFailureStatus (per connection, or in code) says otherwise.
func TestHealthCheckFailureStatus(t *testing.T) {
	for _, tc := range []struct {
		name             string
		settings         map[string]string
		configure        func(*cqrs.Config)
		primary, replica health.Status
	}{
		{name: "defaults", primary: health.Unhealthy, replica: health.Degraded},
		{name: "primary Degraded", settings: map[string]string{
			"Aspire:Npgsql:db-primary:HealthCheckFailureStatus": "degraded",
		}, primary: health.Degraded, replica: health.Degraded},
		{name: "every connection Unhealthy", settings: map[string]string{
			"Aspire:Npgsql:HealthCheckFailureStatus": "UNHEALTHY",
		}, primary: health.Unhealthy, replica: health.Unhealthy},
		{name: "in code", configure: func(c *cqrs.Config) {
			c.Primary.HealthCheckFailureStatus = health.Degraded
			for i := range c.Replicas {
				c.Replicas[i].HealthCheckFailureStatus = health.Unhealthy
			}
		}, primary: health.Degraded, replica: health.Unhealthy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			values := map[string]string{
				"ConnectionStrings:db-primary": "Host=127.0.0.1;Port=" + refusedPort(t) + ";Username=u;Password=p;Database=d",
				"ConnectionStrings:db-replica": "Host=127.0.0.1;Port=" + refusedPort(t) + ";Username=u;Password=p;Database=d",
			}
			for k, v := range tc.settings {
				values[k] = v
			}
			app := servicedefaultstest.NewUnstarted(t, nil, values)
			var configure []func(*cqrs.Config)
			if tc.configure != nil {
				configure = append(configure, tc.configure)
			}
			if _, err := aspirepostgres.DB(context.Background(), app, "db", configure...); err != nil {
				t.Fatal(err)
			}
			rep := app.Health().Run(context.Background(), nil)
			want := map[string]health.Status{"postgres:db-primary": tc.primary, "postgres:db-replica": tc.replica}
			for _, e := range rep.Entries {
				if w, ok := want[e.Name]; ok {
					delete(want, e.Name)
					if e.Status != w {
						t.Errorf("%s = %s (%s), want %s", e.Name, e.Status, e.Error, w)
					}
				}
			}
			if len(want) != 0 {
				t.Errorf("checks %v not reported", want)
			}
		})
	}
}

// TestHealthCheckFailureStatusBadValue: another value fails the open with
// an error naming the key.
func TestHealthCheckFailureStatusBadValue(t *testing.T) {
	key := "Aspire:Npgsql:db:HealthCheckFailureStatus"
	app := servicedefaultstest.NewUnstarted(t, nil, map[string]string{
		"ConnectionStrings:db": "Host=127.0.0.1;Port=" + refusedPort(t) + ";Username=u;Password=p;Database=d",
		key:                    "sick",
	})
	_, err := aspirepostgres.Pool(context.Background(), app, "db")
	if err == nil || !strings.Contains(err.Error(), key) {
		t.Fatalf("Pool with %s=sick: %v, want an error naming the key", key, err)
	}
}
