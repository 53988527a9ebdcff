// Package deadline bounds operations by a deadline for the price of one
// allocation, none when the bound lives in the caller's scratch memory,
// where context.WithTimeout costs about five (its context, timer, Done
// channel, cancel function, and its place among its parent's children).
//
// A Context carries the values of another context and a deadline. Its
// Done channel is not its own: Slots hands out one channel per slot of
// time, closed by one timer at the end of the slot, and shared by every
// Context whose deadline falls in that slot. Done therefore closes at the
// deadline or up to the slot width after it, never before it; Err reports
// context.DeadlineExceeded once Done is closed.
//
// A Context is never canceled otherwise: it does not inherit the
// cancellation of the context whose values it carries. Use it where that
// is what is wanted (an operation whose result outlives the caller), or
// where the caller's context cannot be canceled (its Done is nil).
package deadline

import (
	"context"
	"sync/atomic"
	"time"
)

// Context is a context.Context with the values of another context, a
// deadline, and a Done channel shared with the other Contexts of its
// deadline's slot. Its zero value is not usable; fill it with
// Slots.Init, or get one from Slots.New.
//
// A Context does not inherit the cancellation of the context whose values
// it carries.
type Context struct {
	values   context.Context
	slot     context.Context // the slot's context, whose Done is Done
	deadline time.Time
	done     <-chan struct{}
}

var _ context.Context = (*Context)(nil)

// Deadline returns the deadline the Context was made with.
func (c *Context) Deadline() (time.Time, bool) { return c.deadline, true }

// Done returns a channel closed at the deadline or at most the slot width
// after it, never before it.
func (c *Context) Done() <-chan struct{} { return c.done }

// Value returns the value of the context the Context was made from.
func (c *Context) Value(key any) any {
	// The slot's context has no values, only the context package's own
	// key for its cancellation, which must not be that of c.values.
	if v := c.slot.Value(key); v != nil {
		return v
	}
	return c.values.Value(key)
}

// Err returns context.DeadlineExceeded once Done is closed, else nil.
func (c *Context) Err() error {
	select {
	case <-c.done:
		return context.DeadlineExceeded
	default:
		return nil
	}
}

// Slots hands out the Done channels of Contexts: one channel per slot of
// time, closed by one timer at the end of the slot. The slots follow the
// latest deadline asked for, so a Slots serves deadlines that grow with
// time: those of operations bounded by one timeout. Give each timeout its
// own Slots. A Slots is safe for concurrent use.
type Slots struct {
	width time.Duration
	cur   atomic.Pointer[slot]
}

// A slot's Done channel is that of a context.WithDeadline of its end, so
// that a Context can hand that context's cancellation to the contexts
// derived from it: context.AfterFunc and context.WithCancel on a Context
// (pgx watches every statement's context with AfterFunc) join the slot
// context's children rather than start a goroutine each, and
// context.Cause reports the deadline.
type slot struct {
	end    time.Time // when ctx is done
	ctx    context.Context
	cancel context.CancelFunc // unused: the slot's timer ends it
}

// NewSlots returns Slots of the given width (at least a microsecond): a
// Done channel closes at most width after its deadline.
func NewSlots(width time.Duration) *Slots {
	return &Slots{width: max(width, time.Microsecond)}
}

// Width is the width of the slots, the most a Done channel closes late.
func (s *Slots) Width() time.Duration { return s.width }

// WidthFor is a slot width fit for operations bounded by timeout: a
// sixteenth of it, at most 10 ms, at least a microsecond.
func WidthFor(timeout time.Duration) time.Duration {
	return max(min(timeout/16, 10*time.Millisecond), time.Microsecond)
}

// New returns a Context with the values of ctx and the given deadline.
func (s *Slots) New(ctx context.Context, deadline time.Time) *Context {
	c := &Context{}
	s.Init(c, ctx, deadline)
	return c
}

// Init makes c a Context with the values of ctx and the given deadline,
// without allocating: a Context kept in scratch memory costs nothing. Do
// not Init a Context that an operation still uses.
func (s *Slots) Init(c *Context, ctx context.Context, deadline time.Time) {
	sl := s.slot(deadline)
	*c = Context{values: ctx, slot: sl.ctx, deadline: deadline, done: sl.ctx.Done()}
}

// Done returns a channel closed in [deadline, deadline+width].
func (s *Slots) Done(deadline time.Time) <-chan struct{} { return s.done(deadline) }

func (s *Slots) done(deadline time.Time) <-chan struct{} { return s.slot(deadline).ctx.Done() }

// slot returns the slot whose end is in [deadline, deadline+width].
func (s *Slots) slot(deadline time.Time) *slot {
	for {
		cur := s.cur.Load()
		if cur != nil && !cur.end.Before(deadline) && cur.end.Sub(deadline) <= s.width {
			return cur
		}
		end := deadline.Add(s.width)
		next := &slot{end: end}
		next.ctx, next.cancel = context.WithDeadline(context.Background(), end)
		if s.cur.CompareAndSwap(cur, next) {
			return next
		}
		next.cancel()
	}
}
