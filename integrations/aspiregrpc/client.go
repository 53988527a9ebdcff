package aspiregrpc

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/discovery/grpcresolver"
	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/internal/outlier"
	"github.com/goaspire/goaspire/resilience"
	"github.com/goaspire/goaspire/servicedefaults"
)

// ClientSettings are the settings of a gRPC client, read from the
// configuration by Client and handed to its configure functions, which
// may change them before the connection is made.
type ClientSettings struct {
	// DisableResilience turns the retries, the timeouts and the outlier
	// detection off (SectionClients:{name}:Resilience = None; Standard,
	// the default, is false).
	DisableResilience bool
	// TotalRequestTimeout bounds every unary call, its attempts and
	// delays together (TotalRequestTimeout:Timeout, 30 s).
	TotalRequestTimeout time.Duration
	// AttemptTimeout bounds each attempt of a retried call
	// (AttemptTimeout:Timeout, 10 s).
	AttemptTimeout time.Duration
	// Retry says how often and after what delays the calls of idempotent
	// methods are retried (Retry:*); MaxRetryAttempts 0 turns the retries
	// off. ShouldRetryAfterHeader and RetryNonIdempotent do not apply.
	Retry resilience.RetryOptions
	// OutlierDetection ejects the instances whose attempts time out or
	// whose connection fails (OutlierDetection:*).
	OutlierDetection resilience.OutlierDetectionOptions
	// Keepalive is the connection's keepalive (SectionClients): a ping
	// after Time without activity (0: no pings; under 10 s, grpc-go's
	// minimum, it is raised to 10 s), the connection dropped when nothing
	// answers within Timeout, PermitWithoutStream for pings with no call
	// open (KeepAlivePingPolicy Always).
	Keepalive keepalive.ClientParameters
	// DialOptions are applied after the client's own, so they can replace
	// any of them: a grpc.WithDefaultServiceConfig replaces the balancing
	// and the streams' retry policy; the unary retries and timeouts are an
	// interceptor, and unary interceptors given here run once per attempt.
	DialOptions []grpc.DialOption
}

// Client returns a gRPC client connection to the service called name, as
// an Aspire .NET service's AddGrpcClient with service discovery does,
// opened on first use through servicedefaults.OpenClient and shared
// afterwards: later calls for the same name return the first connection
// whatever configure they pass. Shutdown closes it. configure runs once,
// when the connection is first made, after the settings were read from
// the configuration: it may change them (ClientSettings), for instance
// add grpc.DialOptions. The connection:
//
//   - resolves name through the App's service discovery (package
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
//     App's roots (the system roots plus SSL_CERT_FILE / SSL_CERT_DIR, as
//     App.HTTPClient does), and plaintext HTTP/2 for http endpoints;
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
//     connection. The App's gRPC server (Server) accepts such pings. A
//     grpc-go server with its default policy (pings at most every 5 min,
//     none without calls) answers them on an idle connection with GOAWAY
//     ENHANCE_YOUR_CALM after three pings; the client then reconnects and
//     doubles its delay. For such a server, set its
//     keepalive.EnforcementPolicy{MinTime: 5 * time.Second,
//     PermitWithoutStream: true}, or set KeepAlivePingDelay to 5 minutes
//     and KeepAlivePingPolicy to WithActiveRequests (then a silent
//     instance is only noticed by attempt timeouts).
//
// The resilience settings (retries, timeouts, OutlierDetection:*) are
// read from SectionResilience, then SectionResilience:Clients:{name}; the
// keepalive settings from SectionClients, then SectionClients:{name};
// SectionClients:{name}:Resilience = None turns retries and the timeouts
// off. The methods are those of the proto files linked into the program
// when the connection is made.
//
// A health check "grpc:{name}", tagged ready, reports Degraded while the
// connection is in TRANSIENT_FAILURE (every instance unreachable), so that
// a callee's outage does not take this service out of rotation.
//
// Errors name the configuration key (or the ClientSettings field) at
// fault; once the App is shut down they match servicedefaults.ErrClosed.
func Client(ctx context.Context, h servicedefaults.Host, name string, configure ...func(*ClientSettings)) (*grpc.ClientConn, error) {
	return servicedefaults.OpenClient(ctx, h, "gRPC client", name, func(context.Context) (servicedefaults.Opened[*grpc.ClientConn], error) {
		cc, err := newClient(h, name, configure)
		if err != nil {
			return servicedefaults.Opened[*grpc.ClientConn]{}, err
		}
		return servicedefaults.Opened[*grpc.ClientConn]{
			Client: cc,
			Checks: []health.Check{healthCheck(name, cc)},
			Close:  func(context.Context) error { return cc.Close() },
		}, nil
	})
}

func newClient(h servicedefaults.Host, name string, configure []func(*ClientSettings)) (*grpc.ClientConn, error) {
	cfg := h.Config()
	r := h.Resolver()
	if _, err := grpcresolver.Lookup(r, name); err != nil {
		return nil, err
	}
	s, keys, err := readClientSettings(cfg, name)
	if err != nil {
		return nil, err
	}
	read := s
	for _, f := range configure {
		f(&s)
	}
	if err := s.validate(); err != nil {
		return nil, err
	}
	keys = keys.forSettings(read, s)

	sc, unary, err := clientPolicy(s, keys)
	if err != nil {
		return nil, err
	}
	var insts *grpcInstances
	if od := unary.outliers; unary.standard && od.Enabled {
		logger := h.ComponentLogger(scope)
		d := outlier.New(outlier.Config{
			ConsecutiveFailures: od.ConsecutiveFailures,
			BaseEjectionTime:    od.BaseEjectionTime,
			MaxEjectionTime:     od.MaxEjectionTime,
		}, func(addr string, length time.Duration) {
			insts.ejected(addr, length)
			logger.Warn("gRPC instance ejected: its attempts time out or its connection fails",
				"client", name, "instance", addr, "duration", length)
		})
		insts = newGRPCInstances(d, od.MaxEjectionPercent)
	} else {
		insts = newGRPCInstances(nil, 0)
	}
	var tlsCfg *tls.Config
	if roots := h.RootCAs(); roots != nil {
		tlsCfg = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	}
	dopts := []grpc.DialOption{
		grpc.WithResolvers(grpcInstancesResolver{grpcresolver.NewBuilder(r), insts}),
		grpc.WithTransportCredentials(grpcresolver.Credentials(tlsCfg)),
		grpc.WithDefaultServiceConfig(sc),
	}
	if kp := s.Keepalive; kp.Time > 0 {
		kp.Time = max(kp.Time, minKeepAlivePingDelay)
		dopts = append(dopts, grpc.WithKeepaliveParams(kp))
	}
	if tel := hostTelemetry(h); tel.on {
		dopts = append(dopts, grpc.WithStatsHandler(rpcAttributes{otelgrpc.NewClientHandler(tel.otelgrpcOptions()...)}))
	} else {
		p := grpcPropagator{tel.prop}
		unary.prop = p.prop
		dopts = append(dopts, grpc.WithChainStreamInterceptor(p.streamClient))
	}
	if unary.standard || unary.prop != nil {
		// One interceptor: a chain of several costs grpc a closure per call.
		dopts = append(dopts, grpc.WithChainUnaryInterceptor(unary.intercept))
	}
	return grpc.NewClient(grpcresolver.Scheme+":///"+name, append(dopts, s.DialOptions...)...)
}

// healthCheck reports a client connection in TRANSIENT_FAILURE. An idle
// connection (none made yet, or idle for a while) is healthy and is asked
// to connect, so the next check sees whether it can.
func healthCheck(name string, cc *grpc.ClientConn) health.Check {
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

// The client's resilience handlers (SectionClients:{name}:Resilience).
const (
	handlerStandard = "Standard"
	handlerNone     = "None"
)

// timeoutKeys name where the timeouts of a client came from, for the
// errors of the calls that run out of them.
type timeoutKeys struct{ total, attempt string }

// forSettings names the ClientSettings fields whose values configure
// changed from read.
func (k timeoutKeys) forSettings(read, s ClientSettings) timeoutKeys {
	if s.TotalRequestTimeout != read.TotalRequestTimeout {
		k.total = "ClientSettings.TotalRequestTimeout"
	}
	if s.AttemptTimeout != read.AttemptTimeout {
		k.attempt = "ClientSettings.AttemptTimeout"
	}
	return k
}

// readClientSettings reads the settings of the client called name. Errors
// name the key at fault, in the most specific section that sets it.
func readClientSettings(cfg *discovery.Config, name string) (ClientSettings, timeoutKeys, error) {
	var s ClientSettings
	handler, err := clientHandler(cfg, name)
	if err != nil {
		return s, timeoutKeys{}, err
	}
	s.DisableResilience = handler == handlerNone
	o, err := retryOptions(cfg, name)
	if err != nil {
		return s, timeoutKeys{}, err
	}
	s.TotalRequestTimeout, s.AttemptTimeout, s.Retry, s.OutlierDetection = o.TotalRequestTimeout, o.AttemptTimeout, o.Retry, o.OutlierDetection
	if s.Keepalive, err = readKeepalive(cfg, name); err != nil {
		return s, timeoutKeys{}, err
	}
	keys := timeoutKeys{
		total:   resilienceKey(cfg, name, "TotalRequestTimeout:Timeout"),
		attempt: resilienceKey(cfg, name, "AttemptTimeout:Timeout"),
	}
	return s, keys, nil
}

// clientHandler says which retry and timeout policy a client gets:
// SectionClients:{name}:Resilience is Standard (the default) or None.
func clientHandler(cfg *discovery.Config, name string) (string, error) {
	key := SectionClients + ":" + name + ":Resilience"
	v := strings.TrimSpace(cfg.String(key))
	switch {
	case v == "" || strings.EqualFold(v, handlerStandard):
		return handlerStandard, nil
	case strings.EqualFold(v, handlerNone):
		return handlerNone, nil
	}
	return "", &discovery.KeyError{Key: key, Err: errors.New(`must be "Standard" or "None"`)}
}

// retryOptions reads the retry and timeout settings of the client called
// name. Only the options gRPC uses are checked (the circuit breaker and
// the rate limiter do not apply), and an error names the key in the most
// specific section that sets it.
func retryOptions(cfg *discovery.Config, name string) (resilience.Options, error) {
	o := resilience.DefaultOptions()
	sections := []string{SectionResilience, SectionResilience + ":Clients:" + name}
	for _, sec := range sections {
		if err := o.ApplyConfig(cfg.Section(sec)); err != nil {
			return o, err
		}
	}
	err := checkResilience(o.TotalRequestTimeout, o.AttemptTimeout, o.Retry, o.OutlierDetection, func(field, reason string) error {
		return &discovery.KeyError{Key: layeredKey(cfg, sections[0], sections[1], field), Err: errors.New(reason)}
	})
	return o, err
}

// validate checks the settings configure functions may have changed; an
// error names the ClientSettings field at fault.
func (s *ClientSettings) validate() error {
	err := checkResilience(s.TotalRequestTimeout, s.AttemptTimeout, s.Retry, s.OutlierDetection, func(field, reason string) error {
		// "Retry:MaxRetryAttempts" is the field Retry.MaxRetryAttempts.
		f := strings.ReplaceAll(strings.TrimSuffix(field, ":Timeout"), ":", ".")
		return fmt.Errorf("ClientSettings.%s %s", f, reason)
	})
	if err != nil {
		return err
	}
	switch kp := s.Keepalive; {
	case kp.Time < 0:
		return errors.New("ClientSettings.Keepalive.Time must not be negative (0 turns the pings off)")
	case kp.Time > 0 && kp.Timeout <= 0:
		return errors.New("ClientSettings.Keepalive.Timeout must be positive")
	}
	return nil
}

// checkResilience checks the resilience settings gRPC uses; bad makes
// the error of the field (named by its configuration key below the
// client's section) and reason.
func checkResilience(total, attempt time.Duration, r resilience.RetryOptions, od resilience.OutlierDetectionOptions, bad func(field, reason string) error) error {
	switch {
	case total <= 0:
		return bad("TotalRequestTimeout:Timeout", "must be positive")
	case attempt <= 0:
		return bad("AttemptTimeout:Timeout", "must be positive")
	case r.MaxRetryAttempts < 0:
		return bad("Retry:MaxRetryAttempts", "must not be negative")
	case r.Delay < 0:
		return bad("Retry:Delay", "must not be negative")
	case r.MaxDelay < 0:
		return bad("Retry:MaxDelay", "must not be negative")
	}
	if od.Enabled {
		switch {
		case od.ConsecutiveFailures < 1:
			return bad("OutlierDetection:ConsecutiveFailures", "must be at least 1 (OutlierDetection:Enabled false turns ejection off)")
		case od.BaseEjectionTime <= 0:
			return bad("OutlierDetection:BaseEjectionTime", "must be positive")
		case od.MaxEjectionTime < od.BaseEjectionTime:
			return bad("OutlierDetection:MaxEjectionTime", "must be at least OutlierDetection:BaseEjectionTime")
		case od.MaxEjectionPercent < 0 || od.MaxEjectionPercent > 100:
			return bad("OutlierDetection:MaxEjectionPercent", "must be in [0, 100]")
		}
	}
	return nil
}

// resilienceKey names the key of field for the client called name: the
// client's own when it is set, else the shared one.
func resilienceKey(cfg *discovery.Config, name, field string) string {
	return layeredKey(cfg, SectionResilience, SectionResilience+":Clients:"+name, field)
}

// layeredKey names the key of field in section named when it is set
// there, else in section general: the key a value read through both
// sections came from.
func layeredKey(cfg *discovery.Config, general, named, field string) string {
	if key := named + ":" + field; hasKey(cfg, key) {
		return key
	}
	return general + ":" + field
}

func hasKey(cfg *discovery.Config, key string) bool {
	_, ok := cfg.Lookup(key)
	return ok
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

// clientPolicy returns the service config of a client with settings s
// (goaspire_round_robin, and grpc's retry policy for the server streams
// of idempotent methods) and its unary interceptor (the timeouts, and the
// retries of the unary idempotent methods).
func clientPolicy(s ClientSettings, keys timeoutKeys) (string, *grpcUnary, error) {
	sc := grpcConfig{LoadBalancingConfig: []map[string]struct{}{{balancerName: {}}}}
	var u *grpcUnary
	if !s.DisableResilience {
		unary, streams := idempotentMethods()
		if s.Retry.MaxRetryAttempts == 0 {
			unary, streams = nil, nil
		}
		if len(streams) > 0 {
			sc.MethodConfig = []grpcMethodConfig{{Name: streams, RetryPolicy: grpcRetry(s.Retry)}}
		}
		u = newGRPCUnary(s, keys, unary)
	} else {
		u = &grpcUnary{}
	}
	b, err := json.Marshal(sc)
	return string(b), u, err
}

// idempotentMethods returns the idempotent methods of every registered
// proto file that do not stream requests: the full names of the unary
// ones, and the names of those that stream replies.
func idempotentMethods() (unary map[string]struct{}, streams []grpcMethodName) {
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
