package aspirepostgres_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/goaspire/goaspire/cqrs"
	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/integrations/aspirepostgres"
	"github.com/goaspire/goaspire/servicedefaults/servicedefaultstest"
)

// open is DB or Pool of "db" on app, for the tables below.
type open func(*servicedefaultstest.App) error

func openDB(app *servicedefaultstest.App) error {
	_, err := aspirepostgres.DB(context.Background(), app, "db")
	return err
}

func openPool(app *servicedefaultstest.App) error {
	_, err := aspirepostgres.Pool(context.Background(), app, "db")
	return err
}

// TestBadValuesNameTheirKey feeds one bad value from each Aspire:Npgsql
// key family and connection-string form to DB or Pool: every error must
// name the key (or the connection-string keyword) at fault, never panic,
// and never quote a password.
func TestBadValuesNameTheirKey(t *testing.T) {
	const secret = "KeyTestS3cret"
	pg := "Host=127.0.0.1;Port=1;Username=u;Password=" + secret + ";Database=d"
	tests := []struct {
		name   string
		open   open
		values map[string]string
		want   string
	}{
		{"npgsql max connections", openPool, map[string]string{"ConnectionStrings__db": pg, "Aspire__Npgsql__MaxConnections": "lots"}, "MaxConnections"},
		{"npgsql named max connections", openPool, map[string]string{"ConnectionStrings__db": pg, "Aspire__Npgsql__db__MaxConnections": "-3"}, "MaxConnections"},
		{"npgsql disable tracing", openPool, map[string]string{"ConnectionStrings__db": pg, "Aspire__Npgsql__DisableTracing": "nope"}, "DisableTracing"},
		{"npgsql health checks", openPool, map[string]string{"ConnectionStrings__db": pg, "Aspire__Npgsql__DisableHealthChecks": "2"}, "DisableHealthChecks"},
		{"npgsql connect timeout", openPool, map[string]string{"ConnectionStrings__db": pg, "Aspire__Npgsql__ConnectTimeout": "soon"}, "ConnectTimeout"},
		{"npgsql retry interval", openPool, map[string]string{"ConnectionStrings__db": pg, "Aspire__Npgsql__ConnectRetry__InitialInterval": "x"}, "InitialInterval"},
		{"npgsql replica lag", openDB, map[string]string{"ConnectionStrings__db": pg, "Aspire__Npgsql__db__Replicas__MaxLag": "far"}, "MaxLag"},
		{"npgsql replica check interval", openDB, map[string]string{"ConnectionStrings__db": pg, "Aspire__Npgsql__Replicas__CheckInterval": "-1s"}, "CheckInterval"},
		{"npgsql read your writes", openDB, map[string]string{"ConnectionStrings__db": pg, "Aspire__Npgsql__ReadYourWrites": "sometimes"}, "ReadYourWrites"},
		{"npgsql missing replica", openDB, map[string]string{"ConnectionStrings__db": pg, "Aspire__Npgsql__db__Replicas__Names": "ghost"}, "ghost"},
		{"npgsql port keyword", openPool, map[string]string{"ConnectionStrings__db": "Host=h;Port=x;Password=" + secret}, "Port"},
		{"npgsql pool size keyword", openPool, map[string]string{"ConnectionStrings__db": "Host=h;Maximum Pool Size=big;Password=" + secret}, "Maximum Pool Size"},
		{"npgsql ssl mode keyword", openPool, map[string]string{"ConnectionStrings__db": "Host=h;SSL Mode=Sometimes;Password=" + secret}, "SSL Mode"},
		{"npgsql url", openPool, map[string]string{"ConnectionStrings__db": "postgres://u:" + secret + "@h:port/d"}, "ConnectionStrings:db"},
		{"npgsql aspire 13 port", openPool, map[string]string{"DB_HOST": "h", "DB_PORT": "x", "DB_PASSWORD": secret}, "DB_PORT"},
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
				err = tt.open(app)
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

// TestBadKeysAreKeyErrors feeds one bad configuration key to cqrs's
// loaders, alone and through DB and Pool (which wrap their errors):
// errors.As must find a *discovery.KeyError whose Key is the key or
// variable at fault, and the message must not hold the secret.
func TestBadKeysAreKeyErrors(t *testing.T) {
	const secret = "KeyErrS3cret"
	type client struct {
		load func(*discovery.Config) error
		open open
	}
	loadConfig := client{func(c *discovery.Config) error { _, err := cqrs.LoadConfig(c, "db"); return err }, openDB}
	loadPoolConfig := client{func(c *discovery.Config) error { _, err := cqrs.LoadPoolConfig(c, "db"); return err }, openPool}
	tests := []struct {
		name   string
		client client
		values map[string]string
		key    string
	}{
		{"LoadConfig", loadConfig, map[string]string{"ConnectionStrings__db": "Host=h;Password=" + secret + ";Nope=1"}, "ConnectionStrings:db"},
		{"LoadConfig", loadConfig, map[string]string{"ConnectionStrings__db": "postgres://u:" + secret + "@h:port/d"}, "ConnectionStrings:db"},
		{"LoadConfig", loadConfig, map[string]string{"DB_URI": "postgres://u:" + secret + "@h/d?sslmode=bogus"}, "DB_URI"},
		{"LoadConfig", loadConfig, map[string]string{"DB_HOST": "h", "DB_PORT": "x", "DB_PASSWORD": secret}, "DB_PORT"},
		{"LoadConfig", loadConfig, map[string]string{"ConnectionStrings__db": "Host=h;Password=" + secret, "Aspire__Npgsql__db__MaxConnections": "-3"}, "Aspire:Npgsql:db:MaxConnections"},
		{"LoadConfig", loadConfig, map[string]string{"ConnectionStrings__db": "Host=h;Password=" + secret, "Aspire__Npgsql__Replicas__CheckInterval": "0"}, "Aspire:Npgsql:Replicas:CheckInterval"},
		{"LoadConfig", loadConfig, map[string]string{"ConnectionStrings__db": "Host=h;Password=" + secret, "Aspire__Npgsql__db__ReadYourWrites": "sometimes"}, "Aspire:Npgsql:db:ReadYourWrites"},
		{"LoadPoolConfig", loadPoolConfig, map[string]string{"ConnectionStrings__db": "Host=h;Password=" + secret + ";SSL Mode=Sometimes"}, "ConnectionStrings:db"},
		{"LoadPoolConfig", loadPoolConfig, map[string]string{"ConnectionStrings__db": "Host=h;Password=" + secret, "Aspire__Npgsql__ConnectTimeout": "soon"}, "Aspire:Npgsql:ConnectTimeout"},
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
		t.Run(tt.name+"/"+tt.key, func(t *testing.T) {
			check(t, tt.client.load(discovery.FromMap(tt.values)), tt.key)
			check(t, tt.client.open(servicedefaultstest.NewUnstarted(t, nil, tt.values)), tt.key)
		})
	}
}
