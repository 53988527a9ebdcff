package servicedefaults_test

import (
	"context"
	"strings"
	"testing"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/servicedefaults"
)

// TestBadValuesNameTheirKey feeds one bad value from each configuration
// key family to the call that reads it: every error must name the key (or
// the connection-string keyword) at fault, never panic, and never quote a
// password.
func TestBadValuesNameTheirKey(t *testing.T) {
	const secret = "KeyTestS3cret"
	type call int
	const (
		add call = iota
	)
	tests := []struct {
		name   string
		call   call
		values map[string]string
		want   string
	}{
		// Aspire:Resilience:*
		{"resilience retry delay", add, map[string]string{"Aspire__Resilience__Http__Retry__Delay": "soon"}, "Delay"},
		{"resilience backoff", add, map[string]string{"Aspire__Resilience__Http__Retry__BackoffType": "Fibonacci"}, "BackoffType"},
		{"resilience failure ratio", add, map[string]string{"Aspire__Resilience__Http__CircuitBreaker__FailureRatio": "1.5"}, "FailureRatio"},
		{"resilience sampling window", add, map[string]string{"Aspire__Resilience__Http__CircuitBreaker__SamplingDuration": "00:00:05"}, "SamplingDuration"},
		{"resilience total timeout", add, map[string]string{"Aspire__Resilience__Http__TotalRequestTimeout__Timeout": "-1s"}, "TotalRequestTimeout"},
		{"resilience concurrency", add, map[string]string{"Aspire__Resilience__Http__RateLimiter__DefaultRateLimiterOptions__PermitLimit": "none"}, "PermitLimit"},
		{"hedging delay", add, map[string]string{"Aspire__Resilience__Hedging__Hedging__Delay": "x"}, "Delay"},
		{"hedging client attempts", add, map[string]string{"Aspire__Resilience__Hedging__Clients__catalog__Hedging__MaxHedgedAttempts": "-2"}, "MaxHedgedAttempts"},

		// Aspire:ServiceDefaults:*
		{"flush timeout", add, map[string]string{"Aspire__ServiceDefaults__FlushTimeout": "quick"}, "Aspire:ServiceDefaults:FlushTimeout"},
		{"health cache", add, map[string]string{"Aspire__ServiceDefaults__HealthChecks__CacheDuration": "long"}, "Aspire:ServiceDefaults:HealthChecks:CacheDuration"},

		// Listening address.
		{"port range", add, map[string]string{"PORT": "70000"}, "PORT"},
		{"http ports", add, map[string]string{"HTTP_PORTS": "eighty"}, "HTTP_PORTS"},
		{"http ports separators only", add, map[string]string{"HTTP_PORTS": ";"}, "HTTP_PORTS"},
		{"aspnetcore urls", add, map[string]string{"ASPNETCORE_URLS": "http://[::1"}, "ASPNETCORE_URLS"},

		// OTEL_*
		{"otlp signal headers", add, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:4317", "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "k=%zz" + secret}, "OTEL_EXPORTER_OTLP_TRACES_HEADERS"},
		{"attribute limit", add, map[string]string{"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "short"}, "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			restoreGlobals(t)
			var err error
			func() {
				defer func() {
					if p := recover(); p != nil {
						t.Fatalf("panic: %v", p)
					}
				}()
				var app *servicedefaults.App
				app, err = servicedefaults.Add(context.Background(), nil,
					servicedefaults.WithConfig(discovery.FromMap(tt.values)),
					servicedefaults.WithLogWriter(&syncBuffer{}))
				if err != nil {
					return
				}
				defer app.Shutdown(context.Background())
				switch tt.call {
				case add:
					t.Fatal("Add succeeded")
				}
			}()
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not name %q", err, tt.want)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error %q leaks the password", err)
			}
		})
	}
}
