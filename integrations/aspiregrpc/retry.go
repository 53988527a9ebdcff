package aspiregrpc

import (
	"context"
	"math"
	"strconv"
	"sync"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/grpc"
	"google.golang.org/grpc/balancer"
	grpccodes "google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/goaspire/goaspire/resilience"
)

// grpcPushbackKey is the trailer in which a server asks a client to retry
// after some milliseconds, or (negative or malformed) not to retry.
const grpcPushbackKey = "grpc-retry-pushback-ms"

// grpcUnary is the unary interceptor of a Client connection: it passes
// the trace context on when otelgrpc does not, bounds every call by the
// total timeout, and retries the calls of idempotent methods, each
// attempt bounded by the attempt timeout. It tells the outlier detector
// how each attempt went on the instance the picker gave it to.
//
// The timeouts are the client's own, as those of .NET's resilience
// handlers are: they cancel the call (the server sees RST_STREAM) but
// are not sent to the server as grpc-timeout, which would cost both
// sides a timer per call. A caller's own deadline is sent, as always.
type grpcUnary struct {
	// prop injects the trace context when no otelgrpc handler does; nil
	// otherwise.
	prop propagation.TextMapPropagator
	// standard is false with Resilience None: no timeouts, no retries.
	standard bool
	total    time.Duration
	attempt  time.Duration
	retry    resilience.RetryOptions
	// outliers is the outlier detection of the client's instances.
	outliers resilience.OutlierDetectionOptions
	// totalKey and attemptKey name the keys the timeouts come from, for
	// the errors of calls that exceed them.
	totalKey, attemptKey string
	// idempotent holds the full names ("/pkg.Service/Method") of the unary
	// methods whose calls are retried.
	idempotent map[string]struct{}
	calls      sync.Pool // *grpcCall
	timers     sync.Pool // *grpcTimer
}

// grpcCall is what a retried call needs on top of the caller's: the
// trailer, read for the server's pushback, and the options asking for it.
// They are reused from call to call.
//
// The call's context carries it (grpcCallKey) to the balancer's picker
// (grpcPicker), which skips the instances in triedInsts and says in
// picked which instance it gave the attempt to.
type grpcCall struct {
	trailer    metadata.MD
	trailerOpt grpc.CallOption // grpc.Trailer(&trailer)
	opts       []grpc.CallOption
	backoff    *resilience.Backoff // the HTTP clients' delays, made on the first retry

	// picked is the instance of the current attempt, nil until the picker
	// chose one; answered says whether that instance sent anything back.
	picked   *grpcInstance
	answered bool
	// triedInsts are the instances of the call's earlier attempts.
	triedInsts []*grpcInstance
	doneFn     func(balancer.DoneInfo) // finished, made once
}

// grpcCallKey keys the *grpcCall in a call's context.
type grpcCallKey struct{}

// finished is the balancer's notice that the attempt on picked ended.
func (c *grpcCall) finished(di balancer.DoneInfo) { c.answered = di.BytesReceived }

func (c *grpcCall) tried(in *grpcInstance) bool {
	for _, t := range c.triedInsts {
		if t == in {
			return true
		}
	}
	return false
}

// observe reports how the attempt just made went to the detector of the
// instance that had it, and remembers the instance as tried: an answer,
// any answer, is a success; an attempt timeout or an UNAVAILABLE the
// instance did not send (its connection failed or could not be made) is
// a failure; a call the caller gave up says nothing.
func (c *grpcCall) observe(ctx context.Context, err error, timedOut bool) {
	in := c.picked
	if in == nil {
		return // no instance was picked: none was ready
	}
	c.picked = nil
	c.triedInsts = append(c.triedInsts, in)
	switch {
	case err == nil || c.answered:
		in.success()
	case ctx.Err() != nil:
	case timedOut || status.Code(err) == grpccodes.Unavailable:
		in.failure()
	}
}

// newGRPCUnary makes the interceptor of a client with settings s, whose
// timeouts come from keys; idempotent are the unary methods to retry.
func newGRPCUnary(s ClientSettings, keys timeoutKeys, idempotent map[string]struct{}) *grpcUnary {
	u := &grpcUnary{
		standard:   true,
		total:      s.TotalRequestTimeout,
		attempt:    s.AttemptTimeout,
		retry:      s.Retry,
		outliers:   s.OutlierDetection,
		totalKey:   keys.total,
		attemptKey: keys.attempt,
		idempotent: idempotent,
	}
	u.calls.New = func() any {
		c := new(grpcCall)
		c.trailerOpt = grpc.Trailer(&c.trailer)
		c.doneFn = c.finished
		return c
	}
	u.timers.New = func() any {
		t := new(grpcTimer)
		t.t = time.AfterFunc(time.Duration(math.MaxInt64), t.fire)
		t.t.Stop()
		return t
	}
	return u
}

// grpcTimer cancels a call or attempt at its deadline. Timers are reused
// from call to call: one stopped before it fired is armed again for the
// next.
type grpcTimer struct {
	t      *time.Timer
	mu     sync.Mutex
	cancel context.CancelFunc
}

func (t *grpcTimer) fire() {
	t.mu.Lock()
	cancel := t.cancel
	t.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// bound returns a context cancelled at deadline, the function that ends
// it, and the timer, unless ctx has a deadline no later than that: then
// it returns ctx and nils. The deadline is not sent to the server.
func (u *grpcUnary) bound(ctx context.Context, now, deadline time.Time) (context.Context, context.CancelFunc, *grpcTimer) {
	if d, ok := ctx.Deadline(); ok && !d.After(deadline) {
		return ctx, nil, nil
	}
	actx, cancel := context.WithCancel(ctx)
	t := u.timers.Get().(*grpcTimer)
	t.mu.Lock()
	t.cancel = cancel
	t.mu.Unlock()
	t.t.Reset(deadline.Sub(now))
	return actx, cancel, t
}

// unbound ends what bound started, and says whether the timer fired.
func (u *grpcUnary) unbound(cancel context.CancelFunc, t *grpcTimer) (fired bool) {
	if t.t.Stop() {
		t.mu.Lock()
		t.cancel = nil
		t.mu.Unlock()
		u.timers.Put(t)
	} else {
		fired = true // and maybe still firing: t is not reused
	}
	cancel()
	return fired
}

func (u *grpcUnary) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if u.prop != nil {
		ctx = grpcPropagator{u.prop}.inject(ctx)
	}
	if !u.standard {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	c := u.calls.Get().(*grpcCall)
	defer u.release(c)
	ctx = context.WithValue(ctx, grpcCallKey{}, c)
	if _, ok := u.idempotent[method]; ok {
		return u.retrying(ctx, c, method, req, reply, cc, invoker, opts)
	}
	now := time.Now()
	actx, cancel, timer := u.bound(ctx, now, now.Add(u.total))
	err := invoker(actx, method, req, reply, cc, opts...)
	timedOut := timer != nil && u.unbound(cancel, timer) && err != nil && ctx.Err() == nil
	c.observe(ctx, err, timedOut)
	if timedOut {
		err = u.exceeded(method, u.totalKey, u.total)
	}
	return err
}

// retrying makes a call of an idempotent method: attempts bounded by the
// attempt timeout, retried after UNAVAILABLE, RESOURCE_EXHAUSTED with the
// server's pushback, or the attempt timeout, all within the total
// timeout. c, which ctx carries to the picker, makes every retry go to an
// instance not tried yet when one is ready.
func (u *grpcUnary) retrying(ctx context.Context, c *grpcCall, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts []grpc.CallOption) error {
	callOpts := append(append(c.opts[:0], opts...), c.trailerOpt)
	c.opts = callOpts[:0]

	now := time.Now()
	total := now.Add(u.total)
	for attempt := 0; ; attempt++ {
		deadline, last := now.Add(u.attempt), false
		if !deadline.Before(total) {
			deadline, last = total, true
		}
		actx, cancel, timer := u.bound(ctx, now, deadline)
		c.trailer = nil
		err := invoker(actx, method, req, reply, cc, callOpts...)
		timedOut := timer != nil && u.unbound(cancel, timer) && err != nil && ctx.Err() == nil
		c.observe(ctx, err, timedOut)
		if err == nil || ctx.Err() != nil {
			return err
		}
		if timedOut && last {
			return u.exceeded(method, u.totalKey, u.total)
		}
		delay, again := u.retryDelay(err, timedOut, c.trailer, c)
		if timedOut {
			err = u.exceeded(method, u.attemptKey, u.attempt)
		}
		if !again || attempt >= u.retry.MaxRetryAttempts {
			return err
		}
		now = time.Now()
		next := now.Add(delay)
		if d, ok := ctx.Deadline(); !next.Before(total) || ok && !next.Before(d) {
			return err // no time left for another attempt
		}
		if delay > 0 {
			if err := sleep(ctx, delay); err != nil {
				return err
			}
			now = time.Now()
		}
	}
}

func (u *grpcUnary) release(c *grpcCall) {
	clear(c.opts[:cap(c.opts)])
	clear(c.triedInsts)
	c.triedInsts = c.triedInsts[:0]
	c.picked, c.answered = nil, false
	c.trailer = nil
	if c.backoff != nil {
		c.backoff.Reset()
	}
	u.calls.Put(c)
}

// retryDelay says whether a failed attempt is retried, and after what
// delay: an attempt that timed out, UNAVAILABLE or RESOURCE_EXHAUSTED
// are; the server's pushback replaces the computed delay, a negative or
// malformed one stops the retries, and RESOURCE_EXHAUSTED is retried only
// with a pushback (the server asked for the retry).
func (u *grpcUnary) retryDelay(err error, timedOut bool, trailer metadata.MD, c *grpcCall) (time.Duration, bool) {
	if !timedOut {
		code := status.Code(err)
		if code != grpccodes.Unavailable && code != grpccodes.ResourceExhausted {
			return 0, false
		}
		if v, ok := trailer[grpcPushbackKey]; ok {
			c.nextBackoff(u.retry) // keeps the computed delays in step with the retry count
			return grpcPushback(v, u.retry.MaxDelay)
		}
		if code == grpccodes.ResourceExhausted {
			return 0, false
		}
	}
	return c.nextBackoff(u.retry), true
}

// nextBackoff returns the computed delay before the call's next retry,
// with the formulas of the HTTP clients' retries (resilience.Backoff:
// Polly v8's, decorrelated jitter for Exponential).
func (c *grpcCall) nextBackoff(r resilience.RetryOptions) time.Duration {
	if c.backoff == nil {
		c.backoff = resilience.NewBackoff(r)
	}
	return c.backoff.Next()
}

// grpcPushback parses the values of grpc-retry-pushback-ms: one
// non-negative number of milliseconds, capped by maxDelay when it is
// positive; anything else stops the retries.
func grpcPushback(v []string, maxDelay time.Duration) (time.Duration, bool) {
	if len(v) != 1 {
		return 0, false
	}
	ms, err := strconv.ParseInt(v[0], 10, 64)
	if err != nil || ms < 0 {
		return 0, false
	}
	d := time.Duration(math.MaxInt64)
	if ms < math.MaxInt64/int64(time.Millisecond) {
		d = time.Duration(ms) * time.Millisecond
	}
	if maxDelay > 0 {
		d = min(d, maxDelay)
	}
	return d, true
}

// exceeded is the error of a call or attempt that ran out of the time
// key gives it.
func (u *grpcUnary) exceeded(method, key string, d time.Duration) error {
	return status.Errorf(grpccodes.DeadlineExceeded, "aspiregrpc: gRPC call %s ran out of time: %v (%s)", method, d, key)
}

// sleep waits d, or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	case <-t.C:
		return nil
	}
}
