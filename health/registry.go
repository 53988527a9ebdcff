package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	healthgo "github.com/hellofresh/health-go/v5"

	"github.com/goaspire/goaspire/internal/fallback"
	"github.com/goaspire/goaspire/internal/redact"
)

// DefaultTimeout bounds one run of a check whose Timeout is zero, unless
// the Registry was given another default with WithDefaultTimeout.
const DefaultTimeout = 5 * time.Second

// Registry holds health checks and runs them. It is safe for concurrent
// use; checks may be registered at any time.
//
// A run executes the selected checks concurrently through health-go's
// Measure, each bounded by its timeout, which cancels the check's context.
// A check that ignores its context is abandoned at the timeout and
// reported as timed out (its goroutine ends when the check returns); a
// check that panics is reported as failed instead of crashing the process.
type Registry struct {
	timeout time.Duration
	logger  *slog.Logger

	mu     sync.RWMutex
	checks []Check
	gen    uint64 // incremented by Register; invalidates handler caches

	lastMu sync.Mutex
	last   map[string]Status // last status of each check, for logging transitions

	resMu   sync.Mutex
	results map[string]Entry         // last completed entry of each check, for LastReport
	calls   map[string]chan struct{} // latest call of each check; closed when it returns
}

// Option configures a Registry.
type Option func(*Registry)

// WithDefaultTimeout sets the timeout of checks whose Timeout is zero
// (DefaultTimeout if never set). A non-positive d is ignored.
func WithDefaultTimeout(d time.Duration) Option {
	return func(r *Registry) {
		if d > 0 {
			r.timeout = d
		}
	}
}

// WithLogger sets the logger that reports checks changing status (a check
// starting to fail at Warn, recovering at Info). The default is
// slog.Default() at the time of logging.
func WithLogger(l *slog.Logger) Option {
	return func(r *Registry) { r.logger = l }
}

// NewRegistry returns an empty Registry.
func NewRegistry(opts ...Option) *Registry {
	r := &Registry{timeout: DefaultTimeout, last: map[string]Status{}, results: map[string]Entry{}, calls: map[string]chan struct{}{}}
	for _, opt := range opts {
		opt(r)
	}
	return r
}

// Register adds checks. It fails, adding none of them, when a check has no
// name or no function, an unknown FailureStatus, or a name already
// registered (names are compared exactly).
func (r *Registry) Register(checks ...Check) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[string]bool{}
	for _, c := range r.checks {
		seen[c.Name] = true
	}
	for _, c := range checks {
		switch {
		case c.Name == "":
			return errors.New("health: a check must have a name")
		case c.Check == nil:
			return fmt.Errorf("health: check %q has no Check function", c.Name)
		case seen[c.Name]:
			return fmt.Errorf("health: check %q is already registered", c.Name)
		}
		switch c.FailureStatus {
		case "", Healthy, Degraded, Unhealthy:
		default:
			return fmt.Errorf("health: check %q has unknown FailureStatus %q", c.Name, c.FailureStatus)
		}
		if c.Timeout < 0 {
			return fmt.Errorf("health: check %q has a negative Timeout", c.Name)
		}
		seen[c.Name] = true
	}
	for _, c := range checks {
		c.Tags = slices.Clone(c.Tags)
		r.checks = append(r.checks, c)
	}
	r.gen++
	return nil
}

// Checks returns the registered checks in registration order.
func (r *Registry) Checks() []Check {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return slices.Clone(r.checks)
}

// Tagged returns a predicate selecting the checks that carry any of tags.
func Tagged(tags ...string) func(Check) bool {
	return func(c Check) bool {
		for _, t := range c.Tags {
			if slices.Contains(tags, t) {
				return true
			}
		}
		return false
	}
}

func (r *Registry) selected(pred func(Check) bool) ([]Check, uint64) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []Check
	for _, c := range r.checks {
		if pred == nil || pred(c) {
			out = append(out, c)
		}
	}
	return out, r.gen
}

// Report is the outcome of one run.
type Report struct {
	// Status is the worst status of the entries (Healthy when there are
	// none).
	Status Status
	// Duration is how long the run took.
	Duration time.Duration
	// Entries holds one entry per check run, in registration order.
	Entries []Entry
}

// Entry is the outcome of one check in a Report.
type Entry struct {
	// Name is the check's name.
	Name string
	// Status is Healthy when the check passed, else its FailureStatus.
	Status Status
	// Duration is how long the check ran.
	Duration time.Duration
	// Error is the check's error text with URLs and secret-looking
	// key=value pairs redacted, or "" when it passed.
	Error string
	// Tags are the check's tags.
	Tags []string
}

// hgSlack is added to each check's timeout in health-go's own timer, so
// our timeout (which cancels the check's context) always decides first and
// health-go's timer never fires: when it does, health-go abandons the
// check goroutine blocked on an unbuffered send forever.
const hgSlack = time.Minute

// Run runs the checks pred selects (every check when pred is nil) and
// returns their report. Run does not cache: the /health handlers do.
func (r *Registry) Run(ctx context.Context, pred func(Check) bool) Report {
	rep, _ := r.run(ctx, pred)
	return rep
}

func (r *Registry) run(ctx context.Context, pred func(Check) bool) (Report, uint64) {
	checks, gen := r.selected(pred)
	start := time.Now()
	rep := Report{Status: Healthy, Entries: make([]Entry, len(checks))}
	if len(checks) == 0 {
		rep.Duration = time.Since(start)
		return rep, gen
	}

	var mu sync.Mutex // guards done and rep.Entries against health-go's timer path
	done := make([]bool, len(checks))
	configs := make([]healthgo.Config, len(checks))
	for i, c := range checks {
		timeout := c.Timeout
		if timeout == 0 {
			timeout = r.timeout
		}
		// health-go keys its checks by name; registration keeps names
		// unique, so index-suffixed keys are not needed.
		configs[i] = healthgo.Config{
			Name:      c.Name,
			Timeout:   timeout + hgSlack,
			SkipOnErr: failureStatus(c) != Unhealthy,
			Check: func(ctx context.Context) error {
				e := r.runOne(ctx, c, timeout)
				r.record(e)
				mu.Lock()
				rep.Entries[i], done[i] = e, true
				mu.Unlock()
				if e.Status == Healthy {
					return nil
				}
				return errors.New(e.Error)
			},
		}
	}
	h, err := healthgo.New(healthgo.WithMaxConcurrent(len(configs)), healthgo.WithChecks(configs...))
	if err != nil {
		// Only a duplicate or empty name fails here, which Register
		// refuses; report it rather than panic should that ever change.
		for i, c := range checks {
			rep.Entries[i] = Entry{Name: c.Name, Status: Unhealthy, Error: Scrub(err.Error()), Tags: slices.Clone(c.Tags)}
		}
		rep.Status, rep.Duration = Unhealthy, time.Since(start)
		return rep, gen
	}
	h.Measure(ctx)
	rep.Duration = time.Since(start)

	mu.Lock()
	for i, c := range checks {
		if !done[i] { // health-go's own timer fired first; see hgSlack
			rep.Entries[i] = Entry{Name: c.Name, Status: failureStatus(c), Duration: rep.Duration,
				Error: string(healthgo.StatusTimeout), Tags: slices.Clone(c.Tags)}
		}
	}
	entries := slices.Clone(rep.Entries)
	mu.Unlock()
	rep.Entries = entries

	// health-go's aggregate knows only each check's SkipOnErr, not a
	// StatusError's own status: the report takes the worst entry instead.
	rep.Status = worst(rep.Entries)
	r.logTransitions(ctx, rep.Entries)
	return rep, gen
}

// worst returns the worst status of entries: Unhealthy, then Degraded,
// then Healthy (also when there are none).
func worst(entries []Entry) Status {
	s := Healthy
	for _, e := range entries {
		switch e.Status {
		case Unhealthy:
			return Unhealthy
		case Degraded:
			s = Degraded
		}
	}
	return s
}

// record keeps e as the last completed result of its check.
func (r *Registry) record(e Entry) {
	r.resMu.Lock()
	r.results[e.Name] = e
	r.resMu.Unlock()
}

// NoResultYet is the error of a check that has not completed once, in a
// report answered before it did (see LastReport).
const NoResultYet = "no result yet: the check is still running"

// LastReport returns, without running anything, the report made of the
// last completed result of each check pred selects (every check when pred
// is nil). A check that has not completed once is reported failing with
// its FailureStatus and the error NoResultYet: a service is not reported
// ready before its checks have said so. since is when the run still in
// progress started; it gives such entries their Duration.
//
// The handlers answer with it when a run outlasts their ResponseTimeout.
func (r *Registry) LastReport(pred func(Check) bool, since time.Time) Report {
	return r.lastReport(pred, since)
}

func (r *Registry) lastReport(pred func(Check) bool, since time.Time) Report {
	checks, _ := r.selected(pred)
	rep := Report{Entries: make([]Entry, len(checks)), Duration: time.Since(since)}
	r.resMu.Lock()
	for i, c := range checks {
		e, ok := r.results[c.Name]
		if !ok {
			e = Entry{Name: c.Name, Status: failureStatus(c), Duration: rep.Duration, Error: NoResultYet}
		}
		e.Tags = slices.Clone(c.Tags)
		rep.Entries[i] = e
	}
	r.resMu.Unlock()
	rep.Status = worst(rep.Entries)
	return rep
}

func failureStatus(c Check) Status {
	if c.FailureStatus == "" {
		return Unhealthy
	}
	return c.FailureStatus
}

// runOne runs c with its timeout. It returns by the deadline even when the
// check ignores its context, and turns a panic into a failure. While a
// call abandoned at its timeout has not returned, no new call of the same
// check starts: runOne waits for it within the new deadline, so a check
// that hangs ignoring its context leaves one goroutine behind, not one per
// probe.
func (r *Registry) runOne(ctx context.Context, c Check, timeout time.Duration) Entry {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	var err error
	r.resMu.Lock()
	prev := r.calls[c.Name]
	r.resMu.Unlock()
	if prev != nil {
		select {
		case <-prev:
		case <-ctx.Done():
			err = fmt.Errorf("timed out after %v: an earlier call, abandoned at its timeout, has not returned yet (the check ignores its context): %w", timeout, ctx.Err())
		}
	}
	if err == nil {
		err = r.call(ctx, c)
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
			err = fmt.Errorf("timed out after %v: %w", timeout, err)
		}
	}
	e := Entry{Name: c.Name, Status: Healthy, Duration: time.Since(start), Tags: slices.Clone(c.Tags)}
	if err != nil {
		e.Status = statusOf(err, failureStatus(c)) // a StatusError overrides (status.go)
		e.Error = Scrub(err.Error())
		if e.Error == "" {
			e.Error = "check failed"
		}
	}
	return e
}

// call runs c.Check in a goroutine of its own and returns its error, or
// ctx's once ctx ends first (the goroutine is then abandoned, and recorded
// in r.calls until it returns).
func (r *Registry) call(ctx context.Context, c Check) error {
	done := make(chan struct{})
	r.resMu.Lock()
	r.calls[c.Name] = done
	r.resMu.Unlock()
	result := make(chan error, 1) // buffered: an abandoned check does not block
	go func() {
		defer close(done)
		defer func() {
			if p := recover(); p != nil {
				result <- fmt.Errorf("check panicked: %v", p)
			}
		}()
		result <- c.Check(ctx)
	}()
	select {
	case err := <-result:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *Registry) logTransitions(ctx context.Context, entries []Entry) {
	r.lastMu.Lock()
	defer r.lastMu.Unlock()
	logger := fallback.Logger(r.logger)
	for _, e := range entries {
		prev, seen := r.last[e.Name]
		r.last[e.Name] = e.Status
		if prev == e.Status || (!seen && e.Status == Healthy) {
			continue
		}
		if e.Error != "" {
			logger.WarnContext(ctx, "health check failing", "check", e.Name, "status", string(e.Status), "error", e.Error)
		} else {
			logger.InfoContext(ctx, "health check healthy again", "check", e.Name, "previous", string(prev))
		}
	}
}

// Scrub redacts what may be secret in an error text: passwords and secret
// query parameters of URLs (redis://secret@host counts as a password, as
// the Redis client reads it), the values of pairs whose key names a secret
// ("Password=x", "pwd=x", "password: x", `"password":"x"`, "AccountKey=x",
// Azure SAS "sig=x"), and bearer tokens. Checks' error texts go through it
// before they reach a report or a log.
func Scrub(s string) string { return redact.Text(s) }
