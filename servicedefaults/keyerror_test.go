package servicedefaults_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/servicedefaults"
)

// TestBadKeysAreKeyErrors feeds one bad configuration key to each client
// package, alone and through the App: errors.As must find a
// *discovery.KeyError whose Key is the key or variable at fault, and the
// message must not hold the secret.
func TestBadKeysAreKeyErrors(t *testing.T) {
	const secret = "KeyErrS3cret"
	load := map[string]func(*discovery.Config) error{
		"discovery.ListenAddress": func(c *discovery.Config) error {
			_, err := c.ListenAddress()
			return err
		},
	}
	// The same clients through the App, which wraps their errors.
	app := map[string]func(*servicedefaults.App) error{}
	tests := []struct {
		client string
		values map[string]string
		key    string
	}{
		{"discovery.ListenAddress", map[string]string{"PORT": "70000"}, "PORT"},
		{"discovery.ListenAddress", map[string]string{"ASPNETCORE_URLS": "http://[::1"}, "ASPNETCORE_URLS"},
	}
	check := func(t *testing.T, err error, want string) {
		t.Helper()
		var keyErr *discovery.KeyError
		switch {
		case err == nil:
			t.Fatal("no error")
		case !errors.As(err, &keyErr):
			t.Errorf("error %q: errors.As finds no *discovery.KeyError", err)
		case keyErr.Key != want:
			t.Errorf("error %q: KeyError.Key = %q, want %q", err, keyErr.Key, want)
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error %q holds the secret", err)
		}
	}
	for _, tt := range tests {
		t.Run(tt.client+"/"+tt.key, func(t *testing.T) {
			check(t, load[tt.client](discovery.FromMap(tt.values)), tt.key)
			open := app[tt.client]
			if open == nil {
				return
			}
			restoreGlobals(t)
			a, err := servicedefaults.Add(context.Background(), nil,
				servicedefaults.WithConfig(discovery.FromMap(tt.values)),
				servicedefaults.WithLogWriter(&syncBuffer{}))
			if err != nil {
				t.Fatal(err)
			}
			defer a.Shutdown(context.Background())
			check(t, open(a), tt.key)
		})
	}
}
