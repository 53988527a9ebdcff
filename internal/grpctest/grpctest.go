// Package grpctest is the Echo test service of goaspire's gRPC tests, and
// helpers that run it on free loopback ports.
package grpctest

import (
	"context"
	"crypto/tls"
	"net"
	"strconv"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/goaspire/goaspire/internal/grpctest/echopb"
)

// Echo answers every call with the request's message and its Instance.
// A request's Fail makes it answer that status code instead (with
// Pushback as grpc-retry-pushback-ms when set), FailTimes times, or every
// time when FailTimes is 0; Panic makes it panic.
type Echo struct {
	echopb.UnimplementedEchoServer
	// Instance names the server in replies.
	Instance string
	// FailTimes bounds how many calls a request's Fail applies to; 0
	// means every call.
	FailTimes int64
	// Calls counts the calls received, by method.
	Calls  [4]atomic.Int64 // Get, Put, Post, Watch
	failed atomic.Int64
}

func (e *Echo) answer(ctx context.Context, i int, req *echopb.EchoRequest) (*echopb.EchoReply, error) {
	e.Calls[i].Add(1)
	if req.GetPanic() {
		panic("echo: asked to panic")
	}
	if req.GetFail() != 0 && (e.FailTimes == 0 || e.failed.Add(1) <= e.FailTimes) {
		if ms := req.GetPushbackMs(); ms != 0 {
			_ = grpc.SetTrailer(ctx, metadata.Pairs("grpc-retry-pushback-ms", strconv.Itoa(int(ms))))
		}
		return nil, status.Error(codes.Code(req.GetFail()), "echo: asked to fail")
	}
	return &echopb.EchoReply{Message: req.GetMessage(), Instance: e.Instance}, nil
}

// Get implements echopb.EchoServer.
func (e *Echo) Get(ctx context.Context, req *echopb.EchoRequest) (*echopb.EchoReply, error) {
	return e.answer(ctx, 0, req)
}

// Put implements echopb.EchoServer.
func (e *Echo) Put(ctx context.Context, req *echopb.EchoRequest) (*echopb.EchoReply, error) {
	return e.answer(ctx, 1, req)
}

// Post implements echopb.EchoServer.
func (e *Echo) Post(ctx context.Context, req *echopb.EchoRequest) (*echopb.EchoReply, error) {
	return e.answer(ctx, 2, req)
}

// Watch implements echopb.EchoServer: it sends one reply, then waits for
// the client to go away.
func (e *Echo) Watch(req *echopb.EchoRequest, stream grpc.ServerStreamingServer[echopb.EchoReply]) error {
	rep, err := e.answer(stream.Context(), 3, req)
	if err != nil {
		return err
	}
	if err := stream.Send(rep); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}

// Server is a running Echo server.
type Server struct {
	*grpc.Server
	Echo *Echo
	// Addr is "127.0.0.1:port".
	Addr string
}

// Start serves an Echo named instance on a free loopback port, with TLS
// when cert is not nil, and stops it when the test ends.
func Start(t testing.TB, instance string, cert *tls.Certificate) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var opts []grpc.ServerOption
	if cert != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{*cert}})))
	}
	s := &Server{Server: grpc.NewServer(opts...), Echo: &Echo{Instance: instance}, Addr: ln.Addr().String()}
	echopb.RegisterEchoServer(s.Server, s.Echo)
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	return s
}
