package health

import (
	"context"
	"time"
)

// Status is the outcome of a check or of a whole report, named as in
// ASP.NET Core's HealthStatus.
type Status string

// The three statuses. Healthy and Degraded answer 200, Unhealthy 503.
const (
	Healthy   Status = "Healthy"
	Degraded  Status = "Degraded"
	Unhealthy Status = "Unhealthy"
)

// Tags that select which endpoint runs a check: /alive runs only checks
// tagged TagLive; /health runs every check.
const (
	TagLive  = "live"
	TagReady = "ready"
)

// Check is one health check.
type Check struct {
	// Name identifies the check in reports ("postgres:db-primary").
	Name string
	// Tags select the endpoints that run the check (TagLive, TagReady).
	Tags []string
	// Timeout bounds one run; zero means the registry's default.
	Timeout time.Duration
	// FailureStatus is reported when Check fails: Unhealthy (the zero
	// value means Unhealthy) or Degraded.
	FailureStatus Status
	// Check returns nil when healthy. Its error text appears in detailed
	// reports, so it must not contain secrets.
	Check func(ctx context.Context) error
}
