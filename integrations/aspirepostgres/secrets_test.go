package aspirepostgres_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/goaspire/goaspire/integrations/aspirepostgres"
	"github.com/goaspire/goaspire/internal/otlptest"
	"github.com/goaspire/goaspire/servicedefaults"
	"github.com/goaspire/goaspire/servicedefaults/servicedefaultstest"
	"github.com/goaspire/goaspire/testserver"
)

// These tests try to make a database password leave the process through
// every way out the App has: returned errors, console logs, exported
// spans, metrics and logs, and the detailed health JSON. Each secret is a
// distinctive string so a leak anywhere is found by substring.

// leakSink gathers everything that left an App.
type leakSink struct {
	t    *testing.T
	rcv  *otlptest.Receiver
	app  *servicedefaultstest.App
	errs []string
}

// newLeakApp starts an App in Development (detailed health JSON) that
// exports every signal to an OTLP receiver and logs at Debug, with values
// added to the configuration.
func newLeakApp(t *testing.T, values map[string]string) *leakSink {
	rcv := otlptest.Start(t)
	cfg := exporting(rcv, "http/protobuf",
		"DOTNET_ENVIRONMENT", "Development",
		"OTEL_TRACES_SAMPLER", "always_on",
		"Logging:LogLevel:Default", "Debug",
	)
	for k, v := range values {
		cfg[k] = v
	}
	app := servicedefaultstest.NewUnstarted(t, http.NewServeMux(), cfg)
	return &leakSink{t: t, rcv: rcv, app: app}
}

// err records an error text returned to the caller.
func (s *leakSink) err(err error) {
	if err != nil {
		s.errs = append(s.errs, err.Error())
	}
}

// health returns the detailed /health and /alive answers.
func (s *leakSink) health() string {
	var out strings.Builder
	for _, p := range []string{servicedefaults.HealthPath, servicedefaults.AlivePath} {
		rec := httptest.NewRecorder()
		s.app.Handler().ServeHTTP(rec, httptest.NewRequest("GET", p, nil))
		out.WriteString(rec.Body.String())
	}
	return out.String()
}

// check shuts the App down (flushing telemetry) and fails the test if any
// secret appears in what left it.
func (s *leakSink) check(healthOut string, secrets ...string) {
	s.t.Helper()
	if err := s.app.Shutdown(context.Background()); err != nil {
		s.errs = append(s.errs, err.Error())
	}
	var exported strings.Builder
	for _, sp := range s.rcv.Spans() {
		exported.WriteString(sp.Span.String())
	}
	for _, m := range s.rcv.Metrics() {
		exported.WriteString(m.Metric.String())
	}
	for _, l := range s.rcv.Logs() {
		exported.WriteString(l.Record.String())
	}
	outs := map[string]string{
		"errors":         strings.Join(s.errs, "\n"),
		"console logs":   s.app.Logs.String(),
		"exported OTLP":  exported.String(),
		"health reports": healthOut,
	}
	for _, secret := range secrets {
		for where, text := range outs {
			if strings.Contains(text, secret) {
				s.t.Errorf("%s leak %q:\n%s", where, secret, text)
			}
		}
	}
}

func TestSecretsPostgresWrongPassword(t *testing.T) {
	srv := testserver.NewPostgres(t)
	const wrong = "Wr0ngPassw0rdLeak"
	port := strconv.Itoa(srv.Port())
	for _, tt := range []struct {
		name, cs string
	}{
		{"url", "postgres://" + srv.User() + ":" + wrong + "@127.0.0.1:" + port + "/" + srv.Database() + "?sslmode=disable"},
		{"keyword", "Host=127.0.0.1;Port=" + port + ";Username=" + srv.User() + ";Password=" + wrong + ";Database=" + srv.Database()},
		{"quoted keyword", "Host=127.0.0.1;Port=" + port + ";Username=" + srv.User() + ";Password='" + wrong + "';Database=" + srv.Database()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newLeakApp(t, map[string]string{"ConnectionStrings__db": tt.cs})
			db, err := aspirepostgres.DB(context.Background(), s.app, "db")
			if err != nil {
				t.Fatal(err)
			}
			ctx, span := s.app.Tracer("test").Start(context.Background(), "request")
			_, err = db.Exec(ctx, "select 1")
			span.End()
			if err == nil {
				t.Fatal("a query with a wrong password succeeded")
			}
			s.err(err)
			p, err := aspirepostgres.Pool(ctx, s.app, "db")
			s.err(err)
			if p != nil {
				s.err(p.Ping(ctx))
			}
			var healthOut string
			waitFor(t, "the database check to fail", func() bool {
				healthOut = s.health()
				return strings.Contains(healthOut, "Unhealthy")
			})
			s.app.Logger().Error("query failed", "error", err)
			s.check(healthOut, wrong)
		})
	}
}

func TestSecretsPostgresDown(t *testing.T) {
	// The real password of a server that is not there: the pool's
	// background connect loop logs its failures.
	const secret = "RealPassw0rdLeak"
	s := newLeakApp(t, map[string]string{
		"ConnectionStrings__db":                         "Host=127.0.0.1;Port=" + refusedPort(t) + ";Username=u;Password=" + secret + ";Database=d",
		"Aspire__Npgsql__ConnectRetry__InitialInterval": "10ms",
		"Aspire__Npgsql__ConnectRetry__MaxInterval":     "20ms",
	})
	db, err := aspirepostgres.DB(context.Background(), s.app, "db")
	if err != nil {
		t.Fatal(err)
	}
	_, err = db.Exec(context.Background(), "select 1")
	s.err(err)
	var healthOut string
	waitFor(t, "the database check to fail", func() bool {
		healthOut = s.health()
		return strings.Contains(healthOut, "Unhealthy")
	})
	s.check(healthOut, secret)
}
