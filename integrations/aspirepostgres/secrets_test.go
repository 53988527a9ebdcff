package aspirepostgres_test

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/goaspire/goaspire/integrations/aspirepostgres"
	"github.com/goaspire/goaspire/internal/leaktest"
	"github.com/goaspire/goaspire/internal/otlptest"
	"github.com/goaspire/goaspire/servicedefaults/servicedefaultstest"
	"github.com/goaspire/goaspire/testserver"
)

// These tests try to make a database password leave the process through
// every way out the App has: returned errors, console logs, exported
// spans, metrics and logs, and the detailed health JSON. Each secret is a
// distinctive string so a leak anywhere is found by substring.

// leakSink gathers everything that left an App (see package leaktest).
type leakSink struct{ *leaktest.Sink }

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
	return &leakSink{leaktest.New(t, app.App, app.Logs, rcv)}
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
			db, err := aspirepostgres.DB(context.Background(), s.App, "db")
			if err != nil {
				t.Fatal(err)
			}
			ctx, span := s.App.Tracer("test").Start(context.Background(), "request")
			_, err = db.Exec(ctx, "select 1")
			span.End()
			if err == nil {
				t.Fatal("a query with a wrong password succeeded")
			}
			s.Err(err)
			p, err := aspirepostgres.Pool(ctx, s.App, "db")
			s.Err(err)
			if p != nil {
				s.Err(p.Ping(ctx))
			}
			var healthOut string
			waitFor(t, "the database check to fail", func() bool {
				healthOut = s.Health()
				return strings.Contains(healthOut, "Unhealthy")
			})
			s.App.Logger().Error("query failed", "error", err)
			s.Check(healthOut, wrong)
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
	db, err := aspirepostgres.DB(context.Background(), s.App, "db")
	if err != nil {
		t.Fatal(err)
	}
	_, err = db.Exec(context.Background(), "select 1")
	s.Err(err)
	var healthOut string
	waitFor(t, "the database check to fail", func() bool {
		healthOut = s.Health()
		return strings.Contains(healthOut, "Unhealthy")
	})
	s.Check(healthOut, secret)
}
