package aspirenats_test

import (
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/goaspire/goaspire/internal/poll"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitFor polls cond until it holds or 30 s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, 30*time.Second, what, cond)
}
