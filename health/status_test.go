package health_test

import (
	"context"
	"errors"
	"testing"

	"github.com/goaspire/goaspire/health"
)

func TestStatusErrorOverridesFailureStatus(t *testing.T) {
	tests := []struct {
		name    string
		failure health.Status
		err     error
		want    health.Status
	}{
		{"plain error", "", errors.New("down"), health.Unhealthy},
		{"plain error, Degraded check", health.Degraded, errors.New("slow"), health.Degraded},
		{"degraded", "", health.WithStatus(health.Degraded, errors.New("reconnecting")), health.Degraded},
		{"unhealthy on a Degraded check", health.Degraded, health.WithStatus(health.Unhealthy, errors.New("closed")), health.Unhealthy},
		{"wrapped", "", errorsJoin(health.WithStatus(health.Degraded, errors.New("reconnecting"))), health.Degraded},
		{"invalid status ignored", "", health.WithStatus(health.Healthy, errors.New("x")), health.Unhealthy},
		{"nil", "", health.WithStatus(health.Degraded, nil), health.Healthy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := health.NewRegistry()
			err := tt.err
			if err := r.Register(health.Check{Name: "c", FailureStatus: tt.failure, Check: func(context.Context) error { return err }}); err != nil {
				t.Fatal(err)
			}
			rep := r.Run(context.Background(), nil)
			if got := rep.Entries[0].Status; got != tt.want {
				t.Errorf("status %s, want %s", got, tt.want)
			}
			if tt.err != nil && rep.Entries[0].Error != tt.err.Error() {
				t.Errorf("error %q, want %q", rep.Entries[0].Error, tt.err.Error())
			}
		})
	}
}

func errorsJoin(err error) error { return errors.Join(err) }

func TestParseFailureStatus(t *testing.T) {
	for in, want := range map[string]health.Status{
		"Unhealthy": health.Unhealthy, "unhealthy": health.Unhealthy, " DEGRADED ": health.Degraded, "Degraded": health.Degraded,
	} {
		if got, err := health.ParseFailureStatus(in); err != nil || got != want {
			t.Errorf("ParseFailureStatus(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "Healthy", "down", "0"} {
		if got, err := health.ParseFailureStatus(in); err == nil {
			t.Errorf("ParseFailureStatus(%q) = %q, want an error", in, got)
		}
	}
}

// TestWithFailureStatus: the status set wins over the check's own
// StatusError, and a passing check still passes.
func TestWithFailureStatus(t *testing.T) {
	fail := true
	c := health.WithFailureStatus(health.Check{Name: "c", Check: func(context.Context) error {
		if fail {
			return health.WithStatus(health.Degraded, errors.New("reconnecting"))
		}
		return nil
	}}, health.Unhealthy)
	r := health.NewRegistry()
	if err := r.Register(c); err != nil {
		t.Fatal(err)
	}
	if rep := r.Run(context.Background(), nil); rep.Status != health.Unhealthy || rep.Entries[0].Error != "reconnecting" {
		t.Errorf("failing = %s %q, want Unhealthy \"reconnecting\"", rep.Status, rep.Entries[0].Error)
	}
	fail = false
	if rep := r.Run(context.Background(), nil); rep.Status != health.Healthy {
		t.Errorf("passing = %s, want Healthy", rep.Status)
	}
}
