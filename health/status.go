package health

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// StatusError is a check failure that carries its own status, overriding
// the check's FailureStatus for this run: a client that is reconnecting is
// Degraded while one that is closed for good is Unhealthy, from the same
// check. Make one with WithStatus.
type StatusError struct {
	// Status is Degraded or Unhealthy.
	Status Status
	// Err is the failure.
	Err error
}

// Error returns Err's text.
func (e *StatusError) Error() string { return e.Err.Error() }

// Unwrap returns Err.
func (e *StatusError) Unwrap() error { return e.Err }

// WithStatus returns err as a failure to be reported with status s
// (Degraded or Unhealthy; any other status leaves the check's
// FailureStatus in force). It returns nil when err is nil.
func WithStatus(s Status, err error) error {
	if err == nil {
		return nil
	}
	return &StatusError{Status: s, Err: err}
}

// statusOf returns the status a failed check's error asks for, or def.
func statusOf(err error, def Status) Status {
	var se *StatusError
	if errors.As(err, &se) && (se.Status == Degraded || se.Status == Unhealthy) {
		return se.Status
	}
	return def
}

// ParseFailureStatus parses the value of a HealthCheckFailureStatus
// setting: "Unhealthy" or "Degraded", in any case, surrounding spaces
// ignored. Any other value is an error; the caller names the key.
func ParseFailureStatus(s string) (Status, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "unhealthy":
		return Unhealthy, nil
	case "degraded":
		return Degraded, nil
	}
	return "", fmt.Errorf("%q is not a failure status (want Unhealthy or Degraded)", s)
}

// WithFailureStatus returns c reporting every failure with s (Degraded or
// Unhealthy), the status its error may carry (see StatusError) included:
// it is how a setting such as HealthCheckFailureStatus overrides a check's
// own statuses. An empty s returns c unchanged.
func WithFailureStatus(c Check, s Status) Check {
	if s == "" {
		return c
	}
	check := c.Check
	c.FailureStatus = s
	c.Check = func(ctx context.Context) error { return WithStatus(s, check(ctx)) }
	return c
}
