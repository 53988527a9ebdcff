package testserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Fault is what a [FaultProxy] does to the traffic between its clients and
// its target.
type Fault int

const (
	// Pass forwards every byte both ways, as if the proxy were not there.
	Pass Fault = iota
	// Silent is a network partition: open connections stall in both
	// directions with no RST and no FIN (the bytes in flight are held, not
	// dropped), and new connections get no answer to their SYN, so a dial
	// without a deadline of its own waits for the kernel's SYN retries. This
	// is how a peer behind a failed node, zone link or security-group change
	// looks to a client.
	Silent
	// Blackhole accepts new connections and never answers them, and stalls
	// open connections as [Silent] does: a peer whose process hangs, or a
	// load balancer in front of nothing.
	Blackhole
)

// String names the fault.
func (f Fault) String() string {
	switch f {
	case Pass:
		return "pass"
	case Silent:
		return "silent"
	case Blackhole:
		return "blackhole"
	default:
		return "Fault(" + strconv.Itoa(int(f)) + ")"
	}
}

// FaultProxy is a TCP proxy on 127.0.0.1 in front of one target address that
// a test can make fail the way networks fail: silently ([Silent],
// [Blackhole]) or slowly ([FaultProxy.SetDelay]), and heal again. Clients
// connect to [FaultProxy.Addr] instead of the server. A killed server answers
// with a reset and clients fail fast; a silent one is what makes a client
// without deadlines freeze, and what this proxy exists to show.
//
// Healing ([FaultProxy.Heal], or Set(Pass)) lets stalled connections go on
// where they stopped, as TCP does after a partition, and lets the connections
// whose SYN was not answered complete. [FaultProxy.Reset] closes every open
// connection instead, as a peer that restarted would.
type FaultProxy struct {
	target string
	ln     *net.TCPListener
	// relisten changes the listening socket's backlog; nil where that cannot
	// be done, and there [Silent] leaves new connections accepted but
	// unanswered, as [Blackhole] does.
	relisten func(backlog int) error

	setMu   sync.Mutex // serializes Set
	fillers []net.Conn // connections of our own that fill the accept queue while Silent

	mu         sync.Mutex
	fault      Fault
	delay      time.Duration
	changed    chan struct{} // closed and replaced when fault or delay change
	conns      map[*proxyConn]struct{}
	fillerAddr map[string]bool // local addresses of fillers, to drop them when accepted
	acceptIdle bool            // the accept loop waits while Silent
	closed     bool

	wg sync.WaitGroup
}

// StartFaultProxy starts a proxy on a free loopback port that forwards to
// target (host:port) until [FaultProxy.Close].
func StartFaultProxy(target string) (*FaultProxy, error) {
	if _, _, err := net.SplitHostPort(target); err != nil {
		return nil, fmt.Errorf("testserver: fault proxy target %q: %w", target, err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("testserver: fault proxy: %w", err)
	}
	ln := l.(*net.TCPListener)
	p := &FaultProxy{
		target:     target,
		ln:         ln,
		relisten:   relistenFunc(ln),
		changed:    make(chan struct{}),
		conns:      make(map[*proxyConn]struct{}),
		fillerAddr: make(map[string]bool),
	}
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// NewFaultProxy starts a [FaultProxy] in front of target for the test and
// closes it in tb.Cleanup. It fails the test if the proxy cannot start.
func NewFaultProxy(tb testing.TB, target string) *FaultProxy {
	tb.Helper()
	p, err := StartFaultProxy(target)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = p.Close() })
	return p
}

// Addr is the proxy's own address, host:port on 127.0.0.1.
func (p *FaultProxy) Addr() string { return p.ln.Addr().String() }

// Port is the proxy's own port.
func (p *FaultProxy) Port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// Target is the address the proxy forwards to.
func (p *FaultProxy) Target() string { return p.target }

// String describes the proxy for test logs.
func (p *FaultProxy) String() string {
	return "fault proxy " + p.Addr() + " -> " + p.target + " (" + p.Fault().String() + ")"
}

// Fault is the proxy's current fault.
func (p *FaultProxy) Fault() Fault {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fault
}

// Set changes the proxy's fault; it takes effect at once on every open
// connection and for every new one.
func (p *FaultProxy) Set(f Fault) {
	p.setMu.Lock()
	defer p.setMu.Unlock()
	p.mu.Lock()
	old := p.fault
	if p.closed || old == f {
		p.mu.Unlock()
		return
	}
	p.fault = f
	p.notifyLocked()
	p.mu.Unlock()
	if p.relisten == nil {
		return
	}
	if f == Silent {
		p.stopAnsweringSYNs()
	} else if old == Silent {
		p.resumeAnsweringSYNs()
	}
}

// stopAnsweringSYNs makes the kernel drop new SYNs: the accept loop stops
// accepting, the backlog goes to zero and one connection of our own fills
// the accept queue. Linux drops a SYN while the accept queue is full.
func (p *FaultProxy) stopAnsweringSYNs() {
	_ = p.ln.SetDeadline(time.Now()) // wakes a blocked Accept
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		p.mu.Lock()
		idle := p.acceptIdle
		p.mu.Unlock()
		if idle {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	if err := p.relisten(0); err != nil {
		return
	}
	filler, err := net.DialTimeout("tcp", p.Addr(), 300*time.Millisecond)
	if err != nil {
		return // the queue was full already: a client's connection fills it
	}
	p.mu.Lock()
	p.fillerAddr[filler.LocalAddr().String()] = true
	p.mu.Unlock()
	p.fillers = append(p.fillers, filler)
}

// resumeAnsweringSYNs undoes stopAnsweringSYNs; the accept loop drops the
// fillers when it accepts them.
func (p *FaultProxy) resumeAnsweringSYNs() {
	_ = p.relisten(defaultBacklog)
	_ = p.ln.SetDeadline(time.Time{})
	for _, c := range p.fillers {
		c.Close()
	}
	p.fillers = nil
}

// defaultBacklog is the backlog the proxy listens with while it answers.
const defaultBacklog = 512

// Heal is Set(Pass) and SetDelay(0): traffic flows again, stalled
// connections go on where they stopped.
func (p *FaultProxy) Heal() {
	p.Set(Pass)
	p.SetDelay(0)
}

// SetDelay holds every chunk of data, in either direction, for d before
// forwarding it: a slow network rather than a silent one. Zero turns it off.
func (p *FaultProxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.delay = d
	p.notifyLocked()
}

// Reset closes every open connection through the proxy (both sides) and
// leaves the fault as it is.
func (p *FaultProxy) Reset() {
	p.mu.Lock()
	conns := make([]*proxyConn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
}

// Conns is the number of client connections open through the proxy.
func (p *FaultProxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Close stops the proxy and closes every connection through it.
func (p *FaultProxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.notifyLocked()
	p.mu.Unlock()
	err := p.ln.Close()
	p.setMu.Lock()
	for _, c := range p.fillers {
		c.Close()
	}
	p.fillers = nil
	p.setMu.Unlock()
	p.Reset()
	p.wg.Wait()
	return err
}

func (p *FaultProxy) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// gate reports what a connection should do with a chunk now: forward it
// after delay, or wait for changed and ask again. done is set once the proxy
// is closed.
func (p *FaultProxy) gate() (pass bool, delay time.Duration, changed <-chan struct{}, done bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fault == Pass, p.delay, p.changed, p.closed
}

// waitPass blocks until the proxy passes traffic (returning the delay to
// apply) or closes, or c closes (ok false).
func (p *FaultProxy) waitPass(c *proxyConn) (time.Duration, bool) {
	for {
		pass, delay, changed, done := p.gate()
		if done {
			return 0, false
		}
		if pass {
			return delay, true
		}
		select {
		case <-changed:
		case <-c.done:
			return 0, false
		}
	}
}

func (p *FaultProxy) acceptLoop() {
	defer p.wg.Done()
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return
		}
		if p.fault == Silent && p.relisten != nil {
			p.acceptIdle = true
			changed := p.changed
			p.mu.Unlock()
			<-changed
			continue
		}
		p.acceptIdle = false
		p.mu.Unlock()
		client, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(time.Millisecond) // a deadline that woke us, or a passing error
			continue
		}
		c := &proxyConn{client: client, done: make(chan struct{})}
		p.mu.Lock()
		if p.fillerAddr[client.RemoteAddr().String()] {
			delete(p.fillerAddr, client.RemoteAddr().String())
			p.mu.Unlock()
			client.Close()
			continue
		}
		if p.closed {
			p.mu.Unlock()
			client.Close()
			return
		}
		p.conns[c] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(1)
		go p.serve(c)
	}
}

// serve connects c to the target once traffic may pass (a blackholed
// connection is accepted and never answered, not even by the target), then
// copies both ways through the gate.
func (p *FaultProxy) serve(c *proxyConn) {
	defer p.wg.Done()
	defer func() {
		c.close()
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
	}()
	if _, ok := p.waitPass(c); !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	upstream, err := (&net.Dialer{}).DialContext(ctx, "tcp", p.target)
	cancel()
	if err != nil {
		return // the client sees the connection close, as with a refused dial
	}
	if !c.setUpstream(upstream) {
		upstream.Close()
		return
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pipe(c, upstream, c.client) }()
	go func() { defer wg.Done(); p.pipe(c, c.client, upstream) }()
	wg.Wait()
}

// pipe copies src to dst chunk by chunk, each chunk held at the gate. When
// src ends, dst's write side is shut (a FIN passes through as a FIN).
func (p *FaultProxy) pipe(c *proxyConn, dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			delay, ok := p.waitPass(c)
			if !ok {
				return
			}
			if delay > 0 {
				t := time.NewTimer(delay)
				select {
				case <-t.C:
				case <-c.done:
					t.Stop()
					return
				}
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				c.close()
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				if _, ok := p.waitPass(c); !ok {
					return
				}
				if tc, ok := dst.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
					return
				}
			}
			c.close()
			return
		}
	}
}

// proxyConn is one client connection and, once made, its upstream.
type proxyConn struct {
	client net.Conn
	done   chan struct{}

	mu       sync.Mutex
	upstream net.Conn
	closed   bool
}

func (c *proxyConn) setUpstream(up net.Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.upstream = up
	return true
}

func (c *proxyConn) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	close(c.done)
	c.client.Close()
	if c.upstream != nil {
		c.upstream.Close()
	}
}
