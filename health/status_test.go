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
