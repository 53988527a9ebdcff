package resilience

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

type sqlStateErr string

func (e sqlStateErr) Error() string    { return "pg: " + string(e) }
func (e sqlStateErr) SQLState() string { return string(e) }

type safeErr struct{}

func (safeErr) Error() string     { return "conn busy" }
func (safeErr) SafeToRetry() bool { return true }

type redisErr string

func (e redisErr) Error() string { return string(e) }
func (redisErr) RedisError()     {}

func TestIsTransient(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errors.New("boom"), false},
		{context.Canceled, false},
		{context.DeadlineExceeded, true},
		{io.ErrUnexpectedEOF, true},
		{fmt.Errorf("read: %w", io.EOF), true},
		{&net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, true},
		{&net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}, true},
		{fmt.Errorf("write: %w", syscall.EPIPE), true},
		{&net.DNSError{Err: "no such host", IsNotFound: true}, false},
		{&net.DNSError{Err: "timeout", IsTimeout: true}, true},
		{sqlStateErr("40001"), true},
		{sqlStateErr("40P01"), true},
		{sqlStateErr("08006"), true},
		{sqlStateErr("57P01"), true},
		{sqlStateErr("23505"), false},
		{fmt.Errorf("query: %w", sqlStateErr("42P01")), false},
		{safeErr{}, true},
		{redisErr("LOADING Redis is loading the dataset in memory"), true},
		{redisErr("READONLY You can't write against a read only replica."), true},
		{redisErr("WRONGTYPE Operation against a key holding the wrong kind of value"), false},
		{errors.New("redis: connection pool timeout"), true},
		{&pgconn.PgError{Code: "40001", Message: "could not serialize access"}, true},
		{fmt.Errorf("tx: %w", &pgconn.PgError{Code: "23505"}), false},
		{&timeoutError{kind: timeoutAttempt}, true},
		{&CircuitOpenError{Destination: "x"}, false},
		{&rejectedError{}, false},
	}
	for _, tt := range tests {
		if got := IsTransient(tt.err); got != tt.want {
			t.Errorf("IsTransient(%#v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestIsTransientHTTP(t *testing.T) {
	for status, want := range map[int]bool{
		200: false, 201: false, 301: false, 400: false, 401: false, 404: false, 409: false,
		408: true, 429: true, 500: true, 501: true, 502: true, 503: true, 504: true,
	} {
		if got := IsTransientHTTP(&http.Response{StatusCode: status}, nil); got != want {
			t.Errorf("IsTransientHTTP(%d) = %v, want %v", status, got, want)
		}
	}
	errs := []struct {
		err  error
		want bool
	}{
		{&url.Error{Op: "Get", URL: "http://x", Err: io.EOF}, true},
		{&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, true},
		{context.Canceled, false},
		{&url.Error{Op: "Get", URL: "http://x", Err: x509.UnknownAuthorityError{}}, false},
		{errors.New(`unsupported protocol scheme "ftp"`), false},
		{&CircuitOpenError{}, false},
	}
	for _, tt := range errs {
		if got := IsTransientHTTP(nil, tt.err); got != tt.want {
			t.Errorf("IsTransientHTTP(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		value  string
		want   time.Duration
		wantOK bool
	}{
		{"", 0, false},
		{"3", 3 * time.Second, true},
		{" 120 ", 2 * time.Minute, true},
		{"0", 0, true}, // retry at once, as Polly does
		{"-5", 0, false},
		{"1.5", 0, false},
		{"soon", 0, false},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0, false},
		{"Thu, 02 Jan 2025 03:04:15 GMT", 10 * time.Second, true},
		{"Thursday, 02-Jan-25 03:04:15 GMT", 10 * time.Second, true}, // RFC 850, which ParseTime also reads
	}
	for _, tt := range tests {
		h := http.Header{}
		if tt.value != "" {
			h.Set("Retry-After", tt.value)
		}
		if got, ok := retryAfter(h, now); got != tt.want || ok != tt.wantOK {
			t.Errorf("retryAfter(%q) = %v, %v; want %v, %v", tt.value, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestErrorsMatchFailsafeSentinels(t *testing.T) {
	// Checked through fmt wrapping, as http.Client wraps in *url.Error.
	wrap := func(err error) error { return &url.Error{Op: "Get", URL: "http://x", Err: err} }
	open := wrap(&CircuitOpenError{Destination: "a:1"})
	if !errors.Is(open, ErrCircuitOpen) || !errors.Is(open, circuitbreakerErrOpen) {
		t.Error("CircuitOpenError does not match ErrCircuitOpen and circuitbreaker.ErrOpen")
	}
	te := wrap(&timeoutError{kind: timeoutTotal})
	if !errors.Is(te, ErrTimeout) || !errors.Is(te, ErrTotalTimeout) || errors.Is(te, ErrAttemptTimeout) ||
		!errors.Is(te, context.DeadlineExceeded) || !errors.Is(te, timeoutErrExceeded) {
		t.Error("total TimeoutError matches the wrong sentinels")
	}
	var ne net.Error
	if !errors.As(te, &ne) || !ne.Timeout() {
		t.Error("TimeoutError is not a net.Error timeout through url.Error")
	}
	ae := &timeoutError{kind: timeoutAttempt}
	if !errors.Is(ae, ErrAttemptTimeout) || errors.Is(ae, ErrTotalTimeout) {
		t.Error("attempt TimeoutError matches the wrong sentinels")
	}
	if rej := wrap(&rejectedError{}); !errors.Is(rej, ErrRejected) || !errors.Is(rej, bulkheadErrFull) {
		t.Error("RejectedError does not match ErrRejected and bulkhead.ErrFull")
	}
	re := &retriesExceededError{attempts: 4, err: io.ErrUnexpectedEOF}
	if !errors.Is(re, ErrRetriesExceeded) || !errors.Is(re, retryErrExceeded) || !errors.Is(re, io.ErrUnexpectedEOF) {
		t.Error("RetriesExceededError matches the wrong sentinels")
	}
	be := &bodyError{err: io.ErrUnexpectedEOF, msg: "x"}
	if !errors.Is(be, ErrBodyNotReplayable) || !errors.Is(be, io.ErrUnexpectedEOF) {
		t.Error("bodyError does not match ErrBodyNotReplayable and its cause")
	}
}
