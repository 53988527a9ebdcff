package aspiregrpc

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/goaspire/goaspire/discovery"
	_ "github.com/goaspire/goaspire/internal/grpctest/echopb" // the Echo service's idempotent methods
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
			tt.want.RetryableStatusCodes = []string{"UNAVAILABLE"}
			g, _ := json.Marshal(got)
			w, _ := json.Marshal(tt.want)
			if string(g) != string(w) {
				t.Errorf("grpcRetry = %s\nwant         %s", g, w)
			}
		})
	}
}

// TestGRPCClientPolicy: the unary idempotent methods are retried by the
// interceptor, grpc's service config only balances (no idempotent
// server stream is registered); with retries off nothing is retried.
func TestGRPCClientPolicy(t *testing.T) {
	cfg := discovery.FromMap(map[string]string{
		"Aspire:Resilience:Grpc:Clients:echo:TotalRequestTimeout:Timeout": "00:00:05",
		"Aspire:Resilience:Grpc:AttemptTimeout:Timeout":                   "00:00:02",
	})
	policy := func(cfg *discovery.Config) (string, *grpcUnary, error) {
		s, keys, err := readClientSettings(cfg, "echo")
		if err != nil {
			return "", nil, err
		}
		return clientPolicy(s, keys)
	}
	sc, u, err := policy(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var c grpcConfig
	if err := json.Unmarshal([]byte(sc), &c); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.LoadBalancingConfig[0][balancerName]; !ok {
		t.Errorf("balancing = %v, want %s", c.LoadBalancingConfig, balancerName)
	}
	for _, mc := range c.MethodConfig {
		for _, n := range mc.Name {
			if strings.HasPrefix(n.Service, "goaspire.test.") || strings.HasPrefix(n.Service, "grpc.health.") {
				t.Errorf("service config has a policy for %v", n)
			}
		}
	}
	if !u.standard || u.total != 5*time.Second || u.attempt != 2*time.Second {
		t.Errorf("timeouts = %v, %v (standard %v), want 5s, 2s", u.total, u.attempt, u.standard)
	}
	if u.totalKey != "Aspire:Resilience:Grpc:Clients:echo:TotalRequestTimeout:Timeout" || u.attemptKey != "Aspire:Resilience:Grpc:AttemptTimeout:Timeout" {
		t.Errorf("keys = %s, %s", u.totalKey, u.attemptKey)
	}
	// The Echo service is linked in by the import below.
	for m, want := range map[string]bool{
		"/goaspire.test.v1.Echo/Get": true, "/goaspire.test.v1.Echo/Put": true, "/goaspire.test.v1.Echo/Post": false,
		"/goaspire.test.v1.Echo/Watch": false, "/grpc.health.v1.Health/Check": false,
	} {
		if _, got := u.idempotent[m]; got != want {
			t.Errorf("%s retried = %v, want %v", m, got, want)
		}
	}
	_, u, err = policy(discovery.FromMap(map[string]string{"Aspire:Resilience:Grpc:Retry:MaxRetryAttempts": "0"}))
	if err != nil || len(u.idempotent) != 0 {
		t.Errorf("with MaxRetryAttempts 0: %d methods retried (%v)", len(u.idempotent), err)
	}
}

func TestGRPCPushback(t *testing.T) {
	tests := []struct {
		in     []string
		max    time.Duration
		want   time.Duration
		wantOK bool
	}{
		{[]string{"0"}, 0, 0, true},
		{[]string{"250"}, 0, 250 * time.Millisecond, true},
		{[]string{"250"}, 100 * time.Millisecond, 100 * time.Millisecond, true},
		{[]string{"99999999999999999"}, 0, time.Duration(1<<63 - 1), true},
		{[]string{"-1"}, 0, 0, false},
		{[]string{"1.5"}, 0, 0, false},
		{[]string{""}, 0, 0, false},
		{[]string{"1", "2"}, 0, 0, false},
	}
	for _, tt := range tests {
		got, ok := grpcPushback(tt.in, tt.max)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("grpcPushback(%q, %v) = %v, %v; want %v, %v", tt.in, tt.max, got, ok, tt.want, tt.wantOK)
		}
	}
}
