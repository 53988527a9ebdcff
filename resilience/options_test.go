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
		OutlierDetection: resilience.OutlierDetectionOptions{
			Enabled: true, ConsecutiveFailures: 5, BaseEjectionTime: 30 * time.Second, MaxEjectionTime: 300 * time.Second, MaxEjectionPercent: 10,
		},
	}
	if o != want {
		t.Fatalf("DefaultOptions() = %+v\nwant %+v", o, want)
	}
	if _, err := resilience.NewTransport(nil, &resilience.TransportConfig{Options: o}); err != nil {
		t.Fatal(err)
	}
	h := resilience.DefaultHedgingOptions()
	if h.TotalRequestTimeout != 30*time.Second || h.Hedging.Delay != 2*time.Second || h.Hedging.MaxHedgedAttempts != 1 ||
		h.Endpoint.Timeout != 10*time.Second || h.Endpoint.CircuitBreaker != want.CircuitBreaker || h.Endpoint.RateLimiter.PermitLimit != 1000 ||
		h.Endpoint.OutlierDetection != want.OutlierDetection {
		t.Fatalf("DefaultHedgingOptions() = %+v", h)
	}
	if _, err := resilience.NewHedgingTransport(nil, &resilience.HedgingConfig{Options: h}); err != nil {
		t.Fatal(err)
	}
}

// The zero config, or none, is Aspire's defaults, for all three
// constructors; a negative TimeScale is refused.
func TestZeroConfigIsTheDefaults(t *testing.T) {
	for _, c := range []*resilience.TransportConfig{nil, {}} {
		rt, err := resilience.NewTransport(nil, c)
		if err != nil {
			t.Fatalf("NewTransport(%v) = %v", c, err)
		}
		rt.Close()
	}
	for _, c := range []*resilience.HedgingConfig{nil, {}} {
		rt, err := resilience.NewHedgingTransport(nil, c)
		if err != nil {
			t.Fatalf("NewHedgingTransport(%v) = %v", c, err)
		}
		rt.Close()
	}
	for _, c := range []*resilience.PipelineConfig{nil, {}} {
		p, err := resilience.NewPipeline(c)
		if err != nil {
			t.Fatalf("NewPipeline(%v) = %v", c, err)
		}
		p.Close()
	}
	if _, err := resilience.NewTransport(nil, &resilience.TransportConfig{TimeScale: -1}); err == nil || !strings.Contains(err.Error(), "TimeScale") {
		t.Fatalf("NewTransport(TimeScale -1) = %v, want an error naming TimeScale", err)
	}
	if _, err := resilience.NewPipeline(&resilience.PipelineConfig{TimeScale: -1}); err == nil {
		t.Fatal("NewPipeline(TimeScale -1) did not fail")
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
			// Options set in code: the key is the field's path.
			_, err := resilience.NewTransport(nil, &resilience.TransportConfig{Options: o})
			var ke *discovery.KeyError
			if !errors.As(err, &ke) {
				t.Fatalf("NewTransport() error = %v, want a *discovery.KeyError", err)
			}
			if ke.Key != tt.field || !strings.Contains(err.Error(), tt.reason) {
				t.Fatalf("NewTransport() error = %v (key %q), want key %q and %q", err, ke.Key, tt.field, tt.reason)
			}
			if _, err := resilience.NewPipeline(&resilience.PipelineConfig{Options: o}); !errors.As(err, &ke) || ke.Key != tt.field {
				t.Fatalf("NewPipeline() error = %v, want the same *discovery.KeyError", err)
			}
		})
	}
	// The boundaries themselves are allowed.
	o := resilience.DefaultOptions()
	o.AttemptTimeout = o.TotalRequestTimeout
	o.CircuitBreaker.SamplingDuration = 2 * o.AttemptTimeout
	if _, err := resilience.NewTransport(nil, &resilience.TransportConfig{Options: o}); err != nil {
		t.Fatalf("boundary options: %v", err)
	}
}

func TestValidateHedging(t *testing.T) {
	tests := []struct {
		modify func(*resilience.HedgingOptions)
		key    string
	}{
		{func(h *resilience.HedgingOptions) { h.Endpoint.Timeout = time.Minute }, "Endpoint:Timeout:Timeout"},
		{func(h *resilience.HedgingOptions) { h.Endpoint.CircuitBreaker.SamplingDuration = 15 * time.Second }, "Endpoint:CircuitBreaker:SamplingDuration"},
		{func(h *resilience.HedgingOptions) { h.Hedging.MaxHedgedAttempts = -1 }, "Hedging:MaxHedgedAttempts"},
	}
	for _, tt := range tests {
		h := resilience.DefaultHedgingOptions()
		tt.modify(&h)
		_, err := resilience.NewHedgingTransport(nil, &resilience.HedgingConfig{Options: h})
		var ke *discovery.KeyError
		if !errors.As(err, &ke) || ke.Key != tt.key {
			t.Errorf("NewHedgingTransport() error = %v, want a *discovery.KeyError for %s", err, tt.key)
		}
	}
}

func TestLoadTransportConfig(t *testing.T) {
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
		"Aspire__Resilience__Http__OutlierDetection__ConsecutiveFailures":               "3",
		"Aspire__Resilience__Http__OutlierDetection__BaseEjectionTime":                  "00:00:10",
		"Aspire__Resilience__Http__OutlierDetection__MaxEjectionTime":                   "00:01:00",
		"Aspire__Resilience__Http__OutlierDetection__MaxEjectionPercent":                "50",
		"Aspire__Resilience__Http__Clients__catalog__OutlierDetection__Enabled":         "false",
		"Aspire__Resilience__Http__UnknownSetting":                                      "ignored",
	})
	c, err := resilience.LoadTransportConfig(cfg, "")
	if err != nil {
		t.Fatal(err)
	}
	o := c.Options
	want := resilience.Options{
		RateLimiter:         resilience.RateLimiterOptions{PermitLimit: 50, QueueLimit: 7},
		TotalRequestTimeout: time.Minute,
		Retry: resilience.RetryOptions{
			MaxRetryAttempts: 5, BackoffType: resilience.BackoffLinear, UseJitter: false,
			Delay: 500 * time.Millisecond, MaxDelay: 3 * time.Second, ShouldRetryAfterHeader: false,
		},
		CircuitBreaker:   resilience.CircuitBreakerOptions{FailureRatio: 0.25, MinimumThroughput: 10, SamplingDuration: time.Minute, BreakDuration: 15 * time.Second},
		AttemptTimeout:   20 * time.Second,
		OutlierDetection: resilience.OutlierDetectionOptions{Enabled: true, ConsecutiveFailures: 3, BaseEjectionTime: 10 * time.Second, MaxEjectionTime: time.Minute, MaxEjectionPercent: 50},
	}
	if o != want {
		t.Fatalf("LoadTransportConfig() = %+v\nwant %+v", o, want)
	}
	c, err = resilience.LoadTransportConfig(cfg, "catalog")
	if err != nil {
		t.Fatal(err)
	}
	o = c.Options
	if c.Name != "catalog" {
		t.Fatalf("LoadTransportConfig(catalog).Name = %q", c.Name)
	}
	want.Retry.MaxRetryAttempts = 1
	want.Retry.RetryNonIdempotent = true
	want.OutlierDetection.Enabled = false
	if o != want {
		t.Fatalf("LoadTransportConfig(catalog) = %+v\nwant %+v", o, want)
	}
	// Another client gets the shared section only.
	if c, _ := resilience.LoadTransportConfig(cfg, "basket"); c.Options.Retry.MaxRetryAttempts != 5 {
		t.Fatalf("LoadTransportConfig(basket).Retry.MaxRetryAttempts = %d, want 5", c.Options.Retry.MaxRetryAttempts)
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
		{map[string]string{"Aspire:Resilience:Http:OutlierDetection:Enabled": "sometimes"}, "", "Aspire:Resilience:Http:OutlierDetection:Enabled"},
		{map[string]string{"Aspire:Resilience:Http:OutlierDetection:ConsecutiveFailures": "0"}, "", "Aspire:Resilience:Http:OutlierDetection:ConsecutiveFailures"},
		{map[string]string{"Aspire:Resilience:Http:OutlierDetection:MaxEjectionPercent": "101"}, "", "Aspire:Resilience:Http:OutlierDetection:MaxEjectionPercent"},
		{map[string]string{"Aspire:Resilience:Http:Clients:catalog:OutlierDetection:BaseEjectionTime": "-1s"}, "catalog",
			"Aspire:Resilience:Http:Clients:catalog:OutlierDetection:BaseEjectionTime"},
		// The default maximum (300 s) is below the base set: named in the
		// last section read.
		{map[string]string{"Aspire:Resilience:Http:OutlierDetection:BaseEjectionTime": "00:10:00"}, "catalog",
			"Aspire:Resilience:Http:Clients:catalog:OutlierDetection:MaxEjectionTime"},
		// A bad value in the shared section is named there, even when a
		// client's section is read after it.
		{map[string]string{"Aspire:Resilience:Http:AttemptTimeout:Timeout": "00:01:00"}, "catalog",
			"Aspire:Resilience:Http:AttemptTimeout:Timeout"},
		// A default that conflicts with a value set is named in the last
		// section read.
		{map[string]string{"Aspire:Resilience:Http:TotalRequestTimeout:Timeout": "5s"}, "catalog",
			"Aspire:Resilience:Http:Clients:catalog:AttemptTimeout:Timeout"},
	}
	for _, tt := range tests {
		_, err := resilience.LoadTransportConfig(discovery.FromMap(tt.values), tt.name)
		var ke *discovery.KeyError
		if !errors.As(err, &ke) || ke.Key != tt.want || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("LoadTransportConfig(%v) = %v, want a *discovery.KeyError for %s", tt.values, err, tt.want)
		}
	}
}

func TestLoadHedgingAndPipelineConfig(t *testing.T) {
	cfg := discovery.FromMap(map[string]string{
		"Aspire:Resilience:Hedging:Hedging:Delay":                                              "100ms",
		"Aspire:Resilience:Hedging:Hedging:MaxHedgedAttempts":                                  "2",
		"Aspire:Resilience:Hedging:Endpoint:Timeout:Timeout":                                   "5s",
		"Aspire:Resilience:Hedging:Endpoint:CircuitBreaker:MinimumThroughput":                  "20",
		"Aspire:Resilience:Hedging:Endpoint:RateLimiter:DefaultRateLimiterOptions:PermitLimit": "10",
		"Aspire:Resilience:Hedging:Clients:search:TotalRequestTimeout:Timeout":                 "00:00:10",
		"Aspire:Resilience:Hedging:Endpoint:OutlierDetection:ConsecutiveFailures":              "2",
		"Aspire:Resilience:Pipelines:orders-db:Retry:MaxRetryAttempts":                         "2",
		"Aspire:Resilience:Pipelines:orders-db:Retry:Delay":                                    "50ms",
	})
	hc, err := resilience.LoadHedgingConfig(cfg, "search")
	if err != nil {
		t.Fatal(err)
	}
	h := hc.Options
	if h.Hedging.Delay != 100*time.Millisecond || h.Hedging.MaxHedgedAttempts != 2 || h.Endpoint.Timeout != 5*time.Second ||
		h.Endpoint.CircuitBreaker.MinimumThroughput != 20 || h.Endpoint.RateLimiter.PermitLimit != 10 || h.TotalRequestTimeout != 10*time.Second ||
		h.Endpoint.OutlierDetection.ConsecutiveFailures != 2 || !h.Endpoint.OutlierDetection.Enabled {
		t.Fatalf("LoadHedgingConfig() = %+v", h)
	}
	pc, err := resilience.LoadPipelineConfig(cfg, "orders-db")
	if err != nil {
		t.Fatal(err)
	}
	if p := pc.Options; p.Retry.MaxRetryAttempts != 2 || p.Retry.Delay != 50*time.Millisecond || pc.Name != "orders-db" {
		t.Fatalf("LoadPipelineConfig() = %+v", pc)
	}
	var ke *discovery.KeyError
	_, err = resilience.LoadHedgingConfig(discovery.FromMap(map[string]string{
		"Aspire:Resilience:Hedging:Endpoint:Timeout:Timeout": "1m",
	}), "")
	if !errors.As(err, &ke) || ke.Key != "Aspire:Resilience:Hedging:Endpoint:Timeout:Timeout" {
		t.Fatalf("LoadHedgingConfig() error = %v", err)
	}
	_, err = resilience.LoadHedgingConfig(discovery.FromMap(map[string]string{
		"Aspire:Resilience:Hedging:Endpoint:OutlierDetection:MaxEjectionTime": "1s",
	}), "")
	if !errors.As(err, &ke) || ke.Key != "Aspire:Resilience:Hedging:Endpoint:OutlierDetection:MaxEjectionTime" {
		t.Fatalf("LoadHedgingConfig() error = %v", err)
	}
	_, err = resilience.LoadPipelineConfig(discovery.FromMap(map[string]string{
		"Aspire:Resilience:Pipelines:orders-db:Retry:Delay": "soon",
	}), "orders-db")
	if !errors.As(err, &ke) || ke.Key != "Aspire:Resilience:Pipelines:orders-db:Retry:Delay" {
		t.Fatalf("LoadPipelineConfig() error = %v", err)
	}
	if _, err := resilience.LoadPipelineConfig(cfg, ""); err == nil {
		t.Fatal("LoadPipelineConfig without a name did not fail")
	}
}
