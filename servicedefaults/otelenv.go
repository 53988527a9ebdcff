package servicedefaults

import (
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/internal/redact"
	"github.com/goaspire/goaspire/internal/roots"
)

// Protocols an OTLP exporter can speak.
const (
	protoGRPC = "grpc"
	protoHTTP = "http/protobuf"
)

// otelSignal is one telemetry signal, named as in OTEL_EXPORTER_OTLP_{SIGNAL}_*.
type otelSignal struct {
	name string // TRACES, METRICS, LOGS
	path string // OTLP/HTTP path appended to the generic endpoint
}

var (
	sigTraces  = otelSignal{"TRACES", "v1/traces"}
	sigMetrics = otelSignal{"METRICS", "v1/metrics"}
	sigLogs    = otelSignal{"LOGS", "v1/logs"}
)

// exporterSettings is what one OTLP exporter needs, read from
// OTEL_EXPORTER_OTLP_* with the signal-specific variable winning.
type exporterSettings struct {
	enabled     bool
	protocol    string
	endpoint    *url.URL // full URL (for HTTP, including the signal path)
	headers     map[string]string
	timeout     time.Duration
	gzip        bool
	tls         *tls.Config // nil for an http:// endpoint
	endpointKey string      // the variable the endpoint came from, for errors
}

// batchSettings configures a batch processor (OTEL_BSP_* or OTEL_BLRP_*).
type batchSettings struct {
	delay, timeout     time.Duration
	maxQueue, maxBatch int
}

// otelSettings is the OpenTelemetry configuration read from a
// discovery.Config, following the OpenTelemetry SDK environment variable
// specification.
type otelSettings struct {
	disabled    bool          // OTEL_SDK_DISABLED
	roots       *trustedRoots // SSL_CERT_FILE, SSL_CERT_DIR: read when TLS needs them (roots.go)
	serviceName string
	resource    []attribute.KeyValue // OTEL_RESOURCE_ATTRIBUTES, service.name applied

	traces, metrics, logs exporterSettings

	sampler    sdktrace.Sampler
	spanLimits sdktrace.SpanLimits
	bsp, blrp  batchSettings

	metricInterval, metricTimeout time.Duration
	exemplarFilter                string // always_on, always_off, trace_based
	temporality                   string // cumulative, delta, lowmemory
	histogram                     string // explicit_bucket_histogram, base2_exponential_bucket_histogram

	logAttrCount, logAttrLen int

	propagators []string // tracecontext, baggage

	// warnings are settings accepted with a fallback, logged once the
	// logger exists (each variable once).
	warnings []otelWarning
}

// otelWarning is a setting accepted with a fallback: key names the
// variable, msg says what is done instead.
type otelWarning struct{ key, msg string }

// warn records w unless a warning for the same variable is recorded.
func (s *otelSettings) warn(w otelWarning) {
	for _, have := range s.warnings {
		if have.key == w.key {
			return
		}
	}
	s.warnings = append(s.warnings, w)
}

// envReader reads OTEL_* values from a Config: an empty value counts as
// unset, as the specification requires.
type envReader struct{ cfg *discovery.Config }

func (e envReader) get(key string) string { return strings.TrimSpace(e.cfg.String(key)) }

func (e envReader) millis(key string, def time.Duration, allowZero bool) (time.Duration, error) {
	return parseMillis(key, e.get(key), def, allowZero)
}

// parseMillis parses the value v of key as whole milliseconds, the unit of
// every OTEL_* duration.
func parseMillis(key, v string, def time.Duration, allowZero bool) (time.Duration, error) {
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || (n == 0 && !allowZero) {
		return def, &discovery.KeyError{Key: key, Err: fmt.Errorf("invalid duration %q: want a positive whole number of milliseconds", redact.Value(key, v))}
	}
	return time.Duration(n) * time.Millisecond, nil
}

func (e envReader) count(key string, def int, positive bool) (int, error) {
	v := e.get(key)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || (positive && n == 0) {
		return def, &discovery.KeyError{Key: key, Err: fmt.Errorf("invalid number %q", redact.Value(key, v))}
	}
	return n, nil
}

// choice reads a lower-cased value that must be one of allowed.
func (e envReader) choice(key, def string, allowed ...string) (string, error) {
	v := strings.ToLower(e.get(key))
	if v == "" {
		return def, nil
	}
	for _, a := range allowed {
		if v == a {
			return v, nil
		}
	}
	return def, &discovery.KeyError{Key: key, Err: fmt.Errorf("unsupported value %q (supported: %s)", redact.Value(key, v), strings.Join(allowed, ", "))}
}

// readOTelSettings reads the OpenTelemetry configuration. Errors name the
// variable at fault and never quote a header value.
func readOTelSettings(cfg *discovery.Config) (*otelSettings, error) {
	e := envReader{cfg}
	s := &otelSettings{}
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}

	if v := e.get("OTEL_SDK_DISABLED"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			add(&discovery.KeyError{Key: "OTEL_SDK_DISABLED", Err: fmt.Errorf("invalid boolean %q", redact.Value("OTEL_SDK_DISABLED", v))})
		}
		s.disabled = b
	}

	var err error
	s.resource, s.serviceName, err = readResource(e)
	add(err)

	props, err := readList(e, "OTEL_PROPAGATORS", "tracecontext,baggage", "tracecontext", "baggage", "none")
	add(err)
	for _, p := range props {
		if p != "none" {
			s.propagators = append(s.propagators, p)
		}
	}

	s.roots, err = readRoots(e)
	add(err)
	tlsCache := map[string]*tls.Config{}
	for _, x := range []struct {
		sig otelSignal
		dst *exporterSettings
	}{{sigTraces, &s.traces}, {sigMetrics, &s.metrics}, {sigLogs, &s.logs}} {
		es, w, err := readExporter(e, x.sig, s.roots, tlsCache)
		add(err)
		if w != nil {
			s.warn(*w)
		}
		*x.dst = es
	}

	s.sampler, err = readSampler(e)
	add(err)
	s.spanLimits, err = readSpanLimits(e)
	add(err)

	s.bsp, err = readBatch(e, "OTEL_BSP_", 5000*time.Millisecond)
	add(err)
	s.blrp, err = readBatch(e, "OTEL_BLRP_", 1000*time.Millisecond)
	add(err)

	s.metricInterval, err = e.millis("OTEL_METRIC_EXPORT_INTERVAL", 60*time.Second, false)
	add(err)
	s.metricTimeout, err = e.millis("OTEL_METRIC_EXPORT_TIMEOUT", 30*time.Second, false)
	add(err)
	s.exemplarFilter, err = e.choice("OTEL_METRICS_EXEMPLAR_FILTER", "trace_based", "trace_based", "always_on", "always_off")
	add(err)
	s.temporality, err = e.choice("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "cumulative", "cumulative", "delta", "lowmemory")
	add(err)
	s.histogram, err = e.choice("OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION", "explicit_bucket_histogram",
		"explicit_bucket_histogram", "base2_exponential_bucket_histogram")
	add(err)

	attrCount, err := e.count("OTEL_ATTRIBUTE_COUNT_LIMIT", 128, false)
	add(err)
	attrLen, err := e.count("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", -1, false)
	add(err)
	s.logAttrCount, err = e.count("OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT", attrCount, false)
	add(err)
	s.logAttrLen, err = e.count("OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT", attrLen, false)
	add(err)

	if err := errors.Join(errs...); err != nil {
		// No package prefix: Add wraps every settings error in one.
		return nil, fmt.Errorf("OpenTelemetry configuration: %w", err)
	}
	return s, nil
}

// readList reads a comma-separated list whose items must be in allowed.
func readList(e envReader, key, def string, allowed ...string) ([]string, error) {
	v := strings.ToLower(e.get(key))
	if v == "" {
		v = def
	}
	var out []string
	for _, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		ok := false
		for _, a := range allowed {
			ok = ok || item == a
		}
		if !ok {
			return nil, &discovery.KeyError{Key: key, Err: fmt.Errorf("unsupported value %q (supported: %s)", redact.Value(key, item), strings.Join(allowed, ", "))}
		}
		out = append(out, item)
	}
	return out, nil
}

// readResource reads OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME. The
// service name is OTEL_SERVICE_NAME, else service.name from the
// attributes, else "unknown_service:" + the executable name, as the
// specification says.
//
// service.instance.id is kept when the attributes set it (an AppHost run
// sets it to the replica's name); otherwise it is a random UUID, new for
// each App, as .NET's ResourceBuilder.AddService generates one: a
// deployment (aspire publish to Docker Compose or Kubernetes) sets only
// OTEL_SERVICE_NAME, and without the id the dashboard would merge every
// replica into one.
func readResource(e envReader) ([]attribute.KeyValue, string, error) {
	var attrs []attribute.KeyValue
	name := ""
	hasInstance := false
	if v := e.get("OTEL_RESOURCE_ATTRIBUTES"); v != "" {
		pairs, err := parsePairs(v)
		if err != nil {
			return nil, "", &discovery.KeyError{Key: "OTEL_RESOURCE_ATTRIBUTES", Err: err}
		}
		for _, p := range pairs {
			if p[0] == "service.name" {
				name = p[1]
				continue
			}
			hasInstance = hasInstance || (p[0] == "service.instance.id" && p[1] != "")
			attrs = append(attrs, attribute.String(p[0], p[1]))
		}
	}
	if !hasInstance {
		id, err := newInstanceID()
		if err != nil {
			return nil, "", fmt.Errorf("generating service.instance.id: %w", err)
		}
		attrs = append(attrs, attribute.String("service.instance.id", id))
	}
	if v := e.get("OTEL_SERVICE_NAME"); v != "" {
		name = v
	}
	if name == "" {
		exe, err := os.Executable()
		if err != nil {
			exe = os.Args[0]
		}
		name = "unknown_service:" + strings.TrimSuffix(filepath.Base(exe), ".exe")
	}
	return attrs, name, nil
}

// newInstanceID returns a random (version 4) UUID in its canonical
// lower-case form.
func newInstanceID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 9562 variant
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]), nil
}

// parsePairs parses the "k1=v1,k2=v2" lists of OTEL_RESOURCE_ATTRIBUTES
// and OTEL_EXPORTER_OTLP_HEADERS, percent-decoding values. Errors name
// the key of a malformed entry but never quote a value.
func parsePairs(v string) ([][2]string, error) {
	var out [][2]string
	for i, item := range strings.Split(v, ",") {
		if strings.TrimSpace(item) == "" {
			continue
		}
		k, val, ok := strings.Cut(item, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("entry %d is not key=value", i+1)
		}
		dec, err := url.PathUnescape(strings.TrimSpace(val))
		if err != nil {
			return nil, fmt.Errorf("the value of %q is not valid percent-encoding", k)
		}
		out = append(out, [2]string{k, dec})
	}
	return out, nil
}

// lookup returns the signal-specific variable when set, else the generic
// one, and the key it came from.
func (e envReader) lookup(sig otelSignal, suffix string) (string, string) {
	key := "OTEL_EXPORTER_OTLP_" + sig.name + "_" + suffix
	if v := e.get(key); v != "" {
		return v, key
	}
	key = "OTEL_EXPORTER_OTLP_" + suffix
	return e.get(key), key
}

// readExporter reads one signal's exporter settings. tlsCache shares one
// *tls.Config between signals naming the same certificate files, so they
// can share one gRPC connection. An https endpoint needs the trusted
// roots, so they are read then (once per process). The warning, when not
// nil, is a setting accepted with a fallback.
func readExporter(e envReader, sig otelSignal, roots *trustedRoots, tlsCache map[string]*tls.Config) (exporterSettings, *otelWarning, error) {
	var s exporterSettings
	var w *otelWarning
	exporterKey := "OTEL_" + sig.name + "_EXPORTER"
	kinds, err := readList(e, exporterKey, "otlp", "otlp", "none")
	if err != nil {
		return s, w, err
	}
	wantOTLP := false
	for _, k := range kinds {
		wantOTLP = wantOTLP || k == "otlp"
	}

	specific := "OTEL_EXPORTER_OTLP_" + sig.name + "_ENDPOINT"
	raw, key := e.get(specific), specific
	if raw == "" {
		raw, key = e.get("OTEL_EXPORTER_OTLP_ENDPOINT"), "OTEL_EXPORTER_OTLP_ENDPOINT"
	}
	if raw == "" || !wantOTLP {
		return s, w, nil // exporter off
	}
	s.endpointKey = key

	proto, protoKey := e.lookup(sig, "PROTOCOL")
	switch strings.ToLower(proto) {
	case "":
		s.protocol = protoHTTP // the specification's default
	case protoGRPC, protoHTTP:
		s.protocol = strings.ToLower(proto)
	case "http/json":
		// Valid, but not something the Go exporters speak. Every OTLP/HTTP
		// receiver (the Aspire dashboard's included) takes protobuf on the
		// same endpoint, so telemetry still flows; refusing to start over
		// it would take the service down for nothing.
		s.protocol = protoHTTP
		w = &otelWarning{key: protoKey, msg: "OTLP http/json is not supported; exporting http/protobuf to the same endpoint instead"}
	default:
		return s, w, &discovery.KeyError{Key: protoKey, Err: fmt.Errorf("unsupported protocol %q (supported: grpc, http/protobuf, http/json)", redact.Value(protoKey, proto))}
	}

	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return s, w, &discovery.KeyError{Key: key, Err: fmt.Errorf("invalid endpoint %q: want an http:// or https:// URL", redact.Value(key, raw))}
	}
	if key != specific && s.protocol == protoHTTP {
		// The generic endpoint is a base URL: append the signal's path.
		u.Path = strings.TrimSuffix(u.Path, "/") + "/" + sig.path
		u.RawPath = ""
	}
	s.endpoint = u

	if hv, hk := e.lookup(sig, "HEADERS"); hv != "" {
		pairs, err := parsePairs(hv)
		if err != nil {
			return s, w, &discovery.KeyError{Key: hk, Err: err}
		}
		s.headers = make(map[string]string, len(pairs))
		for _, p := range pairs {
			s.headers[p[0]] = p[1]
		}
	}

	tv, tk := e.lookup(sig, "TIMEOUT")
	s.timeout, err = parseMillis(tk, tv, 10*time.Second, false)
	if err != nil {
		return s, w, err
	}

	switch cv, ck := e.lookup(sig, "COMPRESSION"); strings.ToLower(cv) {
	case "", "none":
	case "gzip":
		s.gzip = true
	default:
		return s, w, &discovery.KeyError{Key: ck, Err: fmt.Errorf("unsupported compression %q (supported: gzip, none)", redact.Value(ck, cv))}
	}

	if u.Scheme == "https" {
		ca, _ := e.lookup(sig, "CERTIFICATE")
		cc, _ := e.lookup(sig, "CLIENT_CERTIFICATE")
		ck, _ := e.lookup(sig, "CLIENT_KEY")
		key := ca + "\x00" + cc + "\x00" + ck
		if s.tls = tlsCache[key]; s.tls == nil {
			s.tls, err = exporterTLS(e, sig, roots)
			if err != nil {
				return s, w, err
			}
			tlsCache[key] = s.tls
		}
	}
	s.enabled = !e.disabled()
	return s, w, nil
}

func (e envReader) disabled() bool {
	b, _ := strconv.ParseBool(e.get("OTEL_SDK_DISABLED"))
	return b
}

// exporterTLS builds the TLS configuration of an https exporter: the
// system roots plus SSL_CERT_FILE / SSL_CERT_DIR (roots) plus
// OTEL_EXPORTER_OTLP_[SIGNAL_]CERTIFICATE, and a client certificate from
// OTEL_EXPORTER_OTLP_[SIGNAL_]CLIENT_CERTIFICATE and _CLIENT_KEY.
func exporterTLS(e envReader, sig otelSignal, trusted *trustedRoots) (*tls.Config, error) {
	pool, err := trusted.pool()
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	if file, key := e.lookup(sig, "CERTIFICATE"); file != "" {
		if pool == nil {
			cfg.RootCAs = roots.SystemPool()
		} else {
			cfg.RootCAs = pool.Clone() // the shared pool stays as read
		}
		if err := roots.AppendCertFile(cfg.RootCAs, file); err != nil {
			return nil, &discovery.KeyError{Key: key, Err: err}
		}
	}
	certFile, certKey := e.lookup(sig, "CLIENT_CERTIFICATE")
	keyFile, keyKey := e.lookup(sig, "CLIENT_KEY")
	switch {
	case certFile != "" && keyFile != "":
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, &discovery.KeyError{Key: certKey, Err: err}
		}
		cfg.Certificates = []tls.Certificate{pair}
	case certFile != "":
		return nil, &discovery.KeyError{Key: keyKey, Err: errors.New("not set, but a client certificate is")}
	case keyFile != "":
		return nil, &discovery.KeyError{Key: certKey, Err: errors.New("not set, but a client key is")}
	}
	return cfg, nil
}

func readSampler(e envReader) (sdktrace.Sampler, error) {
	name, err := e.choice("OTEL_TRACES_SAMPLER", "parentbased_always_on",
		"always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio")
	if err != nil {
		return nil, err
	}
	ratio := 1.0
	if strings.HasSuffix(name, "traceidratio") {
		if v := e.get("OTEL_TRACES_SAMPLER_ARG"); v != "" {
			ratio, err = strconv.ParseFloat(v, 64)
			if err != nil || ratio < 0 || ratio > 1 {
				return nil, &discovery.KeyError{Key: "OTEL_TRACES_SAMPLER_ARG", Err: fmt.Errorf("invalid ratio %q: want a number from 0 to 1", redact.Value("OTEL_TRACES_SAMPLER_ARG", v))}
			}
		}
	}
	switch name {
	case "always_on":
		return sdktrace.AlwaysSample(), nil
	case "always_off":
		return sdktrace.NeverSample(), nil
	case "traceidratio":
		return sdktrace.TraceIDRatioBased(ratio), nil
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample()), nil
	case "parentbased_traceidratio":
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio)), nil
	default:
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), nil
	}
}

func readSpanLimits(e envReader) (sdktrace.SpanLimits, error) {
	var errs []error
	n := func(key string, def int) int {
		v, err := e.count(key, def, false)
		if err != nil {
			errs = append(errs, err)
		}
		return v
	}
	attrCount := n("OTEL_ATTRIBUTE_COUNT_LIMIT", sdktrace.DefaultAttributeCountLimit)
	attrLen := n("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", sdktrace.DefaultAttributeValueLengthLimit)
	l := sdktrace.SpanLimits{
		AttributeCountLimit:         n("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", attrCount),
		AttributeValueLengthLimit:   n("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", attrLen),
		EventCountLimit:             n("OTEL_SPAN_EVENT_COUNT_LIMIT", sdktrace.DefaultEventCountLimit),
		LinkCountLimit:              n("OTEL_SPAN_LINK_COUNT_LIMIT", sdktrace.DefaultLinkCountLimit),
		AttributePerEventCountLimit: n("OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", attrCount),
		AttributePerLinkCountLimit:  n("OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", attrCount),
	}
	return l, errors.Join(errs...)
}

func readBatch(e envReader, prefix string, defDelay time.Duration) (batchSettings, error) {
	var errs []error
	var b batchSettings
	var err error
	b.delay, err = e.millis(prefix+"SCHEDULE_DELAY", defDelay, false)
	errs = append(errs, err)
	b.timeout, err = e.millis(prefix+"EXPORT_TIMEOUT", 30*time.Second, false)
	errs = append(errs, err)
	b.maxQueue, err = e.count(prefix+"MAX_QUEUE_SIZE", 2048, true)
	errs = append(errs, err)
	b.maxBatch, err = e.count(prefix+"MAX_EXPORT_BATCH_SIZE", 512, true)
	errs = append(errs, err)
	if b.maxBatch > b.maxQueue {
		errs = append(errs, &discovery.KeyError{Key: prefix + "MAX_EXPORT_BATCH_SIZE",
			Err: fmt.Errorf("%d exceeds %sMAX_QUEUE_SIZE (%d)", b.maxBatch, prefix, b.maxQueue)})
	}
	return b, errors.Join(errs...)
}
