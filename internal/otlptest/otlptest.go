// Package otlptest is an in-process OTLP receiver for tests. It serves the
// OTLP collector services over gRPC and over HTTP (protobuf or JSON bodies,
// optionally gzip-compressed) on free loopback ports, built on the official
// protobuf definitions (go.opentelemetry.io/proto/otlp), and records every
// span, metric and log record it receives with its resource and scope, and
// the headers of every export request.
package otlptest

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	collogspb "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	colmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	metricpb "go.opentelemetry.io/proto/otlp/metrics/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	_ "google.golang.org/grpc/encoding/gzip" // accept gzip-compressed exports
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Signal names, as they appear in Request.Signal.
const (
	Traces  = "traces"
	Metrics = "metrics"
	Logs    = "logs"
)

// Span is one received span with the resource and scope it was sent under.
type Span struct {
	Resource *resourcepb.Resource
	Scope    *commonpb.InstrumentationScope
	Span     *tracepb.Span
}

// Metric is one received metric with its resource and scope.
type Metric struct {
	Resource *resourcepb.Resource
	Scope    *commonpb.InstrumentationScope
	Metric   *metricpb.Metric
}

// Log is one received log record with its resource and scope.
type Log struct {
	Resource *resourcepb.Resource
	Scope    *commonpb.InstrumentationScope
	Record   *logspb.LogRecord
}

// Request records one export call.
type Request struct {
	// Signal is Traces, Metrics or Logs.
	Signal string
	// Protocol is "grpc" or "http".
	Protocol string
	// Header holds the request headers (gRPC metadata for gRPC), with
	// canonical keys.
	Header http.Header
}

// Receiver is a running OTLP receiver. Its methods are safe for concurrent
// use.
type Receiver struct {
	// GRPCEndpoint is the gRPC endpoint URL ("http://127.0.0.1:port", or
	// https with TLS).
	GRPCEndpoint string
	// HTTPEndpoint is the HTTP base URL; exporters post to
	// HTTPEndpoint+"/v1/traces" and so on.
	HTTPEndpoint string

	grpcSrv *grpc.Server
	httpSrv *http.Server
	wg      sync.WaitGroup

	mu       sync.Mutex
	spans    []Span
	metrics  []Metric
	logs     []Log
	requests []Request
}

// Option configures Start.
type Option func(*options)

type options struct {
	cert *tls.Certificate
}

// WithTLS makes the receiver serve TLS with cert on both protocols.
func WithTLS(cert tls.Certificate) Option {
	return func(o *options) { o.cert = &cert }
}

// Start starts a receiver on free loopback ports and stops it when the test
// ends.
func Start(t testing.TB, opts ...Option) *Receiver {
	t.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	r := &Receiver{}
	scheme := "http"
	var grpcOpts []grpc.ServerOption
	if o.cert != nil {
		scheme = "https"
		grpcOpts = append(grpcOpts, grpc.Creds(credentials.NewServerTLSFromCert(o.cert)))
	}
	grpcOpts = append(grpcOpts, grpc.UnaryInterceptor(r.intercept))

	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("otlptest: %v", err)
	}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		gl.Close()
		t.Fatalf("otlptest: %v", err)
	}
	if o.cert != nil {
		hl = tls.NewListener(hl, &tls.Config{Certificates: []tls.Certificate{*o.cert}})
	}
	r.GRPCEndpoint = scheme + "://" + gl.Addr().String()
	r.HTTPEndpoint = scheme + "://" + hl.Addr().String()

	r.grpcSrv = grpc.NewServer(grpcOpts...)
	coltracepb.RegisterTraceServiceServer(r.grpcSrv, traceService{r: r})
	colmetricpb.RegisterMetricsServiceServer(r.grpcSrv, metricsService{r: r})
	collogspb.RegisterLogsServiceServer(r.grpcSrv, logsService{r: r})

	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", r.serveHTTP(Traces))
	mux.HandleFunc("POST /v1/metrics", r.serveHTTP(Metrics))
	mux.HandleFunc("POST /v1/logs", r.serveHTTP(Logs))
	r.httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	r.wg.Add(2)
	go func() { defer r.wg.Done(); _ = r.grpcSrv.Serve(gl) }()
	go func() { defer r.wg.Done(); _ = r.httpSrv.Serve(hl) }()
	t.Cleanup(r.Close)
	return r
}

// Close stops the receiver. It is called automatically when the test ends.
func (r *Receiver) Close() {
	r.grpcSrv.Stop()
	r.httpSrv.Close()
	r.wg.Wait()
}

// Spans returns every span received so far.
func (r *Receiver) Spans() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Span(nil), r.spans...)
}

// Metrics returns every metric received so far (one entry per metric per
// export).
func (r *Receiver) Metrics() []Metric {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Metric(nil), r.metrics...)
}

// Logs returns every log record received so far.
func (r *Receiver) Logs() []Log {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Log(nil), r.logs...)
}

// Requests returns every export request received so far.
func (r *Receiver) Requests() []Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Request(nil), r.requests...)
}

// SpanNamed returns the first received span with the given name.
func (r *Receiver) SpanNamed(name string) (Span, bool) {
	for _, s := range r.Spans() {
		if s.Span.GetName() == name {
			return s, true
		}
	}
	return Span{}, false
}

// MetricNamed returns the last received metric with the given name.
func (r *Receiver) MetricNamed(name string) (Metric, bool) {
	ms := r.Metrics()
	for i := len(ms) - 1; i >= 0; i-- {
		if ms[i].Metric.GetName() == name {
			return ms[i], true
		}
	}
	return Metric{}, false
}

// Wait polls cond until it is true, failing the test after timeout. It is
// the way to wait for exports, which arrive asynchronously.
func Wait(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("otlptest: timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Attr returns the string form of the attribute key in attrs, and whether
// it is present.
func Attr(attrs []*commonpb.KeyValue, key string) (string, bool) {
	for _, kv := range attrs {
		if kv.GetKey() == key {
			return valueString(kv.GetValue()), true
		}
	}
	return "", false
}

func valueString(v *commonpb.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return fmt.Sprint(x.IntValue)
	case *commonpb.AnyValue_DoubleValue:
		return fmt.Sprint(x.DoubleValue)
	case *commonpb.AnyValue_BoolValue:
		return fmt.Sprint(x.BoolValue)
	default:
		return v.String()
	}
}

// ResourceAttr returns a resource attribute as a string.
func ResourceAttr(res *resourcepb.Resource, key string) string {
	v, _ := Attr(res.GetAttributes(), key)
	return v
}

func (r *Receiver) record(signal, protocol string, h http.Header) {
	r.mu.Lock()
	r.requests = append(r.requests, Request{Signal: signal, Protocol: protocol, Header: h})
	r.mu.Unlock()
}

func (r *Receiver) addTraces(req *coltracepb.ExportTraceServiceRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				r.spans = append(r.spans, Span{Resource: rs.GetResource(), Scope: ss.GetScope(), Span: s})
			}
		}
	}
}

func (r *Receiver) addMetrics(req *colmetricpb.ExportMetricsServiceRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rm := range req.GetResourceMetrics() {
		for _, sm := range rm.GetScopeMetrics() {
			for _, m := range sm.GetMetrics() {
				r.metrics = append(r.metrics, Metric{Resource: rm.GetResource(), Scope: sm.GetScope(), Metric: m})
			}
		}
	}
}

func (r *Receiver) addLogs(req *collogspb.ExportLogsServiceRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rl := range req.GetResourceLogs() {
		for _, sl := range rl.GetScopeLogs() {
			for _, l := range sl.GetLogRecords() {
				r.logs = append(r.logs, Log{Resource: rl.GetResource(), Scope: sl.GetScope(), Record: l})
			}
		}
	}
}

// intercept records the metadata of every gRPC export.
func (r *Receiver) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	signal := ""
	switch {
	case strings.Contains(info.FullMethod, "TraceService"):
		signal = Traces
	case strings.Contains(info.FullMethod, "MetricsService"):
		signal = Metrics
	case strings.Contains(info.FullMethod, "LogsService"):
		signal = Logs
	}
	h := http.Header{}
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		for k, vs := range md {
			for _, v := range vs {
				h.Add(k, v)
			}
		}
	}
	r.record(signal, "grpc", h)
	return handler(ctx, req)
}

type traceService struct {
	coltracepb.UnimplementedTraceServiceServer
	r *Receiver
}

func (s traceService) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	s.r.addTraces(req)
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

type metricsService struct {
	colmetricpb.UnimplementedMetricsServiceServer
	r *Receiver
}

func (s metricsService) Export(_ context.Context, req *colmetricpb.ExportMetricsServiceRequest) (*colmetricpb.ExportMetricsServiceResponse, error) {
	s.r.addMetrics(req)
	return &colmetricpb.ExportMetricsServiceResponse{}, nil
}

type logsService struct {
	collogspb.UnimplementedLogsServiceServer
	r *Receiver
}

func (s logsService) Export(_ context.Context, req *collogspb.ExportLogsServiceRequest) (*collogspb.ExportLogsServiceResponse, error) {
	s.r.addLogs(req)
	return &collogspb.ExportLogsServiceResponse{}, nil
}

// serveHTTP handles an OTLP/HTTP export for one signal.
func (r *Receiver) serveHTTP(signal string) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		r.record(signal, "http", req.Header.Clone())
		body, err := readBody(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		isJSON := strings.HasPrefix(req.Header.Get("Content-Type"), "application/json")
		var in, out proto.Message
		switch signal {
		case Traces:
			in, out = &coltracepb.ExportTraceServiceRequest{}, &coltracepb.ExportTraceServiceResponse{}
		case Metrics:
			in, out = &colmetricpb.ExportMetricsServiceRequest{}, &colmetricpb.ExportMetricsServiceResponse{}
		default:
			in, out = &collogspb.ExportLogsServiceRequest{}, &collogspb.ExportLogsServiceResponse{}
		}
		if isJSON {
			err = protojson.Unmarshal(body, in)
		} else {
			err = proto.Unmarshal(body, in)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		switch m := in.(type) {
		case *coltracepb.ExportTraceServiceRequest:
			r.addTraces(m)
		case *colmetricpb.ExportMetricsServiceRequest:
			r.addMetrics(m)
		case *collogspb.ExportLogsServiceRequest:
			r.addLogs(m)
		}
		var resp []byte
		if isJSON {
			w.Header().Set("Content-Type", "application/json")
			resp, _ = protojson.Marshal(out)
		} else {
			w.Header().Set("Content-Type", "application/x-protobuf")
			resp, _ = proto.Marshal(out)
		}
		_, _ = w.Write(resp)
	}
}

func readBody(req *http.Request) ([]byte, error) {
	var rd io.Reader = req.Body
	if strings.EqualFold(req.Header.Get("Content-Encoding"), "gzip") {
		zr, err := gzip.NewReader(req.Body)
		if err != nil {
			return nil, err
		}
		defer zr.Close()
		rd = zr
	}
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, io.LimitReader(rd, 64<<20)); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// NewCertificate returns a self-signed certificate valid for 127.0.0.1,
// ::1 and localhost, and its PEM encoding (to trust it through
// SSL_CERT_FILE or OTEL_EXPORTER_OTLP_CERTIFICATE).
func NewCertificate(t testing.TB) (tls.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "otlptest"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cert, certPEM
}
