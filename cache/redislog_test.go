package cache_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/goaspire/goaspire/cache"
)

func TestRedisLogger(t *testing.T) {
	tests := []struct {
		name      string
		format    string
		args      []any
		wantLevel string
		wantMsg   string
		secret    string
	}{
		{
			name:      "failed dial",
			format:    "redis: connection pool: failed to dial after %d attempts: %v",
			args:      []any{3, "dial tcp 127.0.0.1:1: connect: connection refused"},
			wantLevel: "WARN",
			wantMsg:   "redis: connection pool: failed to dial after 3 attempts: dial tcp 127.0.0.1:1: connect: connection refused",
		},
		{
			name:      "connection waiting for re-authentication",
			format:    "redis: connection pool: conn[%d] rejected by hook, returning to pool",
			args:      []any{7},
			wantLevel: "DEBUG",
			wantMsg:   "redis: connection pool: conn[7] rejected by hook, returning to pool",
		},
		{
			name:      "sentinel failover",
			format:    "sentinel: new master=%q addr=%q",
			args:      []any{"cache", "10.0.0.2:6379"},
			wantLevel: "INFO",
			wantMsg:   `sentinel: new master="cache" addr="10.0.0.2:6379"`,
		},
		{
			name:      "sentinel failure",
			format:    "sentinel: GetMasterAddrByName name=%q failed: %s",
			args:      []any{"cache", "i/o timeout"},
			wantLevel: "WARN",
			wantMsg:   `sentinel: GetMasterAddrByName name="cache" failed: i/o timeout`,
		},
		{
			name:      "password in a URL",
			format:    "redis: cannot reach %s",
			args:      []any{"redis://app:hunter2-secret@cache:6379/0"},
			wantLevel: "WARN",
			secret:    "hunter2-secret",
		},
		{
			name:      "password pair",
			format:    "redis: bad option %s",
			args:      []any{"password=hunter3-secret"},
			wantLevel: "WARN",
			secret:    "hunter3-secret",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, format := range []string{"json", "text"} {
				var buf bytes.Buffer
				debug := &slog.HandlerOptions{Level: slog.LevelDebug}
				var h slog.Handler = slog.NewJSONHandler(&buf, debug)
				if format == "text" {
					h = slog.NewTextHandler(&buf, debug)
				}
				cache.RedisLogger{Logger: slog.New(h)}.Printf(context.Background(), tt.format, tt.args...)
				out := buf.String()
				if tt.secret != "" && strings.Contains(out, tt.secret) {
					t.Fatalf("%s: the secret is in %s", format, out)
				}
				if format == "text" {
					if !strings.Contains(out, "level="+tt.wantLevel) || !strings.Contains(out, "component=go-redis") {
						t.Errorf("text: %s; want level=%s and component=go-redis", out, tt.wantLevel)
					}
					continue
				}
				var rec map[string]any
				if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
					t.Fatalf("%v in %q", err, out)
				}
				if rec["level"] != tt.wantLevel || rec["component"] != "go-redis" {
					t.Errorf("record %v; want level %s, component go-redis", rec, tt.wantLevel)
				}
				if tt.wantMsg != "" && rec["msg"] != tt.wantMsg {
					t.Errorf("msg %q; want %q", rec["msg"], tt.wantMsg)
				}
			}
		})
	}
}

func TestRedisLoggerRespectsLevel(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cache.RedisLogger{Logger: l}.Printf(context.Background(), "sentinel: new master=%q addr=%q", "cache", "10.0.0.2:6379")
	if buf.Len() != 0 {
		t.Errorf("an Info line reached a Warn logger: %s", buf.String())
	}
	cache.RedisLogger{Logger: l}.Printf(context.Background(), "redis: connection pool: failed to dial after %d attempts: %v", 1, "refused")
	if buf.Len() == 0 {
		t.Error("a Warn line did not reach a Warn logger")
	}
}
