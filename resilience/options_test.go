package resilience_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/resilience"
)

func TestDefaultOptionsAreAspires(t *testing.T) {
	o := resilience.DefaultOptions()
	want := resilience.Options{
		RateLimiter:         resilience.RateLimiterOptions{PermitLimit: 1000, QueueLimit: 0},
		TotalRequestTimeout: 30 * time.Second,
		Retry: resilience.RetryOptions{
			MaxRetryAttempts: 3, BackoffType: resilience.BackoffExponential, UseJitter: true,
			Delay: 2 * time.Second, ShouldRetryAfterHeader: true,
		},
		CircuitBreaker: resilience.CircuitBreakerOptions{
			FailureRatio: 0.1, MinimumThroughput: 100, SamplingDuration: 30 * time.Second, BreakDuration: 5 * time.Second,
		},
		AttemptTimeout: 10 * time.Second,
	}
	if o != want {
		t.Fatalf("DefaultOptions() = %+v\nwant %+v", o, want)
	}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	h := resilience.DefaultHedgingOptions()
	if h.TotalRequestTimeout != 30*time.Second || h.Hedging.Delay != 2*time.Second || h.Hedging.MaxHedgedAttempts != 1 ||
		h.Endpoint.Timeout != 10*time.Second || h.Endpoint.CircuitBreaker != want.CircuitBreaker || h.Endpoint.RateLimiter.PermitLimit != 1000 {
		t.Fatalf("DefaultHedgingOptions() = %+v", h)
	}
	if err := h.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*resilience.Options)
		field  string
		reason string
	}{
		{"attempt above total", func(o *resilience.Options) { o.AttemptTimeout = 31 * time.Second },
			"AttemptTimeout:Timeout", "must not exceed the total request timeout"},
		{"sampling below twice attempt", func(o *resilience.Options) { o.CircuitBreaker.SamplingDuration = 19 * time.Second },
			"CircuitBreaker:SamplingDuration", "at least twice the attempt timeout"},
		{"zero total", func(o *resilience.Options) { o.TotalRequestTimeout = 0 }, "TotalRequestTimeout:Timeout", "must be positive"},
		{"zero attempt", func(o *resilience.Options) { o.AttemptTimeout = 0 }, "AttemptTimeout:Timeout", "must be positive"},
		{"negative retries", func(o *resilience.Options) { o.Retry.MaxRetryAttempts = -1 }, "Retry:MaxRetryAttempts", "negative"},
		{"negative delay", func(o *resilience.Options) { o.Retry.Delay = -time.Second }, "Retry:Delay", "negative"},
		{"ratio zero", func(o *resilience.Options) { o.CircuitBreaker.FailureRatio = 0 }, "CircuitBreaker:FailureRatio", "(0, 1]"},
		{"ratio above one", func(o *resilience.Options) { o.CircuitBreaker.FailureRatio = 1.5 }, "CircuitBreaker:FailureRatio", "(0, 1]"},
		{"throughput zero", func(o *resilience.Options) { o.CircuitBreaker.MinimumThroughput = 0 }, "CircuitBreaker:MinimumThroughput", "at least 1"},
		{"break zero", func(o *resilience.Options) { o.CircuitBreaker.BreakDuration = 0 }, "CircuitBreaker:BreakDuration", "positive"},
		{"permits zero", func(o *resilience.Options) { o.RateLimiter.PermitLimit = 0 }, "RateLimiter:DefaultRateLimiterOptions:PermitLimit", "positive"},
		{"queue negative", func(o *resilience.Options) { o.RateLimiter.QueueLimit = -1 }, "RateLimiter:DefaultRateLimiterOptions:QueueLimit", "negative"},
		{"backoff unknown", func(o *resilience.Options) { o.Retry.BackoffType = 7 }, "Retry:BackoffType", "unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := resilience.DefaultOptions()
			tt.modify(&o)
			err := o.Validate()
			var ve *resilience.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Validate() = %v, want a *ValidationError", err)
			}
			if ve.Field != tt.field || !strings.Contains(err.Error(), tt.reason) {
				t.Fatalf("Validate() = %v (field %q), want field %q and %q", err, ve.Field, tt.field, tt.reason)
			}
			if _, err := resilience.NewTransport(nil, resilience.WithOptions(o)); !errors.As(err, &ve) {
				t.Fatalf("NewTransport() error = %v, want the validation error", err)
			}
		})
	}
	// The boundaries themselves are allowed.
	o := resilience.DefaultOptions()
	o.AttemptTimeout = o.TotalRequestTimeout
	o.CircuitBreaker.SamplingDuration = 2 * o.AttemptTimeout
	if err := o.Validate(); err != nil {
		t.Fatalf("boundary options: %v", err)
	}
}

func TestValidateHedging(t *testing.T) {
	h := resilience.DefaultHedgingOptions()
	h.Endpoint.Timeout = time.Minute
	if err := h.Validate(); err == nil || !strings.Contains(err.Error(), "Endpoint:Timeout:Timeout") {
		t.Fatalf("Validate() = %v, want the endpoint timeout named", err)
	}
	h = resilience.DefaultHedgingOptions()
	h.Endpoint.CircuitBreaker.SamplingDuration = 15 * time.Second
	if err := h.Validate(); err == nil || !strings.Contains(err.Error(), "Endpoint:CircuitBreaker:SamplingDuration") {
		t.Fatalf("Validate() = %v, want the sampling duration named", err)
	}
	h = resilience.DefaultHedgingOptions()
	h.Hedging.MaxHedgedAttempts = -1
	if err := h.Validate(); err == nil || !strings.Contains(err.Error(), "Hedging:MaxHedgedAttempts") {
		t.Fatalf("Validate() = %v", err)
	}
}

func TestLoadOptions(t *testing.T) {
	cfg := discovery.FromMap(map[string]string{
		"Aspire__Resilience__Http__Retry__MaxRetryAttempts":                             "5",
		"Aspire__Resilience__Http__Retry__Delay":                                        "00:00:00.5",
		"Aspire__Resilience__Http__Retry__BackoffType":                                  "linear",
		"Aspire__Resilience__Http__Retry__UseJitter":                                    "false",
		"Aspire__Resilience__Http__Retry__MaxDelay":                                     "3s",
		"Aspire__Resilience__Http__Retry__ShouldRetryAfterHeader":                       "false",
		"Aspire__Resilience__Http__TotalRequestTimeout__Timeout":                        "00:01:00",
		"Aspire__Resilience__Http__AttemptTimeout__Timeout":                             "20s",
		"Aspire__Resilience__Http__CircuitBreaker__FailureRatio":                        "0.25",
		"Aspire__Resilience__Http__CircuitBreaker__MinimumThroughput":                   "10",
		"Aspire__Resilience__Http__CircuitBreaker__SamplingDuration":                    "00:01:00",
		"Aspire__Resilience__Http__CircuitBreaker__BreakDuration":                       "00:00:15",
		"Aspire__Resilience__Http__RateLimiter__DefaultRateLimiterOptions__PermitLimit": "50",
		"Aspire__Resilience__Http__RateLimiter__DefaultRateLimiterOptions__QueueLimit":  "7",
		"Aspire__Resilience__Http__Clients__catalog__Retry__MaxRetryAttempts":           "1",
		"Aspire__Resilience__Http__Clients__catalog__Retry__RetryNonIdempotent":         "true",
		"Aspire__Resilience__Http__UnknownSetting":                                      "ignored",
	})
	o, err := resilience.LoadOptions(cfg, "")
	if err != nil {
		t.Fatal(err)
	}
	want := resilience.Options{
		RateLimiter:         resilience.RateLimiterOptions{PermitLimit: 50, QueueLimit: 7},
		TotalRequestTimeout: time.Minute,
		Retry: resilience.RetryOptions{
			MaxRetryAttempts: 5, BackoffType: resilience.BackoffLinear, UseJitter: false,
			Delay: 500 * time.Millisecond, MaxDelay: 3 * time.Second, ShouldRetryAfterHeader: false,
		},
		CircuitBreaker: resilience.CircuitBreakerOptions{FailureRatio: 0.25, MinimumThroughput: 10, SamplingDuration: time.Minute, BreakDuration: 15 * time.Second},
		AttemptTimeout: 20 * time.Second,
	}
	if o != want {
		t.Fatalf("LoadOptions() = %+v\nwant %+v", o, want)
	}
	o, err = resilience.LoadOptions(cfg, "catalog")
	if err != nil {
		t.Fatal(err)
	}
	want.Retry.MaxRetryAttempts = 1
	want.Retry.RetryNonIdempotent = true
	if o != want {
		t.Fatalf("LoadOptions(catalog) = %+v\nwant %+v", o, want)
	}
	// Another client gets the shared section only.
	if o, _ := resilience.LoadOptions(cfg, "basket"); o.Retry.MaxRetryAttempts != 5 {
		t.Fatalf("LoadOptions(basket).Retry.MaxRetryAttempts = %d, want 5", o.Retry.MaxRetryAttempts)
	}
	// WithConfig reads the same keys.
	rt, err := resilience.NewTransport(nil, resilience.WithConfig(cfg, "catalog"))
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	if rt.Options() != want {
		t.Fatalf("Transport.Options() = %+v\nwant %+v", rt.Options(), want)
	}
}

func TestLoadOptionsErrorsNameTheKey(t *testing.T) {
	tests := []struct {
		values map[string]string
		name   string
		want   string
	}{
		{map[string]string{"Aspire:Resilience:Http:Retry:Delay": "2"}, "", "Aspire:Resilience:Http:Retry:Delay"},
		{map[string]string{"Aspire:Resilience:Http:Retry:MaxRetryAttempts": "many"}, "", "Aspire:Resilience:Http:Retry:MaxRetryAttempts"},
		{map[string]string{"Aspire:Resilience:Http:Retry:BackoffType": "Fibonacci"}, "", "Aspire:Resilience:Http:Retry:BackoffType"},
		{map[string]string{"Aspire:Resilience:Http:CircuitBreaker:FailureRatio": "ten"}, "", "Aspire:Resilience:Http:CircuitBreaker:FailureRatio"},
		{map[string]string{"Aspire:Resilience:Http:Clients:catalog:AttemptTimeout:Timeout": "00:01:00"}, "catalog",
			"Aspire:Resilience:Http:Clients:catalog:AttemptTimeout:Timeout"},
		{map[string]string{"Aspire:Resilience:Http:CircuitBreaker:SamplingDuration": "5s"}, "",
			"Aspire:Resilience:Http:CircuitBreaker:SamplingDuration"},
	}
	for _, tt := range tests {
		_, err := resilience.LoadOptions(discovery.FromMap(tt.values), tt.name)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("LoadOptions(%v) = %v, want an error naming %s", tt.values, err, tt.want)
		}
		_, err = resilience.NewTransport(nil, resilience.WithConfig(discovery.FromMap(tt.values), tt.name))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("NewTransport(WithConfig(%v)) = %v, want an error naming %s", tt.values, err, tt.want)
		}
	}
}

func TestLoadHedgingAndPipelineOptions(t *testing.T) {
	cfg := discovery.FromMap(map[string]string{
		"Aspire:Resilience:Hedging:Hedging:Delay":                                              "100ms",
		"Aspire:Resilience:Hedging:Hedging:MaxHedgedAttempts":                                  "2",
		"Aspire:Resilience:Hedging:Endpoint:Timeout:Timeout":                                   "5s",
		"Aspire:Resilience:Hedging:Endpoint:CircuitBreaker:MinimumThroughput":                  "20",
		"Aspire:Resilience:Hedging:Endpoint:RateLimiter:DefaultRateLimiterOptions:PermitLimit": "10",
		"Aspire:Resilience:Hedging:Clients:search:TotalRequestTimeout:Timeout":                 "00:00:10",
		"Aspire:Resilience:Pipelines:orders-db:Retry:MaxRetryAttempts":                         "2",
		"Aspire:Resilience:Pipelines:orders-db:Retry:Delay":                                    "50ms",
	})
	h, err := resilience.LoadHedgingOptions(cfg, "search")
	if err != nil {
		t.Fatal(err)
	}
	if h.Hedging.Delay != 100*time.Millisecond || h.Hedging.MaxHedgedAttempts != 2 || h.Endpoint.Timeout != 5*time.Second ||
		h.Endpoint.CircuitBreaker.MinimumThroughput != 20 || h.Endpoint.RateLimiter.PermitLimit != 10 || h.TotalRequestTimeout != 10*time.Second {
		t.Fatalf("LoadHedgingOptions() = %+v", h)
	}
	p, err := resilience.LoadPipelineOptions(cfg, "orders-db")
	if err != nil {
		t.Fatal(err)
	}
	if p.Retry.MaxRetryAttempts != 2 || p.Retry.Delay != 50*time.Millisecond {
		t.Fatalf("LoadPipelineOptions() = %+v", p)
	}
	pl, err := resilience.NewPipeline(resilience.WithConfig(cfg, "orders-db"))
	if err != nil {
		t.Fatal(err)
	}
	defer pl.Close()
	if pl.Options() != p {
		t.Fatalf("Pipeline.Options() = %+v, want %+v", pl.Options(), p)
	}
	if _, err := resilience.NewHedgingTransport(nil, resilience.WithConfig(discovery.FromMap(map[string]string{
		"Aspire:Resilience:Hedging:Endpoint:Timeout:Timeout": "1m",
	}), "")); err == nil || !strings.Contains(err.Error(), "Aspire:Resilience:Hedging:Endpoint:Timeout:Timeout") {
		t.Fatalf("NewHedgingTransport() error = %v", err)
	}
}
