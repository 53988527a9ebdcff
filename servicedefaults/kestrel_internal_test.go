package servicedefaults

import (
	"context"
	"io"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/goaspire/goaspire/discovery"
)

// TestServerSettingsMapping checks that each Kestrel key lands on the
// http.Server field that implements it, with Kestrel's defaults.
func TestServerSettingsMapping(t *testing.T) {
	type want struct {
		idle, header     time.Duration
		maxHeader        int
		maxBody          int64
		h2               http.HTTP2Config
		http1, h2c, h2tl bool
	}
	defaults := want{
		idle: 130 * time.Second, header: 30 * time.Second, maxHeader: 32 << 10, maxBody: 30_000_000,
		h2: http.HTTP2Config{
			MaxConcurrentStreams: 100, MaxDecoderHeaderTableSize: 4096, MaxReadFrameSize: 16 << 10,
			MaxReceiveBufferPerConnection: 1 << 20, MaxReceiveBufferPerStream: 768 << 10, PingTimeout: 20 * time.Second,
		},
		http1: true, h2c: true,
	}
	tests := []struct {
		name   string
		values map[string]string
		want   want
	}{
		{"defaults", nil, defaults},
		{"configured", map[string]string{
			"Kestrel:Limits:KeepAliveTimeout":                  "00:01:00",
			"Kestrel:Limits:RequestHeadersTimeout":             "5s",
			"Kestrel:Limits:MaxRequestHeadersTotalSize":        "65536",
			"Kestrel:Limits:MaxRequestBodySize":                "1000",
			"Kestrel:Limits:Http2:MaxStreamsPerConnection":     "50",
			"Kestrel:Limits:Http2:HeaderTableSize":             "8192",
			"Kestrel:Limits:Http2:MaxFrameSize":                "32768",
			"Kestrel:Limits:Http2:InitialConnectionWindowSize": "2097152",
			"Kestrel:Limits:Http2:InitialStreamWindowSize":     "131072",
			"Kestrel:Limits:Http2:KeepAlivePingDelay":          "00:00:30",
			"Kestrel:Limits:Http2:KeepAlivePingTimeout":        "00:00:05",
			"Kestrel:EndpointDefaults:Protocols":               "Http1",
		}, want{
			idle: time.Minute, header: 5 * time.Second, maxHeader: 65536, maxBody: 1000,
			h2: http.HTTP2Config{
				MaxConcurrentStreams: 50, MaxDecoderHeaderTableSize: 8192, MaxReadFrameSize: 32768,
				MaxReceiveBufferPerConnection: 2 << 20, MaxReceiveBufferPerStream: 128 << 10,
				SendPingTimeout: 30 * time.Second, PingTimeout: 5 * time.Second,
			},
			http1: true,
		}},
		{"Kestrel's TimeSpan.MaxValue ping delay", map[string]string{
			"Kestrel:Limits:Http2:KeepAlivePingDelay": "10675199.02:48:05.4775807",
		}, defaults},
		{"no body limit", map[string]string{"Kestrel:Limits:MaxRequestBodySize": "null"}, func() want { w := defaults; w.maxBody = -1; return w }()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := Add(context.Background(), nil, WithConfig(discovery.FromMap(tt.values)), WithoutGlobals(), WithLogWriter(io.Discard))
			if err != nil {
				t.Fatal(err)
			}
			defer a.Shutdown(context.Background())
			srv := a.httpServer()
			got := want{
				idle: srv.IdleTimeout, header: srv.ReadHeaderTimeout, maxHeader: srv.MaxHeaderBytes, maxBody: a.server.maxBody,
				h2: *srv.HTTP2, http1: srv.Protocols.HTTP1(), h2c: srv.Protocols.UnencryptedHTTP2(), h2tl: srv.Protocols.HTTP2(),
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("server = %+v\nwant     %+v", got, tt.want)
			}
		})
	}
}

// TestListens: a service with a handler listens, on ":8080" by default; a
// worker only on an endpoint the configuration names.
func TestListens(t *testing.T) {
	for _, tc := range []struct {
		name   string
		h      http.Handler
		values map[string]string
		want   bool
	}{
		{"service, no port", http.NewServeMux(), nil, true},
		{"worker, no port", nil, nil, false},
		{"worker, PORT", nil, map[string]string{"PORT": "9000"}, true},
		{"worker, HTTP_PORTS", nil, map[string]string{"HTTP_PORTS": "9000"}, true},
		{"worker, ASPNETCORE_URLS", nil, map[string]string{"ASPNETCORE_URLS": "http://+:9000"}, true},
		{"worker, Kestrel endpoint", nil, map[string]string{"Kestrel:Endpoints:http:Url": "http://localhost:9000"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := Add(context.Background(), tc.h, WithConfig(discovery.FromMap(tc.values)), WithoutGlobals(), WithLogWriter(io.Discard))
			if err != nil {
				t.Fatal(err)
			}
			defer a.Shutdown(context.Background())
			if got := a.server.listens(); got != tc.want {
				t.Errorf("listens() = %t, want %t", got, tc.want)
			}
		})
	}
}
