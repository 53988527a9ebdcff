package discovery

import (
	"context"
	"encoding/binary"
	"net"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// Go's resolver does not return the TTLs of the records it finds. DNS
// discovery reads them off the wire instead: its lookups carry a
// ttlRecorder in their context, and the connections the resolver dials
// for them note the TTL of every answer (and of every A/AAAA record in
// the additional section, the SRV targets' addresses) that goes past, so
// that a set is looked up again when its records expire, as .NET's
// providers do, and search domains, /etc/hosts, TCP fallback and the rest
// stay Go's.

// ttlKey is the context key of a lookup's ttlRecorder.
type ttlKey struct{}

// ttlRecorder keeps the smallest TTL noted during one lookup.
type ttlRecorder struct {
	mu   sync.Mutex
	min  uint32
	seen bool
}

func (r *ttlRecorder) note(ttl uint32) {
	r.mu.Lock()
	if !r.seen || ttl < r.min {
		r.min, r.seen = ttl, true
	}
	r.mu.Unlock()
}

// ttl returns the smallest TTL noted, or 0 when there was none (no
// answer, or an answer from /etc/hosts).
func (r *ttlRecorder) ttl() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.seen {
		return 0
	}
	return time.Duration(r.min) * time.Second
}

// noteMessage notes the TTLs of msg if it is the response to the query
// with the given id; anything else (a malformed or stray packet, which
// Go's resolver also ignores) is skipped.
func (r *ttlRecorder) noteMessage(msg []byte, id uint16) {
	var p dnsmessage.Parser
	h, err := p.Start(msg)
	if err != nil || !h.Response || h.ID != id || h.RCode != dnsmessage.RCodeSuccess {
		return
	}
	if err := p.SkipAllQuestions(); err != nil {
		return
	}
	for {
		rh, err := p.AnswerHeader()
		if err != nil {
			break
		}
		r.note(rh.TTL)
		if p.SkipAnswer() != nil {
			return
		}
	}
	if p.SkipAllAuthorities() != nil {
		return
	}
	for {
		rh, err := p.AdditionalHeader()
		if err != nil {
			return
		}
		// Not the OPT pseudo-record, whose TTL field holds EDNS flags.
		if rh.Type == dnsmessage.TypeA || rh.Type == dnsmessage.TypeAAAA {
			r.note(rh.TTL)
		}
		if p.SkipAdditional() != nil {
			return
		}
	}
}

// ttlResolver returns a resolver that asks as nr (nil: the default
// resolver) does, with Go's own resolver and nr's Dial (else a
// net.Dialer), and whose connections feed the ttlRecorder of the lookup.
func ttlResolver(nr *net.Resolver) *net.Resolver {
	if nr == nil {
		nr = net.DefaultResolver
	}
	dial := nr.Dial
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	return &net.Resolver{
		PreferGo:     true,
		StrictErrors: nr.StrictErrors,
		Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
			c, err := dial(ctx, network, address)
			if err != nil {
				return nil, err
			}
			rec, _ := ctx.Value(ttlKey{}).(*ttlRecorder)
			if rec == nil {
				return c, nil
			}
			tc := &ttlConn{Conn: c, rec: rec}
			if pc, ok := c.(net.PacketConn); ok {
				// Go's resolver frames its messages by whether the
				// connection is a PacketConn.
				return &ttlPacketConn{ttlConn: tc, pc: pc}, nil
			}
			tc.stream = true
			return tc, nil
		},
	}
}

// ttlConn is a resolver's connection that notes the TTLs of the responses
// read through it.
type ttlConn struct {
	net.Conn
	rec    *ttlRecorder
	stream bool   // TCP: messages have a 2-byte length in front
	id     uint16 // of the last query written
	buf    []byte // stream: the part of a response read so far
}

func (c *ttlConn) Write(b []byte) (int, error) {
	q := b
	if c.stream && len(q) >= 2 {
		q = q[2:]
	}
	if len(q) >= 2 {
		c.id = binary.BigEndian.Uint16(q)
	}
	return c.Conn.Write(b)
}

func (c *ttlConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n <= 0 {
		return n, err
	}
	if !c.stream {
		c.rec.noteMessage(b[:n], c.id)
		return n, err
	}
	c.buf = append(c.buf, b[:n]...)
	for len(c.buf) >= 2 {
		l := int(binary.BigEndian.Uint16(c.buf))
		if len(c.buf) < 2+l {
			break
		}
		c.rec.noteMessage(c.buf[2:2+l], c.id)
		c.buf = c.buf[2+l:]
	}
	return n, err
}

// ttlPacketConn is a ttlConn over UDP: a PacketConn, as Go's resolver
// expects there.
type ttlPacketConn struct {
	*ttlConn
	pc net.PacketConn
}

func (c *ttlPacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, addr, err := c.pc.ReadFrom(b)
	if n > 0 {
		c.rec.noteMessage(b[:n], c.id)
	}
	return n, addr, err
}

func (c *ttlPacketConn) WriteTo(b []byte, addr net.Addr) (int, error) { return c.pc.WriteTo(b, addr) }
