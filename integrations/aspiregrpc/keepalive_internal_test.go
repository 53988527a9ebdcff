package aspiregrpc

import (
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/keepalive"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/resilience"
)

// TestGRPCKeepalive: the client's keepalive settings, and the App's
// server accepting the pings of every client setting: grpc-go's server
// counts a ping sooner than its policy's MinTime after the last one (or,
// without PermitWithoutStream, any ping on a connection with no call) as
// a strike and answers the third with GOAWAY ENHANCE_YOUR_CALM.
func TestGRPCKeepalive(t *testing.T) {
	tests := []struct {
		name   string
		values map[string]string
		want   keepalive.ClientParameters
		badKey string
	}{
		{"defaults", nil, keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}, ""},
		{"per client", map[string]string{
			"Aspire:ServiceDefaults:GrpcClients:KeepAlivePingDelay":         "00:01:00",
			"Aspire:ServiceDefaults:GrpcClients:echo:KeepAlivePingTimeout":  "00:00:20",
			"Aspire:ServiceDefaults:GrpcClients:echo:KeepAlivePingPolicy":   "WithActiveRequests",
			"Aspire:ServiceDefaults:GrpcClients:other:KeepAlivePingTimeout": "00:00:01",
			"Aspire:ServiceDefaults:GrpcClients:other:KeepAlivePingPolicy":  "bad, but not ours",
		}, keepalive.ClientParameters{Time: time.Minute, Timeout: 20 * time.Second}, ""},
		{"raised to grpc's minimum", map[string]string{"Aspire:ServiceDefaults:GrpcClients:echo:KeepAlivePingDelay": "00:00:01"},
			keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}, ""},
		{"off", map[string]string{"Aspire:ServiceDefaults:GrpcClients:KeepAlivePingDelay": "0"}, keepalive.ClientParameters{}, ""},
		{"negative delay", map[string]string{"Aspire:ServiceDefaults:GrpcClients:echo:KeepAlivePingDelay": "-00:00:01"}, keepalive.ClientParameters{}, "Aspire:ServiceDefaults:GrpcClients:echo:KeepAlivePingDelay"},
		{"bad delay", map[string]string{"Aspire:ServiceDefaults:GrpcClients:KeepAlivePingDelay": "often"}, keepalive.ClientParameters{}, "Aspire:ServiceDefaults:GrpcClients:KeepAlivePingDelay"},
		{"zero timeout", map[string]string{"Aspire:ServiceDefaults:GrpcClients:KeepAlivePingTimeout": "0"}, keepalive.ClientParameters{}, "Aspire:ServiceDefaults:GrpcClients:KeepAlivePingTimeout"},
		{"bad policy", map[string]string{"Aspire:ServiceDefaults:GrpcClients:echo:KeepAlivePingPolicy": "Never"}, keepalive.ClientParameters{}, "Aspire:ServiceDefaults:GrpcClients:echo:KeepAlivePingPolicy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kp, err := readKeepalive(discovery.FromMap(tt.values), "echo")
			if tt.badKey != "" {
				var ke *discovery.KeyError
				if !errors.As(err, &ke) || ke.Key != tt.badKey {
					t.Fatalf("error = %v, want a KeyError naming %s", err, tt.badKey)
				}
				return
			}
			if err != nil || kp != tt.want {
				t.Fatalf("keepalive = %+v, %v; want %+v", kp, err, tt.want)
			}
			if kp.Time == 0 {
				return
			}
			if serverKeepalive.MinTime > kp.Time/2 {
				t.Errorf("server MinTime %v: a client ping every %v arriving a little early is a strike", serverKeepalive.MinTime, kp.Time)
			}
			if kp.PermitWithoutStream && !serverKeepalive.PermitWithoutStream {
				t.Error("the server refuses the pings of a connection without calls, which the client sends")
			}
		})
	}
}

func TestGRPCOutlierConfig(t *testing.T) {
	def := resilience.DefaultOptions().OutlierDetection
	tests := []struct {
		name   string
		values map[string]string
		want   resilience.OutlierDetectionOptions
		badKey string
	}{
		{"defaults", nil, resilience.OutlierDetectionOptions{Enabled: true, ConsecutiveFailures: 5, BaseEjectionTime: 30 * time.Second, MaxEjectionTime: 300 * time.Second, MaxEjectionPercent: 10}, ""},
		{"per client", map[string]string{
			"Aspire:Resilience:Grpc:OutlierDetection:ConsecutiveFailures":           "3",
			"Aspire:Resilience:Grpc:Clients:echo:OutlierDetection:BaseEjectionTime": "00:00:10",
			"Aspire:Resilience:Grpc:OutlierDetection:MaxEjectionTime":               "00:01:00",
			"Aspire:Resilience:Grpc:OutlierDetection:MaxEjectionPercent":            "50",
		}, resilience.OutlierDetectionOptions{Enabled: true, ConsecutiveFailures: 3, BaseEjectionTime: 10 * time.Second, MaxEjectionTime: time.Minute, MaxEjectionPercent: 50}, ""},
		{"off", map[string]string{"Aspire:Resilience:Grpc:Clients:echo:OutlierDetection:Enabled": "false"},
			func() resilience.OutlierDetectionOptions { o := def; o.Enabled = false; return o }(), ""},
		{"zero failures", map[string]string{"Aspire:Resilience:Grpc:OutlierDetection:ConsecutiveFailures": "0"}, def, "Aspire:Resilience:Grpc:OutlierDetection:ConsecutiveFailures"},
		{"not a number", map[string]string{"Aspire:Resilience:Grpc:Clients:echo:OutlierDetection:ConsecutiveFailures": "five"}, def, "Aspire:Resilience:Grpc:Clients:echo:OutlierDetection:ConsecutiveFailures"},
		{"zero base", map[string]string{"Aspire:Resilience:Grpc:OutlierDetection:BaseEjectionTime": "0"}, def, "Aspire:Resilience:Grpc:OutlierDetection:BaseEjectionTime"},
		{"bad max", map[string]string{"Aspire:Resilience:Grpc:Clients:echo:OutlierDetection:MaxEjectionTime": "later"}, def, "Aspire:Resilience:Grpc:Clients:echo:OutlierDetection:MaxEjectionTime"},
		{"max below base", map[string]string{"Aspire:Resilience:Grpc:Clients:echo:OutlierDetection:MaxEjectionTime": "00:00:01"}, def, "Aspire:Resilience:Grpc:Clients:echo:OutlierDetection:MaxEjectionTime"},
		{"percent over 100", map[string]string{"Aspire:Resilience:Grpc:OutlierDetection:MaxEjectionPercent": "101"}, def, "Aspire:Resilience:Grpc:OutlierDetection:MaxEjectionPercent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := retryOptions(discovery.FromMap(tt.values), "echo")
			if tt.badKey != "" {
				var ke *discovery.KeyError
				if !errors.As(err, &ke) || ke.Key != tt.badKey {
					t.Fatalf("error = %v, want a KeyError naming %s", err, tt.badKey)
				}
				return
			}
			if err != nil || o.OutlierDetection != tt.want {
				t.Fatalf("OutlierDetection = %+v, %v; want %+v", o.OutlierDetection, err, tt.want)
			}
		})
	}
}
