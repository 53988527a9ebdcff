package resilience

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/policy"
)

// hedgeAttempt is one attempt of a hedged call, and its context.
type hedgeAttempt struct {
	context.Context
	cancel context.CancelFunc
	a      attempt
	start  time.Time
	resp   *http.Response
	err    error
}

// Value makes this attempt, rather than the call's, reachable from the
// contexts derived from it.
func (h *hedgeAttempt) Value(key any) any {
	if key == attemptKey {
		return &h.a
	}
	return h.Context.Value(key)
}

// final reports whether the attempt's outcome ends the call: anything but
// a transient failure.
func (h *hedgeAttempt) final() bool {
	_, transient := h.err.(*attemptFailure)
	return !transient
}

// discard releases an attempt that lost: drains its response and cancels
// its context.
func (h *hedgeAttempt) discard() {
	if h.resp != nil {
		drain(h.resp, cancelFunc(h.cancel))
	}
	if af, ok := h.err.(*attemptFailure); ok && af.resp != nil {
		drain(af.resp, cancelFunc(h.cancel))
	}
	h.cancel()
}

// hedge runs inside the total timeout: it starts attempts, each through
// the per-destination steps (concurrency limit, circuit breaker, attempt
// timeout), and returns the first outcome that is not a transient
// failure, or the last failure when every attempt failed.
//
// failsafe-go's hedgepolicy starts the next attempt only when the delay
// elapses, even when an attempt has already failed; Polly's hedging, which
// Aspire uses, starts it at once. This loop does the latter.
func (t *Transport) hedge(exec failsafe.Execution[*http.Response]) (*http.Response, error) {
	ctx := exec.Context()
	c := ctx.Value(callKey).(*call)
	// Keep the attempts' contexts alive after the total timeout returns;
	// the call's own cancel ends them.
	exec.(policy.ExecutionInternal[*http.Response]).DeferCancel()

	targets, err := t.hedgeTargets(c.url)
	if err != nil {
		return nil, err
	}
	maxAttempts := 1 + t.hedging.Hedging.MaxHedgedAttempts
	if !c.retryable {
		maxAttempts = 1
	}
	results := make(chan *hedgeAttempt, maxAttempts)
	running := make([]*hedgeAttempt, 0, maxAttempts)
	launch := func() {
		i := len(running)
		h := &hedgeAttempt{a: attempt{c: c, url: targets[i%len(targets)], fixed: true}, start: time.Now()}
		h.Context, h.cancel = context.WithCancel(ctx)
		running = append(running, h)
		if i > 0 {
			t.tel.hedge(ctx, h.a.url.Host, i)
		}
		go func() {
			h.resp, h.err = t.attempt(h, &h.a)
			results <- h
		}()
	}

	delay := t.hedging.Hedging.Delay
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	var winner, last *hedgeAttempt
	completed := 0
	launch()
	for winner == nil {
		var timerC <-chan time.Time
		if len(running) < maxAttempts && delay >= 0 {
			if delay == 0 {
				launch()
				continue
			}
			if timer == nil {
				timer = time.NewTimer(delay)
			}
			timerC = timer.C
		}
		select {
		case h := <-results:
			completed++
			if h.final() {
				winner = h
				break
			}
			if last != nil {
				last.discard()
			}
			last = h
			if len(running) < maxAttempts {
				// A transient failure starts the next attempt at once.
				if timer != nil && !timer.Stop() {
					<-timer.C
				}
				timer = nil
				launch()
			} else if completed == len(running) {
				winner = h
			}
		case <-timerC:
			timer = nil
			launch()
		case <-ctx.Done():
			t.abandon(running, nil, results, len(running)-completed)
			if last != nil {
				last.discard()
			}
			return nil, ctx.Err()
		}
	}
	if last != nil && last != winner {
		last.discard()
	}
	if delay > 0 && winner.resp != nil {
		// An attempt still waiting for its headers a hedging delay
		// after it started, when one to another instance answered, is
		// one its instance did not answer in time: outlier detection
		// counts it.
		now := time.Now()
		for _, h := range running {
			if h != winner && h.a.url.Host != winner.a.url.Host && now.Sub(h.start) >= delay {
				h.a.superseded.Store(true)
			}
		}
	}
	t.abandon(running, winner, results, len(running)-completed)
	// The call's context outlives the winner's body; finish drains this
	// response if the total timeout wins the race for the result.
	if winner.resp != nil {
		c.cur.resp = winner.resp
	} else if af, ok := winner.err.(*attemptFailure); ok && af.resp != nil {
		c.cur.resp = af.resp
	}
	return winner.resp, winner.err
}

// abandon cancels the attempts still running and, in the background,
// drains what they return.
func (t *Transport) abandon(running []*hedgeAttempt, winner *hedgeAttempt, results <-chan *hedgeAttempt, pending int) {
	for _, h := range running {
		if h != winner {
			h.cancel()
		}
	}
	if pending == 0 {
		return
	}
	go func() {
		for ; pending > 0; pending-- {
			(<-results).discard()
		}
	}()
}

// hedgeTargets returns the URLs of the attempts: the instance the
// resolver picks round-robin, then the service's other instances in order,
// leaving out ejected instances unless every instance is ejected.
func (t *Transport) hedgeTargets(u *url.URL) ([]*url.URL, error) {
	if t.resolver == nil {
		return []*url.URL{u}, nil
	}
	first, err := t.resolver.Resolve(u)
	if err != nil {
		return nil, err
	}
	eps, err := t.resolver.Endpoints(u)
	if err != nil || len(eps) < 2 {
		return []*url.URL{first}, err
	}
	start := 0
	for i, ep := range eps {
		if ep.Host == first.Host && ep.Scheme == first.Scheme {
			start = i
			break
		}
	}
	out := make([]*url.URL, 0, len(eps))
	out = append(out, first)
	for k := 1; k < len(eps); k++ {
		out = append(out, endpointURL(u, eps[(start+k)%len(eps)]))
	}
	if t.anyEjected(eps) {
		// Ejected instances get no attempt while another one is there:
		// the hedges go to the instances left, in the same order.
		kept := out[:0:0]
		for _, v := range out {
			if !t.outliers.Ejected(v.Host) {
				kept = append(kept, v)
			}
		}
		if len(kept) > 0 {
			out = kept
		}
	}
	return out, nil
}
