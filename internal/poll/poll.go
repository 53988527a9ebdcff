// Package poll waits in tests for a condition that another goroutine or
// process makes true: the one polling loop every package's tests share.
package poll

import (
	"testing"
	"time"
)

// Until calls cond until it reports true, first every 5 ms and then less
// often (up to every 20 ms), and fails tb with what it was waiting for if
// within passes first. within only ends a test that would otherwise hang;
// it is not a timing assertion.
func Until(tb testing.TB, within time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(within)
	pause := 5 * time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(pause)
		pause = min(pause*2, 20*time.Millisecond)
	}
}
