package servicedefaults_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/goaspire/goaspire/health"
)

// TestProbesAnswerWhileChecksHang: /health and /alive answer within
// Kubernetes' 1 s probe timeout (with a margin for a loaded machine) while
// a readiness check and a liveness check hang on a silent dependency,
// ignoring their context, with every setting at its default (check
// Timeout 5 s). A check that has never completed counts as failing.
func TestProbesAnswerWhileChecksHang(t *testing.T) {
	const bound = 1500 * time.Millisecond
	app, _ := newApp(t, nil, http.NewServeMux())
	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // before the App's shutdown: cleanups run last-in first-out
	hang := func(context.Context) error { <-release; return nil }
	if err := app.Health().Register(
		health.Check{Name: "db", Tags: []string{health.TagReady}, Check: hang},
		health.Check{Name: "worker", Tags: []string{health.TagLive}, Check: hang},
	); err != nil {
		t.Fatal(err)
	}
	base := serve(t, app)
	for i := range 3 {
		for _, path := range []string{"/health", "/alive"} {
			start := time.Now()
			code, body := get(t, nil, base+path)
			took := time.Since(start)
			t.Logf("GET %s #%d: %d %q in %v", path, i, code, body, took)
			if took > bound {
				t.Errorf("GET %s took %v while a check hangs, want < %v", path, took, bound)
			}
			if code != http.StatusServiceUnavailable || body != "Unhealthy" {
				t.Errorf("GET %s = %d %q, want 503 Unhealthy (the hung check never completed)", path, code, body)
			}
		}
	}
}
