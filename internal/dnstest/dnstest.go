// Package dnstest is a tiny authoritative DNS server on a loopback UDP
// port for tests: it answers A, AAAA and SRV questions from records the
// test sets and changes while it runs, or fails every question on demand.
package dnstest

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// SRV is one SRV record's target and port.
type SRV struct {
	Target string
	Port   uint16
}

// Records are the answers for one name.
type Records struct {
	IPs []netip.Addr // A and AAAA
	SRV []SRV
	// TTL is every answer's time to live in seconds; 0 means an hour.
	TTL uint32
	// ZeroTTL sends a TTL of 0 (do not cache) instead.
	ZeroTTL bool
}

// Server answers DNS questions over UDP on 127.0.0.1. It is safe for
// concurrent use.
type Server struct {
	conn net.PacketConn
	done chan struct{}

	mu      sync.Mutex
	records map[string]Records // by lower-case FQDN
	fail    bool
	drop    bool
	queries map[string]int
}

// Start starts a Server; it stops when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{conn: conn, done: make(chan struct{}), records: map[string]Records{}, queries: map[string]int{}}
	go s.serve()
	t.Cleanup(func() {
		conn.Close()
		<-s.done
	})
	return s
}

// Resolver returns a pure-Go net.Resolver that sends every question to s.
// Its connections close when their lookup is canceled, so a canceled
// lookup ends at once instead of waiting for its timeout (which goleak
// would see as a leak when the test ends first).
func (s *Server) Resolver() *net.Resolver {
	addr := s.conn.LocalAddr().String()
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, "udp", addr)
			if err != nil {
				return nil, err
			}
			context.AfterFunc(ctx, func() { c.Close() })
			return c, nil
		},
	}
}

// Set replaces the records of name.
func (s *Server) Set(name string, r Records) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records[fqdn(name)] = r
}

// Fail makes every answer SERVFAIL (true) or normal again (false).
func (s *Server) Fail(fail bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = fail
}

// Drop makes the server ignore every question (true), as an unreachable
// one would, or answer again (false).
func (s *Server) Drop(drop bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drop = drop
}

// Queries returns how many questions about name were asked.
func (s *Server) Queries(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[fqdn(name)]
}

func fqdn(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, ".")) + "."
}

func (s *Server) serve() {
	defer close(s.done)
	buf := make([]byte, 1500)
	for {
		n, from, err := s.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		if out, ok := s.answer(buf[:n]); ok {
			s.conn.WriteTo(out, from)
		}
	}
}

func (s *Server) answer(in []byte) ([]byte, bool) {
	var p dnsmessage.Parser
	h, err := p.Start(in)
	if err != nil {
		return nil, false
	}
	q, err := p.Question()
	if err != nil {
		return nil, false
	}
	name := strings.ToLower(q.Name.String())

	s.mu.Lock()
	s.queries[name]++
	recs, found := s.records[name]
	fail, drop := s.fail, s.drop
	s.mu.Unlock()
	if drop {
		return nil, false
	}

	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired}
	switch {
	case fail:
		rh.RCode = dnsmessage.RCodeServerFailure
	case !found:
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, false
	}
	if err := b.Question(q); err != nil {
		return nil, false
	}
	if err := b.StartAnswers(); err != nil {
		return nil, false
	}
	if found && !fail {
		ttl := recs.TTL
		switch {
		case recs.ZeroTTL:
			ttl = 0
		case ttl == 0:
			ttl = 3600
		}
		rrh := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: ttl}
		switch q.Type {
		case dnsmessage.TypeA:
			for _, ip := range recs.IPs {
				if ip.Is4() {
					b.AResource(rrh, dnsmessage.AResource{A: ip.As4()})
				}
			}
		case dnsmessage.TypeAAAA:
			for _, ip := range recs.IPs {
				if ip.Is6() && !ip.Is4In6() {
					b.AAAAResource(rrh, dnsmessage.AAAAResource{AAAA: ip.As16()})
				}
			}
		case dnsmessage.TypeSRV:
			for _, r := range recs.SRV {
				target, err := dnsmessage.NewName(fqdn(r.Target))
				if err != nil {
					return nil, false
				}
				b.SRVResource(rrh, dnsmessage.SRVResource{Priority: 10, Weight: 10, Port: r.Port, Target: target})
			}
		}
	}
	out, err := b.Finish()
	return out, err == nil
}
