package servicedefaults_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/goaspire/goaspire/cqrs"
	"github.com/goaspire/goaspire/discovery"
	natsmsg "github.com/goaspire/goaspire/messaging/nats"
	"github.com/goaspire/goaspire/messaging/rabbitmq"
	"github.com/goaspire/goaspire/servicedefaults"
)

// TestBadKeysAreKeyErrors feeds one bad configuration key to each client
// package, alone and through the App: errors.As must find a
// *discovery.KeyError whose Key is the key or variable at fault, and the
// message must not hold the secret.
func TestBadKeysAreKeyErrors(t *testing.T) {
	const secret = "KeyErrS3cret"
	load := map[string]func(*discovery.Config) error{
		"cqrs.LoadConfig":     func(c *discovery.Config) error { _, err := cqrs.LoadConfig(c, "db"); return err },
		"cqrs.LoadPoolConfig": func(c *discovery.Config) error { _, err := cqrs.LoadPoolConfig(c, "db"); return err },
		"rabbitmq.LoadConfig": func(c *discovery.Config) error { _, err := rabbitmq.LoadConfig(c, "mq"); return err },
		"natsmsg.LoadConfig":  func(c *discovery.Config) error { _, err := natsmsg.LoadConfig(c, "events"); return err },
		"discovery.ListenAddress": func(c *discovery.Config) error {
			_, err := c.ListenAddress()
			return err
		},
	}
	// The same clients through the App, which wraps their errors.
	app := map[string]func(*servicedefaults.App) error{
		"cqrs.LoadConfig":     func(a *servicedefaults.App) error { _, err := a.DB("db"); return err },
		"cqrs.LoadPoolConfig": func(a *servicedefaults.App) error { _, err := a.Postgres("db"); return err },
		"rabbitmq.LoadConfig": func(a *servicedefaults.App) error { _, err := a.RabbitMQ("mq"); return err },
		"natsmsg.LoadConfig":  func(a *servicedefaults.App) error { _, err := a.NATS("events"); return err },
	}
	tests := []struct {
		client string
		values map[string]string
		key    string
	}{
		{"cqrs.LoadConfig", map[string]string{"ConnectionStrings__db": "Host=h;Password=" + secret + ";Nope=1"}, "ConnectionStrings:db"},
		{"cqrs.LoadConfig", map[string]string{"ConnectionStrings__db": "postgres://u:" + secret + "@h:port/d"}, "ConnectionStrings:db"},
		{"cqrs.LoadConfig", map[string]string{"DB_URI": "postgres://u:" + secret + "@h/d?sslmode=bogus"}, "DB_URI"},
		{"cqrs.LoadConfig", map[string]string{"DB_HOST": "h", "DB_PORT": "x", "DB_PASSWORD": secret}, "DB_PORT"},
		{"cqrs.LoadConfig", map[string]string{"ConnectionStrings__db": "Host=h;Password=" + secret, "Aspire__Npgsql__db__MaxConnections": "-3"}, "Aspire:Npgsql:db:MaxConnections"},
		{"cqrs.LoadConfig", map[string]string{"ConnectionStrings__db": "Host=h;Password=" + secret, "Aspire__Npgsql__Replicas__CheckInterval": "0"}, "Aspire:Npgsql:Replicas:CheckInterval"},
		{"cqrs.LoadConfig", map[string]string{"ConnectionStrings__db": "Host=h;Password=" + secret, "Aspire__Npgsql__db__ReadYourWrites": "sometimes"}, "Aspire:Npgsql:db:ReadYourWrites"},
		{"cqrs.LoadPoolConfig", map[string]string{"ConnectionStrings__db": "Host=h;Password=" + secret + ";SSL Mode=Sometimes"}, "ConnectionStrings:db"},
		{"cqrs.LoadPoolConfig", map[string]string{"ConnectionStrings__db": "Host=h;Password=" + secret, "Aspire__Npgsql__ConnectTimeout": "soon"}, "Aspire:Npgsql:ConnectTimeout"},
		{"rabbitmq.LoadConfig", map[string]string{"ConnectionStrings__mq": "http://u:" + secret + "@h:5672/"}, "ConnectionStrings:mq"},
		{"rabbitmq.LoadConfig", map[string]string{"MQ_URI": "amqp://u:" + secret + "@h:99999/"}, "MQ_URI"},
		{"rabbitmq.LoadConfig", map[string]string{"ConnectionStrings__mq": "amqp://h/", "Aspire__RabbitMQ__Client__mq__MaxConnectRetryCount": "-1"}, "Aspire:RabbitMQ:Client:mq:MaxConnectRetryCount"},
		{"natsmsg.LoadConfig", map[string]string{"ConnectionStrings__events": "http://u:" + secret + "@h:4222"}, "ConnectionStrings:events"},
		{"natsmsg.LoadConfig", map[string]string{"EVENTS_HOST": "h", "EVENTS_PORT": "x", "EVENTS_PASSWORD": secret}, "EVENTS_PORT"},
		{"natsmsg.LoadConfig", map[string]string{"ConnectionStrings__events": "nats://h:4222", "Aspire__NATS__Net__DisableHealthChecks": "maybe"}, "Aspire:NATS:Net:DisableHealthChecks"},
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
