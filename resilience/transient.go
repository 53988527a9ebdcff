package resilience

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/goaspire/goaspire/discovery"
)

// IsTransientHTTP reports whether an HTTP attempt's outcome is a transient
// failure, as .NET's HttpClientResiliencePredicates.IsTransient: status
// 408 Request Timeout, 429 Too Many Requests or any 5xx, or an error from
// the base http.RoundTripper. Every such error is, except the caller's
// context being canceled, bad TLS certificates, an unsupported scheme or
// a malformed request, which would fail the same way again, a
// *discovery.UnresolvedError (a service name neither configured nor in
// DNS), and this package's own refusals (open breaker, rejection, body not replayable).
// It is the HTTP pipelines' default.
func IsTransientHTTP(resp *http.Response, err error) bool {
	if err != nil {
		return transientTransportError(err)
	}
	if resp == nil {
		return false
	}
	s := resp.StatusCode
	return s >= 500 || s == http.StatusRequestTimeout || s == http.StatusTooManyRequests
}

// transientTransportError reports whether an error from an
// http.RoundTripper is worth another attempt (see IsTransientHTTP).
func transientTransportError(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, ErrCircuitOpen) ||
		errors.Is(err, ErrRejected) || errors.Is(err, ErrBodyNotReplayable) || unresolved(err) {
		return false
	}
	var (
		unknownAuthority x509.UnknownAuthorityError
		hostname         x509.HostnameError
		invalid          x509.CertificateInvalidError
		verify           *tls.CertificateVerificationError
		recordHeader     tls.RecordHeaderError
	)
	if errors.As(err, &unknownAuthority) || errors.As(err, &hostname) || errors.As(err, &invalid) ||
		errors.As(err, &verify) || errors.As(err, &recordHeader) {
		return false
	}
	msg := err.Error()
	if strings.Contains(msg, "unsupported protocol scheme") || strings.Contains(msg, "http: nil Request") ||
		strings.Contains(msg, "invalid header field") || strings.Contains(msg, "invalid method") ||
		strings.Contains(msg, "no Host in request URL") {
		return false
	}
	return true
}

// IsTransient reports whether err, from a database call, a queue or any
// other remote call, is a transient failure worth another attempt. It is
// the non-HTTP Pipeline's default. It recognises:
//
//   - timeouts: net.Error timeouts, context.DeadlineExceeded that is not
//     the caller's (the pipeline checks that), ErrAttemptTimeout;
//   - broken or refused connections: io.ErrUnexpectedEOF, io.EOF,
//     ECONNRESET, ECONNREFUSED, ECONNABORTED, EPIPE, ETIMEDOUT,
//     net.ErrClosed, dial errors, temporary DNS failures;
//   - errors that say so: a SafeToRetry() true method (pgconn), a
//     Temporary() true method;
//   - PostgreSQL SQLSTATEs (from a SQLState() method, as pgconn.PgError's):
//     40001 serialization_failure, 40P01 deadlock_detected, class 08
//     connection exceptions, 53300 too_many_connections, 57P01
//     admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now;
//   - Redis replies meaning "try again" (LOADING, READONLY, CLUSTERDOWN,
//     TRYAGAIN, MASTERDOWN, NOREPLICAS, max clients reached) and go-redis
//     pool timeouts.
//
// A *discovery.UnresolvedError is never transient.
//
// It does not import pgx or go-redis: it matches their error methods and
// texts.
func IsTransient(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, ErrCircuitOpen) || errors.Is(err, ErrRejected) || unresolved(err) {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrAttemptTimeout) {
		return true
	}
	var safe interface{ SafeToRetry() bool }
	if errors.As(err, &safe) && safe.SafeToRetry() {
		return true
	}
	var sqlState interface{ SQLState() string }
	if errors.As(err, &sqlState) {
		return transientSQLState(sqlState.SQLState())
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		return true
	}
	for _, errno := range []syscall.Errno{syscall.ECONNRESET, syscall.ECONNREFUSED, syscall.ECONNABORTED, syscall.EPIPE, syscall.ETIMEDOUT} {
		if errors.Is(err, errno) {
			return true
		}
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return dns.IsTimeout || dns.IsTemporary
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	var temp interface{ Temporary() bool }
	if errors.As(err, &temp) && temp.Temporary() {
		return true
	}
	return transientRedis(err)
}

// unresolved reports whether err is a *discovery.UnresolvedError: a
// service name nothing configures and DNS does not know, which fails the
// same way every time.
func unresolved(err error) bool {
	var u *discovery.UnresolvedError
	return errors.As(err, &u)
}

func transientSQLState(code string) bool {
	switch code {
	case "40001", "40P01", "53300", "57P01", "57P02", "57P03":
		return true
	}
	return strings.HasPrefix(code, "08")
}

// redisTransientPrefixes are the Redis error replies go-redis itself
// retries.
var redisTransientPrefixes = []string{"LOADING ", "READONLY ", "CLUSTERDOWN ", "TRYAGAIN ", "MASTERDOWN ", "NOREPLICAS ", "ERR max number of clients reached"}

func transientRedis(err error) bool {
	msg := err.Error()
	if strings.Contains(msg, "redis: connection pool timeout") {
		return true
	}
	var re interface{ RedisError() }
	if !errors.As(err, &re) {
		return false
	}
	if e, ok := re.(error); ok {
		msg = e.Error()
	}
	for _, p := range redisTransientPrefixes {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// idempotent reports whether RFC 9110 defines method as idempotent.
func idempotent(method string) bool {
	switch method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// hasIdempotencyKey reports whether the request carries an idempotency
// key, the headers net/http itself honours.
func hasIdempotencyKey(h http.Header) bool {
	if h == nil {
		return false
	}
	_, a := h["Idempotency-Key"]
	_, b := h["X-Idempotency-Key"]
	return a || b
}

// retryAfter parses a Retry-After header: delay-seconds or an HTTP date.
// ok is false when the header is absent, malformed or a date in the past;
// "0" is a valid header asking for an immediate retry, as in Polly.
func retryAfter(h http.Header, now time.Time) (d time.Duration, ok bool) {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		switch {
		case secs < 0:
			return 0, false
		case secs > int64(maxDelay/time.Second):
			return maxDelay, true
		}
		return time.Duration(secs) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d, true
		}
	}
	return 0, false
}
