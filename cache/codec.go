package cache

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"sync"
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
//
// Unmarshal decodes as json.Unmarshal does, with the same result and
// errors, but through a json.Decoder kept for reuse: its scanner and
// decoding state are allocated once rather than on every read, which
// halves the allocations of decoding a small struct (an L2 hit). One
// difference: for data holding more than one value, the error is the
// same but the value may be filled from the first one.
type JSONCodec struct{}

// Marshal implements Codec.
func (JSONCodec) Marshal(v any) ([]byte, error) { return json.Marshal(v) }

// Unmarshal implements Codec.
func (JSONCodec) Unmarshal(data []byte, v any) error {
	if len(data) > maxPooledJSON {
		return json.Unmarshal(data, v)
	}
	d, _ := jsonDecoders.Get().(*jsonDecoder)
	if d == nil {
		d = &jsonDecoder{}
		d.dec = json.NewDecoder(&d.r)
	}
	d.r.b = data
	err := d.dec.Decode(v)
	if err == nil && !d.drained() {
		err = errTrailingJSON
	}
	d.r.b = nil
	if err != nil {
		// The decoder's state is unknown: drop it. json.Unmarshal gives
		// the error (and partial result) callers expect.
		return json.Unmarshal(data, v)
	}
	jsonDecoders.Put(d)
	return nil
}

// maxPooledJSON is the largest value decoded with a pooled json.Decoder,
// whose buffer grows to the values it reads: larger ones go through
// json.Unmarshal, where the allocations hardly matter.
const maxPooledJSON = 16 << 10

var errTrailingJSON = errors.New("cache: data after the JSON value")

// jsonDecoders holds idle decoders of JSONCodec.Unmarshal.
var jsonDecoders sync.Pool

// jsonDecoder is a json.Decoder reading one value at a time from r.
type jsonDecoder struct {
	r   sliceReader
	dec *json.Decoder
}

// drained reports whether nothing but white space follows the value just
// decoded, in the decoder's buffer and in the input it has not read yet.
// Leftovers would otherwise be decoded as the start of the next value.
func (d *jsonDecoder) drained() bool {
	buf, _ := d.dec.Buffered().(*bytes.Reader)
	if buf == nil {
		return false
	}
	for buf.Len() > 0 {
		c, _ := buf.ReadByte()
		if !isJSONSpace(c) {
			return false
		}
	}
	for _, c := range d.r.b {
		if !isJSONSpace(c) {
			return false
		}
	}
	return true
}

func isJSONSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// sliceReader reads b, then reports io.EOF.
type sliceReader struct{ b []byte }

func (r *sliceReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

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
//	rest        the value as the codec encoded it (a tombstone's: nothing,
//	            or the WAL position of the write that removed the key)
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
// A removal that followed a database write carries the write's WAL
// position (pos, not 0) as its payload, 8 bytes big endian, so that a load
// over the tombstone, on any instance, reads a server that has the write
// (see tombstonePos). Readers that know no positions ignore a tombstone's
// payload.
func appendTombstone(dst []byte, created int64, pos uint64) []byte {
	dst = append(dst, envelopeVersion, flagTombstone)
	dst = binary.BigEndian.AppendUint64(dst, 0)
	dst = binary.BigEndian.AppendUint64(dst, 0)
	dst = binary.BigEndian.AppendUint64(dst, uint64(created))
	dst = binary.AppendUvarint(dst, 0)
	if pos != 0 {
		dst = binary.BigEndian.AppendUint64(dst, pos)
	}
	return dst
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
