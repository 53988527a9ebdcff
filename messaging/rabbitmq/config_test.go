package rabbitmq

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/goaspire/goaspire/discovery"
)

const secret = "s3cr3t-Pa55"

func TestLoadConfig(t *testing.T) {
	for _, tc := range []struct {
		name    string
		values  map[string]string
		wantURL string
		check   func(t *testing.T, c *Config)
	}{
		{
			name:    "connection string",
			values:  map[string]string{"ConnectionStrings:messaging": "amqp://guest:" + secret + "@rabbit:5672/"},
			wantURL: "amqp://guest:" + secret + "@rabbit:5672/",
			check: func(t *testing.T, c *Config) {
				if c.MaxConnectRetryCount != DefaultMaxConnectRetryCount || c.DisableHealthChecks || c.DisableTracing || c.Name != "messaging" || c.WaitOnOpen != 0 || c.Mandatory {
					t.Errorf("defaults not applied: %v", c)
				}
			},
		},
		{
			name: "connection string wins over the setting",
			values: map[string]string{
				"ConnectionStrings:messaging":                       "amqps://u:p@broker.example:5671/vh",
				"Aspire:RabbitMQ:Client:ConnectionString":           "amqp://other:5672",
				"Aspire:RabbitMQ:Client:messaging:ConnectionString": "amqp://other2:5672",
			},
			wantURL: "amqps://u:p@broker.example:5671/vh",
		},
		{
			name: "setting, named section after the general one",
			values: map[string]string{
				"Aspire:RabbitMQ:Client:ConnectionString":               "amqp://general:5672",
				"Aspire:RabbitMQ:Client:messaging:ConnectionString":     "amqp://named:5672",
				"Aspire:RabbitMQ:Client:MaxConnectRetryCount":           "2",
				"Aspire:RabbitMQ:Client:messaging:MaxConnectRetryCount": "0",
				"Aspire:RabbitMQ:Client:DisableTracing":                 "true",
				"Aspire:RabbitMQ:Client:messaging:DisableHealthChecks":  "true",
			},
			wantURL: "amqp://named:5672",
			check: func(t *testing.T, c *Config) {
				if c.MaxConnectRetryCount != 0 || !c.DisableHealthChecks || !c.DisableTracing {
					t.Errorf("settings not layered: %v", c)
				}
			},
		},
		{
			name: "WaitOnOpen and Mandatory, named section after the general one",
			values: map[string]string{
				"ConnectionStrings:messaging":                 "amqp://rabbit:5672",
				"Aspire:RabbitMQ:Client:WaitOnOpen":           "00:00:30",
				"Aspire:RabbitMQ:Client:messaging:WaitOnOpen": "5s",
				"Aspire:RabbitMQ:Client:messaging:Mandatory":  "true",
			},
			wantURL: "amqp://rabbit:5672",
			check: func(t *testing.T, c *Config) {
				if c.WaitOnOpen != 5*time.Second || !c.Mandatory {
					t.Errorf("WaitOnOpen = %v, Mandatory = %t; want 5s, true", c.WaitOnOpen, c.Mandatory)
				}
			},
		},
		{
			name:    "Aspire 13 URI with separate credentials",
			values:  map[string]string{"MESSAGING_URI": "amqp://rabbit:5672", "MESSAGING_USERNAME": "guest", "MESSAGING_PASSWORD": secret},
			wantURL: "amqp://guest:" + secret + "@rabbit:5672",
		},
		{
			name:    "Aspire 13 properties, password percent-encoded",
			values:  map[string]string{"MESSAGING_HOST": "rabbit", "MESSAGING_PORT": "5673", "MESSAGING_USERNAME": "guest", "MESSAGING_PASSWORD": "p@ss:/"},
			wantURL: "amqp://guest:p%40ss%3A%2F@rabbit:5673/",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := LoadConfig(discovery.FromMap(tc.values), "messaging")
			if err != nil {
				t.Fatal(err)
			}
			if c.URL != tc.wantURL {
				t.Errorf("URL = %q, want %q", c.URL, tc.wantURL)
			}
			if tc.check != nil {
				tc.check(t, c)
			}
		})
	}
}

func TestLoadConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		values  map[string]string
		wantKey string
		is      error
	}{
		{"missing", map[string]string{}, "ConnectionStrings__messaging", discovery.ErrNotFound},
		{"wrong scheme", map[string]string{"ConnectionStrings:messaging": "http://guest:" + secret + "@rabbit"}, "ConnectionStrings:messaging", ErrConnectionString},
		{"not a URL", map[string]string{"ConnectionStrings:messaging": "host=rabbit;password=" + secret}, "ConnectionStrings:messaging", ErrConnectionString},
		{"bad port", map[string]string{"ConnectionStrings:messaging": "amqp://guest:" + secret + "@rabbit:99999/"}, "ConnectionStrings:messaging", ErrConnectionString},
		{"unencoded reserved character", map[string]string{"ConnectionStrings:messaging": "amqp://guest:" + secret + "#x@rabbit/"}, "ConnectionStrings:messaging", ErrConnectionString},
		{"unknown parameter", map[string]string{"ConnectionStrings:messaging": "amqp://guest:" + secret + "@rabbit/?frobnicate=1"}, "ConnectionStrings:messaging", ErrConnectionString},
		{"no host", map[string]string{"Aspire:RabbitMQ:Client:messaging:ConnectionString": "amqp://guest:" + secret + "@:5672/"}, "Aspire:RabbitMQ:Client:messaging:ConnectionString", ErrConnectionString},
		{"bad URI property", map[string]string{"MESSAGING_URI": "amqp://guest:" + secret + "@rabbit:x/"}, "MESSAGING_URI", ErrConnectionString},
		{"bad retry count", map[string]string{"ConnectionStrings:messaging": "amqp://rabbit", "Aspire:RabbitMQ:Client:messaging:MaxConnectRetryCount": "many"}, "Aspire:RabbitMQ:Client:messaging:MaxConnectRetryCount", nil},
		{"negative retry count", map[string]string{"ConnectionStrings:messaging": "amqp://rabbit", "Aspire:RabbitMQ:Client:MaxConnectRetryCount": "-1"}, "Aspire:RabbitMQ:Client:MaxConnectRetryCount", nil},
		{"bad bool", map[string]string{"ConnectionStrings:messaging": "amqp://rabbit", "Aspire:RabbitMQ:Client:DisableTracing": "yes please"}, "Aspire:RabbitMQ:Client:DisableTracing", nil},
		{"bad WaitOnOpen", map[string]string{"ConnectionStrings:messaging": "amqp://rabbit", "Aspire:RabbitMQ:Client:messaging:WaitOnOpen": "soon"}, "Aspire:RabbitMQ:Client:messaging:WaitOnOpen", nil},
		{"negative WaitOnOpen", map[string]string{"ConnectionStrings:messaging": "amqp://rabbit", "Aspire:RabbitMQ:Client:WaitOnOpen": "-1s"}, "Aspire:RabbitMQ:Client:WaitOnOpen", nil},
		{"bad Mandatory", map[string]string{"ConnectionStrings:messaging": "amqp://rabbit", "Aspire:RabbitMQ:Client:Mandatory": "always"}, "Aspire:RabbitMQ:Client:Mandatory", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadConfig(discovery.FromMap(tc.values), "messaging")
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.wantKey) {
				t.Errorf("error does not name %s: %v", tc.wantKey, err)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error reveals the password: %v", err)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error is not %v: %v", tc.is, err)
			}
		})
	}
}

func TestNewBadURL(t *testing.T) {
	for _, url := range []string{
		"http://guest:" + secret + "@localhost/",
		"amqp://guest:" + secret + "@localhost:0/",
		"amqp://guest:" + secret + "@localhost/?heartbeat=x",
		"amqp://guest:" + secret + "?@localhost/",
	} {
		_, err := New(context.Background(), &Config{URL: url})
		if err == nil {
			t.Errorf("New(%s): no error", strings.ReplaceAll(url, secret, "***"))
			continue
		}
		if strings.Contains(err.Error(), secret) || !strings.Contains(err.Error(), "URL") {
			t.Errorf("error reveals the password or does not name URL: %v", err)
		}
	}
}

func TestNewUnreachableNamesHostNotPassword(t *testing.T) {
	// A port nothing listens on, and New waiting for it: the connect
	// fails at once, no retries.
	_, err := New(context.Background(), &Config{URL: "amqp://guest:" + secret + "@127.0.0.1:1/", WaitOnOpen: time.Minute})
	if err == nil {
		t.Fatal("connected to port 1")
	}
	if strings.Contains(err.Error(), secret) || !strings.Contains(err.Error(), "127.0.0.1") {
		t.Errorf("error reveals the password or does not name the host: %v", err)
	}
}

// TestRedaction checks every way a Config or a Client can be printed,
// logged or marshalled.
func TestRedaction(t *testing.T) {
	b := needBroker(t)
	client := newClient(t)
	cfg := Config{URL: b.URL(), Name: "messaging"}
	pw := b.Password()
	for _, v := range []any{cfg, &cfg, client} {
		outputs := map[string]string{}
		for _, f := range []string{"%v", "%+v", "%#v", "%s"} {
			outputs[f] = fmt.Sprintf(f, v)
		}
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		outputs["json"] = string(b)
		for name, h := range map[string]func(*bytes.Buffer) slog.Handler{
			"slog text": func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
			"slog json": func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
		} {
			var buf bytes.Buffer
			slog.New(h(&buf)).Info("x", "config", v)
			outputs[name] = buf.String()
		}
		for how, out := range outputs {
			if strings.Contains(out, pw) {
				t.Errorf("%T via %s reveals the password: %s", v, how, out)
			}
			if !strings.Contains(out, "127.0.0.1") {
				t.Errorf("%T via %s lost the host: %s", v, how, out)
			}
		}
	}
}

// TestLoadConfigPortableAlias: Aspire 13.6 deploy targets emit only the
// portable alias (my-mq → my_mq); it is read, and named in errors.
func TestLoadConfigPortableAlias(t *testing.T) {
	c, err := LoadConfig(discovery.FromMap(map[string]string{"ConnectionStrings:my_mq": "amqp://rabbit:5672/"}), "my-mq")
	if err != nil {
		t.Fatal(err)
	}
	if c.URL != "amqp://rabbit:5672/" {
		t.Errorf("URL = %q, want the alias's", c.URL)
	}
	_, err = LoadConfig(discovery.FromMap(map[string]string{"ConnectionStrings:my_mq": "http://guest:" + secret + "@rabbit"}), "my-mq")
	if err == nil || !strings.Contains(err.Error(), "ConnectionStrings:my_mq") || strings.Contains(err.Error(), secret) {
		t.Errorf("error = %v, want one naming ConnectionStrings:my_mq without the password", err)
	}
}
