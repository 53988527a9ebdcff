package natsmsg_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/internal/poll"
	natsmsg "github.com/goaspire/goaspire/messaging/nats"
	"github.com/goaspire/goaspire/testserver"
)

// TestHealthNotHealthyWithinTenSecondsOfSilence: with every default (ping
// settings, the handler's), /health stops answering Healthy within 10 s
// of the server going silent behind a partition.
func TestHealthNotHealthyWithinTenSecondsOfSilence(t *testing.T) {
	srv := testserver.NewNATS(t)
	p := testserver.NewFaultProxy(t, srv.Addr())
	cfg, err := natsmsg.LoadConfig(discovery.FromMap(map[string]string{
		"ConnectionStrings:events": "nats://" + srv.User() + ":" + srv.Password() + "@" + p.Addr(),
	}), "events")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Logger = slog.New(slog.DiscardHandler)
	nc, err := natsmsg.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	t.Cleanup(p.Heal) // first: Close does not wait on a silent network
	waitFor(t, "connected", nc.IsConnected)

	r := health.NewRegistry(health.WithLogger(slog.New(slog.DiscardHandler)))
	if err := r.Register(natsmsg.HealthCheck(cfg.Name, nc)); err != nil {
		t.Fatal(err)
	}
	srvHTTP := httptest.NewServer(r.Handler(health.HandlerOptions{}))
	t.Cleanup(srvHTTP.Close)
	probe := func() string {
		resp, err := http.Get(srvHTTP.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
	if got := probe(); got != string(health.Healthy) {
		t.Fatalf("before the partition: %s", got)
	}

	p.Set(testserver.Silent)
	start := time.Now()
	var got string
	poll.Until(t, 30*time.Second, "/health to stop answering Healthy", func() bool {
		got = probe()
		return got != string(health.Healthy)
	})
	took := time.Since(start)
	t.Logf("/health %s %v after the server went silent", got, took)
	if took > 10*time.Second {
		t.Fatalf("/health left Healthy after %v, want within 10s", took)
	}
	// A reconnecting connection is Unhealthy by default.
	if got != string(health.Unhealthy) {
		t.Errorf("/health = %s, want Unhealthy (reconnecting)", got)
	}
}

// TestDefaultsNoticeSilenceInTime checks the arithmetic the 10 s bar rests
// on: nats.go declares a connection stale at the ping tick after
// MaxPingOut unanswered pings, and a probe answers within the handler's
// ResponseTimeout.
func TestDefaultsNoticeSilenceInTime(t *testing.T) {
	d := time.Duration(natsmsg.DefaultMaxPingOut+1)*natsmsg.DefaultPingInterval + health.DefaultResponseTimeout
	if d > 7*time.Second {
		t.Fatalf("a silent server is noticed after up to %v with the defaults, want ≤ 7s (bar: 10s)", d)
	}
}

func TestLoadConfigPingSettings(t *testing.T) {
	conn := map[string]string{"ConnectionStrings:events": "nats://host:4222"}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range conn {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	for _, tc := range []struct {
		name     string
		values   map[string]string
		interval time.Duration
		maxOut   int
		wantKey  string
	}{
		{name: "defaults left to New", values: with()},
		{name: "general", values: with("Aspire:NATS:Net:PingInterval", "00:00:05", "Aspire:NATS:Net:MaxPingOut", "3"), interval: 5 * time.Second, maxOut: 3},
		{name: "named wins", values: with("Aspire:NATS:Net:PingInterval", "5s", "Aspire:NATS:Net:events:PingInterval", "1s"), interval: time.Second},
		{name: "zero interval", values: with("Aspire:NATS:Net:events:PingInterval", "0"), wantKey: "Aspire:NATS:Net:events:PingInterval"},
		{name: "bad interval", values: with("Aspire:NATS:Net:PingInterval", "often"), wantKey: "Aspire:NATS:Net:PingInterval"},
		{name: "zero max", values: with("Aspire:NATS:Net:MaxPingOut", "0"), wantKey: "Aspire:NATS:Net:MaxPingOut"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := natsmsg.LoadConfig(discovery.FromMap(tc.values), "events")
			if tc.wantKey != "" {
				var ke *discovery.KeyError
				if !errors.As(err, &ke) || !strings.Contains(err.Error(), tc.wantKey) {
					t.Fatalf("err = %v, want a KeyError naming %s", err, tc.wantKey)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.PingInterval != tc.interval || c.MaxPingOut != tc.maxOut {
				t.Fatalf("PingInterval %v, MaxPingOut %d; want %v, %d", c.PingInterval, c.MaxPingOut, tc.interval, tc.maxOut)
			}
		})
	}
}
