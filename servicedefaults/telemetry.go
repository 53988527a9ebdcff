package servicedefaults

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/runtime"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploggrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploghttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otellog "go.opentelemetry.io/otel/log"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/exemplar"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	_ "google.golang.org/grpc/encoding/gzip" // register the gzip compressor for OTLP/gRPC

	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/internal/redact"
)

// telemetry holds the providers built from otelSettings. A signal whose
// exporter is off gets a no-op provider (nil lp for logs), so it costs
// nothing.
type telemetry struct {
	tp   trace.TracerProvider
	mp   metric.MeterProvider
	lp   otellog.LoggerProvider // nil when logs are not exported
	prop propagation.TextMapPropagator

	tracing, metering bool // tp, mp are SDK providers (not no-ops)

	providers []func(context.Context) error // flush and stop each SDK provider
	conns     *grpcConns                    // closed once the providers have stopped

	// secrets are the OTLP header values (API keys, bearer tokens):
	// a collector may quote them back in an error body, which the
	// exporters put in their errors.
	secrets *strings.Replacer

	counts exportCounts // what was produced and exported (dropped.go)
}

// scrub redacts an SDK error text: URL passwords and secret key=value
// pairs (health.Scrub), and every OTLP header value.
func (t *telemetry) scrub(msg string) string {
	msg = health.Scrub(msg)
	if t.secrets != nil {
		msg = t.secrets.Replace(msg)
	}
	return msg
}

// scrubError returns err unchanged unless its text holds a secret; then
// an error with the redacted text that still matches errors.Is targets
// of err (context.DeadlineExceeded, say) but does not unwrap to it.
func (t *telemetry) scrubError(err error) error {
	if err == nil {
		return nil
	}
	if msg := t.scrub(err.Error()); msg != err.Error() {
		return &scrubbedError{msg: msg, err: err}
	}
	return err
}

type scrubbedError struct {
	msg string
	err error
}

func (e *scrubbedError) Error() string { return e.msg }

func (e *scrubbedError) Is(target error) bool { return errors.Is(e.err, target) }

// headerSecrets builds the replacer masking every OTLP header value,
// longest first so a value containing another is masked whole; nil when
// there are none.
func headerSecrets(s *otelSettings) *strings.Replacer {
	var vals []string
	for _, es := range []exporterSettings{s.traces, s.metrics, s.logs} {
		for _, v := range es.headers {
			// Values too short to be a credential would mask ordinary
			// words in the message.
			if len(v) >= 4 && !slices.Contains(vals, v) {
				vals = append(vals, v)
			}
		}
	}
	if len(vals) == 0 {
		return nil
	}
	sort.Slice(vals, func(i, j int) bool { return len(vals[i]) > len(vals[j]) })
	pairs := make([]string, 0, 2*len(vals))
	for _, v := range vals {
		pairs = append(pairs, v, redact.Mask)
	}
	return strings.NewReplacer(pairs...)
}

// minStopGrace is the live context a provider gets when shutdown is
// called with a context already done; see shutdown.
const minStopGrace = 100 * time.Millisecond

// shutdown flushes and stops the providers concurrently, then closes the
// gRPC connections.
//
// The providers must be handed a live context: the SDK's
// TracerProvider.Shutdown, given a done one, marks itself shut down
// without stopping its batch processor, whose goroutine then runs
// forever. So a done ctx is replaced by a short live one: stopping
// cleanly matters more than returning 100 ms earlier.
func (t *telemetry) shutdown(ctx context.Context) error {
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), minStopGrace)
		defer cancel()
	}
	errs := make([]error, len(t.providers)+1)
	var wg sync.WaitGroup
	for i, f := range t.providers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(ctx)
		}()
	}
	wg.Wait()
	t.providers = nil
	if t.conns != nil {
		errs[len(errs)-1] = t.conns.close()
	}
	return t.scrubError(errors.Join(errs...))
}

// instrumentationName is the scope name of goaspire's own telemetry.
const instrumentationName = "github.com/goaspire/goaspire/servicedefaults"

func newTelemetry(ctx context.Context, s *otelSettings) (_ *telemetry, err error) {
	t := &telemetry{
		tp:      tracenoop.NewTracerProvider(),
		mp:      metricnoop.NewMeterProvider(),
		prop:    newPropagator(s.propagators),
		secrets: headerSecrets(s),
	}
	defer func() {
		if err != nil {
			_ = t.shutdown(ctx)
		}
	}()
	if s.disabled || !(s.traces.enabled || s.metrics.enabled || s.logs.enabled) {
		return t, nil
	}

	res, err := newResource(ctx, s)
	if err != nil {
		return nil, fmt.Errorf("servicedefaults: building the OpenTelemetry resource: %w", err)
	}
	conns := &grpcConns{}
	t.conns = conns

	if s.traces.enabled {
		exp, err := newTraceExporter(ctx, s.traces, conns)
		if err != nil {
			return nil, exporterError(s.traces, err)
		}
		tp := sdktrace.NewTracerProvider(
			sdktrace.WithResource(res), // merged with the process environment: see resourceSpanExporter
			sdktrace.WithSampler(s.sampler),
			sdktrace.WithRawSpanLimits(s.spanLimits),
			sdktrace.WithSpanProcessor(countingSpanProcessor{c: &t.counts, SpanProcessor: sdktrace.NewBatchSpanProcessor(
				countingSpanExporter{SpanExporter: resourceSpanExporter{exp, res}, c: &t.counts},
				sdktrace.WithBatchTimeout(s.bsp.delay),
				sdktrace.WithExportTimeout(s.bsp.timeout),
				sdktrace.WithMaxQueueSize(s.bsp.maxQueue),
				sdktrace.WithMaxExportBatchSize(s.bsp.maxBatch),
			)}),
		)
		t.tp, t.tracing = tp, true
		t.providers = append(t.providers, tp.Shutdown)
	}

	if s.metrics.enabled {
		exp, err := newMetricExporter(ctx, s, conns)
		if err != nil {
			return nil, exporterError(s.metrics, err)
		}
		filter := exemplar.TraceBasedFilter
		switch s.exemplarFilter {
		case "always_on":
			filter = exemplar.AlwaysOnFilter
		case "always_off":
			filter = exemplar.AlwaysOffFilter
		}
		mp := sdkmetric.NewMeterProvider(
			sdkmetric.WithResource(res), // merged with the process environment: see resourceMetricExporter
			sdkmetric.WithReader(sdkmetric.NewPeriodicReader(countingMetricExporter{Exporter: resourceMetricExporter{exp, res}, c: &t.counts},
				sdkmetric.WithInterval(s.metricInterval),
				sdkmetric.WithTimeout(s.metricTimeout),
				// go.schedule.duration comes from the runtime producer,
				// not from runtime.Start's instruments.
				sdkmetric.WithProducer(runtime.NewProducer()),
			)),
			sdkmetric.WithExemplarFilter(filter),
			sdkmetric.WithCardinalityLimit(2000), // the SDK default, so the process environment cannot change it
		)
		t.mp, t.metering = mp, true
		t.providers = append(t.providers, mp.Shutdown)
		if err := runtime.Start(runtime.WithMeterProvider(mp)); err != nil {
			return nil, fmt.Errorf("servicedefaults: starting Go runtime metrics: %w", err)
		}
	}

	if s.logs.enabled {
		exp, err := newLogExporter(ctx, s.logs, conns)
		if err != nil {
			return nil, exporterError(s.logs, err)
		}
		lp := sdklog.NewLoggerProvider(
			sdklog.WithResource(res), // merged with the process environment: see resourceLogProcessor
			sdklog.WithAttributeCountLimit(s.logAttrCount),
			sdklog.WithAttributeValueLengthLimit(s.logAttrLen),
			sdklog.WithProcessor(&resourceLogProcessor{Processor: countingLogProcessor{c: &t.counts, Processor: sdklog.NewBatchProcessor(
				countingLogExporter{Exporter: exp, c: &t.counts},
				sdklog.WithExportInterval(s.blrp.delay),
				sdklog.WithExportTimeout(s.blrp.timeout),
				sdklog.WithMaxQueueSize(s.blrp.maxQueue),
				sdklog.WithExportMaxBatchSize(s.blrp.maxBatch),
			)}, res: res}),
		)
		t.lp = lp
		t.providers = append(t.providers, lp.Shutdown)
	}
	return t, nil
}

func exporterError(es exporterSettings, err error) error {
	return fmt.Errorf("servicedefaults: OTLP exporter for %s: %w", es.endpointKey, err)
}

func newPropagator(names []string) propagation.TextMapPropagator {
	var ps []propagation.TextMapPropagator
	for _, n := range names {
		switch n {
		case "tracecontext":
			ps = append(ps, propagation.TraceContext{})
		case "baggage":
			ps = append(ps, propagation.Baggage{})
		}
	}
	return propagation.NewCompositeTextMapPropagator(ps...)
}

// newResource builds the resource from the settings only (not from the
// process environment, which resource.Default and resource.WithFromEnv
// would read): SDK, host and Go runtime attributes (detectors that read
// no environment variable), the main module's version as
// service.version, then OTEL_RESOURCE_ATTRIBUTES (with service.instance.id
// generated when missing), then service.name; later ones win.
//
// The SDK providers' WithResource merges the process's
// OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME under the resource it is
// given, so the exporters are handed this resource again: see
// resourceSpanExporter, resourceMetricExporter and resourceLogProcessor.
func newResource(ctx context.Context, s *otelSettings) (*resource.Resource, error) {
	var version []attribute.KeyValue
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		version = append(version, attribute.String("service.version", bi.Main.Version))
	}
	return resource.New(ctx,
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithProcessRuntimeName(),
		resource.WithProcessRuntimeVersion(),
		resource.WithAttributes(version...),
		resource.WithAttributes(s.resource...),
		resource.WithAttributes(attribute.String("service.name", s.serviceName)),
	)
}

// grpcConns shares one gRPC connection between the exporters that use the
// same endpoint and TLS settings (normally all three).
type grpcConns struct {
	conns []*grpc.ClientConn
	keys  []string
}

func (g *grpcConns) get(es exporterSettings) (*grpc.ClientConn, error) {
	key := fmt.Sprintf("%s|%p|%t", es.endpoint.Host, es.tls, es.gzip)
	for i, k := range g.keys {
		if k == key {
			return g.conns[i], nil
		}
	}
	var creds credentials.TransportCredentials = insecure.NewCredentials()
	if es.tls != nil {
		creds = credentials.NewTLS(es.tls)
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds), grpc.WithUserAgent("goaspire OTLP exporter")}
	if es.gzip {
		opts = append(opts, grpc.WithDefaultCallOptions(grpc.UseCompressor("gzip")))
	}
	conn, err := grpc.NewClient(es.endpoint.Host, opts...)
	if err != nil {
		return nil, err
	}
	g.conns, g.keys = append(g.conns, conn), append(g.keys, key)
	return conn, nil
}

func (g *grpcConns) close() error {
	var errs []error
	for _, c := range g.conns {
		errs = append(errs, c.Close())
	}
	g.conns, g.keys = nil, nil
	return errors.Join(errs...)
}

func newTraceExporter(ctx context.Context, es exporterSettings, conns *grpcConns) (sdktrace.SpanExporter, error) {
	if es.protocol == protoGRPC {
		conn, err := conns.get(es)
		if err != nil {
			return nil, err
		}
		return otlptracegrpc.New(ctx,
			otlptracegrpc.WithGRPCConn(conn),
			otlptracegrpc.WithHeaders(es.headers),
			otlptracegrpc.WithTimeout(es.timeout),
		)
	}
	opts := []otlptracehttp.Option{
		otlptracehttp.WithEndpointURL(es.endpoint.String()),
		otlptracehttp.WithHeaders(es.headers),
		otlptracehttp.WithTimeout(es.timeout),
		otlptracehttp.WithCompression(otlptracehttp.NoCompression),
	}
	if es.gzip {
		opts = append(opts, otlptracehttp.WithCompression(otlptracehttp.GzipCompression))
	}
	if es.tls != nil {
		opts = append(opts, otlptracehttp.WithTLSClientConfig(es.tls))
	}
	return otlptracehttp.New(ctx, opts...)
}

func newMetricExporter(ctx context.Context, s *otelSettings, conns *grpcConns) (sdkmetric.Exporter, error) {
	es := s.metrics
	temporality := temporalitySelector(s.temporality)
	aggregation := aggregationSelector(s.histogram)
	if es.protocol == protoGRPC {
		conn, err := conns.get(es)
		if err != nil {
			return nil, err
		}
		return otlpmetricgrpc.New(ctx,
			otlpmetricgrpc.WithGRPCConn(conn),
			otlpmetricgrpc.WithHeaders(es.headers),
			otlpmetricgrpc.WithTimeout(es.timeout),
			otlpmetricgrpc.WithTemporalitySelector(temporality),
			otlpmetricgrpc.WithAggregationSelector(aggregation),
		)
	}
	opts := []otlpmetrichttp.Option{
		otlpmetrichttp.WithEndpointURL(es.endpoint.String()),
		otlpmetrichttp.WithHeaders(es.headers),
		otlpmetrichttp.WithTimeout(es.timeout),
		otlpmetrichttp.WithCompression(otlpmetrichttp.NoCompression),
		otlpmetrichttp.WithTemporalitySelector(temporality),
		otlpmetrichttp.WithAggregationSelector(aggregation),
	}
	if es.gzip {
		opts = append(opts, otlpmetrichttp.WithCompression(otlpmetrichttp.GzipCompression))
	}
	if es.tls != nil {
		opts = append(opts, otlpmetrichttp.WithTLSClientConfig(es.tls))
	}
	return otlpmetrichttp.New(ctx, opts...)
}

func newLogExporter(ctx context.Context, es exporterSettings, conns *grpcConns) (sdklog.Exporter, error) {
	if es.protocol == protoGRPC {
		conn, err := conns.get(es)
		if err != nil {
			return nil, err
		}
		return otlploggrpc.New(ctx,
			otlploggrpc.WithGRPCConn(conn),
			otlploggrpc.WithHeaders(es.headers),
			otlploggrpc.WithTimeout(es.timeout),
		)
	}
	opts := []otlploghttp.Option{
		otlploghttp.WithEndpointURL(es.endpoint.String()),
		otlploghttp.WithHeaders(es.headers),
		otlploghttp.WithTimeout(es.timeout),
		otlploghttp.WithCompression(otlploghttp.NoCompression),
	}
	if es.gzip {
		opts = append(opts, otlploghttp.WithCompression(otlploghttp.GzipCompression))
	}
	if es.tls != nil {
		opts = append(opts, otlploghttp.WithTLSClientConfig(es.tls))
	}
	return otlploghttp.New(ctx, opts...)
}

// temporalitySelector implements
// OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE.
func temporalitySelector(pref string) sdkmetric.TemporalitySelector {
	return func(k sdkmetric.InstrumentKind) metricdata.Temporality {
		switch pref {
		case "delta":
			switch k {
			case sdkmetric.InstrumentKindCounter, sdkmetric.InstrumentKindHistogram, sdkmetric.InstrumentKindObservableCounter:
				return metricdata.DeltaTemporality
			}
		case "lowmemory":
			switch k {
			case sdkmetric.InstrumentKindCounter, sdkmetric.InstrumentKindHistogram:
				return metricdata.DeltaTemporality
			}
		}
		return metricdata.CumulativeTemporality
	}
}

// aggregationSelector implements
// OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION.
func aggregationSelector(hist string) sdkmetric.AggregationSelector {
	return func(k sdkmetric.InstrumentKind) sdkmetric.Aggregation {
		if k == sdkmetric.InstrumentKindHistogram && hist == "base2_exponential_bucket_histogram" {
			return sdkmetric.AggregationBase2ExponentialHistogram{MaxSize: 160, MaxScale: 20}
		}
		return sdkmetric.DefaultAggregationSelector(k)
	}
}

// resourceSpanExporter exports spans under res, the resource built from
// the App's configuration, rather than the provider's: the SDK's
// sdktrace.WithResource merges the process's OTEL_RESOURCE_ATTRIBUTES and
// OTEL_SERVICE_NAME into the provider's resource, which would leak
// attributes the configuration does not have.
type resourceSpanExporter struct {
	sdktrace.SpanExporter
	res *resource.Resource
}

func (e resourceSpanExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	out := make([]sdktrace.ReadOnlySpan, len(spans))
	for i, s := range spans {
		out[i] = resourceSpan{s, e.res}
	}
	return e.SpanExporter.ExportSpans(ctx, out)
}

// resourceSpan is a span reporting another resource.
type resourceSpan struct {
	sdktrace.ReadOnlySpan
	res *resource.Resource
}

func (s resourceSpan) Resource() *resource.Resource { return s.res }

// resourceMetricExporter exports metrics under res: see
// resourceSpanExporter.
type resourceMetricExporter struct {
	sdkmetric.Exporter
	res *resource.Resource
}

func (e resourceMetricExporter) Export(ctx context.Context, rm *metricdata.ResourceMetrics) error {
	c := *rm
	c.Resource = e.res
	return e.Exporter.Export(ctx, &c)
}

// resourceLogProcessor makes log records carry res: see
// resourceSpanExporter. A log record has no resource setter, and every
// record of a provider points at the provider's own resource (a fresh
// value made by sdklog.WithResource's merge, shared with nothing else),
// so that value is overwritten with res once, before the first record
// reaches the batch processor. Records reach the batch processor only
// through OnEmit, after the once has run, so none is read before.
type resourceLogProcessor struct {
	sdklog.Processor
	res  *resource.Resource
	once sync.Once
}

func (p *resourceLogProcessor) OnEmit(ctx context.Context, rec *sdklog.Record) error {
	p.once.Do(func() {
		if have := rec.Resource(); have != nil && have != p.res && !have.Equal(p.res) {
			*have = *p.res
		}
	})
	return p.Processor.OnEmit(ctx, rec)
}
