package servicedefaults_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/internal/otlptest"
	natsmsg "github.com/goaspire/goaspire/messaging/nats"
	"github.com/goaspire/goaspire/testserver"
)

func TestAppNATS(t *testing.T) {
	srv := testserver.NewNATS(t)
	app, logs := newApp(t, map[string]string{"ConnectionStrings:events": srv.URL()}, nil)
	nc, err := app.NATS("events")
	if err != nil {
		t.Fatal(err)
	}
	again, err := app.NATS("events")
	if err != nil || again != nc {
		t.Fatalf("second NATS = %p, %v; want the same connection", again, err)
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
	msg, err := last.NextMsg(5 * time.Second)
	if err != nil || string(msg.Data) != "bye" {
		t.Errorf("last message %v, %v: the worker's publish was lost", msg, err)
	}
	if strings.Contains(logs.String(), srv.Password()) {
		t.Error("the log shows the password")
	}
	if strings.Contains(logs.String(), "worker stopped with an error") {
		t.Errorf("the worker's publish failed:\n%s", logs)
	}
}

func TestAppNATSSettingsAndErrors(t *testing.T) {
	const pass = "Sup3rS3cret"
	tests := []struct {
		name      string
		values    map[string]string
		wantErr   []string
		wantCheck bool
	}{
		{"health checks off", map[string]string{
			"ConnectionStrings:events": "nats://127.0.0.1:1", "Aspire:NATS:Net:events:DisableHealthChecks": "true",
		}, nil, false},
		{"default with check", map[string]string{"ConnectionStrings:events": "nats://127.0.0.1:1"}, nil, true},
		{"bad scheme", map[string]string{"ConnectionStrings:events": "http://u:" + pass + "@h:1"},
			[]string{`nats "events"`, "ConnectionStrings:events", "scheme"}, false},
		{"missing", nil, []string{"ConnectionStrings__events"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app, _ := newApp(t, tt.values, nil)
			_, err := app.NATS("events")
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
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			has := false
			for _, c := range app.Health().Checks() {
				has = has || c.Name == "nats:events"
			}
			if has != tt.wantCheck {
				t.Errorf("check registered %v, want %v", has, tt.wantCheck)
			}
		})
	}
}

func TestAppNATSTraceReachesOTLP(t *testing.T) {
	srv := testserver.NewNATS(t)
	rcv := otlptest.Start(t)
	app, _ := newApp(t, with(slowExport,
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", rcv.HTTPEndpoint+"/v1/traces",
		"ConnectionStrings:events", srv.URL(),
	), nil)
	nc, err := app.NATS("events")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := natsmsg.Subscribe(ctx, nc, "orders.created", func(context.Context, *nats.Msg) error {
		close(done)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	if err := natsmsg.Publish(context.Background(), nc, "orders.created", []byte("o-1")); err != nil {
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
}

func TestAppNATSTrustsSSLCertFile(t *testing.T) {
	srv := testserver.NewNATS(t, testserver.WithNATSTLS())
	tests := []struct {
		name      string
		values    map[string]string
		connected bool
	}{
		{"trusted through SSL_CERT_FILE", map[string]string{"ConnectionStrings:events": srv.URL(), "SSL_CERT_FILE": srv.CACertFile()}, true},
		{"untrusted", map[string]string{"ConnectionStrings:events": srv.URL()}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app, logs := newApp(t, tt.values, nil)
			nc, err := app.NATS("events")
			if err != nil {
				t.Fatal(err)
			}
			if tt.connected {
				waitFor(t, "connected over TLS", nc.IsConnected)
				return
			}
			waitFor(t, "a certificate error logged", func() bool { return strings.Contains(logs.String(), "certificate") })
			if nc.IsConnected() {
				t.Error("connected to a server signed by an unknown CA")
			}
		})
	}
}
