package servicedefaults

import (
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/keepalive"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/internal/outlier"
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
			kp, err := grpcKeepalive(discovery.FromMap(tt.values), "echo")
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
			if grpcServerKeepalive.MinTime > kp.Time/2 {
				t.Errorf("server MinTime %v: a client ping every %v arriving a little early is a strike", grpcServerKeepalive.MinTime, kp.Time)
			}
			if kp.PermitWithoutStream && !grpcServerKeepalive.PermitWithoutStream {
				t.Error("the server refuses the pings of a connection without calls, which the client sends")
			}
		})
	}
}

func TestGRPCOutlierConfig(t *testing.T) {
	tests := []struct {
		name   string
		values map[string]string
		want   outlier.Config
		badKey string
	}{
		{"defaults", nil, outlier.Config{ConsecutiveFailures: 5, BaseEjectionTime: 30 * time.Second, MaxEjectionTime: 300 * time.Second}, ""},
		{"per client", map[string]string{
			"Aspire:Resilience:Grpc:OutlierDetection:ConsecutiveFailures":           "3",
			"Aspire:Resilience:Grpc:Clients:echo:OutlierDetection:BaseEjectionTime": "00:00:10",
			"Aspire:Resilience:Grpc:OutlierDetection:MaxEjectionTime":               "00:01:00",
		}, outlier.Config{ConsecutiveFailures: 3, BaseEjectionTime: 10 * time.Second, MaxEjectionTime: time.Minute}, ""},
		{"off", map[string]string{"Aspire:Resilience:Grpc:Clients:echo:OutlierDetection:ConsecutiveFailures": "0"},
			outlier.Config{ConsecutiveFailures: -1, BaseEjectionTime: 30 * time.Second, MaxEjectionTime: 300 * time.Second}, ""},
		{"negative", map[string]string{"Aspire:Resilience:Grpc:OutlierDetection:ConsecutiveFailures": "-1"}, outlier.Config{}, "Aspire:Resilience:Grpc:OutlierDetection:ConsecutiveFailures"},
		{"not a number", map[string]string{"Aspire:Resilience:Grpc:Clients:echo:OutlierDetection:ConsecutiveFailures": "five"}, outlier.Config{}, "Aspire:Resilience:Grpc:Clients:echo:OutlierDetection:ConsecutiveFailures"},
		{"zero base", map[string]string{"Aspire:Resilience:Grpc:OutlierDetection:BaseEjectionTime": "0"}, outlier.Config{}, "Aspire:Resilience:Grpc:OutlierDetection:BaseEjectionTime"},
		{"bad max", map[string]string{"Aspire:Resilience:Grpc:Clients:echo:OutlierDetection:MaxEjectionTime": "later"}, outlier.Config{}, "Aspire:Resilience:Grpc:Clients:echo:OutlierDetection:MaxEjectionTime"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			oc, err := grpcOutlierConfig(discovery.FromMap(tt.values), "echo")
			if tt.badKey != "" {
				var ke *discovery.KeyError
				if !errors.As(err, &ke) || ke.Key != tt.badKey {
					t.Fatalf("error = %v, want a KeyError naming %s", err, tt.badKey)
				}
				return
			}
			if err != nil || oc != tt.want {
				t.Fatalf("config = %+v, %v; want %+v", oc, err, tt.want)
			}
		})
	}
}
