package cache

import (
	"encoding/binary"
	"encoding/json"
	"errors"
)

// Codec turns values into bytes for Redis and back. Implementations must be
// safe for concurrent use. Unmarshal receives a pointer to the value to
// fill; it must not modify data, nor keep it after it returns (data may
// share memory with the Redis reply).
type Codec interface {
	Marshal(v any) ([]byte, error)
	Unmarshal(data []byte, v any) error
}

// JSONCodec is the default Codec: encoding/json.
type JSONCodec struct{}

// Marshal implements Codec.
func (JSONCodec) Marshal(v any) ([]byte, error) { return json.Marshal(v) }

// Unmarshal implements Codec.
func (JSONCodec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

// The L2 envelope: what goes into Redis around the encoded value, so every
// instance knows when the value stops being fresh, how long it may be
// served stale, whether it is a cached "not found", and its tags.
//
//	byte 0      version (2)
//	byte 1      flags (1: not found)
//	bytes 2-9   fresh until, Unix milliseconds, big endian
//	bytes 10-17 stale until (the Redis TTL), Unix milliseconds
//	bytes 18-25 created: when the value was written (Set) or its load
//	            started, Unix milliseconds; a load never replaces a value
//	            created later, and a tag removed at or after it expires it
//	uvarint     number of tags, then each tag as uvarint length + bytes
//	rest        the value as the codec encoded it
const (
	envelopeVersion = 2
	flagNegative    = 1
	flagTombstone   = 2 // a removed key: no value, only its created time
	flagLock        = 4 // a key being loaded: the payload is the loader's lock token
	envelopeHeader  = 26
)

var errBadEnvelope = errors.New("cache: malformed L2 entry")

type envelope struct {
	negative  bool
	tombstone bool
	lock      bool
	fresh     int64 // Unix ms
	stale     int64 // Unix ms
	created   int64 // Unix ms
	tags      []string
	payload   []byte
}

// appendEnvelope writes the envelope for payload.
func appendEnvelope(dst []byte, negative bool, fresh, stale, created int64, tags []string, payload []byte) []byte {
	var flags byte
	if negative {
		flags |= flagNegative
	}
	dst = append(dst, envelopeVersion, flags)
	dst = binary.BigEndian.AppendUint64(dst, uint64(fresh))
	dst = binary.BigEndian.AppendUint64(dst, uint64(stale))
	dst = binary.BigEndian.AppendUint64(dst, uint64(created))
	dst = binary.AppendUvarint(dst, uint64(len(tags)))
	for _, t := range tags {
		dst = binary.AppendUvarint(dst, uint64(len(t)))
		dst = append(dst, t...)
	}
	return append(dst, payload...)
}

// appendLock writes the envelope an instance puts under an absent key
// while it loads it: the distributed lock for the key. It was created at
// time 0, so any value written meanwhile replaces it.
func appendLock(dst []byte, token string) []byte {
	dst = append(dst, envelopeVersion, flagLock)
	dst = binary.BigEndian.AppendUint64(dst, 0)
	dst = binary.BigEndian.AppendUint64(dst, 0)
	dst = binary.BigEndian.AppendUint64(dst, 0)
	dst = binary.AppendUvarint(dst, 0)
	return append(dst, token...)
}

// appendTombstone writes the envelope that marks a key removed at created.
func appendTombstone(dst []byte, created int64) []byte {
	dst = append(dst, envelopeVersion, flagTombstone)
	dst = binary.BigEndian.AppendUint64(dst, 0)
	dst = binary.BigEndian.AppendUint64(dst, 0)
	dst = binary.BigEndian.AppendUint64(dst, uint64(created))
	return binary.AppendUvarint(dst, 0)
}

func envelopeSize(tags []string, payload int) int {
	n := envelopeHeader + binary.MaxVarintLen64 + payload
	for _, t := range tags {
		n += binary.MaxVarintLen64 + len(t)
	}
	return n
}

// parseEnvelope reads an envelope; the payload aliases data.
func parseEnvelope(data []byte) (envelope, error) {
	var e envelope
	if len(data) < envelopeHeader+1 {
		return e, errBadEnvelope
	}
	if data[0] != envelopeVersion {
		return e, errBadEnvelope
	}
	e.negative = data[1]&flagNegative != 0
	e.tombstone = data[1]&flagTombstone != 0
	e.lock = data[1]&flagLock != 0
	e.fresh = int64(binary.BigEndian.Uint64(data[2:10]))
	e.stale = int64(binary.BigEndian.Uint64(data[10:18]))
	e.created = int64(binary.BigEndian.Uint64(data[18:26]))
	rest := data[envelopeHeader:]
	n, k := binary.Uvarint(rest)
	if k <= 0 || n > uint64(len(rest)) {
		return e, errBadEnvelope
	}
	rest = rest[k:]
	if n > 0 {
		e.tags = make([]string, 0, n)
		for range n {
			l, k := binary.Uvarint(rest)
			if k <= 0 || l > uint64(len(rest)-k) {
				return e, errBadEnvelope
			}
			e.tags = append(e.tags, string(rest[k:k+int(l)]))
			rest = rest[k+int(l):]
		}
	}
	e.payload = rest
	return e, nil
}
