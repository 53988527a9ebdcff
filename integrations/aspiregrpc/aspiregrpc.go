// Package aspiregrpc is goaspire's gRPC integration: clients that find
// their service through the App's service discovery, with the retries,
// timeouts, outlier ejection, keepalive and telemetry of an Aspire .NET
// service's AddGrpcClient, and the App's gRPC server, served by App.Run
// beside HTTP with telemetry, panic recovery, grpc.health.v1 and a
// graceful stop.
//
//	conn, err := aspiregrpc.Client(ctx, app, "users") // services__users__grpc__N, USERS_GRPC, ...
//	users := userspb.NewUserServiceClient(conn)
//
//	gs, err := aspiregrpc.Server(app)
//	userspb.RegisterUserServiceServer(gs, &server{})
//	err = app.Run(ctx) // serves gs on GRPC_PORT, else on the HTTP port (h2c)
//
// The configuration keys are those of SectionResilience, SectionClients
// and PortKey. Without an App, package discovery/grpcresolver gives the
// resolver alone.
//
// Importing the package registers the gRPC load-balancing policy of its
// clients, "goaspire_round_robin", with grpc-go's balancer registry (in
// init: grpc-go's registry may only be written before any connection is
// made). It has no other process-wide effect.
package aspiregrpc

import (
	"context"
	"strings"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"github.com/goaspire/goaspire/servicedefaults"
)

// Configuration of gRPC clients and servers.
const (
	// SectionResilience holds the retry, timeout and outlier-detection
	// settings of every gRPC client (the keys of resilience.Options:
	// Retry:MaxRetryAttempts, Retry:Delay, Retry:MaxDelay,
	// Retry:BackoffType, Retry:UseJitter, AttemptTimeout:Timeout,
	// TotalRequestTimeout:Timeout, OutlierDetection:*);
	// SectionResilience + ":Clients:{name}" overrides them per client.
	SectionResilience = "Aspire:Resilience:Grpc"
	// SectionClients holds the connection settings of every gRPC client
	// (KeepAlivePingDelay, KeepAlivePingTimeout, KeepAlivePingPolicy,
	// named after .NET's SocketsHttpHandler properties, which
	// Grpc.Net.Client uses); SectionClients + ":{name}" overrides them per
	// client, and SectionClients + ":{name}:Resilience" = None turns the
	// client's retries and timeouts off.
	SectionClients = "Aspire:ServiceDefaults:GrpcClients"
	// PortKey names the port the gRPC server gets its own listener on.
	// An AppHost sets it with WithEndpoint(..., env:
	// "Aspire__ServiceDefaults__Grpc__Port"); GRPC_PORT works too.
	PortKey = "Aspire:ServiceDefaults:Grpc:Port"
)

// scope is the instrumentation scope of the package's log records.
const scope = "github.com/goaspire/goaspire/integrations/aspiregrpc"

// healthService is the full name of the gRPC health service, whose calls
// are neither traced nor measured, as /health and /alive are not.
const healthService = "grpc.health.v1.Health"

// telemetry is the Host's telemetry, as clients and servers use it.
type telemetry struct {
	tp   trace.TracerProvider
	mp   metric.MeterProvider
	prop propagation.TextMapPropagator
	// on is false when neither traces nor metrics are recorded (the
	// providers are OpenTelemetry's no-ops): then only the trace context
	// is propagated, without otelgrpc's cost.
	on bool
}

func hostTelemetry(h servicedefaults.Host) telemetry {
	tp, mp := h.TracerProvider(), h.MeterProvider()
	_, noTraces := tp.(tracenoop.TracerProvider)
	_, noMetrics := mp.(metricnoop.MeterProvider)
	return telemetry{tp: tp, mp: mp, prop: h.Propagator(), on: !noTraces || !noMetrics}
}

func (t telemetry) otelgrpcOptions() []otelgrpc.Option {
	return []otelgrpc.Option{
		otelgrpc.WithTracerProvider(t.tp),
		otelgrpc.WithMeterProvider(t.mp),
		otelgrpc.WithPropagators(t.prop),
		otelgrpc.WithSpanAttributes(attribute.String("rpc.system", "grpc")),
		otelgrpc.WithFilter(func(info *stats.RPCTagInfo) bool {
			return !strings.HasPrefix(info.FullMethodName, "/"+healthService+"/")
		}),
	}
}

// rpcAttributes gives otelgrpc's client and server spans, which follow
// the new RPC conventions (rpc.system.name, rpc.method
// "pkg.Service/Method", rpc.response.status_code), the attributes of the
// older ones that the Aspire dashboard reads: rpc.service, rpc.method as
// the method name alone, and rpc.grpc.status_code (rpc.system is given to
// otelgrpc as a span attribute). The dashboard titles a gRPC span
// "RPC {rpc.service}/{rpc.method}": with the fully qualified rpc.method it
// would name the service twice. A span keeps the last value set for a key,
// so rpc.method set here replaces otelgrpc's; the span's name and
// otelgrpc's metrics keep the fully qualified method.
//
// otelgrpc reads OTEL_SEMCONV_STABILITY_OPT_IN from the process
// environment (it has no option for it): "rpc/old" or "rpc/dup" there
// changes its metric names and attributes, whatever the App's
// configuration says. The span attributes set here are the same in every
// mode.
type rpcAttributes struct{ stats.Handler }

func (h rpcAttributes) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	ctx = h.Handler.TagRPC(ctx, info)
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		if svc, method, ok := strings.Cut(strings.TrimPrefix(info.FullMethodName, "/"), "/"); ok {
			span.SetAttributes(attribute.String("rpc.service", svc), attribute.String("rpc.method", method))
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
