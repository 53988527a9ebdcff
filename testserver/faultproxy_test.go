package testserver

import (
	"bufio"
	"errors"
	"io"
	"net"
	"runtime"
	"testing"
	"time"
)

// echoServer answers every line it reads with the same line.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// roundTrip writes a line and reads it back within timeout.
func roundTrip(c net.Conn, r *bufio.Reader, line string, timeout time.Duration) error {
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return err
	}
	got, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if got != line+"\n" {
		return errors.New("echo answered " + got)
	}
	return nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestFaultProxy(t *testing.T) {
	p := NewFaultProxy(t, echoServer(t))

	c, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if err := roundTrip(c, r, "before", 5*time.Second); err != nil {
		t.Fatalf("pass: %v", err)
	}

	// Silent: the open connection stalls without an error; the bare client
	// only gets out through its own deadline.
	p.Set(Silent)
	if err := roundTrip(c, r, "during", 300*time.Millisecond); !isTimeout(err) {
		t.Fatalf("silent: round trip = %v, want a timeout", err)
	}
	// New connections: no answer to the SYN on Linux, accepted and never
	// answered elsewhere. Either way a bare client hangs until its deadline.
	start := time.Now()
	c2, err := net.DialTimeout("tcp", p.Addr(), 300*time.Millisecond)
	if runtime.GOOS == "linux" {
		if !isTimeout(err) {
			t.Fatalf("silent: dial = %v after %v, want a dial timeout", err, time.Since(start))
		}
	} else if err == nil {
		c2.Close()
	}

	// Healing lets the stalled connection go on where it stopped: the bytes
	// held during the partition arrive, nothing was reset.
	p.Heal()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if got, err := r.ReadString('\n'); err != nil || got != "during\n" {
		t.Fatalf("after heal: held line = %q, %v", got, err)
	}
	if err := roundTrip(c, r, "after", 5*time.Second); err != nil {
		t.Fatalf("after heal: %v", err)
	}
	c3, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second)
	if err != nil {
		t.Fatalf("after heal: dial: %v", err)
	}
	defer c3.Close()
	if err := roundTrip(c3, bufio.NewReader(c3), "new", 5*time.Second); err != nil {
		t.Fatalf("after heal: new connection: %v", err)
	}
}

func TestFaultProxyBlackhole(t *testing.T) {
	p := NewFaultProxy(t, echoServer(t))
	p.Set(Blackhole)
	// The connection is accepted, and never answered.
	c, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second)
	if err != nil {
		t.Fatalf("blackhole: dial: %v", err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if err := roundTrip(c, r, "x", 300*time.Millisecond); !isTimeout(err) {
		t.Fatalf("blackhole: round trip = %v, want a timeout", err)
	}
	if n := p.Conns(); n != 1 {
		t.Fatalf("Conns = %d, want 1", n)
	}
	p.Heal()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if got, err := r.ReadString('\n'); err != nil || got != "x\n" {
		t.Fatalf("after heal: %q, %v", got, err)
	}
}

func TestFaultProxyDelayAndReset(t *testing.T) {
	p := NewFaultProxy(t, echoServer(t))
	c, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	p.SetDelay(150 * time.Millisecond)
	start := time.Now()
	if err := roundTrip(c, r, "slow", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// Both directions are held: at least two delays for a round trip.
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("delayed round trip took %v, want at least 300ms", d)
	}
	p.SetDelay(0)

	p.Reset()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.ReadString('\n'); err == nil || isTimeout(err) {
		t.Fatalf("after Reset: read = %v, want the connection closed", err)
	}
}

func TestFaultProxyClose(t *testing.T) {
	p, err := StartFaultProxy(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	p.Set(Silent)
	c, _ := net.DialTimeout("tcp", p.Addr(), 100*time.Millisecond)
	done := make(chan error, 1)
	go func() { done <- p.Close() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close hung while Silent")
	}
	if c != nil {
		c.Close()
	}
	if _, err := StartFaultProxy("no-port"); err == nil {
		t.Fatal("StartFaultProxy accepted a target without a port")
	}
}
