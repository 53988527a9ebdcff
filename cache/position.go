package cache

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/goaspire/goaspire/internal/walpos"
)

// positionTTL is how long a write's WAL position is remembered after the
// invalidation that carried it: loads of the key within it read only from
// a replica that has replayed the write (or the primary). It is the life
// of a Remove's tombstone, which carries the position in Redis. A replica
// further behind than that is out of rotation anyway under cqrs's default
// Replicas:MaxLag (10 s).
const positionTTL = tombstoneTTL

// maxPositions bounds the keys whose position an instance remembers; past
// it the older half is folded into one position for every key of the
// cache (see positions).
const maxPositions = 10_000

// positions remembers, per key, the WAL position of the latest write that
// invalidated it (Set, Remove, here or on another instance), for
// positionTTL. Tag removals and Clear, which invalidate many keys, raise
// one position that applies to every key (all). When the map is full, the
// older half of its keys (those noted first) is folded into all: a load
// then asks more of replicas than it must, never less, and since
// positions grow with time, the folded ones are those replicas are the
// likeliest to have replayed already.
type positions struct {
	live atomic.Bool // anything noted: loads look positions up only then
	mu   sync.Mutex
	m    map[string]posEntry
	all  posEntry
}

type posEntry struct {
	pos   uint64
	until int64 // coarse clock
}

func (p posEntry) at(now int64) uint64 {
	if now < p.until {
		return p.pos
	}
	return 0
}

func (p *posEntry) raise(pos uint64, until int64) {
	p.pos = max(p.pos, pos)
	p.until = max(p.until, until)
}

// note records pos for key, as of now.
func (p *positions) note(key string, pos uint64, now int64) {
	until := now + int64(positionTTL)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.live.Store(true)
	if p.m == nil {
		p.m = map[string]posEntry{}
	}
	cur, ok := p.m[key]
	if !ok && len(p.m) >= maxPositions {
		p.sweepLocked(now)
		if len(p.m) >= maxPositions {
			p.foldOlderLocked()
		}
	}
	if cur.at(now) == 0 {
		cur = posEntry{}
	}
	cur.raise(pos, until)
	p.m[key] = cur
}

// noteAll records pos for every key, as of now.
func (p *positions) noteAll(pos uint64, now int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.live.Store(true)
	if p.all.at(now) == 0 {
		p.all = posEntry{}
	}
	p.all.raise(pos, now+int64(positionTTL))
}

// foldOlderLocked moves the older half of the keys' positions (by when
// they expire, which is when they were noted) into all.
func (p *positions) foldOlderLocked() {
	untils := make([]int64, 0, len(p.m))
	for _, e := range p.m {
		untils = append(untils, e.until)
	}
	slices.Sort(untils)
	median := untils[len(untils)/2]
	for k, e := range p.m {
		if e.until <= median {
			p.all.raise(e.pos, e.until)
			delete(p.m, k)
		}
	}
}

// sweepLocked drops the positions that have expired.
func (p *positions) sweepLocked(now int64) {
	for k, e := range p.m {
		if now >= e.until {
			delete(p.m, k)
		}
	}
}

// lookup returns the position a load of key must see at now, 0 for none.
// Without positions noted it costs an atomic load.
func (p *positions) lookup(key string, now int64) uint64 {
	if !p.live.Load() {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	pos := p.all.at(now)
	if e, ok := p.m[key]; ok {
		if e.at(now) == 0 {
			delete(p.m, key)
		} else {
			pos = max(pos, e.pos)
		}
	}
	if len(p.m) == 0 && p.all.at(now) == 0 {
		p.live.Store(false)
	}
	return pos
}

// writePosition is the WAL position of the write an invalidation made
// with ctx follows: the latest write recorded in ctx's cqrs
// read-your-writes session, 0 for none.
func writePosition(ctx context.Context) uint64 { return walpos.Written(ctx) }

// The position travels in invalidation messages after the instance id,
// "2|{instance}@{position, hex}|k|{key}": an older instance reads the
// whole as an instance id (not its own) and applies the message as before.
const posSep = '@'

// formatPos formats a position for a message.
func formatPos(pos uint64) string { return strconv.FormatUint(pos, 16) }

// parseSender splits the sender of a message into its instance id and
// the position it carries (0 for none, or an unreadable one).
func parseSender(s string) (id string, pos uint64) {
	for i := 0; i < len(s); i++ {
		if s[i] == posSep {
			p, err := strconv.ParseUint(s[i+1:], 16, 64)
			if err != nil {
				p = 0
			}
			return s[:i], p
		}
	}
	return s, 0
}

// tombstonePos returns the position a tombstone envelope s carries, 0
// for none (or when s is not a tombstone).
func tombstonePos(s string) uint64 {
	if len(s) != envelopeHeader+1+8 || s[0] != envelopeVersion || s[1]&flagTombstone == 0 {
		return 0
	}
	var p uint64
	for i := envelopeHeader + 1; i < len(s); i++ {
		p = p<<8 | uint64(s[i])
	}
	return p
}
