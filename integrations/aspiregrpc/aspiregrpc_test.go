package aspiregrpc_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/integrations/aspiregrpc"
	"github.com/goaspire/goaspire/internal/grpctest"
	"github.com/goaspire/goaspire/internal/grpctest/echopb"
	"github.com/goaspire/goaspire/internal/otlptest"
	"github.com/goaspire/goaspire/servicedefaults"
	"github.com/goaspire/goaspire/servicedefaults/servicedefaultstest"
)

// TestGRPCClientRoundRobinAndFailover: Client spreads calls over
// three instances; when one is killed while calls run, none fails and the
// calls after it go to the two survivors.
func TestGRPCClientRoundRobinAndFailover(t *testing.T) {
	env := with(fastRetries)
	var servers []*grpctest.Server
	for i := 0; i < 3; i++ {
		s := grpctest.Start(t, "echo-"+strconv.Itoa(i), nil)
		servers = append(servers, s)
		env["services__echo__grpc__"+strconv.Itoa(i)] = "http://" + s.Addr
	}
	app := newApp(t, env)
	c := echoClient(t, app, "echo")

	seen := map[string]int{}
	for len(seen) < 3 {
		inst, err := getInstance(c)
		if err != nil {
			t.Fatal(err)
		}
		seen[inst]++
	}
	clear(seen)
	for i := 0; i < 30; i++ {
		inst, err := getInstance(c)
		if err != nil {
			t.Fatal(err)
		}
		seen[inst]++
	}
	for i := 0; i < 3; i++ {
		if n := seen["echo-"+strconv.Itoa(i)]; n != 10 {
			t.Fatalf("echo-%d got %d of 30 calls, want 10 (%v)", i, n, seen)
		}
	}

	// Calls run from 4 goroutines; echo-1 is killed in the middle. Stop
	// cuts the calls it is answering, some after their reply headers or
	// message left: the client retries those too (grpc's own retry policy
	// would not, and under load such a call failed now and then).
	var (
		failed atomic.Int64
		mu     sync.Mutex
		after  = map[string]int{}
		killed atomic.Bool
		wg     sync.WaitGroup
	)
	stop := make(chan struct{})
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				wasKilled := killed.Load()
				inst, err := getInstance(c)
				if err != nil {
					failed.Add(1)
					t.Errorf("call failed: %v", err)
					continue
				}
				if wasKilled {
					mu.Lock()
					after[inst]++
					mu.Unlock()
				}
			}
		}()
	}
	for servers[1].Echo.Calls[0].Load() < 50 {
		time.Sleep(time.Millisecond)
	}
	servers[1].Stop()
	killed.Store(true)
	for servers[0].Echo.Calls[0].Load()+servers[2].Echo.Calls[0].Load() < 400 {
		time.Sleep(time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d calls failed", n)
	}
	if after["echo-1"] != 0 || after["echo-0"] == 0 || after["echo-2"] == 0 {
		t.Fatalf("calls after the kill went to %v, want only echo-0 and echo-2", after)
	}
}

// TestGRPCClientRetries: what Client retries.
func TestGRPCClientRetries(t *testing.T) {
	const (
		get = iota
		put
		post
	)
	tests := []struct {
		name      string
		env       map[string]string
		method    int
		fail      codes.Code
		pushback  int32
		failTimes int64
		wantCode  codes.Code
		wantCalls int64
	}{
		{name: "UNAVAILABLE on a method without side effects", method: get, fail: codes.Unavailable, failTimes: 2, wantCode: codes.OK, wantCalls: 3},
		{name: "UNAVAILABLE on an idempotent method", method: put, fail: codes.Unavailable, failTimes: 1, wantCode: codes.OK, wantCalls: 2},
		{name: "a method with side effects is sent once", method: post, fail: codes.Unavailable, failTimes: 1, wantCode: codes.Unavailable, wantCalls: 1},
		{name: "RESOURCE_EXHAUSTED with pushback", method: get, fail: codes.ResourceExhausted, pushback: 20, failTimes: 1, wantCode: codes.OK, wantCalls: 2},
		{name: "negative pushback stops retries", method: get, fail: codes.ResourceExhausted, pushback: -1, failTimes: 1, wantCode: codes.ResourceExhausted, wantCalls: 1},
		{name: "INTERNAL is not retried", method: get, fail: codes.Internal, failTimes: 1, wantCode: codes.Internal, wantCalls: 1},
		{name: "up to MaxRetryAttempts", env: map[string]string{"Aspire__Resilience__Grpc__Clients__echo__Retry__MaxRetryAttempts": "1"},
			method: get, fail: codes.Unavailable, failTimes: 5, wantCode: codes.Unavailable, wantCalls: 2},
		{name: "default: 3 retries", method: get, fail: codes.Unavailable, failTimes: 10, wantCode: codes.Unavailable, wantCalls: 4},
		{name: "Resilience None", env: map[string]string{"Aspire__ServiceDefaults__GrpcClients__echo__Resilience": "None"},
			method: get, fail: codes.Unavailable, failTimes: 1, wantCode: codes.Unavailable, wantCalls: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := grpctest.Start(t, "echo", nil)
			s.Echo.FailTimes = tt.failTimes
			env := with(fastRetries, "services__echo__grpc__0", "http://"+s.Addr)
			for k, v := range tt.env {
				env[k] = v
			}
			app := newApp(t, env)
			c := echoClient(t, app, "echo")
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			req := &echopb.EchoRequest{Fail: int32(tt.fail), PushbackMs: tt.pushback}
			var err error
			switch tt.method {
			case get:
				_, err = c.Get(ctx, req)
			case put:
				_, err = c.Put(ctx, req)
			case post:
				_, err = c.Post(ctx, req)
			}
			if got := status.Code(err); got != tt.wantCode {
				t.Errorf("code = %v (%v), want %v", got, err, tt.wantCode)
			}
			if got := s.Echo.Calls[tt.method].Load(); got != tt.wantCalls {
				t.Errorf("server got %d calls, want %d", got, tt.wantCalls)
			}
		})
	}
}

func TestGRPCClientConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		key  string
	}{
		{"bad endpoint", map[string]string{"USERS_GRPC": "http://a b"}, "USERS_GRPC"},
		{"bad retry count", map[string]string{"Aspire__Resilience__Grpc__Retry__MaxRetryAttempts": "many"}, "Aspire:Resilience:Grpc:Retry:MaxRetryAttempts"},
		{"bad client timeout", map[string]string{"Aspire__Resilience__Grpc__Clients__users__TotalRequestTimeout__Timeout": "soon"}, "Aspire:Resilience:Grpc:Clients:users:TotalRequestTimeout:Timeout"},
		{"negative delay", map[string]string{"Aspire__Resilience__Grpc__Clients__users__Retry__Delay": "-00:00:01"}, "Aspire:Resilience:Grpc:Clients:users:Retry:Delay"},
		{"zero timeout", map[string]string{"Aspire__Resilience__Grpc__TotalRequestTimeout__Timeout": "0s"}, "Aspire:Resilience:Grpc:TotalRequestTimeout:Timeout"},
		{"zero attempt timeout", map[string]string{"Aspire__Resilience__Grpc__Clients__users__AttemptTimeout__Timeout": "0s"}, "Aspire:Resilience:Grpc:Clients:users:AttemptTimeout:Timeout"},
		{"bad handler", map[string]string{"Aspire__ServiceDefaults__GrpcClients__users__Resilience": "Hedging"}, "Aspire:ServiceDefaults:GrpcClients:users:Resilience"},
		{"bad keepalive", map[string]string{"Aspire__ServiceDefaults__GrpcClients__users__KeepAlivePingDelay": "often"}, "Aspire:ServiceDefaults:GrpcClients:users:KeepAlivePingDelay"},
		{"bad ejection", map[string]string{"Aspire__Resilience__Grpc__OutlierDetection__ConsecutiveFailures": "0"}, "Aspire:Resilience:Grpc:OutlierDetection:ConsecutiveFailures"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app := newApp(t, tt.env)
			_, err := aspiregrpc.Client(context.Background(), app, "users")
			if err == nil || !strings.Contains(err.Error(), tt.key) {
				t.Fatalf("Client error = %v, want one naming %s", err, tt.key)
			}
		})
	}
}

// TestGRPCClientSharedByName: one connection per name, made once: the
// configure functions of a later call are not run.
func TestGRPCClientSharedByName(t *testing.T) {
	app := newApp(t, nil)
	configured := 0
	count := func(*aspiregrpc.ClientSettings) { configured++ }
	a, err := aspiregrpc.Client(context.Background(), app, "users", count)
	if err != nil {
		t.Fatal(err)
	}
	b, err := aspiregrpc.Client(context.Background(), app, "users", count)
	if err != nil || b != a {
		t.Fatalf("second Client = %p, %v; want the first %p", b, err, a)
	}
	if configured != 1 {
		t.Fatalf("configure ran %d times, want 1", configured)
	}
	if c, err := aspiregrpc.Client(context.Background(), app, "orders"); err != nil || c == a {
		t.Fatalf("Client(orders) = %p, %v; want another connection than users' %p", c, err, a)
	}
}

// TestGRPCClientTLS: an https endpoint is reached over TLS trusting the
// developer certificate of SSL_CERT_FILE, as App.HTTPClient does.
func TestGRPCClientTLS(t *testing.T) {
	cert, certPEM := otlptest.NewCertificate(t)
	file := filepath.Join(t.TempDir(), "dev.pem")
	if err := os.WriteFile(file, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	s := grpctest.Start(t, "secure", &cert)
	_, port, _ := net.SplitHostPort(s.Addr)
	endpoint := "https://localhost:" + port
	tests := []struct {
		name    string
		env     map[string]string
		wantErr bool
	}{
		{"SSL_CERT_FILE", map[string]string{"SSL_CERT_FILE": file, "services__echo__grpc__0": endpoint}, false},
		{"SSL_CERT_DIR", map[string]string{"SSL_CERT_DIR": filepath.Dir(file), "USERS_GRPC": endpoint}, false},
		{"untrusted", map[string]string{"services__echo__grpc__0": endpoint}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app := newApp(t, tt.env)
			name := "echo"
			if _, ok := tt.env["USERS_GRPC"]; ok {
				name = "users"
			}
			inst, err := getInstance(echoClient(t, app, name))
			if tt.wantErr {
				if err == nil {
					t.Fatal("an untrusted certificate was accepted")
				}
				return
			}
			if err != nil || inst != "secure" {
				t.Fatalf("call = %q, %v", inst, err)
			}
		})
	}
}

// TestGRPCClientHealthCheck: the client's check turns Degraded when no
// instance can be reached.
func TestGRPCClientHealthCheck(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	app := newApp(t, map[string]string{"services__echo__grpc__0": "http://" + dead})
	if _, err := aspiregrpc.Client(context.Background(), app, "echo"); err != nil {
		t.Fatal(err)
	}
	entry := func() health.Entry {
		for _, e := range app.Health().Run(context.Background(), nil).Entries {
			if e.Name == "grpc:echo" {
				return e
			}
		}
		t.Fatal("no grpc:echo check registered")
		return health.Entry{}
	}
	otlptest.Wait(t, 20*time.Second, "grpc:echo Degraded", func() bool { return entry().Status == health.Degraded })
}

// TestGRPCServerListeners: Run serves the App's gRPC server (Server) on
// the HTTP port through h2c (HTTP still answering there), or on its own
// port when GRPC_PORT or Aspire:ServiceDefaults:Grpc:Port names one.
func TestGRPCServerListeners(t *testing.T) {
	tests := []struct {
		name    string
		portKey string
	}{
		{"shared HTTP port", ""},
		{"GRPC_PORT", "GRPC_PORT"},
		{"configured port", "Aspire__ServiceDefaults__Grpc__Port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{}
			port := ""
			if tt.portKey != "" {
				port = freePort(t)
				env[tt.portKey] = port
			}
			app := newApp(t, env)
			httpAddr, _ := serveGRPC(t, app, "server")
			grpcAddr := httpAddr
			if port != "" {
				grpcAddr = "127.0.0.1:" + port
			}
			// Serve opens the gRPC port in its own goroutine: the first
			// calls may find it closed.
			c := echopb.NewEchoClient(plainClient(t, grpcAddr))
			var inst string
			var err error
			waitFor(t, "a gRPC call on "+grpcAddr, func() bool {
				inst, err = getInstance(c)
				return status.Code(err) != codes.Unavailable
			})
			if err != nil || inst != "server" {
				t.Fatalf("gRPC call on %s = %q, %v", grpcAddr, inst, err)
			}
			if code, body := get(t, "http://"+httpAddr+"/health"); code != 200 || body != "Healthy" {
				t.Fatalf("GET /health = %d %q", code, body)
			}
		})
	}
}

func TestGRPCPortErrors(t *testing.T) {
	for _, key := range []string{"GRPC_PORT", "Aspire:ServiceDefaults:Grpc:Port"} {
		app := newApp(t, map[string]string{key: "http"})
		_, err := aspiregrpc.Server(app.App)
		var ke *discovery.KeyError
		if !errors.As(err, &ke) || ke.Key != key {
			t.Fatalf("Server error = %v, want a KeyError naming %s", err, key)
		}
	}
}

// TestGRPCHealth: grpc.health.v1 follows the App's health registry, and
// turns NOT_SERVING (ending Watch streams) once shutdown begins.
func TestGRPCHealth(t *testing.T) {
	app := newApp(t, map[string]string{"Aspire:ServiceDefaults:HealthChecks:CacheDuration": "0"})
	var sick atomic.Bool
	if err := app.Health().Register(health.Check{Name: "dependency", Check: func(context.Context) error {
		if sick.Load() {
			return errors.New("down")
		}
		return nil
	}}); err != nil {
		t.Fatal(err)
	}
	addr, _ := serveGRPC(t, app, "server")
	hc := healthpb.NewHealthClient(plainClient(t, addr))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	check := func(service string) (healthpb.HealthCheckResponse_ServingStatus, codes.Code) {
		rep, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
		return rep.GetStatus(), status.Code(err)
	}
	if s, c := check(""); s != healthpb.HealthCheckResponse_SERVING || c != codes.OK {
		t.Fatalf("Check = %v %v, want SERVING", s, c)
	}
	if s, c := check("goaspire.test.v1.Echo"); s != healthpb.HealthCheckResponse_SERVING || c != codes.OK {
		t.Fatalf("Check(Echo) = %v %v, want SERVING", s, c)
	}
	if _, c := check("no.such.Service"); c != codes.NotFound {
		t.Fatalf("Check(unknown) code = %v, want NotFound", c)
	}
	sick.Store(true)
	if s, _ := check(""); s != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("Check with an Unhealthy check = %v, want NOT_SERVING", s)
	}
	sick.Store(false)

	w, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := w.Recv(); err != nil || rep.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Watch first = %v, %v; want SERVING", rep, err)
	}
	shutdown := make(chan error, 1)
	go func() { shutdown <- app.Shutdown(context.Background()) }()
	if rep, err := w.Recv(); err != nil || rep.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("Watch at shutdown = %v, %v; want NOT_SERVING", rep, err)
	}
	if _, err := w.Recv(); err != io.EOF {
		t.Fatalf("Watch after NOT_SERVING = %v, want the stream to end", err)
	}
	if err := <-shutdown; err != nil {
		t.Fatal(err)
	}
}

// TestGRPCHealthCached: outside Development a run of the checks is reused
// for the cache duration, as /health does.
func TestGRPCHealthCached(t *testing.T) {
	app := newApp(t, map[string]string{"Aspire:ServiceDefaults:HealthChecks:CacheDuration": "1h"})
	var sick atomic.Bool
	if err := app.Health().Register(health.Check{Name: "dependency", Check: func(context.Context) error {
		if sick.Load() {
			return errors.New("down")
		}
		return nil
	}}); err != nil {
		t.Fatal(err)
	}
	addr, _ := serveGRPC(t, app, "server")
	hc := healthpb.NewHealthClient(plainClient(t, addr))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i, want := range []healthpb.HealthCheckResponse_ServingStatus{healthpb.HealthCheckResponse_SERVING, healthpb.HealthCheckResponse_SERVING} {
		rep, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil || rep.GetStatus() != want {
			t.Fatalf("Check %d = %v, %v; want %v", i, rep.GetStatus(), err, want)
		}
		sick.Store(true) // not seen by the second Check: the first run is reused
	}
}

// TestGRPCDrainsInFlightCalls: a call in flight when shutdown begins
// finishes, on the shared and on its own port.
func TestGRPCDrainsInFlightCalls(t *testing.T) {
	for _, own := range []bool{false, true} {
		t.Run("own port "+strconv.FormatBool(own), func(t *testing.T) {
			env := map[string]string{}
			port := ""
			if own {
				port = freePort(t)
				env["GRPC_PORT"] = port
			}
			app := newApp(t, env)
			addr, _ := serveGRPC(t, app, "server")
			if own {
				addr = "127.0.0.1:" + port
			}
			c := echopb.NewEchoClient(plainClient(t, addr))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			// Serve opens the gRPC port in its own goroutine: wait for it.
			w, err := c.Watch(ctx, &echopb.EchoRequest{}, grpc.WaitForReady(true))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Recv(); err != nil {
				t.Fatal(err)
			}
			shutdown := make(chan error, 1)
			go func() { shutdown <- app.Shutdown(context.Background()) }()
			select {
			case err := <-shutdown:
				t.Fatalf("Shutdown returned (%v) while a call was in flight", err)
			case <-time.After(200 * time.Millisecond):
			}
			cancel() // the call ends: the drain completes
			if err := <-shutdown; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestGRPCTelemetry: client and server spans reach the OTLP receiver in
// one trace, with rpc.system "grpc" and the other attributes the Aspire
// dashboard reads (rpc.service, and rpc.method without the service); a handler panic answers Internal, marks the server span
// as an error and is logged with its stack and trace id.
func TestGRPCTelemetry(t *testing.T) {
	rcv := otlptest.Start(t)
	common := with(slowExport, "OTEL_EXPORTER_OTLP_ENDPOINT", rcv.GRPCEndpoint, "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
	server := newApp(t, with(common, "OTEL_SERVICE_NAME", "users"))
	serverLogs := server.Logs
	addr, _ := serveGRPC(t, server, "users-0")
	client := newApp(t, with(common, "OTEL_SERVICE_NAME", "gateway", "services__echo__grpc__0", "http://"+addr))
	c := echoClient(t, client, "echo")

	if _, err := getInstance(c); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.Post(ctx, &echopb.EchoRequest{Panic: true})
	if status.Code(err) != codes.Internal {
		t.Fatalf("panicking call = %v, want Internal", err)
	}
	if _, err := getInstance(c); err != nil {
		t.Fatalf("the server did not survive the panic: %v", err)
	}
	for _, app := range []*servicedefaultstest.App{client, server} {
		if err := app.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
	}

	find := func(name string, kind tracepb.Span_SpanKind) []otlptest.Span {
		var out []otlptest.Span
		for _, s := range rcv.Spans() {
			if s.Span.Name == name && s.Span.Kind == kind {
				out = append(out, s)
			}
		}
		return out
	}
	gets := find("goaspire.test.v1.Echo/Get", tracepb.Span_SPAN_KIND_CLIENT)
	serverGets := find("goaspire.test.v1.Echo/Get", tracepb.Span_SPAN_KIND_SERVER)
	if len(gets) != 2 || len(serverGets) != 2 {
		t.Fatalf("got %d client and %d server Get spans, want 2 each; spans: %v", len(gets), len(serverGets), spanNames(rcv))
	}
	for _, s := range append(gets, serverGets...) {
		for key, want := range map[string]string{
			"rpc.system": "grpc", "rpc.system.name": "grpc", "rpc.service": "goaspire.test.v1.Echo",
			// The old conventions' method name alone, which the dashboard
			// shows as "RPC {rpc.service}/{rpc.method}" (otelgrpc sets the
			// fully qualified one).
			"rpc.method": "Get", "rpc.grpc.status_code": "0",
		} {
			if got, _ := otlptest.Attr(s.Span.Attributes, key); got != want {
				t.Errorf("%v span %s = %q, want %q", s.Span.Kind, key, got, want)
			}
		}
	}
	if string(gets[0].Span.TraceId) != string(serverGets[0].Span.TraceId) && string(gets[0].Span.TraceId) != string(serverGets[1].Span.TraceId) {
		t.Error("the client and server spans are not in one trace")
	}
	posts := find("goaspire.test.v1.Echo/Post", tracepb.Span_SPAN_KIND_SERVER)
	if len(posts) != 1 {
		t.Fatalf("got %d server Post spans, want 1", len(posts))
	}
	if posts[0].Span.Status.GetCode() != tracepb.Status_STATUS_CODE_ERROR {
		t.Errorf("panicking call's span status = %v, want Error", posts[0].Span.Status)
	}
	if got, _ := otlptest.Attr(posts[0].Span.Attributes, "rpc.grpc.status_code"); got != "13" {
		t.Errorf("panicking call's rpc.grpc.status_code = %q, want 13", got)
	}
	if len(find("grpc.health.v1.Health/Check", tracepb.Span_SPAN_KIND_SERVER)) != 0 {
		t.Error("health checks were traced")
	}
	logs := serverLogs.String()
	traceID := hexID(posts[0].Span.TraceId)
	for _, want := range []string{"gRPC handler panicked", "echo: asked to panic", "goroutine", traceID} {
		if !strings.Contains(logs, want) {
			t.Errorf("server log lacks %q:\n%s", want, logs)
		}
	}
	if _, ok := rcv.MetricNamed("rpc.client.call.duration"); !ok {
		t.Error("no rpc.client.call.duration metric")
	}
}

// TestGRPCServerRecovers: a panicking unary or streaming handler answers
// Internal and is logged with its stack; the server keeps serving.
func TestGRPCServerRecovers(t *testing.T) {
	app := newApp(t, nil)
	logs := app.Logs
	addr, _ := serveGRPC(t, app, "server")
	c := echopb.NewEchoClient(plainClient(t, addr))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tests := []struct {
		name string
		call func() error
	}{
		{"unary", func() error {
			_, err := c.Get(ctx, &echopb.EchoRequest{Panic: true})
			return err
		}},
		{"stream", func() error {
			w, err := c.Watch(ctx, &echopb.EchoRequest{Panic: true})
			if err != nil {
				return err
			}
			_, err = w.Recv()
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); status.Code(err) != codes.Internal {
				t.Fatalf("panicking call = %v, want Internal", err)
			}
			if _, err := getInstance(c); err != nil {
				t.Fatalf("after the panic: %v", err)
			}
		})
	}
	for _, want := range []string{"goaspire.test.v1.Echo/Get", "goaspire.test.v1.Echo/Watch", "echo: asked to panic", "aspiregrpc/server.go"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
}

// TestGRPCReflection: server reflection is registered in Development only.
func TestGRPCReflection(t *testing.T) {
	for _, env := range []string{"Development", "Production"} {
		t.Run(env, func(t *testing.T) {
			app := newApp(t, map[string]string{"DOTNET_ENVIRONMENT": env})
			_, has := grpcServer(t, app).GetServiceInfo()["grpc.reflection.v1.ServerReflection"]
			if has != (env == "Development") {
				t.Errorf("reflection registered = %v in %s", has, env)
			}
		})
	}
}

// TestGRPCClientClosedByShutdown: Shutdown closes the App's connections.
func TestGRPCClientClosedByShutdown(t *testing.T) {
	app := newApp(t, nil)
	cc, err := aspiregrpc.Client(context.Background(), app, "users")
	if err != nil {
		t.Fatal(err)
	}
	if err := app.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := cc.GetState(); s.String() != "SHUTDOWN" {
		t.Fatalf("state after Shutdown = %v", s)
	}
}

// traceEcho answers Get with the trace id of the call's context.
type traceEcho struct{ echopb.UnimplementedEchoServer }

func (traceEcho) Get(ctx context.Context, _ *echopb.EchoRequest) (*echopb.EchoReply, error) {
	return &echopb.EchoReply{Message: trace.SpanContextFromContext(ctx).TraceID().String()}, nil
}

// TestGRPCPropagatesWithTelemetryOff: with no exporter configured, the
// trace context still flows from a client call to the server's handler.
func TestGRPCPropagatesWithTelemetryOff(t *testing.T) {
	for _, port := range []string{"", "own"} {
		t.Run("grpc port "+port, func(t *testing.T) {
			env := map[string]string{}
			if port != "" {
				port = freePort(t)
				env["GRPC_PORT"] = port
			}
			server := newApp(t, env)
			echopb.RegisterEchoServer(grpcServer(t, server), traceEcho{})
			server.Start()
			addr := strings.TrimPrefix(server.URL, "http://")
			if port != "" {
				addr = "127.0.0.1:" + port
			}
			client := newApp(t, map[string]string{"services__echo__grpc__0": "http://" + addr})
			c := echoClient(t, client, "echo")
			tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
			sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
			ctx := trace.ContextWithRemoteSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
				TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, Remote: true,
			}))
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			// Serve opens the gRPC port in its own goroutine: wait for it.
			rep, err := c.Get(ctx, &echopb.EchoRequest{}, grpc.WaitForReady(true))
			if err != nil {
				t.Fatal(err)
			}
			if rep.GetMessage() != tid.String() {
				t.Fatalf("server saw trace %q, want %s", rep.GetMessage(), tid)
			}
		})
	}
}

// TestGRPCGraceBounded: a call still running when the grace period ends
// is cut off, and Serve says so, on the shared and on its own port.
func TestGRPCGraceBounded(t *testing.T) {
	for _, own := range []bool{false, true} {
		t.Run("own port "+strconv.FormatBool(own), func(t *testing.T) {
			env := map[string]string{}
			port := ""
			if own {
				port = freePort(t)
				env["GRPC_PORT"] = port
			}
			app := newApp(t, env, servicedefaults.WithShutdownTimeout(100*time.Millisecond))
			echopb.RegisterEchoServer(grpcServer(t, app), &grpctest.Echo{})
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			served := make(chan error, 1)
			go func() { served <- app.Serve(context.Background(), ln) }()
			addr := ln.Addr().String()
			if own {
				addr = "127.0.0.1:" + port
			}
			c := echopb.NewEchoClient(plainClient(t, addr))
			w, err := c.Watch(context.Background(), &echopb.EchoRequest{}, grpc.WaitForReady(true))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Recv(); err != nil {
				t.Fatal(err)
			}
			go app.Shutdown(context.Background())
			if err := <-served; err == nil || !strings.Contains(err.Error(), "grace period") {
				t.Fatalf("Serve = %v, want an error about the grace period", err)
			}
			if _, err := w.Recv(); err == nil {
				t.Fatal("the stream outlived the grace period")
			}
		})
	}
}
