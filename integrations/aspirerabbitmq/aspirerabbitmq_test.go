package aspirerabbitmq_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/integrations/aspirerabbitmq"
	"github.com/goaspire/goaspire/internal/otlptest"
	"github.com/goaspire/goaspire/internal/poll"
	"github.com/goaspire/goaspire/messaging/rabbitmq"
	"github.com/goaspire/goaspire/servicedefaults"
	"github.com/goaspire/goaspire/servicedefaults/servicedefaultstest"
	"github.com/goaspire/goaspire/testserver"
)

func checkNames(checks []health.Check) string {
	var names []string
	for _, c := range checks {
		names = append(names, c.Name)
	}
	return strings.Join(names, ",")
}

// queueName is a queue name unique to the test, on the shared node.
func queueName(t *testing.T) string { return strings.ReplaceAll(t.Name(), "/", "-") }

// TestClient opens the client through an App from the two forms of
// configuration: it is shared per name, health-checked unless disabled,
// and closed by Shutdown only after the workers consuming through it have
// finished their in-flight messages.
func TestClient(t *testing.T) {
	srv := needBroker(t)
	for _, tc := range []struct {
		name      string
		values    map[string]string
		wantCheck bool
	}{
		{"connection string", map[string]string{"ConnectionStrings__messaging": srv.URL()}, true},
		{"Aspire 13 properties, health check off", map[string]string{
			"MESSAGING_HOST": "127.0.0.1", "MESSAGING_PORT": strings.TrimPrefix(srv.Addr(), "127.0.0.1:"),
			"MESSAGING_USERNAME": srv.User(), "MESSAGING_PASSWORD": srv.Password(),
			"Aspire__RabbitMQ__Client__messaging__DisableHealthChecks": "true",
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			app := servicedefaultstest.NewUnstarted(t, nil, tc.values)
			mq, err := aspirerabbitmq.Client(ctx, app, "messaging")
			if err != nil {
				t.Fatal(err)
			}
			if again, err := aspirerabbitmq.Client(ctx, app, "messaging"); err != nil || again != mq {
				t.Errorf("second Client(messaging) = %p, %v; want the first client %p", again, err, mq)
			}
			if got := strings.Contains(checkNames(app.Health().Checks()), "rabbitmq:messaging"); got != tc.wantCheck {
				t.Errorf("health checks %q: rabbitmq check registered = %v, want %v", checkNames(app.Health().Checks()), got, tc.wantCheck)
			}
			// The client connects in the background.
			poll.Until(t, 30*time.Second, "client connected", mq.Connected)
			if tc.wantCheck {
				rep := app.Health().Run(ctx, nil)
				for _, e := range rep.Entries {
					if e.Name == "rabbitmq:messaging" && e.Status != health.Healthy {
						t.Errorf("rabbitmq:messaging %s %s", e.Status, e.Error)
					}
				}
			}
			q := queueName(t)
			if err := mq.DeclareQueue(ctx, rabbitmq.Queue{Name: q, Transient: true}); err != nil {
				t.Fatal(err)
			}
			// A consumer run as an App worker: Shutdown stops it (its
			// in-flight message is acknowledged) before closing the client.
			started, release := make(chan struct{}), make(chan struct{})
			handled := make(chan struct{}, 1)
			app.Go("consumer", func(ctx context.Context) error {
				return mq.Consume(ctx, q, rabbitmq.ConsumeOptions{}, func(context.Context, rabbitmq.Delivery) error {
					close(started)
					<-release
					handled <- struct{}{}
					return nil
				})
			})
			if err := mq.Publish(ctx, "", q, rabbitmq.Message{Body: []byte("x")}); err != nil {
				t.Fatal(err)
			}
			<-started
			done := make(chan error, 1)
			go func() { done <- app.Shutdown(ctx) }()
			time.Sleep(50 * time.Millisecond) // let Shutdown reach the worker
			close(release)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			select {
			case <-handled:
			default:
				t.Error("Shutdown returned before the in-flight handler finished")
			}
			if err := mq.Publish(ctx, "", q, rabbitmq.Message{}); !errors.Is(err, rabbitmq.ErrClosed) {
				t.Errorf("Publish after Shutdown = %v, want ErrClosed", err)
			}
			if _, err := aspirerabbitmq.Client(ctx, app, "messaging"); !errors.Is(err, servicedefaults.ErrClosed) {
				t.Errorf("Client after Shutdown = %v, want servicedefaults.ErrClosed", err)
			}
			if strings.Contains(app.Logs.String(), srv.Password()) {
				t.Error("the App's log holds the RabbitMQ password")
			}
		})
	}
}

// TestClientErrors: configuration errors name the key at fault, never the
// password, and match *discovery.KeyError through the App's wrapping.
func TestClientErrors(t *testing.T) {
	const secret = "hunter2"
	for _, tc := range []struct {
		name, key string
		keyErr    bool // errors.As finds a *discovery.KeyError with Key == key
		values    map[string]string
	}{
		{"bad scheme", "ConnectionStrings:messaging", true, map[string]string{"ConnectionStrings__messaging": "http://guest:" + secret + "@localhost/"}},
		{"bad port", "MESSAGING_URI", true, map[string]string{"MESSAGING_URI": "amqp://u:" + secret + "@h:99999/"}},
		{"bad setting", "Aspire:RabbitMQ:Client:MaxConnectRetryCount", false, map[string]string{
			"ConnectionStrings__messaging": "amqp://guest:" + secret + "@localhost/", "Aspire__RabbitMQ__Client__MaxConnectRetryCount": "often"}},
		{"negative setting", "Aspire:RabbitMQ:Client:messaging:MaxConnectRetryCount", true, map[string]string{
			"ConnectionStrings__messaging": "amqp://h/", "Aspire__RabbitMQ__Client__messaging__MaxConnectRetryCount": "-1"}},
		{"missing", "ConnectionStrings__messaging", false, map[string]string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := servicedefaultstest.NewUnstarted(t, nil, tc.values)
			_, err := aspirerabbitmq.Client(t.Context(), app, "messaging")
			if err == nil || !strings.Contains(err.Error(), tc.key) || strings.Contains(err.Error(), secret) {
				t.Fatalf("Client error = %v, want one naming %s and not the password", err, tc.key)
			}
			if !strings.Contains(err.Error(), "rabbitmq") || strings.Count(err.Error(), `"messaging"`) != 1 {
				t.Errorf("Client error = %v, want one naming the package and the connection once", err)
			}
			if tc.keyErr {
				var keyErr *discovery.KeyError
				if !errors.As(err, &keyErr) || keyErr.Key != tc.key {
					t.Errorf("Client error %q: errors.As finds %v, want a *discovery.KeyError with Key %q", err, keyErr, tc.key)
				}
			}
		})
	}
}

// TestClientConfigure: configure sees the configuration read from the
// App, with the App's telemetry and logger set, runs once per name, and
// what it sets is what the client uses: here the publish confirm timeout,
// which a Publish to a silent broker reports in its error.
func TestClientConfigure(t *testing.T) {
	srv := needBroker(t)
	proxy := testserver.NewFaultProxy(t, srv.Addr())
	app := servicedefaultstest.NewUnstarted(t, nil, map[string]string{
		"ConnectionStrings__messaging":             strings.Replace(srv.URL(), srv.Addr(), proxy.Addr(), 1),
		"Aspire__RabbitMQ__Client__DisableTracing": "true",
	})
	t.Cleanup(proxy.Heal) // before the App's Shutdown closes the client
	const confirmTimeout = 700 * time.Millisecond
	var calls atomic.Int32
	mq, err := aspirerabbitmq.Client(t.Context(), app, "messaging", func(c *rabbitmq.Config) {
		calls.Add(1)
		if c.Name != "messaging" || !c.DisableTracing || !strings.Contains(c.URL, proxy.Addr()) {
			t.Errorf("configure got %v: want the configuration read from the App", c)
		}
		if c.TracerProvider != app.TracerProvider() || c.MeterProvider != app.MeterProvider() || !reflect.DeepEqual(c.Propagator, app.Propagator()) || c.Logger == nil {
			t.Error("configure got a Config without the App's telemetry and logger")
		}
		if c.PublishConfirmTimeout != 0 {
			t.Errorf("configure got PublishConfirmTimeout %v, want 0 (not configured)", c.PublishConfirmTimeout)
		}
		c.PublishConfirmTimeout = confirmTimeout
		c.DisableHealthChecks = true
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := aspirerabbitmq.Client(t.Context(), app, "messaging", func(*rabbitmq.Config) {
		t.Error("configure ran for a name already opened")
	}); err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("configure ran %d times, want 1", n)
	}
	if names := checkNames(app.Health().Checks()); strings.Contains(names, "rabbitmq:") {
		t.Errorf("health checks %q: configure's DisableHealthChecks was ignored", names)
	}

	q := queueName(t)
	if err := mq.DeclareQueue(t.Context(), rabbitmq.Queue{Name: q, Transient: true}); err != nil {
		t.Fatal(err)
	}
	if err := mq.Publish(context.Background(), "", q, rabbitmq.Message{Body: []byte("before")}); err != nil {
		t.Fatal(err)
	}
	proxy.Set(testserver.Silent)
	err = mq.Publish(context.Background(), "", q, rabbitmq.Message{Body: []byte("during")})
	if !errors.Is(err, rabbitmq.ErrConfirmTimeout) || !strings.Contains(err.Error(), confirmTimeout.String()) {
		t.Errorf("Publish to a silent broker = %v, want ErrConfirmTimeout after configure's %v", err, confirmTimeout)
	}
	proxy.Heal()
}

// slowExport keeps the telemetry in the App until Shutdown flushes it.
var slowExport = map[string]string{
	"OTEL_BSP_SCHEDULE_DELAY":     "600000",
	"OTEL_BLRP_SCHEDULE_DELAY":    "600000",
	"OTEL_METRIC_EXPORT_INTERVAL": "600000",
}

// TestClientTelemetry: the client's spans, metrics and log records reach
// the App's OTLP exporter, its records under the rabbitmq scope, and the
// consumer span is the producer's child in one trace.
func TestClientTelemetry(t *testing.T) {
	srv := needBroker(t)
	rcv := otlptest.Start(t)
	values := map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT":  rcv.HTTPEndpoint,
		"ConnectionStrings__messaging": srv.URL(),
	}
	for k, v := range slowExport {
		values[k] = v
	}
	app := servicedefaultstest.NewUnstarted(t, nil, values)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	mq, err := aspirerabbitmq.Client(ctx, app, "messaging")
	if err != nil {
		t.Fatal(err)
	}
	q := queueName(t)
	if err := mq.DeclareQueue(ctx, rabbitmq.Queue{Name: q, Transient: true}); err != nil {
		t.Fatal(err)
	}
	// The first attempt fails, so the client logs that it queued the
	// message again; the second succeeds.
	done := make(chan struct{})
	app.Go("consumer", func(ctx context.Context) error {
		return mq.Consume(ctx, q, rabbitmq.ConsumeOptions{MaxAttempts: 2}, func(_ context.Context, d rabbitmq.Delivery) error {
			if d.Attempt < 2 {
				return errors.New("not yet")
			}
			close(done)
			return nil
		})
	})
	if err := mq.Publish(ctx, "", q, rabbitmq.Message{Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("the message was not handled a second time")
	}
	if err := app.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	pub, ok1 := rcv.SpanNamed("publish " + q)
	proc, ok2 := rcv.SpanNamed("process " + q)
	if !ok1 || !ok2 {
		t.Fatalf("spans received: %d (publish %v, process %v)", len(rcv.Spans()), ok1, ok2)
	}
	if string(proc.Span.TraceId) != string(pub.Span.TraceId) {
		t.Error("the consumer span is not in the producer's trace")
	}
	if got, _ := otlptest.Attr(pub.Span.Attributes, "messaging.system"); got != "rabbitmq" {
		t.Errorf("publish span: messaging.system = %q, want rabbitmq", got)
	}
	found := false
	for _, l := range rcv.Logs() {
		if strings.Contains(l.Record.GetBody().GetStringValue(), "rabbitmq handler failed") {
			found = true
			if got := l.Scope.GetName(); got != "github.com/goaspire/goaspire/messaging/rabbitmq" {
				t.Errorf("record %q has scope %q, want the rabbitmq package's", l.Record.GetBody().GetStringValue(), got)
			}
		}
	}
	if !found {
		t.Errorf("no \"rabbitmq handler failed\" record among %d exported", len(rcv.Logs()))
	}
	if len(rcv.Metrics()) == 0 {
		t.Error("no metrics exported")
	}
}

// rabbitmqCheck returns the rabbitmq:messaging entry of app's readiness
// report.
func rabbitmqCheck(ctx context.Context, t *testing.T, app *servicedefaultstest.App) health.Entry {
	t.Helper()
	for _, e := range app.Health().Run(ctx, nil).Entries {
		if e.Name == "rabbitmq:messaging" {
			return e
		}
	}
	t.Fatal("no rabbitmq:messaging check")
	return health.Entry{}
}

// TestClientBrokerDownAtOpen: with the broker down, Client returns a
// client (the broker is started only after it returned) whose readiness
// check says it is connecting, and a Publish with a deadline fails by it;
// once the broker is up, the client connects by itself, and declares,
// publishes and consumes. With WaitOnOpen, Client waits for the broker
// and fails as it used to.
func TestClientBrokerDownAtOpen(t *testing.T) {
	srv := needBroker(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	if err := srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	up := false
	defer func() {
		if !up { // leave the shared node running for the other tests
			if err := srv.Start(context.Background()); err != nil {
				t.Error(err)
			}
		}
	}()

	// WaitOnOpen: the eager open, failing after its retries.
	eager := servicedefaultstest.NewUnstarted(t, nil, map[string]string{
		"ConnectionStrings__messaging":                              srv.URL(),
		"Aspire__RabbitMQ__Client__messaging__WaitOnOpen":           "00:01:00",
		"Aspire__RabbitMQ__Client__messaging__MaxConnectRetryCount": "1",
	})
	if _, err := aspirerabbitmq.Client(ctx, eager, "messaging"); err == nil || !strings.Contains(err.Error(), srv.Addr()) || strings.Contains(err.Error(), srv.Password()) {
		t.Errorf("Client with WaitOnOpen and the broker down = %v, want an error naming the broker without the password", err)
	}

	app := servicedefaultstest.NewUnstarted(t, nil, map[string]string{"ConnectionStrings__messaging": srv.URL()})
	mq, err := aspirerabbitmq.Client(ctx, app, "messaging")
	if err != nil {
		t.Fatalf("Client with the broker down: %v", err)
	}
	if e := rabbitmqCheck(ctx, t, app); e.Status != health.Unhealthy || !strings.Contains(e.Error, "connecting") {
		t.Errorf("rabbitmq:messaging with the broker down: %s %q, want Unhealthy, connecting", e.Status, e.Error)
	}
	q := queueName(t)
	pctx, pcancel := context.WithTimeout(ctx, 200*time.Millisecond)
	err = mq.Publish(pctx, "", q, rabbitmq.Message{Body: []byte("lost")})
	pcancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Publish with the broker down = %v, want context.DeadlineExceeded", err)
	}
	// A consumer started before the broker: it starts consuming once
	// connected and the queue exists.
	got := make(chan string, 1)
	app.Go("consumer", func(ctx context.Context) error {
		if err := mq.DeclareQueue(ctx, rabbitmq.Queue{Name: q, Transient: true}); err != nil {
			return err
		}
		return mq.Consume(ctx, q, rabbitmq.ConsumeOptions{}, func(_ context.Context, d rabbitmq.Delivery) error {
			got <- string(d.Body)
			return nil
		})
	})

	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	up = true
	if err := mq.DeclareQueue(ctx, rabbitmq.Queue{Name: q, Transient: true}); err != nil {
		t.Fatal(err)
	}
	if err := mq.Publish(ctx, "", q, rabbitmq.Message{Body: []byte("after"), Mandatory: true}); err != nil {
		t.Fatalf("Publish once the broker is up: %v", err)
	}
	select {
	case body := <-got:
		if body != "after" {
			t.Errorf("consumed %q, want the message published once up", body)
		}
	case <-ctx.Done():
		t.Fatal("the consumer started before the broker got nothing")
	}
	if e := rabbitmqCheck(ctx, t, app); e.Status != health.Healthy {
		t.Errorf("rabbitmq:messaging once connected: %s %q", e.Status, e.Error)
	}
	if err := app.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}
