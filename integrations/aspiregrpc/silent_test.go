package aspiregrpc_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/peer"

	"github.com/goaspire/goaspire/integrations/aspiregrpc"
	"github.com/goaspire/goaspire/internal/grpctest"
	"github.com/goaspire/goaspire/internal/grpctest/echopb"
	"github.com/goaspire/goaspire/testserver"
)

// attemptPeers records the instance of each attempt of a call: a
// unary interceptor of the caller's, which runs once per attempt, appends
// to the *[]string the call's context carries.
type attemptPeers struct{}

func recordPeers(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	var p peer.Peer
	err := invoker(ctx, method, req, reply, cc, append(opts, grpc.Peer(&p))...)
	if peers, ok := ctx.Value(attemptPeers{}).(*[]string); ok && p.Addr != nil {
		*peers = append(*peers, p.Addr.String())
	}
	return err
}

// TestGRPCClientSilentInstance: one of two instances goes silent (its
// connection stalls with no RST or FIN, new SYNs are not answered) while
// 16 goroutines make unary calls through Client. A call whose attempt is
// caught by the silent instance is cut by the attempt timeout and retried
// on the other one, so none fails and none goes to the silent instance
// twice; the silent instance is ejected after its first timeouts, and
// from then on first attempts do not go to it.
func TestGRPCClientSilentInstance(t *testing.T) {
	healthy := grpctest.Start(t, "healthy", nil)
	silent := grpctest.Start(t, "silent", nil)
	proxy := testserver.NewFaultProxy(t, silent.Addr)
	t.Cleanup(proxy.Heal) // before the proxy closes: stalled calls end
	app := newApp(t, map[string]string{
		"services__echo__grpc__0":                           "http://" + healthy.Addr,
		"services__echo__grpc__1":                           "http://" + proxy.Addr(),
		"Aspire__Resilience__Grpc__AttemptTimeout__Timeout": "00:00:00.4",
		"Aspire__Resilience__Grpc__Retry__Delay":            "00:00:00.01",
		"Aspire__Resilience__Grpc__Retry__MaxDelay":         "00:00:00.05",
	})
	logs := app.Logs
	cc, err := aspiregrpc.Client(context.Background(), app, "echo", func(s *aspiregrpc.ClientSettings) {
		s.DialOptions = append(s.DialOptions, grpc.WithChainUnaryInterceptor(recordPeers))
	})
	if err != nil {
		t.Fatal(err)
	}
	c := echopb.NewEchoClient(cc)
	seen := map[string]bool{}
	for len(seen) < 2 { // both instances connected and answering
		inst, err := getInstance(c)
		if err != nil {
			t.Fatal(err)
		}
		seen[inst] = true
	}

	type result struct {
		start time.Time
		took  time.Duration
		err   error
		peers []string // of the attempts
	}
	var (
		mu      sync.Mutex
		results []result
		stop    atomic.Bool
		wg      sync.WaitGroup
	)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []result
			for !stop.Load() {
				var peers []string
				ctx := context.WithValue(context.Background(), attemptPeers{}, &peers)
				start := time.Now()
				_, err := c.Get(ctx, &echopb.EchoRequest{Message: "hi"})
				mine = append(mine, result{start, time.Since(start), err, peers})
			}
			mu.Lock()
			results = append(results, mine...)
			mu.Unlock()
		}()
	}
	time.Sleep(300 * time.Millisecond) // calls spread over both instances
	silentAt := time.Now()
	proxy.Set(testserver.Silent)
	// The ejection is logged; wait for it, then load for a while longer.
	ejected := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "ejected") && time.Now().Before(ejected) {
		time.Sleep(20 * time.Millisecond)
	}
	ejectedAt := time.Now()
	time.Sleep(2 * time.Second)
	stop.Store(true)
	wg.Wait()

	silentAddr := proxy.Addr()
	var failed, twice, silentAfter, after int
	var worst time.Duration
	var firstErr error
	for _, r := range results {
		if r.err != nil {
			failed++
			if firstErr == nil {
				firstErr = r.err
			}
		}
		worst = max(worst, r.took)
		if n := countOf(r.peers, silentAddr); n > 1 {
			twice++
		}
		if r.start.After(ejectedAt) {
			after++
			if len(r.peers) > 0 && r.peers[0] == silentAddr {
				silentAfter++
			}
		}
	}
	took := make([]time.Duration, len(results))
	for i, r := range results {
		took[i] = r.took
	}
	slices.Sort(took)
	p99 := took[len(took)*99/100]
	success := 100 * float64(len(results)-failed) / float64(len(results))
	t.Logf("%d calls, %.3f%% succeeded, p99 %v, worst %v; ejection seen %v after the partition; after it %d of %d calls went to the silent instance first",
		len(results), success, p99, worst, ejectedAt.Sub(silentAt), silentAfter, after)
	if success < 99.9 {
		t.Errorf("%.3f%% of calls succeeded, want at least 99.9%% (first error: %v)", success, firstErr)
	}
	if twice > 0 {
		t.Errorf("%d calls went to the silent instance more than once, want every retry on the other instance", twice)
	}
	// A call caught by the silent instance ends after its attempt timeout
	// (0.4 s) and a retry, not at the 30 s total timeout; the margin is
	// for a loaded machine.
	if limit := 10 * time.Second; worst > limit {
		t.Errorf("slowest call took %v, want at most %v", worst, limit)
	}
	if !strings.Contains(logs.String(), "ejected") {
		t.Errorf("the silent instance was not ejected within 10 s; logs:\n%s", logs)
	}
	if after == 0 || silentAfter*100 > after {
		t.Errorf("after the ejection %d of %d calls went to the silent instance first, want at most 1%%", silentAfter, after)
	}
}

func countOf(s []string, v string) int {
	n := 0
	for _, x := range s {
		if x == v {
			n++
		}
	}
	return n
}

// TestGRPCClientKeepaliveDetectsSilence: a connection that carries no
// call is pinged (KeepAlivePingPolicy Always), so when its instance goes
// silent the client drops it within KeepAlivePingDelay (10 s, grpc-go's
// minimum) + KeepAlivePingTimeout (shortened to 1 s here) and stops
// picking the instance, without a call having to time out first. The
// server is an App's own gRPC server, whose policy accepts the pings.
func TestGRPCClientKeepaliveDetectsSilence(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a 10 s keepalive ping")
	}
	t.Parallel()
	port := freePort(t)
	server := newApp(t, map[string]string{"Aspire__ServiceDefaults__Grpc__Port": port})
	serveGRPC(t, server, "server")
	proxy := testserver.NewFaultProxy(t, "127.0.0.1:"+port)
	t.Cleanup(proxy.Heal)
	client := newApp(t, map[string]string{
		"services__echo__grpc__0": "http://" + proxy.Addr(),
		"Aspire__ServiceDefaults__GrpcClients__echo__KeepAlivePingTimeout": "00:00:01",
	})
	cc, err := aspiregrpc.Client(context.Background(), client, "echo")
	if err != nil {
		t.Fatal(err)
	}
	// Serve opens the gRPC port in its own goroutine: wait for it.
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	if _, err := echopb.NewEchoClient(cc).Get(wctx, &echopb.EchoRequest{}, grpc.WaitForReady(true)); err != nil {
		t.Fatal(err)
	}
	// A call has gone through; the balancer may still report another
	// state for a moment (seen on a loaded machine): wait for READY.
	for s := cc.GetState(); s != connectivity.Ready; s = cc.GetState() {
		if !cc.WaitForStateChange(wctx, s) {
			t.Fatalf("state after a call = %v, want READY", s)
		}
	}
	silentAt := time.Now()
	proxy.Set(testserver.Silent)
	// 10 s + 1 s, and a generous margin for a loaded machine: without
	// the pings the connection would stay READY for good.
	limit := 30 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	for s := cc.GetState(); s == connectivity.Ready; s = cc.GetState() {
		if !cc.WaitForStateChange(ctx, s) {
			t.Fatalf("the silent connection was still READY %v after the partition", limit)
		}
	}
	t.Logf("silent connection dropped %v after the partition (state %v)", time.Since(silentAt), cc.GetState())
}
