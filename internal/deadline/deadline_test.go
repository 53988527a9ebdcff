package deadline

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

type key struct{}

func TestContextDoneWithinSlot(t *testing.T) {
	for _, tt := range []struct {
		name    string
		timeout time.Duration
	}{
		{"short", 20 * time.Millisecond},
		{"one-slot-wide", 160 * time.Millisecond},
		{"long", 400 * time.Millisecond},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := NewSlots(WidthFor(tt.timeout))
			parent := context.WithValue(context.Background(), key{}, "v")
			// Several goroutines ask at once, so that slots are both
			// shared and replaced concurrently.
			var wg sync.WaitGroup
			for range 8 {
				wg.Go(func() {
					deadline := time.Now().Add(tt.timeout)
					ctx := s.New(parent, deadline)
					if d, ok := ctx.Deadline(); !ok || !d.Equal(deadline) {
						t.Errorf("Deadline() = %v, %v; want %v, true", d, ok, deadline)
					}
					if got := ctx.Value(key{}); got != "v" {
						t.Errorf("Value = %v, want the parent's value", got)
					}
					if err := ctx.Err(); err != nil {
						t.Errorf("Err before the deadline = %v", err)
					}
					<-ctx.Done()
					if early := time.Until(deadline); early > 0 {
						t.Errorf("Done closed %v before the deadline", early)
					}
					// The width bounds the timer's lateness; scheduling on
					// a loaded machine adds to it.
					if late := time.Since(deadline); late > s.Width()+time.Second {
						t.Errorf("Done closed %v after the deadline, want at most %v (+ scheduling)", late, s.Width())
					}
					if err := ctx.Err(); !errors.Is(err, context.DeadlineExceeded) {
						t.Errorf("Err after Done = %v, want DeadlineExceeded", err)
					}
				})
			}
			wg.Wait()
		})
	}
}

func TestSlotsShareWithinWidth(t *testing.T) {
	s := NewSlots(time.Hour)
	now := time.Now()
	a := s.Done(now.Add(time.Minute))
	b := s.Done(now.Add(time.Minute + 30*time.Minute))
	if a != b {
		t.Error("two deadlines within one slot width got different channels")
	}
	c := s.Done(now.Add(3 * time.Hour))
	if c == a {
		t.Error("a deadline past the slot's end got the slot's channel")
	}
	// An earlier deadline than the current slot's start would get a channel
	// that closes more than width late: it gets a new slot.
	d := s.Done(now.Add(time.Minute))
	if d == c {
		t.Error("a deadline more than width before the slot's end got its channel")
	}
}

func TestInitDoesNotAllocate(t *testing.T) {
	s := NewSlots(WidthFor(time.Minute))
	deadline := time.Now().Add(time.Minute)
	var c Context
	s.Init(&c, context.Background(), deadline) // the slot's channel and timer
	if n := testing.AllocsPerRun(100, func() { s.Init(&c, context.Background(), deadline) }); n != 0 {
		t.Errorf("Init allocates %v times, want 0", n)
	}
}

func TestWidthFor(t *testing.T) {
	for _, tt := range []struct {
		timeout, want time.Duration
	}{
		{0, time.Microsecond},
		{time.Microsecond, time.Microsecond},
		{16 * time.Millisecond, time.Millisecond},
		{30 * time.Second, 10 * time.Millisecond},
	} {
		if got := WidthFor(tt.timeout); got != tt.want {
			t.Errorf("WidthFor(%v) = %v, want %v", tt.timeout, got, tt.want)
		}
	}
	if got := NewSlots(0).Width(); got != time.Microsecond {
		t.Errorf("NewSlots(0).Width() = %v, want 1µs", got)
	}
}

// BenchmarkContext compares a Context from New with context.WithTimeout,
// each made, asked for Done (as a database driver does) and dropped.
func BenchmarkContext(b *testing.B) {
	const timeout = 30 * time.Second
	b.Run("WithTimeout", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			_ = ctx.Done()
			cancel()
		}
	})
	b.Run("Slots.New", func(b *testing.B) {
		s := NewSlots(WidthFor(timeout))
		b.ReportAllocs()
		for b.Loop() {
			ctx := s.New(context.Background(), time.Now().Add(timeout))
			_ = ctx.Done()
		}
	})
}

func TestContextDerived(t *testing.T) {
	s := NewSlots(WidthFor(50 * time.Millisecond))
	parent, cancelParent := context.WithCancel(context.WithValue(context.Background(), key{}, "v"))
	ctx := s.New(parent, time.Now().Add(50*time.Millisecond))
	cancelParent()
	if err := ctx.Err(); err != nil {
		t.Fatalf("Err after the values' context was canceled = %v, want nil: a Context does not inherit cancellation", err)
	}
	if got := ctx.Value(key{}); got != "v" {
		t.Errorf("Value = %v, want the parent's value", got)
	}
	ran := make(chan struct{})
	context.AfterFunc(ctx, func() { close(ran) })
	child, cancel := context.WithCancel(ctx)
	defer cancel()
	for name, done := range map[string]<-chan struct{}{"AfterFunc": ran, "WithCancel": child.Done()} {
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s of a Context: not done 10 s after the deadline", name)
		}
	}
	if err := context.Cause(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Cause = %v, want DeadlineExceeded", err)
	}
	if err := context.Cause(child); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Cause of a derived context = %v, want DeadlineExceeded", err)
	}
}

// TestAfterFuncJoinsSlot checks that context.AfterFunc on a Context (what
// pgx does for every statement) costs what it costs on a context of the
// context package, with no goroutine of its own.
func TestAfterFuncJoinsSlot(t *testing.T) {
	s := NewSlots(WidthFor(time.Minute))
	var c Context
	s.Init(&c, context.Background(), time.Now().Add(time.Minute))
	context.AfterFunc(&c, func() {})() // the slot's children map
	base, cancel := context.WithCancel(context.Background())
	defer cancel()
	context.AfterFunc(base, func() {})()
	want := testing.AllocsPerRun(100, func() { context.AfterFunc(base, func() {})() })
	if got := testing.AllocsPerRun(100, func() { context.AfterFunc(&c, func() {})() }); got > want {
		t.Errorf("AfterFunc on a Context allocates %v times, on a cancelCtx %v", got, want)
	}
}
