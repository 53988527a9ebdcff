package servicedefaults

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"testing"
)

// TestDropTriggerSignal: when a signal.NotifyContext context ends on a
// signal, the copy of that signal Serve's own channel got is recognised
// as the trigger, not taken for a second signal.
func TestDropTriggerSignal(t *testing.T) {
	self, err := os.FindProcess(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		sigs := notifySignals()
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		if err := self.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		<-ctx.Done()
		dropTriggerSignal(sigs)
		n := len(sigs)
		stop()
		signal.Stop(sigs)
		if n != 0 {
			t.Fatalf("%d signals left in Serve's channel after the trigger, want 0", n)
		}
	}
}
