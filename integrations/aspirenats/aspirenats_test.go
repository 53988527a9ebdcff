package aspirenats_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/integrations/aspirenats"
	"github.com/goaspire/goaspire/internal/otlptest"
	natsmsg "github.com/goaspire/goaspire/messaging/nats"
	"github.com/goaspire/goaspire/servicedefaults"
	"github.com/goaspire/goaspire/servicedefaults/servicedefaultstest"
	"github.com/goaspire/goaspire/testserver"
)

func hasCheck(app *servicedefaultstest.App, name string) bool {
	for _, c := range app.Health().Checks() {
		if c.Name == name {
			return true
		}
	}
	return false
}

// TestConn opens the connection through an App: it is shared per name,
// health-checked, stays open for the workers until they return, and is
// drained by Shutdown, so a worker's last publish is delivered.
func TestConn(t *testing.T) {
	srv := testserver.NewNATS(t)
	app := servicedefaultstest.NewUnstarted(t, nil, map[string]string{"ConnectionStrings:events": srv.URL()})
	nc, err := aspirenats.Conn(t.Context(), app, "events")
	if err != nil {
		t.Fatal(err)
	}
	again, err := aspirenats.Conn(t.Context(), app, "events")
	if err != nil || again != nc {
		t.Fatalf("second Conn = %p, %v; want the same connection", again, err)
	}
	waitFor(t, "connected", nc.IsConnected)
	rep := app.Health().Run(context.Background(), nil)
	found := false
	for _, e := range rep.Entries {
		if e.Name == "nats:events" {
			found = true
			if e.Status != health.Healthy {
				t.Errorf("nats:events %s %s", e.Status, e.Error)
			}
		}
	}
	if !found {
		t.Errorf("no nats:events check in %+v", rep.Entries)
	}

	// A worker that publishes a last message when shutdown begins: the
	// connection must still be open then, and the message delivered.
	watcher, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer watcher.Close()
	last, err := watcher.SubscribeSync("status")
	if err != nil {
		t.Fatal(err)
	}
	if err := watcher.Flush(); err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	app.Go("announcer", func(ctx context.Context) error {
		close(started)
		<-ctx.Done()
		time.Sleep(20 * time.Millisecond) // still finishing when clients would close
		return natsmsg.Publish(context.Background(), nc, "status", []byte("bye"))
	})
	<-started
	if err := app.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !nc.IsClosed() {
		t.Error("Shutdown left the connection open")
	}
	msg, err := last.NextMsg(30 * time.Second)
	if err != nil || string(msg.Data) != "bye" {
		t.Errorf("last message %v, %v: the worker's publish was lost", msg, err)
	}
	if strings.Contains(app.Logs.String(), srv.Password()) {
		t.Error("the log shows the password")
	}
	if strings.Contains(app.Logs.String(), "worker stopped with an error") {
		t.Errorf("the worker's publish failed:\n%s", app.Logs)
	}
	if _, err := aspirenats.Conn(t.Context(), app, "events"); !errors.Is(err, servicedefaults.ErrClosed) {
		t.Errorf("Conn after Shutdown = %v, want servicedefaults.ErrClosed", err)
	}
}

// TestConnSettingsAndErrors: DisableHealthChecks leaves the check out;
// configuration errors name the connection and the key at fault (a
// *discovery.KeyError where there is one), never the password.
func TestConnSettingsAndErrors(t *testing.T) {
	const pass = "Sup3rS3cret"
	tests := []struct {
		name      string
		values    map[string]string
		wantErr   []string
		keyErr    string // the Key of the *discovery.KeyError errors.As finds
		wantCheck bool
	}{
		{"health checks off", map[string]string{
			"ConnectionStrings:events": "nats://127.0.0.1:1", "Aspire:NATS:Net:events:DisableHealthChecks": "true",
		}, nil, "", false},
		{"default with check", map[string]string{"ConnectionStrings:events": "nats://127.0.0.1:1"}, nil, "", true},
		{"bad scheme", map[string]string{"ConnectionStrings:events": "http://u:" + pass + "@h:1"},
			[]string{`nats "events"`, "ConnectionStrings:events", "scheme"}, "ConnectionStrings:events", false},
		{"bad port", map[string]string{"EVENTS_HOST": "h", "EVENTS_PORT": "x", "EVENTS_PASSWORD": pass},
			[]string{`nats "events"`, "EVENTS_PORT"}, "EVENTS_PORT", false},
		{"bad setting", map[string]string{"ConnectionStrings__events": "nats://h:4222", "Aspire__NATS__Net__DisableHealthChecks": "maybe"},
			[]string{`nats "events"`, "Aspire:NATS:Net:DisableHealthChecks"}, "Aspire:NATS:Net:DisableHealthChecks", false},
		{"missing", nil, []string{`natsmsg: discovery: connection "events"`, "ConnectionStrings__events"}, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app := servicedefaultstest.NewUnstarted(t, nil, tt.values)
			_, err := aspirenats.Conn(t.Context(), app, "events")
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatal("no error")
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				if strings.Contains(err.Error(), pass) {
					t.Errorf("error shows the password: %v", err)
				}
				if tt.keyErr != "" {
					var keyErr *discovery.KeyError
					if !errors.As(err, &keyErr) || keyErr.Key != tt.keyErr {
						t.Errorf("error %q: errors.As finds %v, want a *discovery.KeyError with Key %q", err, keyErr, tt.keyErr)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if has := hasCheck(app, "nats:events"); has != tt.wantCheck {
				t.Errorf("check registered %v, want %v", has, tt.wantCheck)
			}
		})
	}
}

// TestConnConfigure: configure sees the configuration read from the App,
// with the App's logger and trusted roots set, runs once per name, and
// what it sets (settings and nats.go options) is what the connection uses.
func TestConnConfigure(t *testing.T) {
	srv := testserver.NewNATS(t, testserver.WithNATSTLS())
	app := servicedefaultstest.NewUnstarted(t, nil, map[string]string{
		"ConnectionStrings:events": srv.URL(), "SSL_CERT_FILE": srv.CACertFile(),
	})
	var calls atomic.Int32
	nc, err := aspirenats.Conn(t.Context(), app, "events", func(c *natsmsg.Config) {
		calls.Add(1)
		if c.Name != "events" || len(c.Servers) != 1 || c.Password != srv.Password() {
			t.Errorf("configure got %v: want the configuration read from the App", c)
		}
		if c.Logger == nil || len(c.Options) != 1 {
			t.Errorf("configure got Logger %v and %d options, want the App's logger and its TLS roots", c.Logger, len(c.Options))
		}
		c.PingInterval = 7 * time.Second
		c.DisableHealthChecks = true
		c.Options = append(c.Options, nats.ReconnectBufSize(12345))
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := aspirenats.Conn(t.Context(), app, "events", func(*natsmsg.Config) {
		t.Error("configure ran for a name already opened")
	}); err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("configure ran %d times, want 1", n)
	}
	if nc.Opts.PingInterval != 7*time.Second || nc.Opts.ReconnectBufSize != 12345 {
		t.Errorf("connection has PingInterval %v, ReconnectBufSize %d: want configure's 7s and 12345", nc.Opts.PingInterval, nc.Opts.ReconnectBufSize)
	}
	if hasCheck(app, "nats:events") {
		t.Error("configure's DisableHealthChecks was ignored")
	}
	waitFor(t, "connected over TLS with the App's roots", nc.IsConnected)
}

// slowExport keeps the telemetry in the App until Shutdown flushes it.
var slowExport = map[string]string{
	"OTEL_BSP_SCHEDULE_DELAY":     "600000",
	"OTEL_BLRP_SCHEDULE_DELAY":    "600000",
	"OTEL_METRIC_EXPORT_INTERVAL": "600000",
}

// TestConnTelemetryReachesOTLP: with the App's providers handed to the
// traced helpers (the App has no globals here), the consumer span is the
// producer's child in one trace, both with the messaging attributes; the
// connection's log records carry the natsmsg scope.
func TestConnTelemetryReachesOTLP(t *testing.T) {
	srv := testserver.NewNATS(t)
	rcv := otlptest.Start(t)
	values := map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": rcv.HTTPEndpoint,
		"ConnectionStrings:events":    srv.URL(),
	}
	for k, v := range slowExport {
		values[k] = v
	}
	app := servicedefaultstest.NewUnstarted(t, nil, values)
	nc, err := aspirenats.Conn(t.Context(), app, "events")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the connection's connected record", func() bool { return strings.Contains(app.Logs.String(), "nats connected") })
	tel := []natsmsg.Option{natsmsg.WithTracerProvider(app.TracerProvider()), natsmsg.WithPropagator(app.Propagator())}
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := natsmsg.Subscribe(ctx, nc, "orders.created", func(context.Context, *nats.Msg) error {
		close(done)
		return nil
	}, tel[0], tel[1]); err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	if err := natsmsg.Publish(context.Background(), nc, "orders.created", []byte("o-1"), tel[0], tel[1]); err != nil {
		t.Fatal(err)
	}
	<-done
	if err := app.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	pub, ok1 := rcv.SpanNamed("publish orders.created")
	proc, ok2 := rcv.SpanNamed("process orders.created")
	if !ok1 || !ok2 {
		t.Fatalf("spans received: %d (publish %v, process %v)", len(rcv.Spans()), ok1, ok2)
	}
	if string(proc.Span.TraceId) != string(pub.Span.TraceId) || string(proc.Span.ParentSpanId) != string(pub.Span.SpanId) {
		t.Error("the consumer span is not the producer's child in one trace")
	}
	for _, s := range []otlptest.Span{pub, proc} {
		for key, want := range map[string]string{
			"messaging.system":           "nats",
			"messaging.destination.name": "orders.created",
		} {
			if got, _ := otlptest.Attr(s.Span.Attributes, key); got != want {
				t.Errorf("%s: %s = %q, want %q", s.Span.Name, key, got, want)
			}
		}
		if op, _ := otlptest.Attr(s.Span.Attributes, "messaging.operation"); op == "" {
			t.Errorf("%s: no messaging.operation", s.Span.Name)
		}
	}
	found := false
	for _, l := range rcv.Logs() {
		if l.Record.GetBody().GetStringValue() == "nats connected" {
			found = true
			if got := l.Scope.GetName(); got != "github.com/goaspire/goaspire/messaging/nats" {
				t.Errorf("record \"nats connected\" has scope %q, want the natsmsg package's", got)
			}
		}
	}
	if !found {
		t.Errorf("no \"nats connected\" record among %d exported", len(rcv.Logs()))
	}
}

// TestConnTrustsSSLCertFile: a TLS server signed by Aspire's development
// CA is trusted through SSL_CERT_FILE (the App's roots), or through a
// nats.go option configure adds; without either the connection fails on
// the certificate and says so in the log.
func TestConnTrustsSSLCertFile(t *testing.T) {
	srv := testserver.NewNATS(t, testserver.WithNATSTLS())
	tests := []struct {
		name      string
		values    map[string]string
		configure func(*natsmsg.Config)
		connected bool
	}{
		{"trusted through SSL_CERT_FILE", map[string]string{"ConnectionStrings:events": srv.URL(), "SSL_CERT_FILE": srv.CACertFile()}, nil, true},
		{"trusted through configure", map[string]string{"ConnectionStrings:events": srv.URL()}, func(c *natsmsg.Config) {
			c.Options = append(c.Options, nats.RootCAs(srv.CACertFile()))
		}, true},
		{"untrusted", map[string]string{"ConnectionStrings:events": srv.URL()}, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app := servicedefaultstest.NewUnstarted(t, nil, tt.values)
			nc, err := aspirenats.Conn(t.Context(), app, "events", tt.configure)
			if err != nil {
				t.Fatal(err)
			}
			if tt.connected {
				waitFor(t, "connected over TLS", nc.IsConnected)
				return
			}
			waitFor(t, "a certificate error logged", func() bool { return strings.Contains(app.Logs.String(), "certificate") })
			if nc.IsConnected() {
				t.Error("connected to a server signed by an unknown CA")
			}
		})
	}
}

// natsCheck returns the nats:events entry of app's readiness report.
func natsCheck(t *testing.T, app *servicedefaultstest.App) health.Entry {
	t.Helper()
	for _, e := range app.Health().Run(context.Background(), nil).Entries {
		if e.Name == "nats:events" {
			return e
		}
	}
	t.Fatal("no nats:events check")
	return health.Entry{}
}

// TestConnServerDownAtOpen: with the server down, Conn returns a
// connection (the server is started only after it returned) whose check
// is Unhealthy, connecting, and on which a JetStream publish with a
// deadline fails by it; once the server is up it connects by itself and
// publishes. With WaitOnOpen, Conn waits for the server and fails.
func TestConnServerDownAtOpen(t *testing.T) {
	srv := testserver.NewNATS(t)
	if err := srv.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	eager := servicedefaultstest.NewUnstarted(t, nil, map[string]string{
		"ConnectionStrings:events":          srv.URL(),
		"Aspire:NATS:Net:events:WaitOnOpen": "00:00:00.3",
	})
	if _, err := aspirenats.Conn(t.Context(), eager, "events"); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "WaitOnOpen") || strings.Contains(err.Error(), srv.Password()) {
		t.Errorf("Conn with WaitOnOpen and the server down = %v, want context.DeadlineExceeded naming WaitOnOpen, without the password", err)
	}

	app := servicedefaultstest.NewUnstarted(t, nil, map[string]string{"ConnectionStrings:events": srv.URL()})
	nc, err := aspirenats.Conn(t.Context(), app, "events")
	if err != nil {
		t.Fatalf("Conn with the server down: %v", err)
	}
	if e := natsCheck(t, app); e.Status != health.Unhealthy || !strings.Contains(e.Error, "connecting") {
		t.Errorf("nats:events with the server down: %s %q, want Unhealthy, connecting", e.Status, e.Error)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	_, err = nc.RequestWithContext(ctx, "service.echo", []byte("lost"))
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("request with the server down = %v, want context.DeadlineExceeded", err)
	}
	echo, err := nc.Subscribe("service.echo", func(m *nats.Msg) { _ = m.Respond(m.Data) })
	if err != nil {
		t.Fatalf("Subscribe with the server down: %v", err)
	}
	defer echo.Unsubscribe()

	if err := srv.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "connected once the server came", nc.IsConnected)
	ctx, cancel = context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if msg, err := nc.RequestWithContext(ctx, "service.echo", []byte("hello")); err != nil || string(msg.Data) != "hello" {
		t.Errorf("request once the server is up = %v, %v; want the echo of the subscription made before", msg, err)
	}
	if e := natsCheck(t, app); e.Status != health.Healthy {
		t.Errorf("nats:events once connected: %s %q", e.Status, e.Error)
	}
}
