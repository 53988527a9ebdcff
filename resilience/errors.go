package resilience

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/failsafe-go/failsafe-go/bulkhead"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/failsafe-go/failsafe-go/retrypolicy"
	"github.com/failsafe-go/failsafe-go/timeout"
)

// Sentinel errors. Errors returned by a Transport or Pipeline match them
// with errors.Is; they also match the corresponding failsafe-go sentinels
// (circuitbreaker.ErrOpen, timeout.ErrExceeded, bulkhead.ErrFull,
// retrypolicy.ErrExceeded), so code written against failsafe-go keeps
// working.
var (
	// ErrCircuitOpen reports that a circuit breaker refused the call
	// without trying it. See CircuitOpenError.
	ErrCircuitOpen = errors.New("resilience: circuit breaker is open")
	// ErrTimeout reports that a timeout, total or per attempt, fired.
	// ErrTotalTimeout and ErrAttemptTimeout tell them apart. The error
	// also matches context.DeadlineExceeded, and its Timeout method (as
	// net.Error's, seen through *url.Error) reports true.
	ErrTimeout = errors.New("resilience: timeout")
	// ErrTotalTimeout reports that the total timeout, which bounds every
	// attempt and every delay between them, fired.
	ErrTotalTimeout = errors.New("resilience: total timeout")
	// ErrAttemptTimeout reports that the last attempt timed out and no
	// further retry was allowed.
	ErrAttemptTimeout = errors.New("resilience: attempt timeout")
	// ErrRejected reports that the concurrency limit was reached and the
	// call was refused without being tried.
	ErrRejected = errors.New("resilience: concurrency limit reached")
	// ErrBodyNotReplayable reports that a request needed to be sent again
	// but its body could not be replayed: the request has a body and no
	// GetBody, or GetBody failed. http.NewRequest sets GetBody for
	// *bytes.Buffer, *bytes.Reader and *strings.Reader bodies.
	ErrBodyNotReplayable = errors.New("resilience: request body cannot be replayed")
	// ErrRetriesExceeded is matched by the error returned when every
	// allowed attempt failed with an error; that error also wraps the
	// last attempt's. (When the last attempt produced an HTTP response,
	// the response is returned instead.)
	ErrRetriesExceeded = errors.New("resilience: retries exceeded")
)

// CircuitOpenError is returned when the circuit breaker of Destination is
// open (or half-open with its trial call in flight).
type CircuitOpenError struct {
	// Destination is the authority ("host:port") or pipeline name whose
	// breaker is open.
	Destination string
	// RemainingDelay is how long the breaker stays open before it lets a
	// trial call through (zero when half-open).
	RemainingDelay time.Duration
}

// Error implements error.
func (e *CircuitOpenError) Error() string {
	if e.RemainingDelay > 0 {
		return fmt.Sprintf("resilience: circuit breaker for %s is open (retry in %s)", e.Destination, e.RemainingDelay.Round(time.Millisecond))
	}
	return fmt.Sprintf("resilience: circuit breaker for %s is open", e.Destination)
}

// Is reports whether target is ErrCircuitOpen or circuitbreaker.ErrOpen.
func (e *CircuitOpenError) Is(target error) bool {
	return target == ErrCircuitOpen || target == circuitbreaker.ErrOpen
}

// timeoutKind says which timeout fired.
type timeoutKind int

// The two timeouts of a pipeline.
const (
	// timeoutTotal bounds the whole call: every attempt and every delay.
	timeoutTotal timeoutKind = iota + 1
	// timeoutAttempt bounds one attempt.
	timeoutAttempt
)

// String returns "total" or "attempt", the outcome attribute's values.
func (k timeoutKind) String() string {
	switch k {
	case timeoutTotal:
		return "total"
	case timeoutAttempt:
		return "attempt"
	}
	return "unknown"
}

// timeoutError is returned when a timeout fired. It matches ErrTimeout,
// context.DeadlineExceeded and timeout.ErrExceeded, and ErrTotalTimeout or
// ErrAttemptTimeout according to its kind. Its Timeout method returns
// true, so net.Error-style checks (url.Error.Timeout) see a timeout.
type timeoutError struct {
	kind        timeoutKind
	duration    time.Duration // the configured timeout that elapsed
	destination string        // the attempt's authority, or the logical one (or pipeline name) for a total timeout
}

func (e *timeoutError) Error() string {
	return fmt.Sprintf("resilience: %s timeout of %s exceeded calling %s", e.kind, e.duration, e.destination)
}

func (e *timeoutError) Is(target error) bool {
	switch target {
	case ErrTimeout, context.DeadlineExceeded, timeout.ErrExceeded:
		return true
	case ErrTotalTimeout:
		return e.kind == timeoutTotal
	case ErrAttemptTimeout:
		return e.kind == timeoutAttempt
	}
	return false
}

func (e *timeoutError) Timeout() bool { return true }

// rejectedError is returned when the concurrency limit refused a call.
type rejectedError struct {
	destination string // the logical authority or pipeline name
	permitLimit int
}

func (e *rejectedError) Error() string {
	return fmt.Sprintf("resilience: concurrency limit of %d reached calling %s", e.permitLimit, e.destination)
}

// Is reports whether target is ErrRejected or bulkhead.ErrFull.
func (e *rejectedError) Is(target error) bool {
	return target == ErrRejected || target == bulkhead.ErrFull
}

// retriesExceededError is returned when every allowed attempt failed with
// an error. It unwraps to the last attempt's error.
type retriesExceededError struct {
	attempts int
	err      error
}

func (e *retriesExceededError) Error() string {
	return fmt.Sprintf("resilience: giving up after %d attempts: %v", e.attempts, e.err)
}

func (e *retriesExceededError) Unwrap() error { return e.err }

// Is reports whether target is ErrRetriesExceeded or
// retrypolicy.ErrExceeded.
func (e *retriesExceededError) Is(target error) bool {
	return target == ErrRetriesExceeded || target == retrypolicy.ErrExceeded
}

// bodyError reports a request body that could not be replayed.
type bodyError struct {
	err error // the GetBody failure, or the failure that could not be retried
	msg string
}

func (e *bodyError) Error() string {
	if e.err == nil {
		return "resilience: request body cannot be replayed: " + e.msg
	}
	return "resilience: request body cannot be replayed: " + e.msg + ": " + e.err.Error()
}

func (e *bodyError) Unwrap() []error {
	if e.err == nil {
		return []error{ErrBodyNotReplayable}
	}
	return []error{ErrBodyNotReplayable, e.err}
}
