package health_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/internal/poll"
)

// probeBound is what a probe may take in these tests: Kubernetes waits 1 s
// (Aspire's Kubernetes publisher writes timeoutSeconds: 1); the margin is
// for a loaded, shared machine.
const probeBound = 1500 * time.Millisecond

// get probes url once and returns the status code, the body and how long
// the answer took.
func get(t *testing.T, url string) (int, string, time.Duration) {
	t.Helper()
	start := time.Now()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), time.Since(start)
}

// TestProbeAnswersWhileACheckHangs is the partition case: a check blocked
// on a silent dependency (here one that ignores its context, the worst
// kind) must not hold the probe past its deadline. The handler uses every
// default (check Timeout 5 s, no cache), as servicedefaults would.
func TestProbeAnswersWhileACheckHangs(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	var hang atomic.Bool
	var calls atomic.Int32
	r := health.NewRegistry(health.WithLogger(discardLogger()))
	if err := r.Register(
		health.Check{Name: "self", Tags: []string{health.TagLive}, Check: ok},
		health.Check{Name: "dep", Tags: []string{health.TagReady}, Check: func(context.Context) error {
			calls.Add(1)
			if hang.Load() {
				<-release // ignores its context, as a driver call with no deadline does
			}
			return nil
		}},
	); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/health", r.Handler(health.HandlerOptions{Detailed: true}))
	mux.Handle("/alive", r.Handler(health.HandlerOptions{Predicate: health.Tagged(health.TagLive)}))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	if code, body, _ := get(t, srv.URL+"/health"); code != 200 {
		t.Fatalf("before the partition: %d %s", code, body)
	}
	hang.Store(true) // the dependency goes silent
	for i := range 3 {
		for _, path := range []string{"/health", "/alive"} {
			code, body, took := get(t, srv.URL+path)
			t.Logf("%s during the partition: %d in %v", path, code, took)
			if took > probeBound {
				t.Fatalf("%s took %v while a check hangs, want < %v", path, took, probeBound)
			}
			// The dependency's last completed result was Healthy; it
			// stays the answer until the check's own timeout fails it.
			if code != 200 {
				t.Fatalf("%s probe %d: %d %s, want the last result (200)", path, i, code, body)
			}
		}
	}
	// However many probes came, the hung check was not started again
	// while its call was still running.
	if n := calls.Load(); n != 2 {
		t.Errorf("the check was called %d times, want 2 (one before the partition, one hung)", n)
	}
}

// TestCheckThatNeverAnsweredIsFailing: before a check has completed once,
// a probe answering early reports it with its FailureStatus.
func TestCheckThatNeverAnsweredIsFailing(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	blocked := func(ctx context.Context) error {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return ctx.Err()
	}
	tests := []struct {
		name     string
		failure  health.Status
		wantCode int
		want     health.Status
	}{
		{"unhealthy", "", 503, health.Unhealthy},
		{"degraded", health.Degraded, 200, health.Degraded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := health.NewRegistry(health.WithLogger(discardLogger()))
			if err := r.Register(health.Check{Name: "dep", FailureStatus: tt.failure, Check: blocked}); err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(r.Handler(health.HandlerOptions{ResponseTimeout: 100 * time.Millisecond, Detailed: true}))
			t.Cleanup(srv.Close)
			code, body, took := get(t, srv.URL)
			if took > probeBound || code != tt.wantCode || !strings.Contains(body, `"status":"`+string(tt.want)+`"`) || !strings.Contains(body, health.NoResultYet) {
				t.Fatalf("got %d %s in %v, want %d %s with %q", code, body, took, tt.wantCode, tt.want, health.NoResultYet)
			}
		})
	}
}

// TestHungCheckTurnsFailingAtItsTimeout: the probe answers early with the
// last result, and once the check's own deadline passes, with the failure.
func TestHungCheckTurnsFailingAtItsTimeout(t *testing.T) {
	var hang atomic.Bool
	r := health.NewRegistry(health.WithLogger(discardLogger()))
	if err := r.Register(health.Check{Name: "dep", Timeout: 300 * time.Millisecond, Check: func(ctx context.Context) error {
		if hang.Load() {
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	}}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(r.Handler(health.HandlerOptions{ResponseTimeout: 50 * time.Millisecond}))
	t.Cleanup(srv.Close)
	if code, _, _ := get(t, srv.URL); code != 200 {
		t.Fatalf("before: %d", code)
	}
	hang.Store(true)
	start := time.Now()
	poll.Until(t, 5*time.Second, "/health to answer 503", func() bool {
		code, _, took := get(t, srv.URL)
		if took > probeBound {
			t.Fatalf("probe took %v", took)
		}
		return code == 503
	})
	if took := time.Since(start); took > 300*time.Millisecond+time.Second {
		t.Fatalf("turned Unhealthy after %v, want about the check's 300ms timeout", took)
	}
}

// TestReportStatusIsWorstEntry: a check returning a Degraded StatusError
// makes the report Degraded (200), not Unhealthy.
func TestReportStatusIsWorstEntry(t *testing.T) {
	r := health.NewRegistry(health.WithLogger(discardLogger()))
	if err := r.Register(health.Check{Name: "c", Check: func(context.Context) error {
		return health.WithStatus(health.Degraded, errors.New("reconnecting"))
	}}); err != nil {
		t.Fatal(err)
	}
	if rep := r.Run(context.Background(), nil); rep.Status != health.Degraded {
		t.Fatalf("status %s, want Degraded", rep.Status)
	}
}
