// Package servicedefaults is goaspire's entry point: one call gives a Go
// service what builder.AddServiceDefaults() and app.MapDefaultEndpoints()
// give a .NET Aspire one.
//
//	mux := http.NewServeMux()
//	app, err := servicedefaults.Add(ctx, mux)
//	if err != nil {
//		log.Fatal(err) // names the variable or key at fault
//	}
//	defer app.Shutdown(context.Background())
//	mux.HandleFunc("GET /orders/{id}", getOrder)
//	if err := app.Run(ctx); err != nil { // serves on PORT; drains on SIGTERM
//		log.Fatal(err) // Run returns nil after a clean stop: exit 0
//	}
//
// Add configures OpenTelemetry (traces, metrics, logs) from the OTEL_*
// variables an AppHost injects, makes slog's default logger write to
// stderr and to the OTel log pipeline with trace correlation, serves
// /health and /alive, and wraps the handler (a ServeMux or any router) in
// server instrumentation. App.Run serves
// and shuts down gracefully; App.HTTPClient makes discovery-aware,
// instrumented clients; App.Tracer, App.Meter, App.Logger and App.Health
// are for user code's own spans, instruments, logs and checks.
//
// # Telemetry
//
// Each signal is exported over OTLP only when an endpoint is configured
// for it; otherwise its provider is the no-op one and costs nothing. All
// OTEL_* values are read from the App's configuration (discovery.Config,
// which holds the environment), never from os.Getenv, and are passed to
// the SDK explicitly, so a configuration built with discovery.FromMap is
// the whole truth. Supported, with the specification's defaults:
//
//	OTEL_SDK_DISABLED                      true: every signal no-op (propagation still works)
//	OTEL_SERVICE_NAME                      service.name; never overridden from code
//	                                       (default: service.name in OTEL_RESOURCE_ATTRIBUTES,
//	                                       else "unknown_service:<executable>")
//	OTEL_RESOURCE_ATTRIBUTES               k=v,k2=v2 (percent-decoded), e.g. service.instance.id
//	OTEL_EXPORTER_OTLP_ENDPOINT            base URL; http/protobuf appends /v1/{traces,metrics,logs}
//	OTEL_EXPORTER_OTLP_{SIGNAL}_ENDPOINT   per-signal URL, used as is
//	OTEL_EXPORTER_OTLP_[SIGNAL_]PROTOCOL   grpc or http/protobuf (default http/protobuf;
//	                                       Aspire sets grpc). http/json exports
//	                                       http/protobuf instead, with one warning.
//	OTEL_EXPORTER_OTLP_[SIGNAL_]HEADERS    k=v,... e.g. x-otlp-api-key=... (never logged)
//	OTEL_EXPORTER_OTLP_[SIGNAL_]TIMEOUT    ms, default 10000
//	OTEL_EXPORTER_OTLP_[SIGNAL_]COMPRESSION gzip or none
//	OTEL_EXPORTER_OTLP_[SIGNAL_]CERTIFICATE PEM file of extra trusted roots for an https endpoint
//	OTEL_EXPORTER_OTLP_[SIGNAL_]CLIENT_CERTIFICATE, _CLIENT_KEY   mTLS client certificate
//	SSL_CERT_FILE, SSL_CERT_DIR            extra trusted roots (added to the system's) for
//	                                       https exporters, App.HTTPClient and integrations
//	                                       (App.RootCAs); this is how Aspire's developer
//	                                       certificate is trusted. Read when TLS first needs
//	                                       them, once per process; Add only checks that
//	                                       SSL_CERT_FILE holds a certificate
//	OTEL_TRACES_EXPORTER, OTEL_METRICS_EXPORTER, OTEL_LOGS_EXPORTER   otlp (default) or none
//	OTEL_TRACES_SAMPLER                    always_on, always_off, traceidratio, parentbased_always_on
//	                                       (default), parentbased_always_off, parentbased_traceidratio
//	OTEL_TRACES_SAMPLER_ARG                ratio for the traceidratio samplers (default 1)
//	OTEL_PROPAGATORS                       tracecontext,baggage (default), none
//	OTEL_BSP_SCHEDULE_DELAY                ms, default 5000 (Aspire sets 1000 in development)
//	OTEL_BSP_EXPORT_TIMEOUT, _MAX_QUEUE_SIZE, _MAX_EXPORT_BATCH_SIZE   30000, 2048, 512
//	OTEL_BLRP_SCHEDULE_DELAY               ms, default 1000
//	OTEL_BLRP_EXPORT_TIMEOUT, _MAX_QUEUE_SIZE, _MAX_EXPORT_BATCH_SIZE  30000, 2048, 512
//	OTEL_METRIC_EXPORT_INTERVAL            ms, default 60000 (Aspire sets 1000 in development)
//	OTEL_METRIC_EXPORT_TIMEOUT             ms, default 30000
//	OTEL_METRICS_EXEMPLAR_FILTER           trace_based (default), always_on, always_off
//	OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE        cumulative (default), delta, lowmemory
//	OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION explicit_bucket_histogram (default),
//	                                       base2_exponential_bucket_histogram
//	OTEL_ATTRIBUTE_COUNT_LIMIT, OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT, OTEL_SPAN_*_LIMIT,
//	OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT, OTEL_LINK_ATTRIBUTE_COUNT_LIMIT,
//	OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT, OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT
//
// An endpoint must be an http:// or https:// URL. An unsupported or
// malformed value is an error from Add naming the variable (header values
// are never quoted). When traces are exported, gRPC exporters of the same
// endpoint share one connection.
//
// Add installs the providers and the propagator as the otel globals, so
// libraries that default to them report through the App, and starts the Go runtime metrics
// (go.memory.used, go.goroutine.count, go.schedule.duration, ...) when
// metrics are exported.
// Export errors are logged to stderr only.
//
// WithoutGlobals leaves the otel globals and slog's default alone, so
// several Apps can live in one process (a test starting two services, a
// binary hosting several): every client the App makes is handed the App's
// own providers, propagator and logger, whatever the globals hold. Give
// your own libraries App.TracerProvider, App.MeterProvider,
// App.Propagator, App.LoggerProvider and App.Logger explicitly.
//
// Server instrumentation (App.Handler) makes one span per request,
// continuing the caller's trace from its traceparent header, named
// "{method} {route}" with http.route set, and records
// http.server.request.duration and friends, with otelhttp's attributes
// and instrumentation scope. The route is the pattern of the ServeMux
// that matched, or what a WithRouteFunc function returns once the handler
// has run (for chi: router.Find(chi.NewRouteContext(), r.Method,
// r.URL.Path)). /health and /alive, served in front of the handler for GET
// and HEAD, are neither traced nor measured. The writer a handler gets is
// reused by later requests: as net/http requires, do not use it after
// ServeHTTP returns.
//
// # Logging
//
// Add replaces slog's default logger (slog.SetDefault, which also routes
// the standard log package; not with WithoutGlobals) with App.Logger,
// which writes
//
//   - to stderr: text in Development, JSON otherwise, with trace_id and
//     span_id on every record made with a context holding a span (use
//     the ...Context methods: slog.InfoContext(r.Context(), ...));
//   - to the OTel log pipeline when logs are exported, through the
//     otelslog bridge, which carries the trace context in the record.
//
// It also routes go-redis's own log lines (failed dials, Sentinel
// failovers), which go-redis otherwise prints to stderr through a
// process-wide logger of its own, to App.Logger (cache.RedisLogger; not
// with WithoutGlobals).
//
// Durations are written as Go duration strings ("2s") in both, not as
// nanosecond integers. The OTel records of App.Logger and slog's default
// carry an instrumentation scope named after the service
// (OTEL_SERVICE_NAME), which the Aspire dashboard shows as their
// Category; the clients the App makes log under their own package's
// path (github.com/goaspire/goaspire/cqrs, .../cache, .../resilience,
// .../health), and the App itself under .../servicedefaults.
//
// Keys, as in .NET's logging configuration:
//
//	Logging:LogLevel:Default                 Trace, Debug, Information (default), Warning,
//	                                         Error, Critical, None
//	Logging:Console:LogLevel:Default         stderr only (default: Logging:LogLevel:Default)
//	Logging:OpenTelemetry:LogLevel:Default   OTel pipeline only (same default)
//	Logging:Console:FormatterName            json or simple (default: simple in Development,
//	                                         json otherwise)
//
// # Health endpoints
//
// Add maps "GET /health" (every check; HEAD too) and "GET /alive" (checks
// tagged health.TagLive, including the always-present "self" check) in
// every environment, because orchestrators need them. Healthy and
// Degraded answer 200, Unhealthy 503. See package health.
//
//	Aspire:ServiceDefaults:HealthChecks:DetailedOutput  true: JSON report instead of the status
//	                                                    word (default true in Development only)
//	Aspire:ServiceDefaults:HealthChecks:CacheDuration   report reuse, e.g. "00:00:02" or "2s"
//	                                                    (default 2s; 0 in Development)
//	Aspire:ServiceDefaults:HealthChecks:Timeout         default per-check timeout (default 5s)
//	Aspire:ServiceDefaults:HealthChecks:ResponseTimeout longest wait of a probe (default 800ms):
//	                                                    past it, each check's last completed
//	                                                    result answers while the run goes on
//
// Both endpoints answer within ResponseTimeout whatever a check does, under
// the 1 s timeout of Kubernetes' probes (and of those Aspire's Kubernetes
// publisher writes): a check blocked on a silent dependency leaves its
// previous result in the answer until its own timeout fails it, and a
// check that has never completed counts as failing.
//
// # Serving and shutdown
//
// Run listens on Kestrel:Endpoints:{name}:Url, else PORT, else the first
// of HTTP_PORTS, else the first of HTTPS_PORTS, else ASPNETCORE_URLS (its
// first http URL, or its first https URL when a certificate is configured
// or there is no http one), else ":8080". On SIGINT, SIGTERM, ctx done or
// Shutdown, /health answers 503 at once; after the optional shutdown delay
// (still serving, so Kubernetes takes the pod out of its endpoints first)
// Run stops accepting connections, lets in-flight requests finish within
// the grace period, then calls Shutdown. Shutdown returns by its context's
// deadline whatever a hook does: it exports the telemetry buffered so far
// first, so no client close can hold it back, then runs the OnShutdown
// hooks (closing every client the App made) in reverse order with the
// context, abandons a hook still running near the deadline and reports it
// (HookTimeoutError), closes idle client connections and stops telemetry
// with the time it reserved for that.
//
//	Aspire:ServiceDefaults:ShutdownDelay    keep serving with /health at 503 first (default 0)
//	Aspire:ServiceDefaults:ShutdownTimeout  grace period for in-flight requests (default 25s)
//	Aspire:ServiceDefaults:FlushTimeout     bound on the final Shutdown (default 5s)
//
// A negative value is an error from Add naming the key. The defaults add
// up to Kubernetes' default 30 s termination grace period; a delay comes
// on top. Run handles SIGINT and SIGTERM itself until it returns, also
// when main's ctx comes from signal.NotifyContext: a second signal during
// the shutdown exits the process at once with status 128+signal.
//
// The server takes Kestrel's settings, with Kestrel's defaults:
//
//	Kestrel:Limits:KeepAliveTimeout            idle keep-alive connections (default 130s)
//	Kestrel:Limits:RequestHeadersTimeout       reading a request's headers (default 30s)
//	Kestrel:Limits:MaxRequestHeadersTotalSize  request line and headers, bytes (default 32768; 431 past it)
//	Kestrel:Limits:MaxRequestBodySize          bytes (default 30000000; null: no limit); a larger
//	                                           body is answered 413, at once when Content-Length
//	                                           says so, else when the handler reads past the limit
//	                                           (its read fails with *http.MaxBytesError). gRPC
//	                                           calls are not limited by it.
//	Kestrel:Limits:Http2:MaxStreamsPerConnection      default 100
//	Kestrel:Limits:Http2:HeaderTableSize              default 4096
//	Kestrel:Limits:Http2:MaxFrameSize                 default 16384
//	Kestrel:Limits:Http2:InitialConnectionWindowSize  default 1048576
//	Kestrel:Limits:Http2:InitialStreamWindowSize      default 786432
//	Kestrel:Limits:Http2:KeepAlivePingDelay           default off
//	Kestrel:Limits:Http2:KeepAlivePingTimeout         default 20s
//	Kestrel:EndpointDefaults:Protocols         Http1, Http2 or Http1AndHttp2 (default); also
//	                                           Kestrel:Endpoints:{name}:Protocols
//	Kestrel:Certificates:Default:Path          PEM certificate (chain) of an https endpoint
//	Kestrel:Certificates:Default:KeyPath       PEM private key (default: in Path's file)
//	Kestrel:Certificates:Default:Password      password of an encrypted PKCS#8 key
//	                                           (PBES2: PBKDF2, AES-CBC; never logged); also
//	                                           Kestrel:Endpoints:{name}:Certificate:Path/KeyPath/Password
//
// HTTP/2 is negotiated by ALPN over TLS and spoken with prior knowledge
// over plain TCP (h2c), next to HTTP/1.1. A PKCS#12 file or a key with
// legacy PEM encryption is refused with an error naming the key. A bad
// value (a wrong password included, which is never quoted) is an error
// from Add naming the key. These apply to Serve and Run; an http.Server
// of your own serving App.Handler sets its own.
//
// A handler's panic is recovered as ASP.NET Core's exception handler
// does: the client gets a 500 with a short application/problem+json body
// (the panic message only in Development), the server span is named after
// the route with status Error and error.type, the duration metric is
// recorded with error.type, and one error log carries the stack
// (exception.stacktrace) and the trace. A panic after the response has
// started cuts the connection instead of writing a second header;
// http.ErrAbortHandler keeps its meaning. The ResponseWriter a handler
// gets passes Flush, Hijack and ReadFrom on, and unwraps for
// http.ResponseController.
//
// # Clients by name
//
// The core links no database, cache, broker or gRPC client. Each client
// comes from its own integration package, which opens it against the App
// through the Host interface: integrations/aspirepostgres (DB, Pool),
// integrations/aspireredis (Client, NewCache), integrations/aspirerabbitmq,
// integrations/aspirenats and integrations/aspiregrpc. Each opens a name
// once, on first use, without holding up the opening of any other name,
// with a context that bounds the open (or the wait for an open of the same
// name in progress); the client reports through the App's telemetry,
// registers its health checks and is closed by Shutdown. Shutdown ends an
// open still in progress. OpenClient gives integrations of your own the
// same.
//
// Background workers started with App.Go get a context that ends when
// the drain begins; Shutdown waits for them (within its bound) before it
// runs the OnShutdown hooks, so they may use the App's clients until they
// return.
//
// # HTTP clients
//
// App.HTTPClient(name) stacks, outermost first: the WithHTTPMiddleware
// middlewares; the resilience pipeline (package resilience), which
// resolves the logical URL through service discovery (package discovery)
// on every attempt; client instrumentation with trace propagation, one
// span per attempt; and one shared connection pool that trusts
// SSL_CERT_FILE / SSL_CERT_DIR and uses HTTP_PROXY, HTTPS_PROXY and
// NO_PROXY from the configuration. With the handler None, discovery alone
// takes the pipeline's place. A request URL without a host goes to the
// client's own service: HTTPClient("catalog").Get("/products/1") asks
// https+http://catalog/products/1. App.CircuitState reads a client's
// breakers; App.HealthHTTPClient(name) is the same without the pipeline
// and the instrumentation, for health.HTTP checks of that service.
//
// # gRPC
//
// The gRPC client and server integration is package
// integrations/aspiregrpc; its documentation lists its configuration keys.
package servicedefaults
