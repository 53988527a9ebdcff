// Package walpos carries PostgreSQL write-ahead log positions through
// contexts between package cqrs, which records a write's position and
// routes reads by it, and package cache, which carries the position from
// an invalidation to the loads it causes. Neither of those imports the
// other; both import this one. A position is opaque here: a number that
// grows with the log, 0 meaning none.
package walpos

import "context"

// Key is the context key under which cqrs keeps a context's routing (its
// read-your-writes session), and under which a cache's loader context
// holds a *Floor.
type Key struct{}

// Writer is implemented by the value cqrs keeps under Key: the position
// of the latest write recorded for the context, 0 when none is.
type Writer interface {
	WrittenPosition() uint64
}

// Floor is what a cache's loader context holds under Key when the load
// follows an invalidation that carried a write's position: reads made
// with that context must see Position. Inner is what the caller's
// context holds under Key (nil when nothing), which cqrs keeps honouring.
type Floor struct {
	Inner    any
	Position uint64
}

// WrittenPosition implements Writer: the caller's, so that a write made
// from a loader is carried as it would be outside one.
func (f *Floor) WrittenPosition() uint64 {
	if w, ok := f.Inner.(Writer); ok {
		return w.WrittenPosition()
	}
	return 0
}

// Written returns the position of the latest write recorded for ctx, or
// 0.
func Written(ctx context.Context) uint64 {
	if w, ok := ctx.Value(Key{}).(Writer); ok {
		return w.WrittenPosition()
	}
	return 0
}
