package resilience

import (
	"context"
	"sync/atomic"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/bulkhead"
	"github.com/failsafe-go/failsafe-go/common"
)

// step is a failsafe-go policy written as one function: it receives the
// execution and the rest of the pipeline, and returns the result. The
// standard pipeline uses one between the retry and the attempt timeout to
// resolve the destination and apply its circuit breaker.
type step[R any] func(exec failsafe.Execution[R], next func(failsafe.Execution[R]) *common.PolicyResult[R]) *common.PolicyResult[R]

// ToExecutor implements failsafe.Policy.
func (s step[R]) ToExecutor(R) any { return s }

// Apply implements failsafe-go's policy executor contract.
func (s step[R]) Apply(next func(failsafe.Execution[R]) *common.PolicyResult[R]) func(failsafe.Execution[R]) *common.PolicyResult[R] {
	return func(exec failsafe.Execution[R]) *common.PolicyResult[R] { return s(exec, next) }
}

func failed[R any](err error) *common.PolicyResult[R] {
	return &common.PolicyResult[R]{Error: err, Done: true}
}

// acquire takes a permit from a concurrency limiter, waiting (bounded by
// ctx) only when fewer than queueLimit calls already wait.
func acquire(ctx context.Context, b bulkhead.Bulkhead[any], queueLimit int, queued *atomic.Int64) error {
	if b.TryAcquirePermit() {
		return nil
	}
	if queueLimit <= 0 {
		return bulkhead.ErrFull
	}
	if queued.Add(1) > int64(queueLimit) {
		queued.Add(-1)
		return bulkhead.ErrFull
	}
	defer queued.Add(-1)
	return b.AcquirePermit(ctx)
}
