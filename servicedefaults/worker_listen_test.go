package servicedefaults_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/goaspire/goaspire/servicedefaults"
)

// TestWorkerWithoutPortListensNowhere: two workers (Add given no handler)
// with no port configured both Run in one process, as two worker
// processes on one host would: neither claims ":8080". Their workers run,
// and each Run returns nil when its ctx ends.
func TestWorkerWithoutPortListensNowhere(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type run struct {
		logs *syncBuffer
		ran  chan struct{}
		done chan error
	}
	var runs []run
	for range 2 {
		app, logs := newApp(t, nil, nil, servicedefaults.WithoutGlobals())
		r := run{logs: logs, ran: make(chan struct{}), done: make(chan error, 1)}
		app.Go("job", func(ctx context.Context) error {
			close(r.ran)
			<-ctx.Done()
			return nil
		})
		go func() { r.done <- app.Run(ctx) }()
		runs = append(runs, r)
	}
	for i, r := range runs {
		select {
		case <-r.ran:
		case err := <-r.done:
			t.Fatalf("worker App %d: Run returned before its ctx ended: %v", i, err)
		}
	}
	for i, r := range runs {
		waitFor(t, fmt.Sprintf("worker App %d to log that it does not listen", i), func() bool {
			return strings.Contains(r.logs.String(), "not listening")
		})
	}
	cancel()
	for i, r := range runs {
		if err := <-r.done; err != nil {
			t.Errorf("worker App %d: Run = %v, want nil", i, err)
		}
		if strings.Contains(r.logs.String(), `msg=listening`) || strings.Contains(r.logs.String(), `"msg":"listening"`) {
			t.Errorf("worker App %d logged that it listens:\n%s", i, r.logs)
		}
	}
}

// TestWorkerWithPortServesHealth: a worker with PORT set listens there and
// serves /health and /alive, as before.
func TestWorkerWithPortServesHealth(t *testing.T) {
	port := freePort(t)
	app, _ := newApp(t, map[string]string{"PORT": port}, nil, servicedefaults.WithoutGlobals())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx) }()
	for _, path := range []string{"/health", "/alive"} {
		waitFor(t, path+" answering 200", func() bool {
			resp, err := http.Get("http://127.0.0.1:" + port + path)
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
}
