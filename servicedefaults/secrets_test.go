package servicedefaults_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/internal/leaktest"
	"github.com/goaspire/goaspire/internal/otlptest"
)

// These tests try to make a secret leave the process through every way
// out the App has: returned errors, console logs, exported spans, metrics
// and logs, and the detailed health JSON. Each secret is a distinctive
// string so a leak anywhere is found by substring.

// leakSink gathers everything that left an App (see package leaktest).
type leakSink struct{ *leaktest.Sink }

// newLeakApp starts an App in Development (detailed health JSON) that
// exports every signal to an OTLP receiver, with values added to the
// configuration.
func newLeakApp(t *testing.T, values map[string]string) *leakSink {
	rcv := otlptest.Start(t)
	cfg := with(slowExport,
		"DOTNET_ENVIRONMENT", "Development",
		"OTEL_EXPORTER_OTLP_ENDPOINT", rcv.HTTPEndpoint,
		"OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf",
		"OTEL_TRACES_SAMPLER", "always_on",
		"Logging:LogLevel:Default", "Debug",
	)
	for k, v := range values {
		cfg[k] = v
	}
	app, logs := newApp(t, cfg, http.NewServeMux())
	return &leakSink{leaktest.New(t, app, logs, rcv)}
}

// TestSecretsHealthDetail registers checks whose errors embed connection
// strings and URLs the way drivers' errors do.
func TestSecretsHealthDetail(t *testing.T) {
	const secret = "HealthS3cretLeak"
	s := newLeakApp(t, nil)
	errs := []string{
		"dial postgres://u:" + secret + "@h:5432/db: refused",
		"bad Host=h;Password=" + secret + ";Database=d",
		"bad Host=h;Password='" + secret + "';Database=d",
		"bad Host=h;Pwd=\"" + secret + "\";Database=d",
		"redis h:6379,password=" + secret + ",ssl=true: refused",
		"GET https://h/x?api_key=" + secret + "&a=b: 500",
		"GET https://h/x?access_token=" + secret + ": 500",
		"x-otlp-api-key=" + secret,
	}
	for i, e := range errs {
		msg := e
		if err := s.App.Health().Register(health.Check{
			Name:  "dep" + strconv.Itoa(i),
			Tags:  []string{health.TagLive},
			Check: func(context.Context) error { return stringError(msg) },
		}); err != nil {
			t.Fatal(err)
		}
	}
	healthOut := s.Health()
	if !strings.Contains(healthOut, "Unhealthy") {
		t.Fatalf("health = %s", healthOut)
	}
	s.Check(healthOut, secret)
}

type stringError string

func (e stringError) Error() string { return string(e) }

// TestSecretsHTTPClient calls through App.HTTPClient with URLs holding
// user information and secret query parameters, against a server that
// fails (retries, breaker) and a port that refuses.
func TestSecretsHTTPClient(t *testing.T) {
	const secret = "HTTPS3cretLeak"
	var calls atomic.Int64
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Retry-After", "0")
		http.Error(w, "busy", http.StatusServiceUnavailable)
	}))
	defer backend.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := ln.Addr().String()
	ln.Close()

	s := newLeakApp(t, map[string]string{
		"Aspire:Resilience:Http:Retry:Delay":                      "1ms",
		"Aspire:Resilience:Http:CircuitBreaker:MinimumThroughput": "2",
		"Aspire:Resilience:Http:CircuitBreaker:BreakDuration":     "1s",
		"Aspire:Resilience:Http:CircuitBreaker:FailureRatio":      "0.1",
		"Aspire:Resilience:Http:AttemptTimeout:Timeout":           "2s",
		"Aspire:Resilience:Http:CircuitBreaker:SamplingDuration":  "5s",
		"Aspire:Resilience:Http:TotalRequestTimeout:Timeout":      "5s",
		"Aspire:ServiceDefaults:HealthChecks:Timeout":             "5s",
		"OTEL_EXPORTER_OTLP_HEADERS":                              "x-otlp-api-key=" + secret,
	})
	client := s.App.HTTPClient("backend")
	host := strings.TrimPrefix(backend.URL, "http://")
	urls := []string{
		"http://user:" + secret + "@" + host + "/items?api_key=" + secret,
		"http://" + host + "/items?token=" + secret + "&x=1",
		"http://user:" + secret + "@" + refused + "/items?apikey=" + secret,
	}
	for _, u := range urls {
		ctx, span := s.App.Tracer("test").Start(context.Background(), "request")
		req, err := http.NewRequestWithContext(ctx, "GET", u, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
		} else {
			// The query string is the caller's own URL, which net/http
			// quotes in its *url.Error; what we add must be clean.
			_, query, _ := strings.Cut(u, "?")
			s.ErrText(strings.ReplaceAll(err.Error(), query, ""))
		}
		span.End()
	}
	if calls.Load() == 0 {
		t.Fatal("the backend was never called")
	}
	healthOut := s.Health()
	s.Check(healthOut, secret)
	// The spans still say which URL was called.
	var masked bool
	for _, sp := range s.Receiver.Spans() {
		if full, _ := otlptest.Attr(sp.Span.Attributes, "url.full"); strings.Contains(full, "/items?") && strings.Contains(full, "api_key=") {
			masked = true
		}
	}
	if !masked {
		t.Error("no client span records the masked url.full")
	}
}
