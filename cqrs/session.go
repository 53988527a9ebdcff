package cqrs

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/goaspire/goaspire/internal/walpos"
)

// LSN is a PostgreSQL write-ahead log position (pg_lsn).
type LSN uint64

// String formats the position as PostgreSQL does ("16/B374D848").
func (l LSN) String() string { return fmt.Sprintf("%X/%X", uint64(l)>>32, uint32(l)) }

// ParseLSN parses PostgreSQL's text form of a WAL position ("16/B374D848").
func ParseLSN(s string) (LSN, error) {
	hi, lo, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return 0, fmt.Errorf("cqrs: invalid LSN %q: want hex/hex", s)
	}
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("cqrs: invalid LSN %q: want hex/hex", s)
	}
	return LSN(h<<32 | l), nil
}

// session is a read-your-writes scope: the WAL position of its latest
// write through a DB.
type session struct {
	lsn atomic.Uint64
}

// observe raises the session's position to l.
func (s *session) observe(l LSN) {
	for {
		cur := s.lsn.Load()
		if uint64(l) <= cur || s.lsn.CompareAndSwap(cur, uint64(l)) {
			return
		}
	}
}

// route is what a context says about where its statements go: its
// read-your-writes session, whether WithPrimary sends everything to the
// primary, and the position reads must see besides the session's (from
// WithMinLSN, or a cache's loader). One value, under walpos.Key, holds
// them all, so that routing a statement looks the context up once.
type route struct {
	session *session
	primary bool
	min     LSN
}

// WrittenPosition implements walpos.Writer, so that a cache's Set or
// Remove made with a session's context carries the session's latest
// write.
func (r *route) WrittenPosition() uint64 {
	if r.session != nil {
		return r.session.lsn.Load()
	}
	return 0
}

func routeFrom(ctx context.Context) route {
	switch v := ctx.Value(walpos.Key{}).(type) {
	case *route:
		return *v
	case *walpos.Floor:
		// A cache's loader context: the caller's route, and the position
		// of the write that invalidated the entry.
		var r route
		if in, ok := v.Inner.(*route); ok {
			r = *in
		}
		r.min = max(r.min, LSN(v.Position))
		return r
	}
	return route{}
}

// WithSession returns a context that is a read-your-writes session: reads
// through a DB with this context (or one derived from it) see every write
// made through the DB with it. Reads go to a replica only once that
// replica has replayed the session's latest write, else to the primary.
// If ctx already is a session, it is returned unchanged.
func WithSession(ctx context.Context) context.Context {
	r := routeFrom(ctx)
	if r.session != nil {
		return ctx
	}
	r.session = &session{}
	return context.WithValue(ctx, walpos.Key{}, &r)
}

// WithSessionLSN returns a new session that starts at position l, so that a
// session can continue across requests: hand SessionLSN to the client (in
// a cookie or header) after a write and pass it back here on its next
// request.
func WithSessionLSN(ctx context.Context, l LSN) context.Context {
	r := routeFrom(ctx)
	r.session = &session{}
	r.session.lsn.Store(uint64(l))
	return context.WithValue(ctx, walpos.Key{}, &r)
}

// SessionLSN returns the WAL position of the latest write in ctx's
// session, or 0 when ctx is not a session or has not written.
func SessionLSN(ctx context.Context) LSN {
	if s := sessionFrom(ctx); s != nil {
		return LSN(s.lsn.Load())
	}
	return 0
}

func sessionFrom(ctx context.Context) *session {
	return routeFrom(ctx).session
}

// WithMinLSN returns a context whose reads through a DB (or its Reader)
// go only to a replica known to have replayed position l, else to the
// primary: for a position learned elsewhere than in a session, such as
// another instance's write. Unlike WithSessionLSN it starts no session
// and records no writes. A cache.Cache does this by itself for a load
// that follows an invalidation carrying a write's position (see the
// package doc). If ctx already requires l or later, it is returned
// unchanged.
func WithMinLSN(ctx context.Context, l LSN) context.Context {
	r := routeFrom(ctx)
	if l <= r.min {
		return ctx
	}
	r.min = l
	return context.WithValue(ctx, walpos.Key{}, &r)
}

// WithPrimary returns a context that sends every statement made through a
// DB, its Reader or its Writer with it (or a context derived from it) to
// the primary, as a write: for a SELECT of a function that writes, which
// the statement text does not show (DB.Query and DB.QueryRow send a
// SELECT to a replica, which refuses it, and run it again on the
// primary). In a read-your-writes session the statement's WAL
// position is recorded afterwards, as for DB.Exec.
func WithPrimary(ctx context.Context) context.Context {
	r := routeFrom(ctx)
	if r.primary {
		return ctx
	}
	r.primary = true
	return context.WithValue(ctx, walpos.Key{}, &r)
}

// Middleware makes each HTTP request a read-your-writes session (see
// WithSession).
func Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, r.WithContext(WithSession(r.Context())))
	})
}
