package resilience

import (
	"github.com/failsafe-go/failsafe-go/bulkhead"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/failsafe-go/failsafe-go/retrypolicy"
	"github.com/failsafe-go/failsafe-go/timeout"
)

var (
	circuitbreakerErrOpen = circuitbreaker.ErrOpen
	timeoutErrExceeded    = timeout.ErrExceeded
	bulkheadErrFull       = bulkhead.ErrFull
	retryErrExceeded      = retrypolicy.ErrExceeded
)
