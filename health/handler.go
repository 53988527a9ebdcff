package health

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// HandlerOptions configures a handler made by Registry.Handler.
type HandlerOptions struct {
	// Predicate selects the checks the handler runs; nil runs every
	// check. Use Tagged(TagLive) for /alive.
	Predicate func(Check) bool
	// Detailed makes the handler answer with the JSON report (see
	// Report.MarshalJSON) instead of only the status word.
	Detailed bool
	// CacheDuration is how long a finished run's report is reused; zero
	// runs the checks for every request not joining a run in progress.
	// Registering a check invalidates the cache.
	CacheDuration time.Duration
	// ResponseTimeout is how long a request waits for the run it started
	// or joined. When the run is not over by then, the handler answers at
	// once with each check's last completed result (see
	// Registry.LastReport) and the run goes on in the background, bounded
	// by each check's own Timeout. Zero means DefaultResponseTimeout; a
	// negative value waits for the whole run.
	ResponseTimeout time.Duration
}

// DefaultResponseTimeout is the ResponseTimeout of a handler that sets
// none: under the one second that Kubernetes probes wait by default
// (timeoutSeconds: 1, also what Aspire's Kubernetes publisher writes),
// with room for the network and the server.
const DefaultResponseTimeout = 800 * time.Millisecond

// Handler returns an http.Handler that runs the selected checks and
// answers 200 for Healthy and Degraded, 503 for Unhealthy, with the status
// word ("Healthy", "Degraded", "Unhealthy") as text/plain, or the JSON
// report when opts.Detailed is set. Responses carry
// "Cache-Control: no-store, no-cache".
//
// Concurrent requests share one run, and a finished run's report is
// reused for opts.CacheDuration, so probes cannot hammer dependencies.
// A shared run is not cancelled when the request that started it goes
// away; each check's timeout bounds it.
//
// A request never waits longer than opts.ResponseTimeout, whatever a check
// does: a check blocked on a silent dependency leaves the answer to its
// previous result until its own Timeout fails it (then the next requests
// see it failing), and a check that has not completed once yet counts as
// failing with its FailureStatus. So a probe with a one-second timeout
// always gets an answer, and a dependency that goes silent turns the
// report within the check's Timeout (plus the caching period).
func (r *Registry) Handler(opts HandlerOptions) http.Handler {
	return &handler{reg: r, opts: opts}
}

type handler struct {
	reg  *Registry
	opts HandlerOptions

	mu       sync.Mutex
	cached   *Report
	cachedAt time.Time
	gen      uint64
	flight   *flight
}

type flight struct {
	done   chan struct{}
	start  time.Time
	report Report // set before done is closed
}

func (h *handler) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	rep, ok := h.report(req.Context())
	if !ok {
		return // the client went away while waiting for a shared run
	}
	hdr := w.Header()
	hdr.Set("Cache-Control", "no-store, no-cache")
	hdr.Set("Pragma", "no-cache")
	hdr.Set("Expires", "Thu, 01 Jan 1970 00:00:00 GMT")
	code := StatusCode(rep.Status)
	if !h.opts.Detailed {
		hdr.Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(code)
		_, _ = w.Write([]byte(rep.Status))
		return
	}
	body, err := json.Marshal(rep)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	hdr.Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

// StatusCode returns the HTTP status code a health endpoint answers for s:
// 503 for Unhealthy, 200 otherwise.
func StatusCode(s Status) int {
	if s == Unhealthy {
		return http.StatusServiceUnavailable
	}
	return http.StatusOK
}

// report returns a cached report, or the report of the run in progress
// (starting one if none is), waiting for it at most opts.ResponseTimeout;
// past that it returns the checks' last results. ok is false when ctx
// ended first.
func (h *handler) report(ctx context.Context) (Report, bool) {
	h.mu.Lock()
	if h.cached != nil && time.Since(h.cachedAt) < h.opts.CacheDuration && h.gen == h.reg.generation() {
		rep := *h.cached
		h.mu.Unlock()
		return rep, true
	}
	f := h.flight
	if f == nil {
		f = &flight{done: make(chan struct{}), start: time.Now()}
		h.flight = f
		// The run is detached from the request that starts it, so the
		// requests that join it get a full report, and so that a request
		// answering early does not cancel it: each check's timeout
		// bounds it.
		go h.lead(context.WithoutCancel(ctx), f)
	}
	h.mu.Unlock()

	var expired <-chan time.Time
	if wait := h.responseTimeout(); wait >= 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		expired = t.C
	}
	select {
	case <-f.done:
		return f.report, true
	case <-ctx.Done():
		return Report{}, false
	case <-expired:
		select {
		case <-f.done: // finished meanwhile: prefer the full report
			return f.report, true
		default:
		}
		return h.reg.lastReport(h.opts.Predicate, f.start), true
	}
}

func (h *handler) responseTimeout() time.Duration {
	switch d := h.opts.ResponseTimeout; {
	case d == 0:
		return DefaultResponseTimeout
	case d < 0:
		return -1
	default:
		return d
	}
}

// lead runs the checks for flight f and publishes its report.
func (h *handler) lead(ctx context.Context, f *flight) {
	rep, gen := h.reg.run(ctx, h.opts.Predicate)
	h.mu.Lock()
	f.report = rep
	h.flight = nil
	if h.opts.CacheDuration > 0 {
		h.cached, h.cachedAt, h.gen = &rep, time.Now(), gen
	}
	h.mu.Unlock()
	close(f.done)
}

func (r *Registry) generation() uint64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.gen
}

// MarshalJSON writes the report in the shape of ASP.NET Core's
// HealthChecks UI response writer, with durations as TimeSpan text:
//
//	{"status":"Unhealthy","totalDuration":"00:00:00.0123456",
//	 "entries":{"db":{"status":"Unhealthy","description":"...",
//	  "duration":"00:00:00.0100000","tags":["ready"]}}}
func (r Report) MarshalJSON() ([]byte, error) {
	type entry struct {
		Status      Status   `json:"status"`
		Description string   `json:"description,omitempty"`
		Duration    string   `json:"duration"`
		Tags        []string `json:"tags"`
	}
	entries := orderedEntries{}
	for _, e := range r.Entries {
		tags := e.Tags
		if tags == nil {
			tags = []string{}
		}
		entries = append(entries, namedEntry{name: e.Name, v: entry{
			Status: e.Status, Description: e.Error, Duration: timeSpan(e.Duration), Tags: tags,
		}})
	}
	return json.Marshal(struct {
		Status        Status         `json:"status"`
		TotalDuration string         `json:"totalDuration"`
		Entries       orderedEntries `json:"entries"`
	}{r.Status, timeSpan(r.Duration), entries})
}

type namedEntry struct {
	name string
	v    any
}

// orderedEntries marshals as a JSON object keeping registration order.
type orderedEntries []namedEntry

func (o orderedEntries) MarshalJSON() ([]byte, error) {
	buf := []byte{'{'}
	for i, e := range o {
		if i > 0 {
			buf = append(buf, ',')
		}
		k, err := json.Marshal(e.name)
		if err != nil {
			return nil, err
		}
		v, err := json.Marshal(e.v)
		if err != nil {
			return nil, err
		}
		buf = append(append(append(buf, k...), ':'), v...)
	}
	return append(buf, '}'), nil
}

// timeSpan formats d as .NET's TimeSpan "c" format: [d.]hh:mm:ss.fffffff.
func timeSpan(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	ticks := int64(d / 100) // .NET ticks are 100 ns
	days := ticks / (24 * 3600 * 1e7)
	ticks -= days * 24 * 3600 * 1e7
	h := ticks / (3600 * 1e7)
	ticks -= h * 3600 * 1e7
	m := ticks / (60 * 1e7)
	ticks -= m * 60 * 1e7
	s := ticks / 1e7
	frac := ticks - s*1e7
	if days > 0 {
		return fmt.Sprintf("%d.%02d:%02d:%02d.%07d", days, h, m, s, frac)
	}
	return fmt.Sprintf("%02d:%02d:%02d.%07d", h, m, s, frac)
}
