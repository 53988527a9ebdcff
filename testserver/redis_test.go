package testserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// newClient returns a go-redis client for r's URL, trusting r's CA under TLS.
func newClient(t *testing.T, r *Redis) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(r.URL())
	if err != nil {
		t.Fatal(err)
	}
	if opt.TLSConfig != nil {
		opt.TLSConfig.RootCAs = r.CACertPool()
	}
	opt.MaxRetries = -1 // report a dropped connection instead of hiding it
	c := redis.NewClient(opt)
	t.Cleanup(func() { c.Close() })
	return c
}

func TestRedis(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	r, err := StartRedis(ctx)
	SkipIfMissing(t, err)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	if got, want := r.ConnectionString(), fmt.Sprintf("127.0.0.1:%d,password=%s", r.Port(), r.Password()); got != want {
		t.Errorf("ConnectionString() = %q, want %q", got, want)
	}
	if got, want := r.URL(), fmt.Sprintf("redis://:%s@127.0.0.1:%d", r.Password(), r.Port()); got != want {
		t.Errorf("URL() = %q, want %q", got, want)
	}
	if r.Port() == 6379 || r.Addr() != fmt.Sprintf("127.0.0.1:%d", r.Port()) || r.CACertFile() != "" || r.CACertPool() != nil || r.TLSConfig() != nil {
		t.Errorf("unexpected Addr/Port/TLS accessors for %v", r)
	}
	for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
		if s := fmt.Sprintf(format, r); strings.Contains(s, r.Password()) {
			t.Errorf("Sprintf(%q) reveals the password: %s", format, s)
		}
	}

	c := newClient(t, r)
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if v, err := c.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("GET = %q, %v", v, err)
	}

	tests := []struct {
		name     string
		password string
	}{
		{"no password", ""},
		{"wrong password", "wrong"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := redis.NewClient(&redis.Options{Addr: r.Addr(), Password: tt.password, MaxRetries: -1})
			defer c.Close()
			if err := c.Get(ctx, "k").Err(); err == nil {
				t.Fatal("read without the right password")
			}
		})
	}

	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(r.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Close left %s behind (stat: %v)", r.dir, err)
	}
}

func TestRedisRestart(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts []RedisOption
		stop func(*Redis) error
	}{
		{"stop", nil, func(r *Redis) error { return r.Stop(context.Background()) }},
		{"kill", nil, (*Redis).Kill},
		{"kill tls", []RedisOption{WithRedisTLS()}, (*Redis).Kill},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			r := NewRedis(t, tt.opts...)
			addr := r.Addr()
			c := newClient(t, r)
			if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
				t.Fatal(err)
			}
			pid := r.proc.pid()

			if err := tt.stop(r); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
				t.Errorf("process %d of the stopped server still exists (running or a zombie)", pid)
			}
			if err := c.Ping(ctx).Err(); err == nil {
				t.Fatal("server still answers")
			}

			if err := r.Start(ctx); err != nil {
				t.Fatal(err)
			}
			if r.Addr() != addr {
				t.Errorf("address changed from %s to %s", addr, r.Addr())
			}
			// The same client reconnects; the data is gone (nothing is saved).
			if err := c.Ping(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			if err := c.Get(ctx, "k").Err(); !errors.Is(err, redis.Nil) {
				t.Errorf("GET after restart: %v, want redis.Nil", err)
			}
			if err := r.Start(ctx); err == nil {
				t.Error("Start of a running server succeeded")
			}
		})
	}
}

func TestRedisTLS(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	r := NewRedis(t, WithRedisTLS())

	if got, want := r.ConnectionString(), fmt.Sprintf("127.0.0.1:%d,password=%s,ssl=true", r.Port(), r.Password()); got != want {
		t.Errorf("ConnectionString() = %q, want %q", got, want)
	}
	if !strings.HasPrefix(r.URL(), "rediss://:") {
		t.Errorf("URL() = %q, want rediss://", r.URL())
	}

	if err := newClient(t, r).Ping(ctx).Err(); err != nil {
		t.Fatalf("PING over TLS: %v", err)
	}
	c := redis.NewClient(&redis.Options{Addr: r.Addr(), Password: r.Password(), TLSConfig: r.TLSConfig(), MaxRetries: -1})
	defer c.Close()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING with TLSConfig(): %v", err)
	}

	// The CA file holds the same CA as the pool.
	pem, err := os.ReadFile(r.CACertFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) || !pool.Equal(r.CACertPool()) {
		t.Error("CACertFile() and CACertPool() differ")
	}

	t.Run("untrusted CA", func(t *testing.T) {
		c := redis.NewClient(&redis.Options{Addr: r.Addr(), Password: r.Password(),
			TLSConfig: &tls.Config{ServerName: "127.0.0.1", RootCAs: x509.NewCertPool()}, MaxRetries: -1})
		defer c.Close()
		var unknown x509.UnknownAuthorityError
		if err := c.Ping(ctx).Err(); !errors.As(err, &unknown) {
			t.Errorf("PING trusting nothing: %v, want unknown authority", err)
		}
	})
	t.Run("plain text", func(t *testing.T) {
		c := redis.NewClient(&redis.Options{Addr: r.Addr(), Password: r.Password(), MaxRetries: -1,
			DialTimeout: time.Second, ReadTimeout: time.Second})
		defer c.Close()
		if err := c.Ping(ctx).Err(); err == nil {
			t.Error("plain-text PING succeeded on the TLS port")
		}
	})
}

func TestRedisPortInUse(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	r, err := StartRedis(t.Context(), WithRedisPort(l.Addr().(*net.TCPAddr).Port))
	SkipIfMissing(t, err)
	if err == nil {
		r.Close()
		t.Fatal("started on a port in use")
	}
	if !errors.Is(err, errPortInUse) {
		t.Errorf("error = %v, want errPortInUse", err)
	}
}

func TestRedisSetting(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	r := NewRedis(t, WithRedisSetting("maxmemory-policy", "allkeys-lru"), WithRedisSetting("databases", "4"))
	c := newClient(t, r)
	got, err := c.ConfigGet(ctx, "maxmemory-policy").Result()
	if err != nil {
		t.Fatal(err)
	}
	if got["maxmemory-policy"] != "allkeys-lru" {
		t.Errorf("maxmemory-policy = %q", got["maxmemory-policy"])
	}
	ctxShort, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := c.Do(ctxShort, "SELECT", "5").Err(); err == nil {
		t.Error("SELECT 5 succeeded with 4 databases")
	}
}
