package servicedefaults_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/internal/otlptest"
	"github.com/goaspire/goaspire/servicedefaults"
)

const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func TestStderrLogs(t *testing.T) {
	tests := []struct {
		name     string
		values   map[string]string
		wantJSON bool
	}{
		{"production is JSON", map[string]string{}, true},
		{"development is text", map[string]string{"DOTNET_ENVIRONMENT": "Development"}, false},
		{"formatter json in development", map[string]string{"DOTNET_ENVIRONMENT": "Development", "Logging:Console:FormatterName": "json"}, true},
		{"formatter simple in production", map[string]string{"Logging__Console__FormatterName": "simple"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mux := http.NewServeMux()
			app, logs := newApp(t, tt.values, mux)
			mux.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) {
				slog.InfoContext(r.Context(), "in request", "who", "me")
				slog.Default().WithGroup("g").With("k", "v").InfoContext(r.Context(), "grouped")
				slog.Info("no context")
				log.Print("via the log package")
			})
			// Exporters are off: the trace comes from the caller's
			// traceparent, which propagation still honours.
			rec := httptest.NewRecorder()
			req := httptest.NewRequest("GET", "/hello", nil)
			req.Header.Set("traceparent", traceparent)
			app.Handler().ServeHTTP(rec, req)

			lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
			find := func(msg string) string {
				for _, l := range lines {
					if strings.Contains(l, msg) {
						return l
					}
				}
				t.Fatalf("no log line %q in:\n%s", msg, logs)
				return ""
			}
			inReq, grouped, noCtx := find("in request"), find("grouped"), find("no context")
			find("via the log package")
			if tt.wantJSON {
				var rec map[string]any
				if err := json.Unmarshal([]byte(inReq), &rec); err != nil {
					t.Fatalf("not JSON: %s", inReq)
				}
				if rec["trace_id"] != "4bf92f3577b34da6a3ce929d0e0e4736" || rec["span_id"] != "00f067aa0ba902b7" || rec["who"] != "me" {
					t.Fatalf("record = %v", rec)
				}
				var g map[string]any
				if err := json.Unmarshal([]byte(grouped), &g); err != nil {
					t.Fatal(err)
				}
				if g["trace_id"] != "4bf92f3577b34da6a3ce929d0e0e4736" {
					t.Errorf("trace_id not at the top level of a grouped record: %s", grouped)
				}
			} else {
				for _, want := range []string{"trace_id=4bf92f3577b34da6a3ce929d0e0e4736", "span_id=00f067aa0ba902b7", "who=me"} {
					if !strings.Contains(inReq, want) {
						t.Errorf("%q missing from %s", want, inReq)
					}
				}
				if !strings.Contains(grouped, " trace_id=") || !strings.Contains(grouped, "g.k=v") {
					t.Errorf("grouped record = %s", grouped)
				}
			}
			if strings.Contains(noCtx, "trace_id") {
				t.Errorf("record without a span context got a trace id: %s", noCtx)
			}
		})
	}
}

func TestLogLevels(t *testing.T) {
	tests := []struct {
		level                string
		wantDebug, wantError bool
	}{
		{"Debug", true, true},
		{"Information", false, true},
		{"Warning", false, true},
		{"None", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.level, func(t *testing.T) {
			app, logs := newApp(t, map[string]string{"Logging:LogLevel:Default": tt.level}, nil)
			app.Logger().Debug("dbg-line")
			app.Logger().Error("err-line")
			if got := strings.Contains(logs.String(), "dbg-line"); got != tt.wantDebug {
				t.Errorf("debug logged = %v", got)
			}
			if got := strings.Contains(logs.String(), "err-line"); got != tt.wantError {
				t.Errorf("error logged = %v", got)
			}
		})
	}
}

func TestOTelLogLevelSeparate(t *testing.T) {
	rcv := otlptest.Start(t)
	app, logs := newApp(t, with(slowExport,
		"OTEL_EXPORTER_OTLP_ENDPOINT", rcv.HTTPEndpoint,
		"Logging:LogLevel:Default", "Debug",
		"Logging:OpenTelemetry:LogLevel:Default", "Warning",
	), nil)
	app.Logger().Debug("debug only on console")
	app.Logger().Warn("warning everywhere")
	if err := app.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "debug only on console") {
		t.Error("console lost the debug record")
	}
	var bodies []string
	for _, l := range rcv.Logs() {
		bodies = append(bodies, l.Record.GetBody().GetStringValue())
	}
	if len(bodies) != 1 || bodies[0] != "warning everywhere" {
		t.Errorf("exported = %q", bodies)
	}
}

func TestHealthEndpoints(t *testing.T) {
	type probe struct {
		path string
		code int
		body string // exact for the status word, a substring for JSON
	}
	tests := []struct {
		name   string
		values map[string]string
		checks []health.Check
		probes []probe
	}{
		{"production healthy", nil, nil, []probe{
			{"/health", 200, "Healthy"}, {"/alive", 200, "Healthy"},
		}},
		{"production dependency down", nil, []health.Check{
			{Name: "db", Tags: []string{health.TagReady}, Check: func(context.Context) error { return errors.New("refused") }},
		}, []probe{
			{"/health", 503, "Unhealthy"}, {"/alive", 200, "Healthy"},
		}},
		{"production degraded", nil, []health.Check{
			{Name: "cache", Tags: []string{health.TagReady}, FailureStatus: health.Degraded, Check: func(context.Context) error { return errors.New("slow") }},
		}, []probe{
			{"/health", 200, "Degraded"}, {"/alive", 200, "Healthy"},
		}},
		{"production live check failing", nil, []health.Check{
			{Name: "deadlock", Tags: []string{health.TagLive}, Check: func(context.Context) error { return errors.New("stuck") }},
		}, []probe{
			{"/health", 503, "Unhealthy"}, {"/alive", 503, "Unhealthy"},
		}},
		{"development is detailed", map[string]string{"ASPNETCORE_ENVIRONMENT": "Development"}, []health.Check{
			{Name: "db", Tags: []string{health.TagReady}, Check: func(context.Context) error { return errors.New("refused") }},
		}, []probe{
			{"/health", 503, `"db":{"status":"Unhealthy","description":"refused"`},
			{"/alive", 200, `"entries":{"self":{"status":"Healthy"`},
		}},
		{"production detailed opt-in", map[string]string{"Aspire:ServiceDefaults:HealthChecks:DetailedOutput": "true"}, nil, []probe{
			{"/health", 200, `{"status":"Healthy","totalDuration":`},
		}},
		{"development detailed opt-out", map[string]string{"DOTNET_ENVIRONMENT": "Development", "Aspire__ServiceDefaults__HealthChecks__DetailedOutput": "false"}, nil, []probe{
			{"/health", 200, "Healthy"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app, _ := newApp(t, tt.values, http.NewServeMux())
			if err := app.Health().Register(tt.checks...); err != nil {
				t.Fatal(err)
			}
			for _, p := range tt.probes {
				rec := httptest.NewRecorder()
				app.Handler().ServeHTTP(rec, httptest.NewRequest("GET", p.path, nil))
				body := rec.Body.String()
				detailed := strings.HasPrefix(p.body, "{") || strings.HasPrefix(p.body, `"`)
				if rec.Code != p.code || (!detailed && body != p.body) || (detailed && !strings.Contains(body, p.body)) {
					t.Errorf("GET %s = %d %q, want %d %q", p.path, rec.Code, body, p.code, p.body)
				}
			}
		})
	}
}

func TestHealthMethods(t *testing.T) {
	app, _ := newApp(t, nil, http.NewServeMux())
	for _, tt := range []struct {
		method string
		code   int
	}{{"GET", 200}, {"HEAD", 200}, {"POST", 405}} {
		rec := httptest.NewRecorder()
		app.Handler().ServeHTTP(rec, httptest.NewRequest(tt.method, "/health", nil))
		if rec.Code != tt.code {
			t.Errorf("%s /health = %d, want %d", tt.method, rec.Code, tt.code)
		}
	}
}

func TestHealthCaching(t *testing.T) {
	tests := []struct {
		name     string
		values   map[string]string
		wantRuns int32
	}{
		{"production caches", nil, 1},
		{"development does not", map[string]string{"DOTNET_ENVIRONMENT": "Development"}, 3},
		{"configured off", map[string]string{"Aspire:ServiceDefaults:HealthChecks:CacheDuration": "00:00:00"}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app, _ := newApp(t, tt.values, nil)
			var runs atomic.Int32
			if err := app.Health().Register(health.Check{Name: "dep", Check: func(context.Context) error { runs.Add(1); return nil }}); err != nil {
				t.Fatal(err)
			}
			for range 3 {
				rec := httptest.NewRecorder()
				app.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/health", nil))
			}
			if got := runs.Load(); got != tt.wantRuns {
				t.Errorf("runs = %d, want %d", got, tt.wantRuns)
			}
		})
	}
}

func TestWorkerWithoutMux(t *testing.T) {
	app, _ := newApp(t, nil, nil)
	for path, want := range map[string]int{"/alive": 200, "/health": 200, "/other": 404} {
		rec := httptest.NewRecorder()
		app.Handler().ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != want {
			t.Errorf("GET %s = %d, want %d", path, rec.Code, want)
		}
	}
}

func TestAddErrors(t *testing.T) {
	cert := filepath.Join(t.TempDir(), "missing.pem")
	tests := []struct {
		name    string
		values  map[string]string
		mux     func() *http.ServeMux
		want    string // must appear in the error
		notWant string // must not appear (secrets)
	}{
		{name: "protocol", values: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/xml"}, want: "OTEL_EXPORTER_OTLP_PROTOCOL"},
		{name: "signal protocol", values: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:4318", "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "thrift"}, want: "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL"},
		{name: "endpoint without scheme", values: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:4317"}, want: "OTEL_EXPORTER_OTLP_ENDPOINT"},
		{name: "endpoint password", values: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "ftp://u:pw-secret@h"}, want: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", notWant: "pw-secret"},
		{name: "headers", values: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:4318", "OTEL_EXPORTER_OTLP_HEADERS": "x-otlp-api-key=%zz-secret"}, want: "OTEL_EXPORTER_OTLP_HEADERS", notWant: "zz-secret"},
		{name: "header without value", values: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:4318", "OTEL_EXPORTER_OTLP_HEADERS": "justakey"}, want: "OTEL_EXPORTER_OTLP_HEADERS"},
		{name: "timeout", values: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:4318", "OTEL_EXPORTER_OTLP_TIMEOUT": "10s"}, want: "OTEL_EXPORTER_OTLP_TIMEOUT"},
		{name: "compression", values: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:4318", "OTEL_EXPORTER_OTLP_COMPRESSION": "zstd"}, want: "OTEL_EXPORTER_OTLP_COMPRESSION"},
		{name: "certificate", values: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "https://h:4318", "OTEL_EXPORTER_OTLP_CERTIFICATE": cert}, want: "OTEL_EXPORTER_OTLP_CERTIFICATE"},
		{name: "client key without cert", values: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "https://h:4318", "OTEL_EXPORTER_OTLP_CLIENT_KEY": cert}, want: "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"},
		{name: "ssl cert file", values: map[string]string{"SSL_CERT_FILE": cert}, want: "SSL_CERT_FILE"},
		{name: "exporter kind", values: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, want: "OTEL_TRACES_EXPORTER"},
		{name: "bsp delay", values: map[string]string{"OTEL_BSP_SCHEDULE_DELAY": "soon"}, want: "OTEL_BSP_SCHEDULE_DELAY"},
		{name: "blrp batch over queue", values: map[string]string{"OTEL_BLRP_MAX_QUEUE_SIZE": "10", "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE": "20"}, want: "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE"},
		{name: "metric interval", values: map[string]string{"OTEL_METRIC_EXPORT_INTERVAL": "0"}, want: "OTEL_METRIC_EXPORT_INTERVAL"},
		{name: "sampler", values: map[string]string{"OTEL_TRACES_SAMPLER": "jaeger_remote"}, want: "OTEL_TRACES_SAMPLER"},
		{name: "sampler arg", values: map[string]string{"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}, want: "OTEL_TRACES_SAMPLER_ARG"},
		{name: "exemplar filter", values: map[string]string{"OTEL_METRICS_EXEMPLAR_FILTER": "sometimes"}, want: "OTEL_METRICS_EXEMPLAR_FILTER"},
		{name: "temporality", values: map[string]string{"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "weekly"}, want: "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"},
		{name: "propagators", values: map[string]string{"OTEL_PROPAGATORS": "tracecontext,b3"}, want: "OTEL_PROPAGATORS"},
		{name: "sdk disabled", values: map[string]string{"OTEL_SDK_DISABLED": "maybe"}, want: "OTEL_SDK_DISABLED"},
		{name: "span limit", values: map[string]string{"OTEL_SPAN_EVENT_COUNT_LIMIT": "-1"}, want: "OTEL_SPAN_EVENT_COUNT_LIMIT"},
		{name: "resource attributes", values: map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "a=1,broken"}, want: "OTEL_RESOURCE_ATTRIBUTES"},
		{name: "log level", values: map[string]string{"Logging:LogLevel:Default": "Loud"}, want: "Logging:LogLevel:Default"},
		{name: "formatter", values: map[string]string{"Logging:Console:FormatterName": "xml"}, want: "Logging:Console:FormatterName"},
		{name: "shutdown timeout", values: map[string]string{"Aspire:ServiceDefaults:ShutdownTimeout": "30"}, want: "Aspire:ServiceDefaults:ShutdownTimeout"},
		{name: "health detailed", values: map[string]string{"Aspire:ServiceDefaults:HealthChecks:DetailedOutput": "perhaps"}, want: "Aspire:ServiceDefaults:HealthChecks:DetailedOutput"},
		{name: "health timeout", values: map[string]string{"Aspire:ServiceDefaults:HealthChecks:Timeout": "0"}, want: "Aspire:ServiceDefaults:HealthChecks:Timeout"},
		{name: "health response timeout", values: map[string]string{"Aspire:ServiceDefaults:HealthChecks:ResponseTimeout": "-1s"}, want: "Aspire:ServiceDefaults:HealthChecks:ResponseTimeout"},
		{name: "port", values: map[string]string{"PORT": "http"}, want: "PORT"},
		{name: "mux conflict", values: map[string]string{}, mux: func() *http.ServeMux {
			m := http.NewServeMux()
			m.HandleFunc("GET /health", func(http.ResponseWriter, *http.Request) {})
			return m
		}, want: "/health"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			restoreGlobals(t)
			var mux *http.ServeMux
			if tt.mux != nil {
				mux = tt.mux()
			}
			before := slog.Default()
			app, err := servicedefaults.Add(context.Background(), mux, servicedefaults.WithConfig(discovery.FromMap(tt.values)))
			if err == nil {
				_ = app.Shutdown(context.Background())
				t.Fatal("Add succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not name %q", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "servicedefaults: ") || strings.Contains(err.Error(), "servicedefaults: servicedefaults:") {
				t.Errorf("error %q: want the package prefix exactly once", err)
			}
			if tt.notWant != "" && strings.Contains(err.Error(), tt.notWant) {
				t.Errorf("error %q leaks %q", err, tt.notWant)
			}
			if slog.Default() != before {
				t.Error("a failed Add replaced slog's default logger")
			}
		})
	}
}

func TestServiceNameDefault(t *testing.T) {
	rcv := otlptest.Start(t)
	tests := []struct {
		name   string
		values map[string]string
		want   string
	}{
		{"OTEL_SERVICE_NAME wins", map[string]string{"OTEL_SERVICE_NAME": "a", "OTEL_RESOURCE_ATTRIBUTES": "service.name=b"}, "a"},
		{"from resource attributes", map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "service.name=b"}, "b"},
		{"unknown_service", map[string]string{}, "unknown_service:" + strings.TrimSuffix(filepath.Base(os.Args[0]), ".exe")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			values := with(with(slowExport, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", rcv.HTTPEndpoint+"/v1/traces"), flatten(tt.values)...)
			app, _ := newApp(t, values, nil)
			_, span := app.Tracer("t").Start(context.Background(), tt.name)
			span.End()
			if err := app.Shutdown(context.Background()); err != nil {
				t.Fatal(err)
			}
			s, ok := rcv.SpanNamed(tt.name)
			if !ok {
				t.Fatal("span not received")
			}
			if got := otlptest.ResourceAttr(s.Resource, "service.name"); got != tt.want {
				t.Errorf("service.name = %q, want %q", got, tt.want)
			}
		})
	}
}

func flatten(m map[string]string) []string {
	var out []string
	for k, v := range m {
		out = append(out, k, v)
	}
	return out
}

func TestHTTPClient(t *testing.T) {
	var gotHost atomic.Value
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotHost.Store(r.Host)
		fmt.Fprint(w, r.URL.Path)
	}))
	defer backend.Close()

	var mu sync.Mutex
	var calls []string
	var built atomic.Int32
	mw := func(tag string) func(string, http.RoundTripper) http.RoundTripper {
		return func(name string, next http.RoundTripper) http.RoundTripper {
			built.Add(1)
			return roundTripFunc(func(r *http.Request) (*http.Response, error) {
				mu.Lock()
				calls = append(calls, tag+":"+name+":"+r.URL.String())
				mu.Unlock()
				return next.RoundTrip(r)
			})
		}
	}
	app, _ := newApp(t, map[string]string{"services__backend__http__0": backend.URL}, nil,
		servicedefaults.WithHTTPMiddleware(mw("outer")), servicedefaults.WithHTTPMiddleware(mw("inner")))

	c1, c2 := app.HTTPClient("backend"), app.HTTPClient("backend")
	if c1 == c2 || built.Load() != 2 {
		t.Errorf("want distinct clients sharing one transport per name; middleware built %d times", built.Load())
	}
	if code, body := get(t, c1, "http://backend/items/1"); code != 200 || body != "/items/1" {
		t.Fatalf("GET = %d %q", code, body)
	}
	want := []string{"outer:backend:http://backend/items/1", "inner:backend:http://backend/items/1"}
	if strings.Join(calls, " ") != strings.Join(want, " ") {
		t.Errorf("middleware calls = %q, want %q (first option outermost, logical URL)", calls, want)
	}
	if h := gotHost.Load().(string); !strings.HasPrefix(h, "127.0.0.1:") {
		t.Errorf("Host header = %q, want the resolved address", h)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestHTTPClientTrustsSSLCertFile: the App's clients trust the developer
// certificate the AppHost names in SSL_CERT_FILE.
func TestHTTPClientTrustsSSLCertFile(t *testing.T) {
	cert, certPEM := otlptest.NewCertificate(t)
	file := filepath.Join(t.TempDir(), "dev.pem")
	if err := os.WriteFile(file, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	backend := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "secure")
	}))
	backend.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	backend.StartTLS()
	defer backend.Close()

	trusting, _ := newApp(t, map[string]string{"SSL_CERT_FILE": file, "services__api__https__0": backend.URL}, nil)
	if code, body := get(t, trusting.HTTPClient("api"), "https+http://api/"); code != 200 || body != "secure" {
		t.Fatalf("GET = %d %q", code, body)
	}
	other, _ := newApp(t, map[string]string{"services__api__https__0": backend.URL}, nil)
	if _, err := other.HTTPClient("api").Get("https+http://api/"); err == nil {
		t.Fatal("a client without SSL_CERT_FILE trusted the self-signed certificate")
	}
}

func TestOnShutdownOrder(t *testing.T) {
	restoreGlobals(t)
	app, err := servicedefaults.Add(context.Background(), nil, servicedefaults.WithConfig(discovery.FromMap(nil)), servicedefaults.WithLogWriter(&syncBuffer{}))
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	app.OnShutdown(func(context.Context) error { order = append(order, "first"); return nil })
	app.OnShutdown(func(context.Context) error { order = append(order, "second"); return errors.New("close failed") })
	err = app.Shutdown(context.Background())
	if err == nil || !strings.Contains(err.Error(), "close failed") {
		t.Fatalf("Shutdown = %v, want the hook's error", err)
	}
	if strings.Join(order, ",") != "second,first" {
		t.Errorf("hooks ran %v, want reverse registration order", order)
	}
	if err2 := app.Shutdown(context.Background()); err2 == nil || err2.Error() != err.Error() {
		t.Errorf("second Shutdown = %v, want the first's result", err2)
	}
	ran := false
	app.OnShutdown(func(context.Context) error { ran = true; return nil })
	if !ran {
		t.Error("a hook registered after Shutdown did not run at once")
	}
}

// readLines scans r into a channel of lines, for child-process logs.
func readLines(r *bufio.Scanner) <-chan string {
	ch := make(chan string, 100)
	go func() {
		defer close(ch)
		for r.Scan() {
			ch <- r.Text()
		}
	}()
	return ch
}

// TestPropagationWithoutExporters: with telemetry off, a trace that comes
// in still flows out through the App's clients, so the services around
// this one keep one trace.
func TestPropagationWithoutExporters(t *testing.T) {
	var got atomic.Value
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Store(r.Header.Get("traceparent") + "|" + r.Header.Get("baggage"))
	}))
	defer backend.Close()
	mux := http.NewServeMux()
	app, _ := newApp(t, map[string]string{"services__backend__http__0": backend.URL}, mux)
	client := app.HTTPClient("backend")
	mux.HandleFunc("GET /front", func(w http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequestWithContext(r.Context(), "GET", "http://backend/", nil)
		resp, err := client.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		resp.Body.Close()
	})
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/front", nil)
	req.Header.Set("traceparent", traceparent)
	req.Header.Set("baggage", "tenant=t1")
	app.Handler().ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("GET /front = %d %s", rec.Code, rec.Body)
	}
	if v, _ := got.Load().(string); v != traceparent+"|tenant=t1" {
		t.Fatalf("backend got %q, want the incoming trace context and baggage", v)
	}
}
