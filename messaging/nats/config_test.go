package natsmsg_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/goaspire/goaspire/discovery"
	natsmsg "github.com/goaspire/goaspire/messaging/nats"
)

const secret = "s3cr3t-Pa55"

func TestLoadConfig(t *testing.T) {
	tests := []struct {
		name   string
		values map[string]string
		want   natsmsg.Config
	}{
		{"one URL with user and password", map[string]string{
			"ConnectionStrings:events": "nats://app:" + secret + "@localhost:4223",
		}, natsmsg.Config{Name: "events", Servers: []string{"nats://localhost:4223"}, User: "app", Password: secret}},
		{"several URLs, default port", map[string]string{
			"ConnectionStrings:events": "nats://a:1, nats://b ,tls://c:4333",
		}, natsmsg.Config{Name: "events", Servers: []string{"nats://a:1", "nats://b:4222", "tls://c:4333"}}},
		{"token, same on every URL", map[string]string{
			"ConnectionStrings:events": "nats://" + secret + "@a:1,nats://" + secret + "@b:2",
		}, natsmsg.Config{Name: "events", Servers: []string{"nats://a:1", "nats://b:2"}, Token: secret}},
		{"bare host:port", map[string]string{
			"ConnectionStrings:events": "10.0.0.1:4222",
		}, natsmsg.Config{Name: "events", Servers: []string{"nats://10.0.0.1:4222"}}},
		{"Aspire 13 URI with separate password", map[string]string{
			"EVENTS_URI": "nats://host:4222", "EVENTS_USERNAME": "nats", "EVENTS_PASSWORD": secret,
		}, natsmsg.Config{Name: "events", Servers: []string{"nats://host:4222"}, User: "nats", Password: secret}},
		{"Aspire 13 host and port", map[string]string{
			"EVENTS_HOST": "host", "EVENTS_PORT": "4000", "EVENTS_USERNAME": "nats", "EVENTS_PASSWORD": secret,
		}, natsmsg.Config{Name: "events", Servers: []string{"nats://host:4000"}, User: "nats", Password: secret}},
		{"settings connection string, named wins", map[string]string{
			"Aspire:NATS:Net:ConnectionString":        "nats://general:1",
			"Aspire:NATS:Net:events:ConnectionString": "nats://named:2",
		}, natsmsg.Config{Name: "events", Servers: []string{"nats://named:2"}}},
		{"connection string wins over settings", map[string]string{
			"ConnectionStrings:events":                "nats://cs:1",
			"Aspire:NATS:Net:events:ConnectionString": "nats://named:2",
		}, natsmsg.Config{Name: "events", Servers: []string{"nats://cs:1"}}},
		{"DisableHealthChecks general", map[string]string{
			"ConnectionStrings:events": "nats://a:1", "Aspire:NATS:Net:DisableHealthChecks": "true",
		}, natsmsg.Config{Name: "events", Servers: []string{"nats://a:1"}, DisableHealthChecks: true}},
		{"DisableHealthChecks named overrides general", map[string]string{
			"ConnectionStrings:events":                   "nats://a:1",
			"Aspire:NATS:Net:DisableHealthChecks":        "true",
			"Aspire:NATS:Net:events:DisableHealthChecks": "false",
		}, natsmsg.Config{Name: "events", Servers: []string{"nats://a:1"}}},
		{"WaitOnOpen named overrides general", map[string]string{
			"ConnectionStrings:events":          "nats://a:1",
			"Aspire:NATS:Net:WaitOnOpen":        "00:01:00",
			"Aspire:NATS:Net:events:WaitOnOpen": "10s",
		}, natsmsg.Config{Name: "events", Servers: []string{"nats://a:1"}, WaitOnOpen: 10 * time.Second}},
		{"Aspire 8 HealthChecks=false", map[string]string{
			"ConnectionStrings:events": "nats://a:1", "Aspire:NATS:Net:HealthChecks": "false",
		}, natsmsg.Config{Name: "events", Servers: []string{"nats://a:1"}, DisableHealthChecks: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := natsmsg.LoadConfig(discovery.FromMap(tt.values), "events")
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*c, tt.want) {
				t.Errorf("got  %#v\nwant %#v", *c, tt.want)
			}
		})
	}
}

func TestLoadConfigErrors(t *testing.T) {
	tests := []struct {
		name   string
		values map[string]string
		want   []string // substrings of the error
	}{
		{"missing", nil, []string{"ConnectionStrings__events", "Aspire:NATS:Net:events:ConnectionString"}},
		{"bad scheme", map[string]string{"ConnectionStrings:events": "amqp://u:" + secret + "@h:1"},
			[]string{"ConnectionStrings:events", `scheme "amqp"`}},
		{"no host", map[string]string{"ConnectionStrings:events": "nats://u:" + secret + "@:4222"},
			[]string{"ConnectionStrings:events", "no host"}},
		{"bad port", map[string]string{"ConnectionStrings:events": "nats://u:" + secret + "@h:99999"},
			[]string{"ConnectionStrings:events", "not a port number"}},
		{"empty entry", map[string]string{"ConnectionStrings:events": "nats://a:1,,nats://b:2"},
			[]string{"URL 2 of 3 is empty"}},
		{"unparsable", map[string]string{"ConnectionStrings:events": "nats://u:" + secret + "%zz@h:1"},
			[]string{"ConnectionStrings:events", "does not parse"}},
		{"different credentials", map[string]string{"ConnectionStrings:events": "nats://u:" + secret + "@a:1,nats://u:other@b:1"},
			[]string{"URL 2 of 2", "other credentials"}},
		{"path", map[string]string{"ConnectionStrings:events": "nats://u:" + secret + "@a:1/x"},
			[]string{"no path"}},
		{"bad setting", map[string]string{"ConnectionStrings:events": "nats://a:1", "Aspire:NATS:Net:events:DisableHealthChecks": "maybe"},
			[]string{"Aspire:NATS:Net:events:DisableHealthChecks"}},
		{"bad WaitOnOpen", map[string]string{"ConnectionStrings:events": "nats://a:1", "Aspire:NATS:Net:WaitOnOpen": "soon"},
			[]string{"Aspire:NATS:Net:WaitOnOpen"}},
		{"negative WaitOnOpen", map[string]string{"ConnectionStrings:events": "nats://a:1", "Aspire:NATS:Net:events:WaitOnOpen": "-1s"},
			[]string{"Aspire:NATS:Net:events:WaitOnOpen", "negative"}},
		{"bad Aspire 13 port", map[string]string{"EVENTS_HOST": "h", "EVENTS_PORT": "x", "EVENTS_PASSWORD": secret},
			[]string{"EVENTS_PORT"}},
		{"properties without host", map[string]string{"EVENTS_PASSWORD": secret},
			[]string{"EVENTS_HOST"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := natsmsg.LoadConfig(discovery.FromMap(tt.values), "events")
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error shows the password: %q", err)
			}
		})
	}
}

func TestConfigRedacted(t *testing.T) {
	for _, c := range []natsmsg.Config{
		{Name: "events", Servers: []string{"nats://h:1"}, User: "app", Password: secret},
		{Name: "events", Servers: []string{"nats://h:1"}, Token: secret},
	} {
		var text, js bytes.Buffer
		slog.New(slog.NewTextHandler(&text, nil)).Info("cfg", "config", c, "ptr", &c)
		slog.New(slog.NewJSONHandler(&js, nil)).Info("cfg", "config", c, "ptr", &c)
		raw, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		rawPtr, _ := json.Marshal(&c)
		outputs := map[string]string{
			"%v": fmt.Sprintf("%v", c), "%+v": fmt.Sprintf("%+v", c), "%#v": fmt.Sprintf("%#v", c),
			"%s":     fmt.Sprintf("%s", c), //lint:ignore S1025 the %s verb itself is under test
			"%v ptr": fmt.Sprintf("%v", &c), "%+v ptr": fmt.Sprintf("%+v", &c),
			"slog text": text.String(), "slog json": js.String(), "json": string(raw), "json ptr": string(rawPtr),
		}
		for how, out := range outputs {
			if strings.Contains(out, secret) {
				t.Errorf("%s shows the secret: %s", how, out)
			}
			if !strings.Contains(out, "***") {
				t.Errorf("%s does not show the mask: %s", how, out)
			}
		}
	}
}
