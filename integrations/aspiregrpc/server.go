package aspiregrpc

import (
	"context"
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
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	grpccodes "google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/servicedefaults"
)

// Server returns the App's gRPC server, made on first use: register
// services on it before calling App.Run, which serves it beside HTTP and
// stops it with HTTP. Later calls return the same server, whatever opts
// they pass. The server has:
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
//     (Client's connections send them every 10 s). This is the server's
//     own listener's policy: on the HTTP listener Go's HTTP/2 server
//     answers every ping.
//
// App.Run (or Serve) serves it on its own listener when PortKey or
// GRPC_PORT names a port other than the HTTP one, else on the HTTP
// listener, which then also speaks HTTP/2 without TLS (h2c) and hands the
// requests of content type application/grpc to it (HTTP/2 must then be
// among the endpoint's Protocols). When shutdown begins the health
// service turns NOT_SERVING; the server then stops within the HTTP
// server's grace period: gracefully, letting calls finish, then by force
// (Serve's error says so). It plugs into the App as a
// servicedefaults.SideServer.
//
// opts are applied after the App's own. Server fails when the port
// setting is invalid (naming the key), and with servicedefaults.ErrClosed
// once Serve has started or shutdown has begun.
func Server(app *servicedefaults.App, opts ...grpc.ServerOption) (*grpc.Server, error) {
	return servicedefaults.OpenClient(context.Background(), app, "gRPC", "server", func(context.Context) (servicedefaults.Opened[*grpc.Server], error) {
		s, err := newServer(app, opts)
		if err != nil {
			return servicedefaults.Opened[*grpc.Server]{}, err
		}
		if err := app.AddSideServer(s); err != nil {
			return servicedefaults.Opened[*grpc.Server]{}, err
		}
		return servicedefaults.Opened[*grpc.Server]{Client: s.gs}, nil
	})
}

// server is the App's gRPC server as a servicedefaults.SideServer.
type server struct {
	gs       *grpc.Server
	port     string // its own port, from the configuration; "" for none
	logger   *slog.Logger
	draining chan struct{} // closed by Drain
	drain    sync.Once

	// Set by Start.
	own   bool       // on its own listener, not shared with HTTP
	done  chan error // Serve's result, on its own listener
	grace time.Duration
}

func newServer(app *servicedefaults.App, opts []grpc.ServerOption) (*server, error) {
	cfg := app.Config()
	port, err := listenPort(cfg)
	if err != nil {
		return nil, err
	}
	s := &server{port: port, logger: app.ComponentLogger(scope), draining: make(chan struct{})}
	r := recovery{logger: s.logger}
	sopts := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(r.unary),
		grpc.ChainStreamInterceptor(r.stream),
		grpc.KeepaliveEnforcementPolicy(serverKeepalive),
	}
	if tel := hostTelemetry(app); tel.on {
		sopts = append(sopts, grpc.StatsHandler(rpcAttributes{otelgrpc.NewServerHandler(tel.otelgrpcOptions()...)}))
	} else {
		p := grpcPropagator{tel.prop}
		sopts = append([]grpc.ServerOption{grpc.ChainUnaryInterceptor(p.unaryServer), grpc.ChainStreamInterceptor(p.streamServer)}, sopts...)
	}
	s.gs = grpc.NewServer(append(sopts, opts...)...)
	healthpb.RegisterHealthServer(s.gs, &healthServer{
		registry: app.Health(), server: s.gs, draining: s.draining, cache: healthCacheDuration(cfg),
	})
	if cfg.IsDevelopment() {
		reflection.Register(s.gs)
	}
	return s, nil
}

// listenPort returns the port of the gRPC server's own listener: the one
// PortKey names, else GRPC_PORT; "" when neither is set.
func listenPort(cfg *discovery.Config) (string, error) {
	for _, key := range []string{PortKey, "GRPC_PORT"} {
		v := strings.TrimSpace(cfg.String(key))
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 65535 {
			return "", &discovery.KeyError{Key: key, Err: fmt.Errorf("invalid port %q", v)}
		}
		return v, nil
	}
	return "", nil
}

// healthCacheDuration is how long /health reuses a run of the checks
// (Aspire:ServiceDefaults:HealthChecks:CacheDuration, validated by Add).
func healthCacheDuration(cfg *discovery.Config) time.Duration {
	def := servicedefaults.DefaultHealthCacheDuration
	if cfg.IsDevelopment() {
		def = 0
	}
	d, err := cfg.Section("Aspire:ServiceDefaults:HealthChecks").Duration("CacheDuration", def)
	if err != nil {
		return def
	}
	return d
}

// Start implements servicedefaults.SideServer: it serves the gRPC server
// on its own listener when the configuration names a port other than the
// HTTP one, else on the HTTP listener, where the HTTP server then also
// speaks HTTP/2 without TLS (h2c) and hands requests whose content type is
// application/grpc to the gRPC server.
func (s *server) Start(st *servicedefaults.SideStart) error {
	s.grace = st.Grace
	s.own = s.port != ""
	if _, port, err := net.SplitHostPort(st.Addr); err == nil && port == s.port {
		s.own = false
	}
	if !s.own {
		if err := st.ShareHTTP2(); err != nil {
			return fmt.Errorf("aspiregrpc: %w", err)
		}
		gs, next := s.gs, st.Server.Handler
		st.Server.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
				gs.ServeHTTP(w, r)
				return
			}
			next.ServeHTTP(w, r)
		})
		s.logger.Info("serving gRPC on the HTTP listener", "scheme", st.Scheme)
		return nil
	}
	addr := ":" + s.port
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("aspiregrpc: listening for gRPC on %s: %w", addr, err)
	}
	s.done = make(chan error, 1)
	go func() { s.done <- s.gs.Serve(ln) }()
	s.logger.Info("listening for gRPC", "addr", ln.Addr().String())
	return nil
}

// Drain implements servicedefaults.SideServer: the health service answers
// NOT_SERVING from now on, and its Watch streams end.
func (s *server) Drain() { s.drain.Do(func() { close(s.draining) }) }

// Stop implements servicedefaults.SideServer. On its own listener the
// server stops gracefully (letting calls finish) alongside the HTTP
// server, and past ctx what is left is closed. On the shared listener the
// HTTP server's shutdown drains the calls, so the gRPC server is only
// stopped once that is done.
func (s *server) Stop(ctx context.Context, httpDone <-chan struct{}) error {
	if !s.own {
		<-httpDone
		s.gs.Stop()
		return nil
	}
	stopped := make(chan struct{})
	go func() { s.gs.GracefulStop(); close(stopped) }()
	var err error
	select {
	case <-stopped:
	case <-ctx.Done():
		s.gs.Stop()
		<-stopped
		err = fmt.Errorf("aspiregrpc: gRPC calls still in flight after the %v grace period were cut off: %w", s.grace, ctx.Err())
	}
	if serr := <-s.done; serr != nil && !errors.Is(serr, grpc.ErrServerStopped) && err == nil {
		err = fmt.Errorf("aspiregrpc: serving gRPC: %w", serr)
	}
	return err
}

// recovery turns a handler's panic into codes.Internal.
type recovery struct{ logger *slog.Logger }

func (r recovery) recovered(ctx context.Context, method string, p any, err *error) {
	stack := string(debug.Stack())
	span := trace.SpanFromContext(ctx)
	if span.IsRecording() {
		span.RecordError(fmt.Errorf("panic: %v", p), trace.WithAttributes(attribute.String("exception.stacktrace", stack)))
		span.SetStatus(codes.Error, "panic")
	}
	r.logger.ErrorContext(ctx, "gRPC handler panicked", "rpc.method", strings.TrimPrefix(method, "/"), "panic", fmt.Sprint(p), "stack", stack)
	*err = status.Error(grpccodes.Internal, "internal error")
}

func (r recovery) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if p := recover(); p != nil {
			resp = nil
			r.recovered(ctx, info.FullMethod, p, &err)
		}
	}()
	return handler(ctx, req)
}

func (r recovery) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	defer func() {
		if p := recover(); p != nil {
			r.recovered(ss.Context(), info.FullMethod, p, &err)
		}
	}()
	return handler(srv, ss)
}

// healthServer serves grpc.health.v1 from the App's health registry.
type healthServer struct {
	healthpb.UnimplementedHealthServer
	registry *health.Registry
	server   *grpc.Server
	draining <-chan struct{} // closed when shutdown begins
	// cache is how long a run of the checks is reused, as the HTTP
	// health endpoints do (Aspire:ServiceDefaults:HealthChecks:CacheDuration).
	cache time.Duration

	mu      sync.Mutex
	last    health.Status
	lastRun time.Time
}

// run returns the status of every check, reusing a run younger than the
// cache duration.
func (h *healthServer) run(ctx context.Context) health.Status {
	if h.cache > 0 {
		h.mu.Lock()
		if !h.lastRun.IsZero() && time.Since(h.lastRun) < h.cache {
			s := h.last
			h.mu.Unlock()
			return s
		}
		h.mu.Unlock()
	}
	s := h.registry.Run(ctx, nil).Status
	if h.cache > 0 && ctx.Err() == nil {
		h.mu.Lock()
		h.last, h.lastRun = s, time.Now()
		h.mu.Unlock()
	}
	return s
}

// watchInterval is how often a Watch stream re-runs the checks.
const watchInterval = 5 * time.Second

func (h *healthServer) isDraining() bool {
	select {
	case <-h.draining:
		return true
	default:
		return false
	}
}

// status answers for service: "" is the whole server; a service the
// server has is answered the same; others are unknown.
func (h *healthServer) status(ctx context.Context, service string) (healthpb.HealthCheckResponse_ServingStatus, bool) {
	if service != "" {
		if _, ok := h.server.GetServiceInfo()[service]; !ok {
			return healthpb.HealthCheckResponse_SERVICE_UNKNOWN, false
		}
	}
	if h.isDraining() {
		return healthpb.HealthCheckResponse_NOT_SERVING, true
	}
	if h.run(ctx) == health.Unhealthy {
		return healthpb.HealthCheckResponse_NOT_SERVING, true
	}
	return healthpb.HealthCheckResponse_SERVING, true
}

// Check implements healthpb.HealthServer.
func (h *healthServer) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	s, ok := h.status(ctx, req.GetService())
	if !ok {
		return nil, status.Errorf(grpccodes.NotFound, "unknown service %q", req.GetService())
	}
	return &healthpb.HealthCheckResponse{Status: s}, nil
}

// List implements healthpb.HealthServer.
func (h *healthServer) List(ctx context.Context, _ *healthpb.HealthListRequest) (*healthpb.HealthListResponse, error) {
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
func (h *healthServer) Watch(req *healthpb.HealthCheckRequest, stream grpc.ServerStreamingServer[healthpb.HealthCheckResponse]) error {
	ctx := stream.Context()
	tick := time.NewTicker(watchInterval)
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
		if s == healthpb.HealthCheckResponse_NOT_SERVING && h.isDraining() {
			return nil
		}
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-h.draining:
		case <-tick.C:
		}
	}
}
