package redact_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/goaspire/goaspire/cache"
	"github.com/goaspire/goaspire/cqrs"
	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/resilience"
	"github.com/goaspire/goaspire/resilience/resiliencetest"
	"github.com/goaspire/goaspire/servicedefaults"
)

// secret is planted in every value below; it must never come out.
const secret = "hunter2S3cret"

// formats are every way a value reaches a log, a report or a user: fmt's
// verbs, encoding/json, and slog's text and JSON handlers (App.Logger's
// production format is JSON).
var formats = []struct {
	name   string
	render func(v any) string
}{
	{"%v", func(v any) string { return fmt.Sprintf("%v", v) }},
	{"%+v", func(v any) string { return fmt.Sprintf("%+v", v) }},
	{"%#v", func(v any) string { return fmt.Sprintf("%#v", v) }},
	{"%s", func(v any) string { return fmt.Sprintf("%s", v) }},
	{"%q", func(v any) string { return fmt.Sprintf("%q", v) }},
	{"encoding/json", func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			return "json error: " + err.Error()
		}
		return string(b)
	}},
	{"slog text", func(v any) string {
		var buf bytes.Buffer
		slog.New(slog.NewTextHandler(&buf, nil)).Info("m", "v", v)
		return buf.String()
	}},
	{"slog JSON", func(v any) string {
		var buf bytes.Buffer
		slog.New(slog.NewJSONHandler(&buf, nil)).Info("m", "v", v)
		return buf.String()
	}},
	{"slog JSON in a group", func(v any) string {
		var buf bytes.Buffer
		slog.New(slog.NewJSONHandler(&buf, nil)).Info("m", slog.Group("g", "v", v))
		return buf.String()
	}},
}

// leakCase is one exported value that holds, or wraps, a secret.
type leakCase struct {
	name string
	v    any
}

// TestNoSecretInAnyFormat walks every exported goaspire type that holds or
// can hold a secret (connection values, configuration, settings, errors
// of every package, health reports, recorded requests) through every
// format, and fails on any output containing the secret.
func TestNoSecretInAnyFormat(t *testing.T) {
	ctx := context.Background()
	cases := []leakCase{}
	add := func(name string, v any) { cases = append(cases, leakCase{name, v}) }
	addErr := func(name string, err error) {
		t.Helper()
		if err == nil {
			t.Fatalf("%s: no error to check", name)
		}
		add(name, err)
	}

	// discovery: a Connection with every secret-bearing field set, by
	// value, by pointer and inside other values.
	conn := discovery.Connection{
		Name:                "db",
		ConnectionString:    "Host=h;Username=u;Password=" + secret + ";Database=d",
		Host:                "h",
		Port:                "5432",
		Username:            "u",
		Password:            secret,
		DatabaseName:        "d",
		URI:                 "postgres://u:" + secret + "@h:5432/d",
		ConnectionStringKey: "ConnectionStrings:db",
		PropertyPrefix:      "DB_",
	}
	add("discovery.Connection", conn)
	add("*discovery.Connection", &conn)
	add("struct holding a discovery.Connection", struct{ Conn discovery.Connection }{conn})
	add("map holding a discovery.Connection", map[string]discovery.Connection{"db": conn})
	for i, cs := range []string{
		"Host=h;Password=\"a;" + secret + "\"",
		"Host=h;Password=a " + secret,
		"Host=h;PWD=" + secret,
		"cache:6379,password=" + secret + ",ssl=true",
		"redis://" + secret + "@cache:6379",
		"rediss://:" + secret + "@cache:6380/0",
		"amqp://u:" + secret + "@mq:5672/vhost",
		"nats://u:" + secret + "@n1:4222,nats://u:" + secret + "@n2:4222",
		"nats://" + secret + "@n1:4222",
		"Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=" + secret,
		"DefaultEndpointsProtocol=https;AccountName=a;AccountKey=" + secret + ";EndpointSuffix=core.windows.net",
		"https://a.blob.core.windows.net/?sv=2022&sig=" + secret,
	} {
		add(fmt.Sprintf("discovery.Connection string %d", i), discovery.Connection{Name: "x", ConnectionString: cs, URI: cs})
	}

	cfg := discovery.FromMap(map[string]string{
		"ConnectionStrings__db":        "Host=h;Password=" + secret,
		"DB_PASSWORD":                  secret,
		"Aspire:Npgsql:db:Password":    secret,
		"Aspire:StackExchange:Redis:x": "x,password=" + secret,
		"OTEL_EXPORTER_OTLP_HEADERS":   "x-otlp-api-key=" + secret,
		"ASPNETCORE_URLS":              "http://u:" + secret + "@127.0.0.1:5000",
		"services__api__http__0":       "http://u:" + secret + "@127.0.0.1:1",
	})
	add("*discovery.Config", cfg)
	add("discovery.Config", *cfg)
	gotConn, err := cfg.Connection("db")
	if err != nil {
		t.Fatal(err)
	}
	add("discovery.Connection from Config", gotConn)

	// A vault's values are secrets whatever their keys' names.
	vault, err := cfg.AddSource(ctx, discovery.Source{Name: "vault", Secret: true,
		Load: func(context.Context, *discovery.Config) (map[string]string, error) {
			return map[string]string{"Limits:Count": secret, "Limits:Wait": "x" + secret}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	add("*discovery.Config with a secret source", vault)
	_, err = vault.Int("Limits:Count", 0)
	addErr("discovery.KeyError from Int of a secret source's value", err)
	_, err = vault.Section("Limits").Duration("Wait", 0)
	addErr("discovery.KeyError from Duration of a secret source's value", err)

	_, err = cfg.Section("Aspire:Npgsql:db").Duration("Password", 0)
	addErr("discovery.KeyError from Duration", err)
	_, err = cfg.Section("Aspire:Npgsql:db").Int("Password", 0)
	addErr("discovery.KeyError from Int", err)
	_, err = cfg.ListenAddress()
	addErr("discovery.KeyError from ListenAddress", err)
	_, err = discovery.ParseDuration("Password=" + secret)
	addErr("discovery.ParseDuration error", err)
	u, _ := url.Parse("http://api/x")
	_, err = discovery.NewResolver(cfg).Resolve(u)
	addErr("discovery.ResolveError", err)

	// cqrs: connection-string errors, from the parser and from LoadConfig.
	_, err = cqrs.ParseConnectionString("Host=h;Password=" + secret + ";Nope=1")
	addErr("cqrs.KeywordError", err)
	_, err = cqrs.ParseConnectionString("Host=h;Password=" + secret + ";Port=x")
	addErr("cqrs.KeywordError (bad value)", err)
	_, err = cqrs.ParseConnectionString("postgres://u:" + secret + "@h:99999999/db")
	addErr("cqrs URL error", err)
	_, err = cqrs.ParseConnectionString("postgres://u:" + secret + "@h/db?sslmode=bogus")
	addErr("cqrs URL parameter error", err)
	_, err = cqrs.LoadConfig(discovery.FromMap(map[string]string{"ConnectionStrings__db": "Host=h;Password=" + secret + ";Nope=1"}), "db")
	addErr("cqrs.ConnectionError", err)
	_, err = cqrs.LoadConfig(discovery.FromMap(map[string]string{"DB_HOST": "h", "DB_PORT": secret, "DB_PASSWORD": secret}), "db")
	addErr("cqrs.ConnectionError from properties", err)

	// cache: connection-string errors.
	_, err = cache.ParseConnectionString("h:1,password=" + secret + ",frob=1")
	addErr("cache connection string error", err)
	_, err = cache.ParseConnectionString("h:1,password=a," + secret)
	addErr("cache connection string error (password with a comma)", err)
	_, err = cache.ParseConnectionString("http://:" + secret + "@h")
	addErr("cache URL error", err)
	_, err = cache.ParseConnectionString(secret + "@h:1")
	addErr("cache endpoint error", err)
	_, err = cache.LoadRedisConfig(discovery.FromMap(map[string]string{"CACHE_HOST": "h", "CACHE_PORT": secret, "CACHE_PASSWORD": secret}), "cache")
	addErr("cache.LoadRedisConfig error", err)
	add("cache.Options", cache.Options{KeyPrefix: "k:", Logger: slog.Default()})

	// resilience: option validation errors and the errors of a call
	// whose transport failed with a secret-bearing error.
	_, err = resilience.LoadTransportConfig(discovery.FromMap(map[string]string{
		"Aspire:Resilience:Http:Retry:Delay": "Password=" + secret,
	}), "")
	addErr("resilience config error", err)
	add("resilience.Options", resilience.DefaultOptions())

	// resiliencetest: a recorded request with credentials in the URL,
	// the headers and the body.
	fake := resiliencetest.NewTransport(resiliencetest.Respond(200))
	req, _ := http.NewRequest("POST", "http://u:"+secret+"@api/x?api_key="+secret, strings.NewReader(`{"password":"`+secret+`"}`))
	req.Header.Set("Authorization", "Bearer "+secret)
	req.Header.Set("X-Api-Key", secret)
	req.Header.Set("Cookie", "session="+secret)
	resp, err := fake.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	recorded := fake.Requests()
	if len(recorded) != 1 || recorded[0].Header.Get("Authorization") != "Bearer "+secret {
		t.Fatalf("recorded requests = %d, want 1 keeping its real headers", len(recorded))
	}
	add("resiliencetest.Request", recorded[0])
	add("*resiliencetest.Request", &recorded[0])
	add("[]resiliencetest.Request", recorded)

	// health: a report of a check failing with a secret in its error.
	reg := health.NewRegistry(health.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err := reg.Register(
		health.Check{Name: "db", Check: func(context.Context) error {
			return errors.New(`failed to connect to postgres://u:` + secret + `@h/db (Host=h;Password=` + secret + `)`)
		}},
		health.Check{Name: "api", Check: func(context.Context) error {
			return errors.New(`401 for Authorization: Bearer ` + secret + `, body {"password":"` + secret + `"}`)
		}},
	); err != nil {
		t.Fatal(err)
	}
	rep := reg.Run(ctx, nil)
	add("health.Report", rep)
	add("health.Entry", rep.Entries[0])
	add("[]health.Entry", rep.Entries)

	// servicedefaults: Add's errors, and an App holding secrets.
	_, err = servicedefaults.Add(ctx, nil, servicedefaults.WithConfig(discovery.FromMap(map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": "ftp://u:" + secret + "@collector:4317",
	})), servicedefaults.WithLogWriter(io.Discard))
	addErr("servicedefaults.Add error (endpoint)", err)
	_, err = servicedefaults.Add(ctx, nil, servicedefaults.WithConfig(discovery.FromMap(map[string]string{
		"Aspire:ServiceDefaults:ShutdownTimeout": "Password=" + secret,
	})), servicedefaults.WithLogWriter(io.Discard))
	addErr("servicedefaults.Add error (setting)", err)
	defaultLogger := slog.Default()
	app, err := servicedefaults.Add(ctx, http.NewServeMux(), servicedefaults.WithConfig(cfg), servicedefaults.WithLogWriter(io.Discard))
	slog.SetDefault(defaultLogger)
	if err == nil {
		t.Cleanup(func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = app.Shutdown(sctx)
		})
		add("*servicedefaults.App", app)
	} else {
		addErr("servicedefaults.Add error (config with secrets)", err)
	}

	for _, tc := range cases {
		for _, f := range formats {
			t.Run(tc.name+"/"+f.name, func(t *testing.T) {
				out := f.render(tc.v)
				if strings.Contains(out, secret) {
					t.Errorf("%s leaks the secret:\n%s", f.name, out)
				}
			})
		}
	}
}

// The check above must be able to fail: the same formats applied to a
// plain struct holding the secret show it.
func TestLeakCheckCanFail(t *testing.T) {
	type plain struct{ Password string }
	for _, f := range formats {
		if out := f.render(plain{secret}); !strings.Contains(out, secret) {
			t.Errorf("%s hides a plain field (%s): the leak test would pass vacuously", f.name, out)
		}
	}
}

// Errors quote a bad value shortened (redact.Value), so a huge value does
// not come back as a huge message, whichever package reports it.
func TestErrorsQuoteValuesShort(t *testing.T) {
	huge := strings.Repeat("x", 1<<20)
	add := func(key string) error {
		_, err := servicedefaults.Add(context.Background(), nil,
			servicedefaults.WithConfig(discovery.FromMap(map[string]string{key: huge})),
			servicedefaults.WithLogWriter(io.Discard))
		return err
	}
	cfg := discovery.FromMap(map[string]string{"Aspire:Resilience:Http:Retry:BackoffType": huge, "Aspire:Npgsql:db:ConnectTimeout": huge})
	_, resErr := resilience.LoadTransportConfig(cfg, "")
	_, listenErr := discovery.FromMap(map[string]string{"ASPNETCORE_URLS": "http://h:" + huge}).ListenAddress()
	tests := []struct {
		name string
		err  error
	}{
		{"discovery Duration", func() error { _, err := cfg.Duration("Aspire:Npgsql:db:ConnectTimeout", 0); return err }()},
		{"discovery ParseDuration", func() error { _, err := discovery.ParseDuration(huge); return err }()},
		{"discovery ListenAddress", listenErr},
		{"servicedefaults OTEL duration", add("OTEL_BSP_SCHEDULE_DELAY")},
		{"servicedefaults OTEL sampler", add("OTEL_TRACES_SAMPLER")},
		{"servicedefaults OTEL endpoint", add("OTEL_EXPORTER_OTLP_ENDPOINT")},
		{"servicedefaults OTEL traces endpoint", add("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")},
		{"servicedefaults log level", add("Logging:LogLevel:Default")},
		{"servicedefaults setting", add("Aspire:ServiceDefaults:ShutdownTimeout")},
		{"resilience backoff type", resErr},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.err == nil {
				t.Fatal("no error")
			}
			if n := len(tt.err.Error()); n > 1024 {
				t.Errorf("error is %d bytes long: %.120s…", n, tt.err)
			}
		})
	}
}
