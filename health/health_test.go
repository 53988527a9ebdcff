package health_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/goaspire/goaspire/health"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func ok(context.Context) error { return nil }

func fail(msg string) func(context.Context) error {
	return func(context.Context) error { return errors.New(msg) }
}

func TestRegisterRejects(t *testing.T) {
	tests := []struct {
		name  string
		check health.Check
		want  string
	}{
		{"no name", health.Check{Check: ok}, "must have a name"},
		{"no func", health.Check{Name: "x"}, "no Check function"},
		{"duplicate", health.Check{Name: "self", Check: ok}, "already registered"},
		{"bad status", health.Check{Name: "y", Check: ok, FailureStatus: "Broken"}, "unknown FailureStatus"},
		{"negative timeout", health.Check{Name: "z", Check: ok, Timeout: -time.Second}, "negative Timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := health.NewRegistry()
			if err := r.Register(health.Check{Name: "self", Check: ok}); err != nil {
				t.Fatal(err)
			}
			err := r.Register(health.Check{Name: "good", Check: ok}, tt.check)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Register error = %v, want it to contain %q", err, tt.want)
			}
			if n := len(r.Checks()); n != 1 {
				t.Fatalf("a failed Register added checks: have %d, want 1", n)
			}
		})
	}
}

func TestRunStatus(t *testing.T) {
	tests := []struct {
		name   string
		checks []health.Check
		want   health.Status
	}{
		{"none", nil, health.Healthy},
		{"all healthy", []health.Check{{Name: "a", Check: ok}, {Name: "b", Check: ok}}, health.Healthy},
		{"degraded", []health.Check{{Name: "a", Check: ok}, {Name: "b", Check: fail("slow"), FailureStatus: health.Degraded}}, health.Degraded},
		{"unhealthy", []health.Check{{Name: "a", Check: fail("down")}, {Name: "b", Check: ok}}, health.Unhealthy},
		{"unhealthy beats degraded", []health.Check{
			{Name: "a", Check: fail("down")},
			{Name: "b", Check: fail("slow"), FailureStatus: health.Degraded},
		}, health.Unhealthy},
		{"failure status healthy", []health.Check{{Name: "a", Check: fail("meh"), FailureStatus: health.Healthy}}, health.Healthy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := health.NewRegistry(health.WithLogger(discardLogger()))
			if err := r.Register(tt.checks...); err != nil {
				t.Fatal(err)
			}
			rep := r.Run(context.Background(), nil)
			if rep.Status != tt.want {
				t.Fatalf("status = %s, want %s (%+v)", rep.Status, tt.want, rep.Entries)
			}
			if len(rep.Entries) != len(tt.checks) {
				t.Fatalf("entries = %d, want %d", len(rep.Entries), len(tt.checks))
			}
			for i, e := range rep.Entries {
				if e.Name != tt.checks[i].Name {
					t.Errorf("entry %d is %q, want registration order (%q)", i, e.Name, tt.checks[i].Name)
				}
			}
		})
	}
}

func TestRunPredicate(t *testing.T) {
	r := health.NewRegistry(health.WithLogger(discardLogger()))
	if err := r.Register(
		health.Check{Name: "self", Tags: []string{health.TagLive}, Check: ok},
		health.Check{Name: "db", Tags: []string{health.TagReady}, Check: fail("down")},
	); err != nil {
		t.Fatal(err)
	}
	if rep := r.Run(context.Background(), health.Tagged(health.TagLive)); rep.Status != health.Healthy || len(rep.Entries) != 1 {
		t.Fatalf("live run = %+v, want only self, Healthy", rep)
	}
	if rep := r.Run(context.Background(), nil); rep.Status != health.Unhealthy || len(rep.Entries) != 2 {
		t.Fatalf("full run = %+v, want both, Unhealthy", rep)
	}
}

func TestTimeoutAndPanic(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	r := health.NewRegistry(health.WithDefaultTimeout(50*time.Millisecond), health.WithLogger(discardLogger()))
	if err := r.Register(
		health.Check{Name: "respects-ctx", Check: func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }},
		// Ignores its context: the run must not wait for it.
		health.Check{Name: "ignores-ctx", Check: func(context.Context) error { <-release; return nil }},
		health.Check{Name: "panics", Check: func(context.Context) error { panic("boom") }},
		health.Check{Name: "own-timeout", Timeout: time.Second, Check: func(ctx context.Context) error {
			if dl, ok := ctx.Deadline(); !ok || time.Until(dl) < 500*time.Millisecond {
				return errors.New("per-check Timeout not applied")
			}
			return nil
		}},
	); err != nil {
		t.Fatal(err)
	}
	rep := r.Run(context.Background(), nil)
	if rep.Status != health.Unhealthy {
		t.Fatalf("status = %s", rep.Status)
	}
	byName := map[string]health.Entry{}
	for _, e := range rep.Entries {
		byName[e.Name] = e
	}
	for _, name := range []string{"respects-ctx", "ignores-ctx"} {
		if e := byName[name]; e.Status != health.Unhealthy || !strings.Contains(e.Error, "timed out after 50ms") {
			t.Errorf("%s = %+v, want Unhealthy timed out", name, e)
		}
	}
	if e := byName["panics"]; e.Status != health.Unhealthy || !strings.Contains(e.Error, "panicked: boom") {
		t.Errorf("panics = %+v", e)
	}
	if e := byName["own-timeout"]; e.Status != health.Healthy {
		t.Errorf("own-timeout = %+v", e)
	}
}

func TestScrub(t *testing.T) {
	tests := []struct{ in, notWant, want string }{
		{`dial "postgres://app:s3cret@db:5432/x": refused`, "s3cret", "postgres://app:***@db:5432/x"},
		{`GET https://h/x?api_key=k3y&a=1: 500`, "k3y", "a=1"},
		{`bad Host=h;Password=hunter2;Port=1`, "hunter2", "Password=***"},
		{`header x-otlp-api-key=abc rejected`, "abc", "x-otlp-api-key=***"},
		{`config password: hunter2`, "hunter2", "password: ***"},
		{`body {"user":"u","password":"hunter2"}`, "hunter2", `"password":"***"`},
		{`Server=s;Pwd=hunter2;`, "hunter2", "Pwd=***"},
		{`GET https://a.blob.core.windows.net/c?sv=1&sig=hunter2: 403`, "hunter2", "sv=1"},
		{`DefaultEndpointsProtocol=https;AccountName=a;AccountKey=hunter2==`, "hunter2", "AccountKey=***"},
		{`upstream said Authorization: Bearer hunter2.jwt`, "hunter2", "Authorization: ***"},
		{`sent bearer hunter2.jwt`, "hunter2", "bearer ***"},
		{`Host=h;Password=hun ter2;Port=1`, "ter2", "Password=***;Port=1"},
		{`dial redis://hunter2@cache:6379: refused`, "hunter2", "redis://***@cache:6379"},
		{`plain error`, "\x00", "plain error"},
	}
	for _, tt := range tests {
		got := health.Scrub(tt.in)
		if strings.Contains(got, tt.notWant) || !strings.Contains(got, tt.want) {
			t.Errorf("Scrub(%q) = %q", tt.in, got)
		}
	}
}

func TestReportRedacted(t *testing.T) {
	r := health.NewRegistry(health.WithLogger(discardLogger()))
	if err := r.Register(health.Check{Name: "db", Check: fail(`failed to connect to postgres://u:topsecret@h/db`)}); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	r.Handler(health.HandlerOptions{Detailed: true}).ServeHTTP(rec, httptest.NewRequest("GET", "/health", nil))
	if strings.Contains(rec.Body.String(), "topsecret") {
		t.Fatalf("secret in report: %s", rec.Body)
	}
}

func TestHandler(t *testing.T) {
	tests := []struct {
		name     string
		check    health.Check
		detailed bool
		method   string
		wantCode int
		wantBody string
		wantType string
	}{
		{"healthy", health.Check{Name: "c", Check: ok}, false, "GET", 200, "Healthy", "text/plain; charset=utf-8"},
		{"degraded", health.Check{Name: "c", Check: fail("x"), FailureStatus: health.Degraded}, false, "GET", 200, "Degraded", "text/plain; charset=utf-8"},
		{"unhealthy", health.Check{Name: "c", Check: fail("x")}, false, "GET", 503, "Unhealthy", "text/plain; charset=utf-8"},
		{"head", health.Check{Name: "c", Check: fail("x")}, false, "HEAD", 503, "", "text/plain; charset=utf-8"},
		{"detailed healthy", health.Check{Name: "c", Check: ok}, true, "GET", 200, `{"status":"Healthy"`, "application/json"},
		{"detailed unhealthy", health.Check{Name: "c", Check: fail("down")}, true, "GET", 503, `"description":"down"`, "application/json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := health.NewRegistry(health.WithLogger(discardLogger()))
			if err := r.Register(tt.check); err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(r.Handler(health.HandlerOptions{Detailed: tt.detailed}))
			defer srv.Close()
			req, _ := http.NewRequest(tt.method, srv.URL, nil)
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body bytes.Buffer
			_, _ = body.ReadFrom(resp.Body)
			if resp.StatusCode != tt.wantCode {
				t.Errorf("code = %d, want %d", resp.StatusCode, tt.wantCode)
			}
			if tt.wantBody == "" && body.Len() != 0 || !strings.Contains(body.String(), tt.wantBody) {
				t.Errorf("body = %q, want %q", body.String(), tt.wantBody)
			}
			if !tt.detailed && tt.method == "GET" && body.String() != tt.wantBody {
				t.Errorf("body = %q, want exactly %q", body.String(), tt.wantBody)
			}
			if ct := resp.Header.Get("Content-Type"); ct != tt.wantType {
				t.Errorf("Content-Type = %q, want %q", ct, tt.wantType)
			}
			if cc := resp.Header.Get("Cache-Control"); !strings.Contains(cc, "no-store") {
				t.Errorf("Cache-Control = %q", cc)
			}
		})
	}
}

func TestDetailedJSON(t *testing.T) {
	r := health.NewRegistry(health.WithLogger(discardLogger()))
	if err := r.Register(
		health.Check{Name: "self", Tags: []string{health.TagLive}, Check: ok},
		health.Check{Name: "cache", Tags: []string{health.TagReady}, Check: fail("refused"), FailureStatus: health.Degraded},
	); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	r.Handler(health.HandlerOptions{Detailed: true}).ServeHTTP(rec, httptest.NewRequest("GET", "/health", nil))
	var doc struct {
		Status        string `json:"status"`
		TotalDuration string `json:"totalDuration"`
		Entries       map[string]struct {
			Status      string   `json:"status"`
			Description string   `json:"description"`
			Duration    string   `json:"duration"`
			Tags        []string `json:"tags"`
		} `json:"entries"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
		t.Fatalf("%v: %s", err, rec.Body)
	}
	if doc.Status != "Degraded" || len(doc.Entries) != 2 {
		t.Fatalf("report = %s", rec.Body)
	}
	if e := doc.Entries["cache"]; e.Status != "Degraded" || e.Description != "refused" || e.Tags[0] != "ready" {
		t.Fatalf("cache entry = %+v", e)
	}
	if !strings.HasPrefix(doc.TotalDuration, "00:00:00.") || len(doc.TotalDuration) != len("00:00:00.0000000") {
		t.Fatalf("totalDuration = %q, want TimeSpan text", doc.TotalDuration)
	}
	if i, j := strings.Index(rec.Body.String(), `"self"`), strings.Index(rec.Body.String(), `"cache"`); i > j {
		t.Fatalf("entries not in registration order: %s", rec.Body)
	}
}

func TestHandlerCache(t *testing.T) {
	var calls atomic.Int32
	r := health.NewRegistry(health.WithLogger(discardLogger()))
	if err := r.Register(health.Check{Name: "c", Check: func(context.Context) error { calls.Add(1); return nil }}); err != nil {
		t.Fatal(err)
	}
	get := func(h http.Handler) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/health", nil))
		if rec.Code != 200 {
			t.Fatalf("code %d", rec.Code)
		}
	}

	uncached := r.Handler(health.HandlerOptions{})
	get(uncached)
	get(uncached)
	if n := calls.Load(); n != 2 {
		t.Fatalf("without cache: %d runs, want 2", n)
	}

	calls.Store(0)
	cached := r.Handler(health.HandlerOptions{CacheDuration: time.Hour})
	get(cached)
	get(cached)
	get(cached)
	if n := calls.Load(); n != 1 {
		t.Fatalf("with cache: %d runs, want 1", n)
	}
	// Registering a check invalidates the cache.
	if err := r.Register(health.Check{Name: "d", Check: ok}); err != nil {
		t.Fatal(err)
	}
	get(cached)
	if n := calls.Load(); n != 2 {
		t.Fatalf("after Register: %d runs, want 2", n)
	}
}

func TestConcurrentProbesShareOneRun(t *testing.T) {
	// In a synctest bubble, synctest.Wait returns once every follower is
	// blocked waiting on the leader's run, so the test knows they all
	// joined it before releasing the check: no sleeping, and exactly one
	// run is required.
	synctest.Test(t, func(t *testing.T) {
		var calls atomic.Int32
		started := make(chan struct{})
		release := make(chan struct{})
		r := health.NewRegistry(health.WithLogger(discardLogger()))
		if err := r.Register(health.Check{Name: "slow", Check: func(context.Context) error {
			if calls.Add(1) == 1 {
				close(started)
			}
			<-release
			return nil
		}}); err != nil {
			t.Fatal(err)
		}
		h := r.Handler(health.HandlerOptions{}) // no cache: sharing comes from coalescing alone

		const n = 8
		codes := make(chan int, n)
		probe := func() {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequestWithContext(t.Context(), "GET", "/health", nil))
			codes <- rec.Code
		}
		go probe()
		<-started
		for range n - 1 {
			go probe()
		}
		synctest.Wait() // every follower is now waiting on the run
		runs := calls.Load()
		close(release)
		for range n {
			if c := <-codes; c != 200 {
				t.Errorf("code %d", c)
			}
		}
		if runs != 1 {
			t.Fatalf("%d runs for %d concurrent probes, want all of them to share one", runs, n)
		}
	})
}

func TestWaitingProbeLeavesWhenClientGoes(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	r := health.NewRegistry(health.WithLogger(discardLogger()))
	if err := r.Register(health.Check{Name: "slow", Check: func(context.Context) error {
		close(started)
		<-release
		return nil
	}}); err != nil {
		t.Fatal(err)
	}
	h := r.Handler(health.HandlerOptions{})
	leaderDone := make(chan struct{})
	go func() {
		defer close(leaderDone)
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/health", nil))
	}()
	<-started
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/health", nil).WithContext(ctx))
	if rec.Body.Len() != 0 {
		t.Fatalf("a gone client got %q", rec.Body)
	}
	close(release)
	<-leaderDone
}

func TestLogsTransitions(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	var failing atomic.Bool
	r := health.NewRegistry(health.WithLogger(logger))
	if err := r.Register(health.Check{Name: "dep", Check: func(context.Context) error {
		if failing.Load() {
			return errors.New("down")
		}
		return nil
	}}); err != nil {
		t.Fatal(err)
	}
	r.Run(context.Background(), nil) // healthy from the start: silent
	failing.Store(true)
	r.Run(context.Background(), nil) // starts failing: one warning
	r.Run(context.Background(), nil) // still failing: silent
	failing.Store(false)
	r.Run(context.Background(), nil) // recovers: one info
	out := buf.String()
	if strings.Count(out, "health check failing") != 1 || strings.Count(out, "healthy again") != 1 {
		t.Fatalf("log = %s", out)
	}
}

func TestHTTPCheck(t *testing.T) {
	var status atomic.Int32
	status.Store(200)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(int(status.Load()))
	}))
	defer srv.Close()
	check := health.HTTP("dep", srv.Client(), srv.URL+"/health?token=s3cret")
	if check.Name != "dep" || check.Tags[0] != health.TagReady {
		t.Fatalf("check = %+v", check)
	}
	for _, tt := range []struct {
		code int
		ok   bool
	}{{200, true}, {204, true}, {299, true}, {404, false}, {500, false}, {503, false}} {
		status.Store(int32(tt.code))
		err := check.Check(context.Background())
		if (err == nil) != tt.ok {
			t.Errorf("status %d: err = %v", tt.code, err)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("secret in error: %v", err)
		}
	}
	srv.Close()
	err := check.Check(context.Background())
	if err == nil || strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "GET http://") {
		t.Fatalf("unreachable: err = %v", err)
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
