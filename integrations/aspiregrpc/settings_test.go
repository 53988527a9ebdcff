package aspiregrpc_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/goaspire/goaspire/integrations/aspiregrpc"
	"github.com/goaspire/goaspire/internal/grpctest"
	"github.com/goaspire/goaspire/internal/grpctest/echopb"
	"github.com/goaspire/goaspire/servicedefaults"
)

// TestGRPCClientConfigure: configure sees the settings read from the
// configuration, and what it changes is what the client does.
func TestGRPCClientConfigure(t *testing.T) {
	t.Run("sees the configuration", func(t *testing.T) {
		app := newApp(t, map[string]string{
			"Aspire:Resilience:Grpc:Clients:users:AttemptTimeout:Timeout":  "00:00:03",
			"Aspire:Resilience:Grpc:Retry:MaxRetryAttempts":                "2",
			"Aspire:ServiceDefaults:GrpcClients:users:KeepAlivePingPolicy": "WithActiveRequests",
			"Aspire:ServiceDefaults:GrpcClients:users:Resilience":          "None",
		})
		var got aspiregrpc.ClientSettings
		if _, err := aspiregrpc.Client(context.Background(), app, "users", func(s *aspiregrpc.ClientSettings) { got = *s }); err != nil {
			t.Fatal(err)
		}
		want := keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second}
		if got.AttemptTimeout != 3*time.Second || got.TotalRequestTimeout != 30*time.Second || got.Retry.MaxRetryAttempts != 2 ||
			!got.DisableResilience || got.Keepalive != want || !got.OutlierDetection.Enabled {
			t.Fatalf("settings = %+v", got)
		}
	})

	tests := []struct {
		name      string
		configure func(*aspiregrpc.ClientSettings)
		failTimes int64
		wantCode  codes.Code
		wantCalls int64
	}{
		{"fewer retries", func(s *aspiregrpc.ClientSettings) { s.Retry.MaxRetryAttempts = 1 }, 5, codes.Unavailable, 2},
		{"resilience off", func(s *aspiregrpc.ClientSettings) { s.DisableResilience = true }, 1, codes.Unavailable, 1},
		{"unchanged", func(*aspiregrpc.ClientSettings) {}, 1, codes.OK, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := grpctest.Start(t, "echo", nil)
			s.Echo.FailTimes = tt.failTimes
			app := newApp(t, with(fastRetries, "services__echo__grpc__0", "http://"+s.Addr))
			var attempts atomic.Int64
			count := grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
				attempts.Add(1)
				return invoker(ctx, method, req, reply, cc, opts...)
			})
			cc, err := aspiregrpc.Client(context.Background(), app, "echo", tt.configure, func(s *aspiregrpc.ClientSettings) {
				s.DialOptions = append(s.DialOptions, count)
			})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err = echopb.NewEchoClient(cc).Get(ctx, &echopb.EchoRequest{Fail: int32(codes.Unavailable)})
			if got := status.Code(err); got != tt.wantCode {
				t.Errorf("code = %v (%v), want %v", got, err, tt.wantCode)
			}
			if got := s.Echo.Calls[0].Load(); got != tt.wantCalls {
				t.Errorf("server got %d calls, want %d", got, tt.wantCalls)
			}
			// The caller's unary interceptor runs once per attempt.
			if got := attempts.Load(); got != tt.wantCalls {
				t.Errorf("the DialOptions' interceptor ran %d times, want %d", got, tt.wantCalls)
			}
		})
	}

	t.Run("a timeout set in code is named in the call's error", func(t *testing.T) {
		e, addr := startScripted(t, step{hang: true})
		app := newApp(t, map[string]string{"services__echo__grpc__0": "http://" + addr})
		cc, err := aspiregrpc.Client(context.Background(), app, "echo", func(s *aspiregrpc.ClientSettings) {
			s.TotalRequestTimeout = 200 * time.Millisecond
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err = echopb.NewEchoClient(cc).Post(ctx, &echopb.EchoRequest{})
		if status.Code(err) != codes.DeadlineExceeded || !strings.Contains(err.Error(), "ClientSettings.TotalRequestTimeout") {
			t.Fatalf("call = %v, want DEADLINE_EXCEEDED naming ClientSettings.TotalRequestTimeout", err)
		}
		if n := len(e.seen()); n != 1 {
			t.Fatalf("server got %d calls, want 1", n)
		}
	})
}

// TestGRPCClientSettingsErrors: settings made invalid in code fail
// Client, naming the field; a failed open is not remembered.
func TestGRPCClientSettingsErrors(t *testing.T) {
	tests := []struct {
		field     string
		configure func(*aspiregrpc.ClientSettings)
	}{
		{"ClientSettings.TotalRequestTimeout", func(s *aspiregrpc.ClientSettings) { s.TotalRequestTimeout = 0 }},
		{"ClientSettings.AttemptTimeout", func(s *aspiregrpc.ClientSettings) { s.AttemptTimeout = -time.Second }},
		{"ClientSettings.Retry.MaxRetryAttempts", func(s *aspiregrpc.ClientSettings) { s.Retry.MaxRetryAttempts = -1 }},
		{"ClientSettings.Retry.Delay", func(s *aspiregrpc.ClientSettings) { s.Retry.Delay = -time.Second }},
		{"ClientSettings.OutlierDetection.MaxEjectionPercent", func(s *aspiregrpc.ClientSettings) { s.OutlierDetection.MaxEjectionPercent = 101 }},
		{"ClientSettings.OutlierDetection.MaxEjectionTime", func(s *aspiregrpc.ClientSettings) { s.OutlierDetection.MaxEjectionTime = time.Second }},
		{"ClientSettings.Keepalive.Time", func(s *aspiregrpc.ClientSettings) { s.Keepalive.Time = -time.Second }},
		{"ClientSettings.Keepalive.Timeout", func(s *aspiregrpc.ClientSettings) { s.Keepalive.Timeout = 0 }},
	}
	for _, tt := range tests {
		t.Run(tt.field, func(t *testing.T) {
			app := newApp(t, nil)
			_, err := aspiregrpc.Client(context.Background(), app, "users", tt.configure)
			if err == nil || !strings.Contains(err.Error(), tt.field+" ") {
				t.Fatalf("Client error = %v, want one naming %s", err, tt.field)
			}
			if _, err := aspiregrpc.Client(context.Background(), app, "users"); err != nil {
				t.Fatalf("Client after a failed open = %v", err)
			}
		})
	}
}

// TestGRPCClientAfterShutdown: no client is opened on an App shut down.
func TestGRPCClientAfterShutdown(t *testing.T) {
	app := newApp(t, nil)
	if err := app.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := aspiregrpc.Client(context.Background(), app, "users"); !errors.Is(err, servicedefaults.ErrClosed) {
		t.Fatalf("Client after Shutdown = %v, want ErrClosed", err)
	}
}
