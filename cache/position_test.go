package cache

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/goaspire/goaspire/cqrs"
	"github.com/goaspire/goaspire/internal/walpos"
	"github.com/goaspire/goaspire/testserver"
)

// floorOf is the position a loader's context requires, 0 for none.
func floorOf(ctx context.Context) uint64 {
	if f, ok := ctx.Value(walpos.Key{}).(*walpos.Floor); ok {
		return f.Position
	}
	return 0
}

// posLoader returns 1 and records the position its context requires.
func posLoader(got *atomic.Uint64) Loader[int] {
	return func(ctx context.Context) (int, error) {
		got.Store(floorOf(ctx))
		return 1, nil
	}
}

// wrote is a context after a write at pos, as a cqrs read-your-writes
// session makes it.
func wrote(pos uint64) context.Context {
	return cqrs.WithSessionLSN(context.Background(), cqrs.LSN(pos))
}

func TestPositionsStore(t *testing.T) {
	var p positions
	if p.lookup("k", 0) != 0 || p.live.Load() {
		t.Fatal("empty store")
	}
	p.note("k", 10, 0)
	p.note("k", 7, 1) // an older position does not lower it
	if got := p.lookup("k", 2); got != 10 {
		t.Errorf("lookup = %d, want 10", got)
	}
	if p.lookup("other", 2) != 0 {
		t.Error("a position leaked to another key")
	}
	ttl := int64(positionTTL)
	if got := p.lookup("k", ttl); got != 10 {
		t.Errorf("the latest note did not extend the position's life: %d", got)
	}
	if got := p.lookup("k", 1+ttl); got != 0 {
		t.Errorf("lookup after the TTL = %d", got)
	}
	if p.live.Load() {
		t.Error("the store stays live with nothing in it")
	}
	// Expired, then noted lower: the lower one stands.
	p.note("k", 10, 0)
	p.note("k", 3, 5+ttl)
	if got := p.lookup("k", 6+ttl); got != 3 {
		t.Errorf("a new position after expiry = %d, want 3", got)
	}

	// Past maxPositions the older half folds into one position for
	// every key: the highest of the folded ones.
	var q positions
	for i := range maxPositions {
		q.note(fmt.Sprint("k", i), uint64(100+i), int64(i))
	}
	q.note("last", 5, maxPositions)
	const half = maxPositions / 2
	now := int64(maxPositions + 1)
	if got := q.lookup("k1", now); got != 100+half {
		t.Errorf("after folding, k1 needs %d, want %d (the highest folded)", got, 100+half)
	}
	if got := q.lookup("never-noted", now); got != 100+half {
		t.Errorf("after folding, an unrelated key needs %d, want %d", got, 100+half)
	}
	if got := q.lookup(fmt.Sprint("k", maxPositions-1), now); got != 100+maxPositions-1 {
		t.Errorf("a newer key kept its own position: %d", got)
	}
	if got := q.lookup("last", now); got != 100+half {
		t.Errorf("a key noted lower than the fold needs %d", got)
	}
	if len(q.m) != maxPositions-half {
		t.Errorf("%d keys kept after folding, want %d", len(q.m), maxPositions-half)
	}
	q.noteAll(1<<40, now)
	if got := q.lookup("last", now+1); got != 1<<40 {
		t.Errorf("noteAll: %d", got)
	}
}

func TestPositionEncodings(t *testing.T) {
	tomb := string(appendTombstone(nil, 1234, 0xAB_0000_0001))
	if got := tombstonePos(tomb); got != 0xAB_0000_0001 {
		t.Errorf("tombstonePos = %x", got)
	}
	env, err := parseEnvelope([]byte(tomb))
	if err != nil || !env.tombstone || env.created != 1234 || len(env.tags) != 0 {
		t.Errorf("a tombstone with a position parses as %+v, %v", env, err)
	}
	if tombstonePos(string(appendTombstone(nil, 1234, 0))) != 0 {
		t.Error("a tombstone without a position has one")
	}
	if tombstonePos(string(appendEnvelope(nil, false, 1, 2, 3, nil, []byte("12345678")))) != 0 {
		t.Error("a value of 8 bytes read as a tombstone's position")
	}
	for _, tc := range []struct {
		in, id string
		pos    uint64
	}{
		{"abc", "abc", 0},
		{"abc@1F", "abc", 0x1f},
		{"abc@zz", "abc", 0},
		{"abc@", "abc", 0},
	} {
		if id, pos := parseSender(tc.in); id != tc.id || pos != tc.pos {
			t.Errorf("parseSender(%q) = %q, %x", tc.in, id, pos)
		}
	}
}

// oldOnMessage is how instances of releases without positions parse a
// message (cache.onMessage before positions): the id, which must not be
// theirs, the operation and its argument.
func oldOnMessage(payload string) (id string, op byte, arg string, ok bool) {
	rest, ok := strings.CutPrefix(payload, "2|")
	if !ok {
		return "", 0, "", false
	}
	id, rest, ok = strings.Cut(rest, "|")
	if !ok || len(rest) < 2 || rest[1] != '|' {
		return "", 0, "", false
	}
	return id, rest[0], rest[2:], true
}

// TestPositionMessagesOldReaders: an instance without positions applies a
// message carrying one as it applied every message: the same key (or tag,
// or clear), from an instance that is not itself.
func TestPositionMessagesOldReaders(t *testing.T) {
	c := newCache[int](t, nil, "old", Options{})
	for _, tc := range []struct {
		msg string
		op  byte
		arg string
	}{
		{c.messageAt(msgKey, "product|1@x", 0x16_B374D848), msgKey, "product|1@x"},
		{c.messageAt(msgTag, "17|cat", 5), msgTag, "17|cat"},
		{c.messageAt(msgClear, "17", 5), msgClear, "17"},
	} {
		id, op, arg, ok := oldOnMessage(tc.msg)
		if !ok || op != tc.op || arg != tc.arg || id == c.id || !strings.HasPrefix(id, c.id) {
			t.Errorf("an old reader reads %q as %q %c %q %v", tc.msg, id, op, arg, ok)
		}
	}
	if c.messageAt(msgKey, "k", 0) != c.message(msgKey, "k") {
		t.Error("a message without a position changed format")
	}
}

// TestPositionTravels: the position of the write behind a Set or Remove
// (from a cqrs session's context) reaches the loader's context of the
// next load of the key on another instance: through the tombstone in
// Redis, through the invalidation message, and for a tag removal. Old
// messages and loads after unrelated invalidations carry none.
func TestPositionTravels(t *testing.T) {
	srv := testserver.NewRedis(t)
	rdbA, rdbB := openClient(t, srv), openClient(t, srv)
	a := newCache[int](t, rdbA, "pos", Options{})
	b := newCache[int](t, rdbB, "pos", Options{})
	waitSubscribed(t, rdbA, a.channel, 2)
	bg := context.Background()
	var got atomic.Uint64
	load := posLoader(&got)

	// Remove: B loads at once, before its message may have arrived; the
	// tombstone carries the position.
	if _, err := b.GetOrLoad(bg, "r", load); err != nil || got.Load() != 0 {
		t.Fatalf("first load: %v, position %x", err, got.Load())
	}
	const pos1 = 0x16_B374D848
	if err := a.Remove(wrote(pos1), "r"); err != nil {
		t.Fatal(err)
	}
	data, err := rdbA.Get(bg, a.dataKey("r")).Result()
	if err != nil || tombstonePos(data) != pos1 {
		t.Fatalf("tombstone in Redis carries %x (%v), want %x", tombstonePos(data), err, pos1)
	}
	b.l1.remove("r") // as the message does, whenever it comes
	if _, err := b.GetOrLoad(bg, "r", load); err != nil || got.Load() != pos1 {
		t.Fatalf("load after the Remove: %v, position %x, want %x", err, got.Load(), pos1)
	}
	if s := b.Stats(); s.PositionLoads != 1 {
		t.Errorf("PositionLoads = %d", s.PositionLoads)
	}

	// Set: the value in Redis is new; should it go (evicted, expired),
	// the position came with the message.
	const pos2 = 0x17_00000010
	before := b.Stats().InvalidationsReceived
	if err := a.Set(wrote(pos2), "s", 2); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "B gets the Set's message", func() bool { return b.Stats().InvalidationsReceived > before })
	if err := rdbA.Del(bg, a.dataKey("s")).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.GetOrLoad(bg, "s", load); err != nil || got.Load() != pos2 {
		t.Fatalf("load after the Set: %v, position %x, want %x", err, got.Load(), pos2)
	}
	// And on A itself, which made the Set.
	a.l1.remove("s")
	if err := rdbA.Del(bg, a.dataKey("s")).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.GetOrLoad(bg, "s", load); err != nil || got.Load() != pos2 {
		t.Fatalf("load on the writer after its Set: %v, position %x, want %x", err, got.Load(), pos2)
	}

	// A Remove without a position (no session, or a session that has not
	// written) carries none.
	if err := a.Remove(cqrs.WithSession(bg), "n"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.GetOrLoad(bg, "n", load); err != nil || got.Load() != 0 {
		t.Fatalf("load after a Remove without a write: %v, position %x", err, got.Load())
	}

	// An older instance's message (no position) invalidates as before.
	if _, err := b.GetOrLoad(bg, "o", load); err != nil {
		t.Fatal(err)
	}
	before = b.Stats().InvalidationsReceived
	if err := rdbA.Publish(bg, b.channel, "2|0123456789abcdef|k|o").Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "B drops o", func() bool { return b.Stats().InvalidationsReceived > before })
	if b.l1.get("o") != nil {
		t.Error("an old-format message did not drop the key")
	}
	if _, err := b.GetOrLoad(bg, "o", load); err != nil || got.Load() != 0 {
		t.Fatalf("load after an old-format message: %v, position %x", err, got.Load())
	}

	// The caller's session goes on under the floor: a write made from
	// the loader is the caller's.
	var written atomic.Uint64
	if err := a.Remove(wrote(pos1), "w"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.GetOrLoad(wrote(5), "w", func(ctx context.Context) (int, error) {
		got.Store(floorOf(ctx))
		written.Store(walpos.Written(ctx))
		return 1, nil
	}); err != nil || got.Load() != pos1 || written.Load() != 5 {
		t.Fatalf("load in a session: %v, floor %x, written %d", err, got.Load(), written.Load())
	}

	// RemoveByTag: every key of the cache, on every instance.
	const pos3 = 0x18_00000001
	before = b.Stats().InvalidationsReceived
	if err := a.RemoveByTag(wrote(pos3), "t"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "B gets the tag removal", func() bool { return b.Stats().InvalidationsReceived > before })
	if _, err := b.GetOrLoad(bg, "tagged", load, WithTags("t")); err != nil || got.Load() != pos3 {
		t.Fatalf("load after RemoveByTag: %v, position %x, want %x", err, got.Load(), pos3)
	}
}

// TestPositionReplayed: a Remove made while Redis was out of reach is
// replayed with its position.
func TestPositionReplayed(t *testing.T) {
	srv := testserver.NewRedis(t)
	px := newProxy(t, srv.Addr())
	rdbA := openClient(t, srv, "ConnectionStrings__cache", px.addr()+",password="+srv.Password())
	a := newCache[int](t, rdbA, "posreplay", Options{BreakDuration: 50 * time.Millisecond, L2Timeout: 50 * time.Millisecond})
	direct := redis.NewClient(mustParseOptions(t, srv.URL()))
	defer direct.Close()
	bg := context.Background()
	if err := a.Set(bg, "k", 1); err != nil {
		t.Fatal(err)
	}
	px.hole.Store(true)
	const pos = 0x20_00000002
	if err := a.Remove(wrote(pos), "k"); err != nil {
		t.Fatal(err)
	}
	if err := a.Set(wrote(pos-1), "k2", 2); err != nil {
		t.Fatal(err)
	}
	if err := a.Remove(wrote(1), "k2"); err != nil { // replaces the Set in the queue
		t.Fatal(err)
	}
	px.hole.Store(false)
	eventually(t, 15*time.Second, "replayed", func() bool { return a.Stats().PendingReplay == 0 })
	for key, want := range map[string]uint64{"k": pos, "k2": pos - 1} {
		data, err := direct.Get(bg, a.dataKey(key)).Result()
		if err != nil || tombstonePos(data) != want {
			t.Errorf("%s: the replayed tombstone carries %x (%v), want %x", key, tombstonePos(data), err, want)
		}
	}
}

// TestPositionWithoutRedis: an L1-only cache carries positions from its
// own writes to its loads.
func TestPositionWithoutRedis(t *testing.T) {
	c := newCache[int](t, nil, "local", Options{})
	var got atomic.Uint64
	if err := c.Remove(wrote(99), "k"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetOrLoad(context.Background(), "k", posLoader(&got)); err != nil || got.Load() != 99 {
		t.Fatalf("load: %v, position %d", err, got.Load())
	}
}
