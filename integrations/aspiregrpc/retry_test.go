package aspiregrpc_test

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/goaspire/goaspire/internal/grpctest/echopb"
)

// step is how a scriptedEcho answers one call.
type step struct {
	code     codes.Code // the status answered; OK answers the request's message
	pushback string     // sent as grpc-retry-pushback-ms when not empty
	headers  bool       // send the response headers before failing
	hang     bool       // wait for the call's end instead of answering
}

// scriptedCall is what a scriptedEcho saw of one call.
type scriptedCall struct {
	at       time.Time
	deadline time.Time // zero when the call came without one
}

// scriptedEcho answers the calls of Get (no side effects) and Post (side
// effects) with the steps of its script in turn, then with OK.
type scriptedEcho struct {
	echopb.UnimplementedEchoServer
	mu     sync.Mutex
	script []step
	calls  []scriptedCall
}

func (e *scriptedEcho) answer(ctx context.Context, req *echopb.EchoRequest) (*echopb.EchoReply, error) {
	e.mu.Lock()
	c := scriptedCall{at: time.Now()}
	c.deadline, _ = ctx.Deadline()
	s := step{}
	if n := len(e.calls); n < len(e.script) {
		s = e.script[n]
	}
	e.calls = append(e.calls, c)
	e.mu.Unlock()
	if s.hang {
		<-ctx.Done()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	if s.headers {
		if err := grpc.SendHeader(ctx, metadata.Pairs("x-step", "headers")); err != nil {
			return nil, err
		}
	}
	if s.pushback != "" {
		_ = grpc.SetTrailer(ctx, metadata.Pairs("grpc-retry-pushback-ms", s.pushback))
	}
	if s.code != codes.OK {
		return nil, status.Error(s.code, "scripted failure")
	}
	return &echopb.EchoReply{Message: req.GetMessage(), Instance: "scripted"}, nil
}

func (e *scriptedEcho) Get(ctx context.Context, req *echopb.EchoRequest) (*echopb.EchoReply, error) {
	return e.answer(ctx, req)
}

func (e *scriptedEcho) Post(ctx context.Context, req *echopb.EchoRequest) (*echopb.EchoReply, error) {
	return e.answer(ctx, req)
}

func (e *scriptedEcho) seen() []scriptedCall {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]scriptedCall(nil), e.calls...)
}

// startScripted serves a scriptedEcho on a free loopback port.
func startScripted(t *testing.T, script ...step) (*scriptedEcho, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &scriptedEcho{script: script}
	gs := grpc.NewServer()
	echopb.RegisterEchoServer(gs, e)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	return e, ln.Addr().String()
}

// TestGRPCClientRetryRules: what Client retries, on a server
// answering each call as scripted: RESOURCE_EXHAUSTED only with the
// server's pushback and after it, UNAVAILABLE on idempotent methods even
// after response headers, attempts cut by the attempt timeout, and more
// retries than grpc's own policy allows.
func TestGRPCClientRetryRules(t *testing.T) {
	unavailable := step{code: codes.Unavailable}
	tests := []struct {
		name      string
		env       map[string]string
		post      bool // call Post (side effects) instead of Get
		script    []step
		wantCode  codes.Code
		wantCalls int
		// wantGap is the least time between the first two calls (the
		// server's pushback).
		wantGap time.Duration
	}{
		{name: "RESOURCE_EXHAUSTED without pushback is not retried",
			script: []step{{code: codes.ResourceExhausted}}, wantCode: codes.ResourceExhausted, wantCalls: 1},
		{name: "RESOURCE_EXHAUSTED with pushback is retried after it, once per pushback",
			script:   []step{{code: codes.ResourceExhausted, pushback: "150"}, {code: codes.ResourceExhausted}},
			wantCode: codes.ResourceExhausted, wantCalls: 2, wantGap: 150 * time.Millisecond},
		{name: "RESOURCE_EXHAUSTED with pushback then OK",
			script:   []step{{code: codes.ResourceExhausted, pushback: "30"}},
			wantCode: codes.OK, wantCalls: 2, wantGap: 30 * time.Millisecond},
		{name: "malformed pushback stops",
			script: []step{{code: codes.ResourceExhausted, pushback: "soon"}}, wantCode: codes.ResourceExhausted, wantCalls: 1},
		{name: "negative pushback stops UNAVAILABLE too",
			script: []step{{code: codes.Unavailable, pushback: "-1"}}, wantCode: codes.Unavailable, wantCalls: 1},
		{name: "UNAVAILABLE after response headers on a method without side effects",
			script: []step{{code: codes.Unavailable, headers: true}}, wantCode: codes.OK, wantCalls: 2},
		{name: "UNAVAILABLE on a method with side effects is sent once", post: true,
			script: []step{unavailable}, wantCode: codes.Unavailable, wantCalls: 1},
		{name: "more retries than grpc's policy allows",
			env:    map[string]string{"Aspire__Resilience__Grpc__Retry__MaxRetryAttempts": "6"},
			script: []step{unavailable, unavailable, unavailable, unavailable, unavailable, unavailable}, wantCode: codes.OK, wantCalls: 7},
		{name: "a hanging attempt is cut by the attempt timeout and retried",
			env:    map[string]string{"Aspire__Resilience__Grpc__AttemptTimeout__Timeout": "00:00:00.2"},
			script: []step{{hang: true}}, wantCode: codes.OK, wantCalls: 2},
		{name: "a hanging attempt of a method with side effects is not cut by the attempt timeout", post: true,
			env:    map[string]string{"Aspire__Resilience__Grpc__AttemptTimeout__Timeout": "00:00:00.05", "Aspire__Resilience__Grpc__TotalRequestTimeout__Timeout": "00:00:00.3"},
			script: []step{{hang: true}}, wantCode: codes.DeadlineExceeded, wantCalls: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, addr := startScripted(t, tt.script...)
			env := with(fastRetries, "services__echo__grpc__0", "http://"+addr)
			for k, v := range tt.env {
				env[k] = v
			}
			app := newApp(t, env)
			c := echoClient(t, app, "echo")
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			call := c.Get
			if tt.post {
				call = c.Post
			}
			_, err := call(ctx, &echopb.EchoRequest{Message: "hi"})
			if got := status.Code(err); got != tt.wantCode {
				t.Errorf("code = %v (%v), want %v", got, err, tt.wantCode)
			}
			calls := e.seen()
			if len(calls) != tt.wantCalls {
				t.Fatalf("server got %d calls, want %d", len(calls), tt.wantCalls)
			}
			if tt.wantGap > 0 {
				if gap := calls[1].at.Sub(calls[0].at); gap < tt.wantGap {
					t.Errorf("second call %v after the first, want at least %v", gap, tt.wantGap)
				}
			}
		})
	}
}

// TestGRPCClientDeadlines: TotalRequestTimeout:Timeout bounds a call
// across its attempts and delays, and a caller's earlier deadline wins
// (reaching the server as the call's deadline).
func TestGRPCClientDeadlines(t *testing.T) {
	hang := step{hang: true}
	t.Run("total timeout across attempts", func(t *testing.T) {
		e, addr := startScripted(t, hang, hang, hang, hang, hang, hang)
		app := newApp(t, with(fastRetries, "services__echo__grpc__0", "http://"+addr,
			"Aspire__Resilience__Grpc__Retry__MaxRetryAttempts", "10",
			"Aspire__Resilience__Grpc__AttemptTimeout__Timeout", "00:00:00.2",
			"Aspire__Resilience__Grpc__Clients__echo__TotalRequestTimeout__Timeout", "00:00:01"))
		c := echoClient(t, app, "echo")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := c.Get(ctx, &echopb.EchoRequest{})
		// The call ends with the total timeout, or with the last attempt's
		// timeout when no further attempt fits in it.
		if status.Code(err) != codes.DeadlineExceeded || !strings.Contains(err.Error(), "Timeout:Timeout)") {
			t.Fatalf("call = %v, want DEADLINE_EXCEEDED naming a timeout's key", err)
		}
		// 11 attempts of 0.2 s do not fit in 1 s.
		if n := len(e.seen()); n < 2 || n > 5 {
			t.Fatalf("server got %d calls, want 2 to 5 (attempts of 0.2 s within 1 s)", n)
		}
	})
	t.Run("a side-effecting call is bounded by the total timeout", func(t *testing.T) {
		e, addr := startScripted(t, hang)
		app := newApp(t, map[string]string{"services__echo__grpc__0": "http://" + addr,
			"Aspire__Resilience__Grpc__TotalRequestTimeout__Timeout": "00:00:00.2"})
		c := echoClient(t, app, "echo")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := c.Post(ctx, &echopb.EchoRequest{})
		if status.Code(err) != codes.DeadlineExceeded || !strings.Contains(err.Error(), "Aspire:Resilience:Grpc:TotalRequestTimeout:Timeout") {
			t.Fatalf("call = %v, want DEADLINE_EXCEEDED naming the total timeout's key", err)
		}
		if n := len(e.seen()); n != 1 {
			t.Fatalf("server got %d calls, want 1", n)
		}
	})
	t.Run("the caller's earlier deadline wins", func(t *testing.T) {
		e, addr := startScripted(t, hang)
		app := newApp(t, map[string]string{"services__echo__grpc__0": "http://" + addr})
		c := echoClient(t, app, "echo")
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		want, _ := ctx.Deadline()
		_, err := c.Get(ctx, &echopb.EchoRequest{})
		if status.Code(err) != codes.DeadlineExceeded || strings.Contains(err.Error(), "Aspire:") {
			t.Fatalf("call = %v, want the caller's DEADLINE_EXCEEDED", err)
		}
		calls := e.seen()
		if len(calls) != 1 {
			t.Fatalf("server got %d calls, want 1", len(calls))
		}
		// The server's deadline is the caller's plus the transit time
		// (grpc-timeout is relative), far from the 10 s attempt timeout.
		if d := calls[0].deadline; d.IsZero() || d.After(want.Add(5*time.Second)) {
			t.Fatalf("server saw deadline %v, want about the caller's %v", d, want)
		}
	})
}
