package servicedefaults

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/resilience"
)

// TestGRPCRetryPolicy: how the standard pipeline's retry options map onto
// grpc's retry policy.
func TestGRPCRetryPolicy(t *testing.T) {
	def := resilience.DefaultOptions().Retry
	with := func(f func(*resilience.RetryOptions)) resilience.RetryOptions { r := def; f(&r); return r }
	tests := []struct {
		name string
		in   resilience.RetryOptions
		want grpcRetryPolicy
	}{
		{"defaults", def, grpcRetryPolicy{MaxAttempts: 4, InitialBackoff: "2s", MaxBackoff: "8s", BackoffMultiplier: 2}},
		{"capped at 5 attempts", with(func(r *resilience.RetryOptions) { r.MaxRetryAttempts = 9 }),
			grpcRetryPolicy{MaxAttempts: 5, InitialBackoff: "2s", MaxBackoff: "16s", BackoffMultiplier: 2}},
		{"MaxDelay caps", with(func(r *resilience.RetryOptions) { r.MaxDelay = 3 * time.Second }),
			grpcRetryPolicy{MaxAttempts: 4, InitialBackoff: "2s", MaxBackoff: "3s", BackoffMultiplier: 2}},
		{"MaxDelay below Delay", with(func(r *resilience.RetryOptions) { r.MaxDelay = 500 * time.Millisecond }),
			grpcRetryPolicy{MaxAttempts: 4, InitialBackoff: "0.5s", MaxBackoff: "0.5s", BackoffMultiplier: 2}},
		{"constant", with(func(r *resilience.RetryOptions) {
			r.BackoffType = resilience.BackoffConstant
			r.Delay = 100 * time.Millisecond
		}),
			grpcRetryPolicy{MaxAttempts: 4, InitialBackoff: "0.1s", MaxBackoff: "0.1s", BackoffMultiplier: 1}},
		{"zero delay", with(func(r *resilience.RetryOptions) { r.Delay = 0; r.MaxRetryAttempts = 1 }),
			grpcRetryPolicy{MaxAttempts: 2, InitialBackoff: "0.001s", MaxBackoff: "0.001s", BackoffMultiplier: 2}},
		{"huge delay does not overflow", with(func(r *resilience.RetryOptions) { r.Delay = time.Duration(1 << 62) }),
			grpcRetryPolicy{MaxAttempts: 4, InitialBackoff: "4611686018.427388s", MaxBackoff: "4611686018.427388s", BackoffMultiplier: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := *grpcRetry(tt.in)
			tt.want.RetryableStatusCodes = []string{"UNAVAILABLE", "RESOURCE_EXHAUSTED"}
			g, _ := json.Marshal(got)
			w, _ := json.Marshal(tt.want)
			if string(g) != string(w) {
				t.Errorf("grpcRetry = %s\nwant         %s", g, w)
			}
		})
	}
}

// TestGRPCServiceConfig: idempotent methods get the retry policy, unary
// ones the total timeout, streams of side-effecting methods nothing.
func TestGRPCServiceConfig(t *testing.T) {
	sc, err := grpcServiceConfig(discovery.FromMap(map[string]string{
		"Aspire:Resilience:Grpc:Clients:echo:TotalRequestTimeout:Timeout": "00:00:05",
	}), "echo")
	if err != nil {
		t.Fatal(err)
	}
	var cfg grpcConfig
	if err := json.Unmarshal([]byte(sc), &cfg); err != nil {
		t.Fatal(err)
	}
	if _, ok := cfg.LoadBalancingConfig[0]["round_robin"]; !ok {
		t.Errorf("balancing = %v, want round_robin", cfg.LoadBalancingConfig)
	}
	policy := map[string]string{}
	for _, mc := range cfg.MethodConfig {
		for _, n := range mc.Name {
			if strings.HasPrefix(n.Service, "goaspire.test.") || n.Service == "grpc.health.v1.Health" {
				policy[n.Service+"/"+n.Method] = mc.Timeout + "," + map[bool]string{true: "retry", false: "once"}[mc.RetryPolicy != nil]
			}
		}
	}
	// The Echo service is linked in by the benchmark's import.
	want := map[string]string{
		"grpc.health.v1.Health/Check": "5s,once",
		"goaspire.test.v1.Echo/Get":   "5s,retry",
		"goaspire.test.v1.Echo/Put":   "5s,retry",
		"goaspire.test.v1.Echo/Post":  "5s,once",
		"goaspire.test.v1.Echo/Watch": "",
		"grpc.health.v1.Health/Watch": "",
	}
	for m, w := range want {
		if policy[m] != w {
			t.Errorf("%s: %q, want %q (all: %v)", m, policy[m], w, policy)
		}
	}
}
