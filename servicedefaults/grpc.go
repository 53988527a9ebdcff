package servicedefaults

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	grpccodes "google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/discovery/grpcresolver"
	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/internal/outlier"
	"github.com/goaspire/goaspire/resilience"
)

// Configuration of gRPC clients and servers.
const (
	// SectionGRPCResilience holds the retry and timeout settings of every
	// gRPC client (the keys of resilience.Options: Retry:MaxRetryAttempts,
	// Retry:Delay, Retry:MaxDelay, Retry:BackoffType, Retry:UseJitter,
	// AttemptTimeout:Timeout, TotalRequestTimeout:Timeout);
	// SectionGRPCResilience + ":Clients:{name}" overrides them per client.
	SectionGRPCResilience = "Aspire:Resilience:Grpc"
	// GRPCPortKey names the port the gRPC server gets its own listener on.
	// An AppHost sets it with WithEndpoint(..., env:
	// "Aspire__ServiceDefaults__Grpc__Port"); GRPC_PORT works too.
	GRPCPortKey = "Aspire:ServiceDefaults:Grpc:Port"
)

// grpcHealthService is the full name of the gRPC health service, whose
// calls are neither traced nor measured, as /health and /alive are not.
const grpcHealthService = "grpc.health.v1.Health"

// Keepalive of clients and servers. A client pings a connection that
// carried nothing for KeepAlivePingDelay (10 s, grpc-go's minimum), with
// or without calls open, and drops it when nothing answers within
// KeepAlivePingTimeout (5 s): a silent instance's connection is closed
// within 15 s and the instance is no longer picked. The App's server
// accepts pings every 5 s or more, with or without calls (grpc-go's
// default policy, 5 min and only with calls, answers faster pings with
// GOAWAY ENHANCE_YOUR_CALM "too_many_pings", after which the client
// doubles its delay).
const (
	defaultGRPCKeepAlivePingDelay   = 10 * time.Second
	defaultGRPCKeepAlivePingTimeout = 5 * time.Second
	// grpcMinKeepAlivePingDelay is the shortest delay grpc-go's client
	// allows (it raises shorter ones to it).
	grpcMinKeepAlivePingDelay = 10 * time.Second
)

// grpcServerKeepalive is the App's gRPC server's ping policy: MinTime
// at most half of the shortest client delay, so that a ping that comes a
// little early is no strike.
var grpcServerKeepalive = keepalive.EnforcementPolicy{MinTime: grpcMinKeepAlivePingDelay / 2, PermitWithoutStream: true}

// grpcState is the App's gRPC part: its clients by name and its server.
type grpcState struct {
	mu       sync.Mutex
	builder  *grpcresolver.Builder
	clients  map[string]*grpc.ClientConn
	server   *grpc.Server
	draining chan struct{} // closed when the server starts draining
	drain    sync.Once
}

func (g *grpcState) init() {
	if g.clients == nil {
		g.clients = map[string]*grpc.ClientConn{}
		g.draining = make(chan struct{})
	}
}

// GRPCClient returns a gRPC client connection to the service called name,
// as an Aspire .NET service's AddGrpcClient with service discovery does,
// made on first use and shared afterwards (a second call with options is
// an error: make the connection once and share it). It is closed by
// Shutdown. The connection:
//
//   - resolves name through service discovery (package
//     discovery/grpcresolver): the service's endpoint named "grpc", else
//     its "https" endpoint, else its "http" one, in every form an AppHost
//     writes them (services__users__grpc__0..N, USERS_GRPC, ...); a name
//     nothing is configured for passes through to DNS, port 443;
//   - spreads calls over every instance in turn, as grpc's round_robin
//     policy does, skipping instances whose connection is not ready, and,
//     while another instance is ready, instances the outlier detection
//     ejected and instances the call already tried: a retry goes to
//     another instance. An instance is ejected after
//     OutlierDetection:ConsecutiveFailures (5) attempts in a row that
//     timed out (AttemptTimeout:Timeout, or TotalRequestTimeout:Timeout
//     for calls not retried) or failed UNAVAILABLE without an answer from
//     it (its connection failed or could not be made), for
//     OutlierDetection:BaseEjectionTime (30 s) times the number of its
//     ejections, at most OutlierDetection:MaxEjectionTime (300 s), and
//     never more than OutlierDetection:MaxEjectionPercent (10 %, but
//     always one) of the instances at once; any answer resets its count
//     (Envoy's defaults, and the HTTP clients' keys and rules, see package
//     resilience; OutlierDetection:Enabled false turns it off).
//     An ejection is logged (warning "gRPC instance ejected");
//   - uses TLS for https endpoints (and DNS pass-through), trusting the
//     system roots plus SSL_CERT_FILE / SSL_CERT_DIR as App.HTTPClient
//     does, and plaintext HTTP/2 for http endpoints;
//   - records a client span per attempt with the attributes the Aspire
//     dashboard reads (rpc.system "grpc", rpc.service, rpc.method,
//     rpc.grpc.status_code) and the rpc.client.* metrics, and passes the
//     trace context on (with traces and metrics off, only the
//     propagation);
//   - retries the unary calls of methods whose proto declares
//     idempotency_level NO_SIDE_EFFECTS or IDEMPOTENT, each retry a new
//     call (its own span) that goes to an instance the call has not
//     tried yet when one is ready,
//     when an attempt failed with UNAVAILABLE (even after the server sent
//     response headers), ran out of AttemptTimeout:Timeout (10 s), or
//     failed with RESOURCE_EXHAUSTED while the server sent
//     grpc-retry-pushback-ms (RESOURCE_EXHAUSTED without it is not
//     retried); no other status is. Up to Retry:MaxRetryAttempts times
//     (3), after the delays of the HTTP clients' retries (Retry:Delay 2 s,
//     Retry:BackoffType Exponential with jitter, capped by
//     Retry:MaxDelay), or after the server's grpc-retry-pushback-ms when
//     it sends one (also capped by Retry:MaxDelay; a negative or
//     malformed one stops the retries). A retry whose delay would end
//     past the total timeout or the caller's deadline is not made: the
//     call fails with the last attempt's error;
//   - retries the server-streaming calls of those methods, with grpc's
//     retry policy, on UNAVAILABLE until the first reply arrives
//     (Retry:MaxRetryAttempts times, at most 4, after random delays of up
//     to Retry:Delay doubling on each retry). Other methods are sent
//     once: grpc still transparently retries a call that never reached
//     the server;
//   - bounds every unary call, its attempts and delays together, by
//     TotalRequestTimeout:Timeout (30 s), unless the caller's deadline is
//     earlier. Streams are not bounded. These timeouts are the client's:
//     a call that runs out of them is cancelled and fails with
//     DEADLINE_EXCEEDED naming the key, but they are not sent to the
//     server as the call's deadline (grpc-timeout); the caller's own
//     deadline is;
//   - pings a connection that carried nothing for KeepAlivePingDelay
//     (10 s, grpc-go's minimum: shorter values are raised to it; 0 turns
//     the pings off) and closes it when nothing answers within
//     KeepAlivePingTimeout (5 s), with or without calls open
//     (KeepAlivePingPolicy Always; WithActiveRequests pings only while
//     calls are open): a silent instance's connection is dropped within
//     15 s and the instance is no longer picked until it answers a new
//     connection. The App's gRPC server accepts such pings. A grpc-go
//     server with its default policy (pings at most every 5 min, none
//     without calls) answers them on an idle connection with GOAWAY
//     ENHANCE_YOUR_CALM after three pings; the client then reconnects and
//     doubles its delay. For such a server, set its
//     keepalive.EnforcementPolicy{MinTime: 5 * time.Second,
//     PermitWithoutStream: true}, or set KeepAlivePingDelay to 5 minutes
//     and KeepAlivePingPolicy to WithActiveRequests (then a silent
//     instance is only noticed by attempt timeouts).
//
// The resilience settings (retries, timeouts, OutlierDetection:*) are
// read from SectionGRPCResilience, then
// SectionGRPCResilience:Clients:{name}; the keepalive settings from
// SectionGRPCClients, then SectionGRPCClients:{name};
// Aspire:ServiceDefaults:GrpcClients:{name}:Resilience = None turns
// retries and the timeouts off. The methods are those of the proto files
// linked into the program when the connection is made. opts are applied
// after the App's own, so they can replace any of them (a
// grpc.WithDefaultServiceConfig of the caller's replaces the balancing
// and the streams' retry policy; the unary retries and timeouts are an
// interceptor, and the caller's unary interceptors run once per attempt).
//
// A health check "grpc:{name}", tagged ready, reports Degraded while the
// connection is in TRANSIENT_FAILURE (every instance unreachable), so that
// a callee's outage does not take this service out of rotation.
//
// Errors name the configuration key at fault.
func (a *App) GRPCClient(name string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	a.grpc.mu.Lock()
	defer a.grpc.mu.Unlock()
	a.grpc.init()
	if cc, ok := a.grpc.clients[name]; ok {
		if len(opts) > 0 {
			return nil, fmt.Errorf("servicedefaults: gRPC client %q already made: make it once and share it", name)
		}
		return cc, nil
	}
	if _, err := grpcresolver.Lookup(a.resolver, name); err != nil {
		return nil, fmt.Errorf("servicedefaults: gRPC client %q: %w", name, err)
	}
	sc, unary, err := grpcClientPolicy(a.cfg, name)
	if err != nil {
		return nil, fmt.Errorf("servicedefaults: gRPC client %q: %w", name, err)
	}
	kp, err := grpcKeepalive(a.cfg, name)
	if err != nil {
		return nil, fmt.Errorf("servicedefaults: gRPC client %q: %w", name, err)
	}
	var insts *grpcInstances
	if od := unary.outliers; unary.standard && od.Enabled {
		d := outlier.New(outlier.Config{
			ConsecutiveFailures: od.ConsecutiveFailures,
			BaseEjectionTime:    od.BaseEjectionTime,
			MaxEjectionTime:     od.MaxEjectionTime,
		}, func(addr string, length time.Duration) {
			insts.ejected(addr, length)
			a.logger.Warn("gRPC instance ejected: its attempts time out or its connection fails",
				"client", name, "instance", addr, "duration", length)
		})
		insts = newGRPCInstances(d, od.MaxEjectionPercent)
	} else {
		insts = newGRPCInstances(nil, 0)
	}
	if a.grpc.builder == nil {
		a.grpc.builder = grpcresolver.NewBuilder(a.resolver)
	}
	var tlsCfg *tls.Config
	if pool := a.RootCAs(); pool != nil {
		tlsCfg = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	dopts := []grpc.DialOption{
		grpc.WithResolvers(grpcInstancesResolver{a.grpc.builder, insts}),
		grpc.WithTransportCredentials(grpcresolver.Credentials(tlsCfg)),
		grpc.WithDefaultServiceConfig(sc),
	}
	if kp.Time > 0 {
		dopts = append(dopts, grpc.WithKeepaliveParams(kp))
	}
	if a.tel.tracing || a.tel.metering {
		dopts = append(dopts, grpc.WithStatsHandler(rpcAttributes{otelgrpc.NewClientHandler(a.otelgrpcOptions()...)}))
	} else {
		p := grpcPropagator{a.tel.prop}
		unary.prop = p.prop
		dopts = append(dopts, grpc.WithChainStreamInterceptor(p.streamClient))
	}
	if unary.standard || unary.prop != nil {
		// One interceptor: a chain of several costs grpc a closure per call.
		dopts = append(dopts, grpc.WithChainUnaryInterceptor(unary.intercept))
	}
	cc, err := grpc.NewClient(grpcresolver.Scheme+":///"+name, append(dopts, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("servicedefaults: gRPC client %q: %w", name, err)
	}
	if err := a.registerChecks([]health.Check{grpcHealthCheck(name, cc)}); err != nil {
		cc.Close()
		return nil, fmt.Errorf("servicedefaults: gRPC client %q: %w", name, err)
	}
	a.grpc.clients[name] = cc
	a.OnShutdown(func(context.Context) error { return cc.Close() })
	return cc, nil
}

// grpcHealthCheck reports a client connection in TRANSIENT_FAILURE. An
// idle connection (none made yet, or idle for a while) is healthy and is
// asked to connect, so the next check sees whether it can.
func grpcHealthCheck(name string, cc *grpc.ClientConn) health.Check {
	return health.Check{
		Name:          "grpc:" + name,
		Tags:          []string{health.TagReady},
		FailureStatus: health.Degraded,
		Check: func(context.Context) error {
			switch s := cc.GetState(); s {
			case connectivity.Idle:
				cc.Connect()
			case connectivity.TransientFailure, connectivity.Shutdown:
				return fmt.Errorf("gRPC client %q: connection %s", name, s)
			}
			return nil
		},
	}
}

func (a *App) otelgrpcOptions() []otelgrpc.Option {
	return []otelgrpc.Option{
		otelgrpc.WithTracerProvider(a.tel.tp),
		otelgrpc.WithMeterProvider(a.tel.mp),
		otelgrpc.WithPropagators(a.tel.prop),
		otelgrpc.WithSpanAttributes(attribute.String("rpc.system", "grpc")),
		otelgrpc.WithFilter(func(info *stats.RPCTagInfo) bool {
			return !strings.HasPrefix(info.FullMethodName, "/"+grpcHealthService+"/")
		}),
	}
}

// rpcAttributes adds to otelgrpc's spans, which follow the new RPC
// conventions (rpc.system.name, rpc.method "pkg.Service/Method",
// rpc.response.status_code), the attributes of the older ones that the
// Aspire dashboard reads: rpc.service and rpc.grpc.status_code (rpc.system
// is given to otelgrpc as a span attribute).
type rpcAttributes struct{ stats.Handler }

func (h rpcAttributes) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	ctx = h.Handler.TagRPC(ctx, info)
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		if svc, _, ok := strings.Cut(strings.TrimPrefix(info.FullMethodName, "/"), "/"); ok {
			span.SetAttributes(attribute.String("rpc.service", svc))
		}
	}
	return ctx
}

func (h rpcAttributes) HandleRPC(ctx context.Context, rs stats.RPCStats) {
	if end, ok := rs.(*stats.End); ok {
		if span := trace.SpanFromContext(ctx); span.IsRecording() {
			span.SetAttributes(attribute.Int("rpc.grpc.status_code", int(status.Code(end.Error))))
		}
	}
	h.Handler.HandleRPC(ctx, rs)
}

// grpcPropagator passes the trace context and baggage on with telemetry
// off, without otelgrpc's cost over no-op providers: clients inject them
// into the outgoing metadata, servers extract them.
type grpcPropagator struct{ prop propagation.TextMapPropagator }

func (p grpcPropagator) inject(ctx context.Context) context.Context {
	if !trace.SpanContextFromContext(ctx).IsValid() && baggage.FromContext(ctx).Len() == 0 {
		return ctx
	}
	carrier := propagation.MapCarrier{}
	p.prop.Inject(ctx, carrier)
	kv := make([]string, 0, 2*len(carrier))
	for k, v := range carrier {
		kv = append(kv, k, v)
	}
	return metadata.AppendToOutgoingContext(ctx, kv...)
}

func (p grpcPropagator) streamClient(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return streamer(p.inject(ctx), desc, cc, method, opts...)
}

func (p grpcPropagator) extract(ctx context.Context) context.Context {
	md, _ := metadata.FromIncomingContext(ctx)
	if len(md["traceparent"]) == 0 && len(md["baggage"]) == 0 {
		return ctx
	}
	return p.prop.Extract(ctx, mdCarrier(md))
}

// mdCarrier reads gRPC metadata, whose keys are lower case, as the
// propagators ask for them.
type mdCarrier metadata.MD

func (c mdCarrier) Get(key string) string {
	if v := c[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func (c mdCarrier) Set(key, value string) { c[key] = []string{value} }

func (c mdCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// grpcClientHandler says which retry and timeout policy a client gets:
// Aspire:ServiceDefaults:GrpcClients:{name}:Resilience is Standard (the
// default) or None.
func grpcClientHandler(cfg *discovery.Config, name string) (string, error) {
	key := "Aspire:ServiceDefaults:GrpcClients:" + name + ":Resilience"
	v := strings.TrimSpace(cfg.String(key))
	switch {
	case v == "" || strings.EqualFold(v, handlerStandard):
		return handlerStandard, nil
	case strings.EqualFold(v, handlerNone):
		return handlerNone, nil
	}
	return "", &discovery.KeyError{Key: key, Err: errors.New(`must be "Standard" or "None"`)}
}

// grpcRetryOptions reads the retry and timeout settings of the client
// called name. Only the options gRPC uses are checked (the circuit
// breaker and the rate limiter do not apply), and an error names the key
// in the most specific section that sets it.
func grpcRetryOptions(cfg *discovery.Config, name string) (resilience.Options, error) {
	o := resilience.DefaultOptions()
	sections := []string{SectionGRPCResilience, SectionGRPCResilience + ":Clients:" + name}
	for _, sec := range sections {
		if err := o.ApplyConfig(cfg.Section(sec)); err != nil {
			return o, err
		}
	}
	bad := func(field, reason string) error {
		return &discovery.KeyError{Key: layeredKey(cfg, sections[0], sections[1], field), Err: errors.New(reason)}
	}
	switch {
	case o.TotalRequestTimeout <= 0:
		return o, bad("TotalRequestTimeout:Timeout", "must be positive")
	case o.AttemptTimeout <= 0:
		return o, bad("AttemptTimeout:Timeout", "must be positive")
	case o.Retry.MaxRetryAttempts < 0:
		return o, bad("Retry:MaxRetryAttempts", "must not be negative")
	case o.Retry.Delay < 0:
		return o, bad("Retry:Delay", "must not be negative")
	case o.Retry.MaxDelay < 0:
		return o, bad("Retry:MaxDelay", "must not be negative")
	}
	if od := o.OutlierDetection; od.Enabled {
		switch {
		case od.ConsecutiveFailures < 1:
			return o, bad("OutlierDetection:ConsecutiveFailures", "must be at least 1 (OutlierDetection:Enabled false turns ejection off)")
		case od.BaseEjectionTime <= 0:
			return o, bad("OutlierDetection:BaseEjectionTime", "must be positive")
		case od.MaxEjectionTime < od.BaseEjectionTime:
			return o, bad("OutlierDetection:MaxEjectionTime", "must be at least OutlierDetection:BaseEjectionTime")
		case od.MaxEjectionPercent < 0 || od.MaxEjectionPercent > 100:
			return o, bad("OutlierDetection:MaxEjectionPercent", "must be in [0, 100]")
		}
	}
	return o, nil
}

// grpc's service config, as JSON.
type (
	grpcMethodName struct {
		Service string `json:"service"`
		Method  string `json:"method,omitempty"`
	}
	grpcRetryPolicy struct {
		MaxAttempts          int      `json:"maxAttempts"`
		InitialBackoff       string   `json:"initialBackoff"`
		MaxBackoff           string   `json:"maxBackoff"`
		BackoffMultiplier    float64  `json:"backoffMultiplier"`
		RetryableStatusCodes []string `json:"retryableStatusCodes"`
	}
	grpcMethodConfig struct {
		Name        []grpcMethodName `json:"name"`
		RetryPolicy *grpcRetryPolicy `json:"retryPolicy,omitempty"`
	}
	grpcConfig struct {
		LoadBalancingConfig []map[string]struct{} `json:"loadBalancingConfig"`
		MethodConfig        []grpcMethodConfig    `json:"methodConfig,omitempty"`
	}
)

// grpcMaxAttempts is grpc-go's cap on a retry policy's attempts.
const grpcMaxAttempts = 5

// grpcClientPolicy returns the service config of the client called name
// (round_robin, and grpc's retry policy for the server streams of
// idempotent methods) and its unary interceptor (the timeouts, and the
// retries of the unary idempotent methods).
func grpcClientPolicy(cfg *discovery.Config, name string) (string, *grpcUnary, error) {
	sc := grpcConfig{LoadBalancingConfig: []map[string]struct{}{{grpcBalancerName: {}}}}
	handler, err := grpcClientHandler(cfg, name)
	if err != nil {
		return "", nil, err
	}
	o, err := grpcRetryOptions(cfg, name)
	if err != nil {
		return "", nil, err
	}
	var u *grpcUnary
	if handler == handlerStandard {
		unary, streams := grpcIdempotentMethods()
		if o.Retry.MaxRetryAttempts == 0 {
			unary, streams = nil, nil
		}
		if len(streams) > 0 {
			sc.MethodConfig = []grpcMethodConfig{{Name: streams, RetryPolicy: grpcRetry(o.Retry)}}
		}
		u = newGRPCUnary(cfg, name, o, unary)
	} else {
		u = &grpcUnary{}
	}
	b, err := json.Marshal(sc)
	return string(b), u, err
}

// grpcIdempotentMethods returns the idempotent methods of every
// registered proto file that do not stream requests: the full names of
// the unary ones, and the names of those that stream replies.
func grpcIdempotentMethods() (unary map[string]struct{}, streams []grpcMethodName) {
	unary = map[string]struct{}{}
	protoregistry.GlobalFiles.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		svcs := fd.Services()
		for i := 0; i < svcs.Len(); i++ {
			sd := svcs.Get(i)
			methods := sd.Methods()
			for j := 0; j < methods.Len(); j++ {
				md := methods.Get(j)
				if !idempotent(md) || md.IsStreamingClient() {
					continue
				}
				if md.IsStreamingServer() {
					streams = append(streams, grpcMethodName{Service: string(sd.FullName()), Method: string(md.Name())})
				} else {
					unary["/"+string(sd.FullName())+"/"+string(md.Name())] = struct{}{}
				}
			}
		}
		return true
	})
	return unary, streams
}

func idempotent(md protoreflect.MethodDescriptor) bool {
	opts, _ := md.Options().(*descriptorpb.MethodOptions)
	switch opts.GetIdempotencyLevel() {
	case descriptorpb.MethodOptions_NO_SIDE_EFFECTS, descriptorpb.MethodOptions_IDEMPOTENT:
		return true
	}
	return false
}

// grpcRetry maps the standard pipeline's retry options onto grpc's retry
// policy for server streams, whose delays are always random in
// [0, backoff]. It retries UNAVAILABLE only: grpc's policy cannot retry
// RESOURCE_EXHAUSTED only when the server pushes back.
func grpcRetry(r resilience.RetryOptions) *grpcRetryPolicy {
	attempts := min(r.MaxRetryAttempts+1, grpcMaxAttempts)
	initial := max(r.Delay, time.Millisecond) // grpc wants a positive delay
	mult := 1.0
	maxBackoff := initial
	if r.BackoffType == resilience.BackoffExponential {
		mult = 2
		if maxBackoff = initial << (attempts - 2); maxBackoff < initial { // overflow
			maxBackoff = initial
		}
	}
	if r.MaxDelay > 0 {
		maxBackoff = max(min(maxBackoff, r.MaxDelay), time.Millisecond)
		initial = min(initial, maxBackoff)
	}
	return &grpcRetryPolicy{
		MaxAttempts:          attempts,
		InitialBackoff:       grpcDuration(initial),
		MaxBackoff:           grpcDuration(maxBackoff),
		BackoffMultiplier:    mult,
		RetryableStatusCodes: []string{"UNAVAILABLE"},
	}
}

// grpcDuration formats d as the JSON form of a protobuf Duration.
func grpcDuration(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s"
}

// GRPCServer returns the App's gRPC server, made on first use: register
// services on it before calling App.Run, which serves it (on its own
// port or the HTTP one; see Run) and stops it gracefully. Later calls return
// the same server; options given to a later call are an error logged and
// ignored. The server has:
//
//   - otelgrpc server instrumentation: a server span per call continuing
//     the caller's trace, with the attributes the Aspire dashboard reads
//     (rpc.system "grpc", rpc.service, rpc.method, rpc.grpc.status_code),
//     and the rpc.server.* metrics (with traces and metrics off, only the
//     trace context is extracted); health checks are not traced;
//   - recovery: a handler that panics answers codes.Internal, its span
//     gets status Error, and the panic is logged with its stack and the
//     trace id; the process stays up;
//   - grpc.health.v1 answered from the App's health registry: SERVING
//     while every check is Healthy or Degraded, NOT_SERVING when one is
//     Unhealthy and from the moment shutdown begins (Watch streams get
//     NOT_SERVING and end then); results are reused for
//     Aspire:ServiceDefaults:HealthChecks:CacheDuration, as /health does;
//   - server reflection, in Development only;
//   - keepalive pings accepted every 5 s or more, with or without calls
//     (the App's clients send them every 10 s; see App.GRPCClient). This
//     is the server's own listener's policy: on the HTTP listener Go's
//     HTTP/2 server answers every ping.
//
// opts are applied after the App's own.
func (a *App) GRPCServer(opts ...grpc.ServerOption) *grpc.Server {
	a.grpc.mu.Lock()
	defer a.grpc.mu.Unlock()
	a.grpc.init()
	if a.grpc.server != nil {
		if len(opts) > 0 {
			a.logger.Error("GRPCServer called again with options; they are ignored: the App has one gRPC server")
		}
		return a.grpc.server
	}
	r := grpcRecovery{logger: a.logger}
	sopts := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(r.unary),
		grpc.ChainStreamInterceptor(r.stream),
		grpc.KeepaliveEnforcementPolicy(grpcServerKeepalive),
	}
	if a.tel.tracing || a.tel.metering {
		sopts = append(sopts, grpc.StatsHandler(rpcAttributes{otelgrpc.NewServerHandler(a.otelgrpcOptions()...)}))
	} else {
		p := grpcPropagator{a.tel.prop}
		sopts = append([]grpc.ServerOption{grpc.ChainUnaryInterceptor(p.unaryServer), grpc.ChainStreamInterceptor(p.streamServer)}, sopts...)
	}
	gs := grpc.NewServer(append(sopts, opts...)...)
	hs, _ := readHealthSettings(a.cfg) // validated by Add
	healthpb.RegisterHealthServer(gs, &grpcHealth{app: a, server: gs, cache: hs.cache})
	if a.cfg.IsDevelopment() {
		reflection.Register(gs)
	}
	a.grpc.server = gs
	return gs
}

func (p grpcPropagator) unaryServer(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	return handler(p.extract(ctx), req)
}

func (p grpcPropagator) streamServer(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if ctx := p.extract(ss.Context()); ctx != ss.Context() {
		ss = contextStream{ss, ctx}
	}
	return handler(srv, ss)
}

type contextStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s contextStream) Context() context.Context { return s.ctx }

// grpcRecovery turns a handler's panic into codes.Internal.
type grpcRecovery struct{ logger *slog.Logger }

func (r grpcRecovery) recovered(ctx context.Context, method string, p any, err *error) {
	stack := string(debug.Stack())
	span := trace.SpanFromContext(ctx)
	if span.IsRecording() {
		span.RecordError(fmt.Errorf("panic: %v", p), trace.WithAttributes(attribute.String("exception.stacktrace", stack)))
		span.SetStatus(codes.Error, "panic")
	}
	r.logger.ErrorContext(ctx, "gRPC handler panicked", "rpc.method", strings.TrimPrefix(method, "/"), "panic", fmt.Sprint(p), "stack", stack)
	*err = status.Error(grpccodes.Internal, "internal error")
}

func (r grpcRecovery) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if p := recover(); p != nil {
			resp = nil
			r.recovered(ctx, info.FullMethod, p, &err)
		}
	}()
	return handler(ctx, req)
}

func (r grpcRecovery) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	defer func() {
		if p := recover(); p != nil {
			r.recovered(ss.Context(), info.FullMethod, p, &err)
		}
	}()
	return handler(srv, ss)
}

// grpcHealth serves grpc.health.v1 from the App's health registry.
type grpcHealth struct {
	healthpb.UnimplementedHealthServer
	app    *App
	server *grpc.Server
	// cache is how long a run of the checks is reused, as the HTTP
	// health endpoints do (Aspire:ServiceDefaults:HealthChecks:CacheDuration).
	cache time.Duration

	mu      sync.Mutex
	last    health.Status
	lastRun time.Time
}

// run returns the status of every check, reusing a run younger than the
// cache duration.
func (h *grpcHealth) run(ctx context.Context) health.Status {
	if h.cache > 0 {
		h.mu.Lock()
		if !h.lastRun.IsZero() && time.Since(h.lastRun) < h.cache {
			s := h.last
			h.mu.Unlock()
			return s
		}
		h.mu.Unlock()
	}
	s := h.app.health.Run(ctx, nil).Status
	if h.cache > 0 && ctx.Err() == nil {
		h.mu.Lock()
		h.last, h.lastRun = s, time.Now()
		h.mu.Unlock()
	}
	return s
}

// grpcWatchInterval is how often a Watch stream re-runs the checks.
const grpcWatchInterval = 5 * time.Second

func (h *grpcHealth) draining() bool {
	select {
	case <-h.app.grpc.draining:
		return true
	default:
		return h.app.isStopping()
	}
}

// status answers for service: "" is the whole server; a service the
// server has is answered the same; others are unknown.
func (h *grpcHealth) status(ctx context.Context, service string) (healthpb.HealthCheckResponse_ServingStatus, bool) {
	if service != "" {
		if _, ok := h.server.GetServiceInfo()[service]; !ok {
			return healthpb.HealthCheckResponse_SERVICE_UNKNOWN, false
		}
	}
	if h.draining() {
		return healthpb.HealthCheckResponse_NOT_SERVING, true
	}
	if h.run(ctx) == health.Unhealthy {
		return healthpb.HealthCheckResponse_NOT_SERVING, true
	}
	return healthpb.HealthCheckResponse_SERVING, true
}

func (h *grpcHealth) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	s, ok := h.status(ctx, req.GetService())
	if !ok {
		return nil, status.Errorf(grpccodes.NotFound, "unknown service %q", req.GetService())
	}
	return &healthpb.HealthCheckResponse{Status: s}, nil
}

func (h *grpcHealth) List(ctx context.Context, _ *healthpb.HealthListRequest) (*healthpb.HealthListResponse, error) {
	s, _ := h.status(ctx, "")
	out := &healthpb.HealthListResponse{Statuses: map[string]*healthpb.HealthCheckResponse{"": {Status: s}}}
	for name := range h.server.GetServiceInfo() {
		out.Statuses[name] = &healthpb.HealthCheckResponse{Status: s}
	}
	return out, nil
}

// Watch sends the status, then every change, until the call ends or the
// server starts draining, when it sends NOT_SERVING and returns so that
// the stream does not hold the graceful stop up.
func (h *grpcHealth) Watch(req *healthpb.HealthCheckRequest, stream grpc.ServerStreamingServer[healthpb.HealthCheckResponse]) error {
	ctx := stream.Context()
	tick := time.NewTicker(grpcWatchInterval)
	defer tick.Stop()
	last := healthpb.HealthCheckResponse_UNKNOWN
	for {
		s, _ := h.status(ctx, req.GetService())
		if s != last {
			if err := stream.Send(&healthpb.HealthCheckResponse{Status: s}); err != nil {
				return err
			}
			last = s
		}
		if s == healthpb.HealthCheckResponse_NOT_SERVING && h.draining() {
			return nil
		}
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-h.app.grpc.draining:
		case <-h.app.stopping:
		case <-tick.C:
		}
	}
}

// grpcListenAddress returns the address of the gRPC server's own
// listener: the port GRPCPortKey names, else GRPC_PORT; ok is false when
// neither is set, or when it is the HTTP port, so gRPC shares the HTTP
// listener.
func (a *App) grpcListenAddress(httpAddr string) (addr string, ok bool, err error) {
	for _, key := range []string{GRPCPortKey, "GRPC_PORT"} {
		v := strings.TrimSpace(a.cfg.String(key))
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 65535 {
			return "", false, &discovery.KeyError{Key: key, Err: fmt.Errorf("invalid port %q", v)}
		}
		if _, port, err := net.SplitHostPort(httpAddr); err == nil && port == v {
			return "", false, nil
		}
		return ":" + v, true, nil
	}
	return "", false, nil
}

// grpcServing is the gRPC server as Serve runs it.
type grpcServing struct {
	gs   *grpc.Server
	own  bool // on its own listener, not shared with HTTP
	done chan error
}

// startGRPC makes Serve serve the gRPC server, when GRPCServer made one:
// on its own listener when the configuration names a gRPC port, else on
// the HTTP listener, where srv then also speaks HTTP/2 without TLS (h2c)
// and hands requests whose content type is application/grpc to the gRPC
// server. It returns nil when there is no gRPC server.
func (a *App) startGRPC(srv *http.Server, httpAddr string) (*grpcServing, error) {
	a.grpc.mu.Lock()
	gs := a.grpc.server
	a.grpc.init()
	a.grpc.mu.Unlock()
	if gs == nil {
		return nil, nil
	}
	addr, own, err := a.grpcListenAddress(httpAddr)
	if err != nil {
		return nil, fmt.Errorf("servicedefaults: %w", err)
	}
	s := &grpcServing{gs: gs, own: own, done: make(chan error, 1)}
	if !own {
		httpHandler := srv.Handler
		srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
				gs.ServeHTTP(w, r)
				return
			}
			httpHandler.ServeHTTP(w, r)
		})
		p, err := a.server.protocols(true) // kestrel.go decides the protocols
		if err != nil {
			return nil, fmt.Errorf("servicedefaults: %w", err)
		}
		srv.Protocols = p
		a.logger.Info("serving gRPC on the HTTP listener", "scheme", a.server.schemeName())
		close(s.done)
		return s, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("servicedefaults: gRPC listening on %s: %w", addr, err)
	}
	go func() { s.done <- gs.Serve(ln) }()
	a.logger.Info("listening for gRPC", "addr", ln.Addr().String())
	return s, nil
}

// beginGRPCDrain turns the gRPC health service to NOT_SERVING.
func (a *App) beginGRPCDrain() {
	a.grpc.mu.Lock()
	a.grpc.init()
	a.grpc.mu.Unlock()
	a.grpc.drain.Do(func() { close(a.grpc.draining) })
}

// beginStop starts stopping the gRPC server within ctx, the grace period
// HTTP gets, and returns the function that waits for it. On its own
// listener the server stops gracefully (letting calls finish) alongside
// the HTTP server, and past ctx what is left is closed. On the shared
// listener the HTTP server's shutdown drains the calls, so wait, called
// once that is done, only stops the gRPC server. s may be nil.
func (s *grpcServing) beginStop(ctx context.Context, grace time.Duration) (wait func() error) {
	if s == nil {
		return func() error { return nil }
	}
	if !s.own {
		return func() error { s.gs.Stop(); return nil }
	}
	stopped := make(chan struct{})
	go func() { s.gs.GracefulStop(); close(stopped) }()
	return func() error {
		var err error
		select {
		case <-stopped:
		case <-ctx.Done():
			s.gs.Stop()
			<-stopped
			err = fmt.Errorf("servicedefaults: gRPC calls still in flight after the %v grace period were cut off: %w", grace, ctx.Err())
		}
		if serr := <-s.done; serr != nil && !errors.Is(serr, grpc.ErrServerStopped) && err == nil {
			err = fmt.Errorf("servicedefaults: serving gRPC: %w", serr)
		}
		return err
	}
}
