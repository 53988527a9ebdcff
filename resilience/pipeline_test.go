package resilience_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/goaspire/goaspire/resilience"
)

func newPipeline(t *testing.T, c *resilience.PipelineConfig) *resilience.Pipeline {
	t.Helper()
	p, err := resilience.NewPipeline(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func TestDoRetriesTransientErrors(t *testing.T) {
	p := newPipeline(t, &resilience.PipelineConfig{Options: testOptions(), Name: "orders-db"})
	var calls atomic.Int32
	v, err := resilience.Do(context.Background(), p, func(ctx context.Context) (int, error) {
		if calls.Add(1) < 3 {
			return 0, io.ErrUnexpectedEOF
		}
		return 42, nil
	})
	if err != nil || v != 42 || calls.Load() != 3 {
		t.Fatalf("Do = %d, %v after %d calls", v, err, calls.Load())
	}
}

func TestDoDoesNotRetryOtherErrors(t *testing.T) {
	p := newPipeline(t, &resilience.PipelineConfig{Options: testOptions()})
	notFound := errors.New("no such order")
	var calls atomic.Int32
	_, err := resilience.Do(context.Background(), p, func(context.Context) (string, error) {
		calls.Add(1)
		return "", notFound
	})
	if err != notFound || calls.Load() != 1 {
		t.Fatalf("Do error = %v after %d calls, want the error itself after 1 call", err, calls.Load())
	}
}

func TestDoRetriesExhausted(t *testing.T) {
	p := newPipeline(t, &resilience.PipelineConfig{Options: testOptions()})
	var calls atomic.Int32
	v, err := resilience.Do(context.Background(), p, func(context.Context) (int, error) {
		return int(calls.Add(1)), sqlErr("40001")
	})
	if !errors.Is(err, resilience.ErrRetriesExceeded) || !strings.Contains(err.Error(), "after 4 attempts") || !errors.Is(err, sqlErr("40001")) || v != 4 {
		t.Fatalf("Do = %d, %v; want the 4th attempt's result and retries exceeded after 4 attempts", v, err)
	}
}

type sqlErr string

func (e sqlErr) Error() string    { return "SQLSTATE " + string(e) }
func (e sqlErr) SQLState() string { return string(e) }

func TestDoTimeouts(t *testing.T) {
	o := testOptions()
	o.AttemptTimeout = 50 * time.Millisecond
	o.Retry.MaxRetryAttempts = 1
	p := newPipeline(t, &resilience.PipelineConfig{Options: o})
	var calls atomic.Int32
	_, err := resilience.Do(context.Background(), p, func(ctx context.Context) (int, error) {
		calls.Add(1)
		<-ctx.Done()
		return 0, ctx.Err()
	})
	if !errors.Is(err, resilience.ErrAttemptTimeout) || !errors.Is(err, resilience.ErrRetriesExceeded) || calls.Load() != 2 {
		t.Fatalf("Do error = %v after %d calls, want attempt timeouts", err, calls.Load())
	}

	o = testOptions()
	o.TotalRequestTimeout = 200 * time.Millisecond
	o.AttemptTimeout = 100 * time.Millisecond
	o.CircuitBreaker.SamplingDuration = time.Second
	o.Retry.Delay = time.Hour
	p = newPipeline(t, &resilience.PipelineConfig{Options: o})
	start := time.Now()
	err = p.Run(context.Background(), func(context.Context) error { return io.ErrUnexpectedEOF })
	if !errors.Is(err, resilience.ErrTotalTimeout) || time.Since(start) > 3*time.Second {
		t.Fatalf("Run error = %v after %v, want the total timeout", err, time.Since(start))
	}
}

func TestDoCircuitBreaker(t *testing.T) {
	o := testOptions()
	o.Retry.MaxRetryAttempts = 0
	o.CircuitBreaker.MinimumThroughput = 2
	o.CircuitBreaker.FailureRatio = 0.5
	p := newPipeline(t, &resilience.PipelineConfig{Options: o, Name: "cache"})
	fail := func(context.Context) error { return io.ErrUnexpectedEOF }
	for i := 0; i < 2; i++ {
		if err := p.Run(context.Background(), fail); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if p.CircuitState() != resilience.CircuitOpen {
		t.Fatalf("breaker %v, want open", p.CircuitState())
	}
	called := false
	err := p.Run(context.Background(), func(context.Context) error { called = true; return nil })
	var open *resilience.CircuitOpenError
	if !errors.As(err, &open) || open.Destination != "cache" || called {
		t.Fatalf("Run = %v (called %v), want a CircuitOpenError without calling", err, called)
	}
}

func TestDoCallerCancellation(t *testing.T) {
	o := testOptions()
	o.Retry.Delay = 10 * time.Second
	p := newPipeline(t, &resilience.PipelineConfig{Options: o})
	ctx, cancel := context.WithCancel(context.Background())
	var calls atomic.Int32
	start := time.Now()
	err := p.Run(ctx, func(context.Context) error {
		calls.Add(1)
		time.AfterFunc(20*time.Millisecond, cancel)
		return io.ErrUnexpectedEOF
	})
	if !errors.Is(err, context.Canceled) || time.Since(start) > 3*time.Second || calls.Load() != 1 {
		t.Fatalf("Run = %v after %v and %d calls, want context.Canceled at once", err, time.Since(start), calls.Load())
	}
	// The caller's own deadline inside fn is not retried either.
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	calls.Store(0)
	err = p.Run(ctx, func(ctx context.Context) error { calls.Add(1); <-ctx.Done(); return ctx.Err() })
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, resilience.ErrTimeout) || calls.Load() != 1 {
		t.Fatalf("Run = %v after %d calls, want the caller's deadline", err, calls.Load())
	}
}

func TestDoShouldHandle(t *testing.T) {
	errBusy := errors.New("busy")
	p := newPipeline(t, &resilience.PipelineConfig{Options: testOptions(), ShouldHandle: func(err error) bool { return errors.Is(err, errBusy) }})
	var calls atomic.Int32
	err := p.Run(context.Background(), func(context.Context) error {
		if calls.Add(1) == 1 {
			return errBusy
		}
		return nil
	})
	if err != nil || calls.Load() != 2 {
		t.Fatalf("Run = %v after %d calls", err, calls.Load())
	}
	calls.Store(0)
	err = p.Run(context.Background(), func(context.Context) error { calls.Add(1); return io.ErrUnexpectedEOF })
	if !errors.Is(err, io.ErrUnexpectedEOF) || calls.Load() != 1 {
		t.Fatalf("Run = %v after %d calls, want no retry for an error the predicate rejects", err, calls.Load())
	}
}

func TestDoConcurrencyLimit(t *testing.T) {
	o := testOptions()
	o.RateLimiter.PermitLimit = 1
	p := newPipeline(t, &resilience.PipelineConfig{Options: o})
	inside := make(chan struct{})
	release := make(chan struct{})
	done := make(chan error)
	go func() {
		done <- p.Run(context.Background(), func(context.Context) error { close(inside); <-release; return nil })
	}()
	<-inside
	if err := p.Run(context.Background(), func(context.Context) error { return nil }); !errors.Is(err, resilience.ErrRejected) {
		t.Fatalf("second call = %v, want ErrRejected", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
