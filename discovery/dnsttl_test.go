package discovery

import (
	"context"
	"encoding/binary"
	"net"
	"slices"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/goaspire/goaspire/internal/dnstest"
)

// TestDNSRefreshAtTTL: a set is looked up again when its records expire,
// when that comes before the refresh period; a TTL of 0 or above the
// refresh period leaves the refresh period.
func TestDNSRefreshAtTTL(t *testing.T) {
	const srvName = "_default._tcp.basket.shop.svc.cluster.local"
	tests := []struct {
		name    string
		srv     bool
		records func(change bool) dnstest.Records
		refresh string
		// wantRefresh: the change is seen, within the TTL; else no
		// lookup happens for a while.
		wantRefresh bool
	}{
		{"A with a 1 s TTL", false, func(change bool) dnstest.Records {
			if change {
				return dnstest.Records{IPs: ips("10.0.0.2"), TTL: 1}
			}
			return dnstest.Records{IPs: ips("10.0.0.1"), TTL: 1}
		}, "00:01:00", true},
		{"SRV with a 1 s TTL", true, func(change bool) dnstest.Records {
			port := uint16(80)
			if change {
				port = 81
			}
			return dnstest.Records{SRV: []dnstest.SRV{{Target: "basket-0.shop", Port: port}}, TTL: 1}
		}, "00:01:00", true},
		{"A with a TTL above the refresh period", false, func(change bool) dnstest.Records {
			if change {
				return dnstest.Records{IPs: ips("10.0.0.2"), TTL: 3600}
			}
			return dnstest.Records{IPs: ips("10.0.0.1"), TTL: 3600}
		}, "00:00:00.2", true},
		{"A with a TTL of 0", false, func(bool) dnstest.Records {
			return dnstest.Records{IPs: ips("10.0.0.1"), ZeroTTL: true}
		}, "00:01:00", false},
		{"SRV with a TTL of 0", true, func(bool) dnstest.Records {
			return dnstest.Records{SRV: []dnstest.SRV{{Target: "basket-0.shop", Port: 80}}, ZeroTTL: true}
		}, "00:01:00", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := dnstest.Start(t)
			name, raw, section := "catalog", "http://catalog", "Aspire:ServiceDiscovery:Dns"
			if tt.srv {
				name, raw, section = srvName, "http://basket", "Aspire:ServiceDiscovery:DnsSrv"
			}
			srv.Set(name, tt.records(false))
			values := map[string]string{
				section + ":Enabled":              "true",
				section + ":DefaultRefreshPeriod": tt.refresh,
			}
			if tt.srv {
				values[section+":QuerySuffix"] = "shop.svc.cluster.local"
			}
			r := newDNSResolver(t, srv, values)
			first := hostsOf(t, r, raw)
			if len(first) != 1 {
				t.Fatalf("Endpoints(%s) = %v, want one instance", raw, first)
			}
			if !tt.wantRefresh {
				n := srv.Queries(name)
				time.Sleep(2500 * time.Millisecond) // well past a 0 or 1 s TTL
				if got := srv.Queries(name); got != n {
					t.Errorf("%d more lookups within 2.5 s; want none before the refresh period", got-n)
				}
				return
			}
			srv.Set(name, tt.records(true))
			start := time.Now()
			eventually(t, "the changed set", func() bool {
				got := hostsOf(t, r, raw)
				return len(got) == 1 && !slices.Equal(got, first)
			})
			// The TTL (1 s) or the refresh period (0.2 s), with room
			// for a loaded machine; the refresh period alone is a minute.
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("the change took %v to be seen", d)
			}
		})
	}
}

// response builds a DNS response with the given id and rcode, answers
// with the TTLs given, and the additional records given.
func response(t *testing.T, id uint16, rcode dnsmessage.RCode, answerTTLs []uint32, extra func(b *dnsmessage.Builder)) []byte {
	t.Helper()
	name := dnsmessage.MustNewName("catalog.")
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, Response: true, RCode: rcode})
	if err := b.StartQuestions(); err != nil {
		t.Fatal(err)
	}
	if err := b.Question(dnsmessage.Question{Name: name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}); err != nil {
		t.Fatal(err)
	}
	if err := b.StartAnswers(); err != nil {
		t.Fatal(err)
	}
	for i, ttl := range answerTTLs {
		rh := dnsmessage.ResourceHeader{Name: name, Class: dnsmessage.ClassINET, TTL: ttl}
		if err := b.AResource(rh, dnsmessage.AResource{A: [4]byte{10, 0, 0, byte(i + 1)}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.StartAdditionals(); err != nil {
		t.Fatal(err)
	}
	if extra != nil {
		extra(&b)
	}
	out, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// chunkConn is a net.Conn whose reads return the bytes given, n at a time.
type chunkConn struct {
	net.Conn
	data    []byte
	n       int
	written []byte
}

func (c *chunkConn) Read(b []byte) (int, error) {
	n := copy(b[:min(len(b), c.n)], c.data)
	c.data = c.data[n:]
	return n, nil
}

func (c *chunkConn) Write(b []byte) (int, error) {
	c.written = append(c.written, b...)
	return len(b), nil
}

func TestTTLConn(t *testing.T) {
	const id = 0x1234
	opt := func(b *dnsmessage.Builder) {
		var rh dnsmessage.ResourceHeader
		if err := rh.SetEDNS0(1232, dnsmessage.RCodeSuccess, true); err != nil {
			t.Fatal(err)
		}
		if err := b.OPTResource(rh, dnsmessage.OPTResource{}); err != nil {
			t.Fatal(err)
		}
	}
	addressOf := func(ttl uint32) func(b *dnsmessage.Builder) {
		return func(b *dnsmessage.Builder) {
			rh := dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName("basket-0.shop."), Class: dnsmessage.ClassINET, TTL: ttl}
			if err := b.AResource(rh, dnsmessage.AResource{A: [4]byte{10, 0, 0, 9}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	tests := []struct {
		name string
		msg  []byte
		want time.Duration
	}{
		{"smallest answer TTL", response(t, id, dnsmessage.RCodeSuccess, []uint32{30, 10, 20}, nil), 10 * time.Second},
		{"zero TTL", response(t, id, dnsmessage.RCodeSuccess, []uint32{30, 0}, nil), 0},
		{"an address in the additional section", response(t, id, dnsmessage.RCodeSuccess, []uint32{30}, addressOf(5)), 5 * time.Second},
		{"EDNS OPT record ignored", response(t, id, dnsmessage.RCodeSuccess, []uint32{30}, opt), 30 * time.Second},
		{"response to another query", response(t, id+1, dnsmessage.RCodeSuccess, []uint32{30}, nil), 0},
		{"NXDOMAIN", response(t, id, dnsmessage.RCodeNameError, nil, nil), 0},
		{"no answer", response(t, id, dnsmessage.RCodeSuccess, nil, nil), 0},
		{"garbage", []byte{0x12, 0x34, 0x80}, 0},
	}
	query := make([]byte, 12)
	binary.BigEndian.PutUint16(query, id)
	for _, tt := range tests {
		for _, stream := range []bool{false, true} {
			for _, chunk := range []int{1, 7, 4096} {
				if !stream && chunk != 4096 {
					continue // a datagram is read whole
				}
				rec := &ttlRecorder{}
				data, q := tt.msg, query
				if stream {
					data = binary.BigEndian.AppendUint16(nil, uint16(len(tt.msg)))
					data = append(data, tt.msg...)
					q = append(binary.BigEndian.AppendUint16(nil, uint16(len(query))), query...)
				}
				c := &ttlConn{Conn: &chunkConn{data: data, n: chunk}, rec: rec, stream: stream}
				if _, err := c.Write(q); err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, 4096)
				for read := 0; read < len(data); {
					n, err := c.Read(buf[:min(len(buf), len(data)-read)])
					if err != nil || n == 0 {
						t.Fatalf("%s: read %d, %v", tt.name, n, err)
					}
					read += n
				}
				if got := rec.ttl(); got != tt.want {
					t.Errorf("%s (stream %t, %d-byte reads): TTL %v, want %v", tt.name, stream, chunk, got, tt.want)
				}
			}
		}
	}
}

// TestTTLResolverKeepsPacketConns: over UDP the wrapped connection is
// still a net.PacketConn (Go's resolver frames messages by that), and a
// real lookup through it records the TTL.
func TestTTLResolverKeepsPacketConns(t *testing.T) {
	srv := dnstest.Start(t)
	srv.Set("catalog", dnstest.Records{IPs: ips("10.0.0.1"), TTL: 42})
	nr := ttlResolver(srv.Resolver())
	rec := &ttlRecorder{}
	ctx := context.WithValue(context.Background(), ttlKey{}, rec)
	c, err := nr.Dial(ctx, "udp", "ignored:53")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.(net.PacketConn); !ok {
		t.Errorf("the wrapped UDP connection is a %T, not a net.PacketConn", c)
	}
	c.Close()
	addrs, err := nr.LookupNetIP(ctx, "ip4", "catalog")
	if err != nil || len(addrs) != 1 {
		t.Fatalf("LookupNetIP = %v, %v", addrs, err)
	}
	if got := rec.ttl(); got != 42*time.Second {
		t.Errorf("TTL %v, want 42s", got)
	}
}
