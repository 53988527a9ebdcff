package rabbitmq_test

import (
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/goaspire/goaspire/messaging/rabbitmq"
)

func TestPermanent(t *testing.T) {
	if err := rabbitmq.Permanent(nil); err != nil {
		t.Errorf("Permanent(nil) = %v, want nil", err)
	}
	cause := io.ErrUnexpectedEOF
	perm := rabbitmq.Permanent(cause)
	if perm.Error() != cause.Error() {
		t.Errorf("Permanent(err).Error() = %q, want err's text %q", perm, cause)
	}
	if !errors.Is(perm, cause) {
		t.Error("errors.Is(Permanent(err), err) = false")
	}
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"plain error", cause, false},
		{"Permanent", perm, true},
		{"wrapped with %w", fmt.Errorf("job 7: %w", perm), true},
		{"wrapped twice", fmt.Errorf("handler: %w", fmt.Errorf("job 7: %w", perm)), true},
		{"joined", errors.Join(errors.New("other"), perm), true},
		{"wrapped with %v (the chain is cut)", fmt.Errorf("job 7: %v", perm), false},
		{"made by hand", &rabbitmq.PermanentError{Err: cause}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := rabbitmq.IsPermanent(tc.err); got != tc.want {
				t.Errorf("IsPermanent(%v) = %v, want %v", tc.err, got, tc.want)
			}
			var pe *rabbitmq.PermanentError
			if got := errors.As(tc.err, &pe); got != tc.want {
				t.Errorf("errors.As(%v, *PermanentError) = %v, want %v", tc.err, got, tc.want)
			} else if got && pe.Err != cause {
				t.Errorf("PermanentError.Err = %v, want %v", pe.Err, cause)
			}
		})
	}
}
