package aspireredis_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/goaspire/goaspire/cache"
	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/integrations/aspireredis"
	"github.com/goaspire/goaspire/servicedefaults/servicedefaultstest"
)

// TestBadKeysAreKeyErrors feeds one bad configuration key to
// cache.LoadRedisConfig, alone and through Client and NewCache (which wrap
// its errors): errors.As must find a *discovery.KeyError whose Key is the
// key or variable at fault, and the message must not hold the secret.
func TestBadKeysAreKeyErrors(t *testing.T) {
	const secret = "KeyErrS3cret"
	tests := []struct {
		values map[string]string
		key    string
	}{
		{map[string]string{"ConnectionStrings__cache": "h:1,password=" + secret + ",frob=1"}, "ConnectionStrings:cache"},
		{map[string]string{"ConnectionStrings__cache": "h:port,password=" + secret}, "ConnectionStrings:cache"},
		{map[string]string{"CACHE_URI": "http://:" + secret + "@h"}, "CACHE_URI"},
		{map[string]string{"CACHE_HOST": "h", "CACHE_PORT": secret, "CACHE_PASSWORD": secret}, "CACHE_PORT"},
		{map[string]string{"ConnectionStrings__cache": "h:1", "Aspire__StackExchange__Redis__PoolSize": "-1"}, "Aspire:StackExchange:Redis:PoolSize"},
		{map[string]string{"ConnectionStrings__cache": "h:1", "Aspire__StackExchange__Redis__cache__ConfigurationOptions__Frobnicate": "1"}, "Aspire:StackExchange:Redis:cache:ConfigurationOptions:Frobnicate"},
	}
	check := func(t *testing.T, what string, err error, want string) {
		t.Helper()
		var keyErr *discovery.KeyError
		switch {
		case err == nil:
			t.Fatalf("%s: no error", what)
		case !errors.As(err, &keyErr):
			t.Errorf("%s: error %q: errors.As finds no *discovery.KeyError", what, err)
		case keyErr.Key != want:
			t.Errorf("%s: error %q: KeyError.Key = %q, want %q", what, err, keyErr.Key, want)
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("%s: error %q holds the secret", what, err)
		}
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			_, err := cache.LoadRedisConfig(discovery.FromMap(tt.values), "cache")
			check(t, "LoadRedisConfig", err, tt.key)
			app := servicedefaultstest.NewUnstarted(t, nil, tt.values)
			_, err = aspireredis.Client(context.Background(), app, "cache")
			check(t, "Client", err, tt.key)
			_, err = aspireredis.NewCache[product](context.Background(), app, "cache", "product")
			check(t, "NewCache", err, tt.key)
		})
	}
}

// TestBadValuesNameTheirKey feeds one bad value from each family of Redis
// configuration keys to Client: every error must name the key (or the
// connection-string option) at fault, never panic, and never quote a
// password.
func TestBadValuesNameTheirKey(t *testing.T) {
	const secret = "KeyTestS3cret"
	rd := "127.0.0.1:1,password=" + secret
	tests := []struct {
		name   string
		values map[string]string
		want   string
	}{
		{"pool size", map[string]string{"ConnectionStrings__cache": rd, "Aspire__StackExchange__Redis__PoolSize": "many"}, "PoolSize"},
		{"named tracing", map[string]string{"ConnectionStrings__cache": rd, "Aspire__StackExchange__Redis__cache__DisableTracing": "2"}, "DisableTracing"},
		{"configuration option", map[string]string{"ConnectionStrings__cache": rd, "Aspire__StackExchange__Redis__ConfigurationOptions__ConnectTimeout": "soon"}, "ConnectTimeout"},
		{"unknown configuration option", map[string]string{"ConnectionStrings__cache": rd, "Aspire__StackExchange__Redis__ConfigurationOptions__Frobnicate": "1"}, "Frobnicate"},
		{"option value", map[string]string{"ConnectionStrings__cache": "h:1,connectTimeout=later,password=" + secret}, "connectTimeout"},
		{"port", map[string]string{"ConnectionStrings__cache": "h:port,password=" + secret}, "ConnectionStrings:cache"},
		{"uri", map[string]string{"CACHE_URI": "redis://:" + secret + "@h:port"}, "CACHE_URI"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app := servicedefaultstest.NewUnstarted(t, nil, tt.values)
			var err error
			func() {
				defer func() {
					if p := recover(); p != nil {
						t.Fatalf("panic: %v", p)
					}
				}()
				_, err = aspireredis.Client(context.Background(), app, "cache")
			}()
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not name %q", err, tt.want)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error %q leaks the password", err)
			}
		})
	}
}
