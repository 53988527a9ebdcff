package aspireredis_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/goaspire/goaspire/integrations/aspireredis"
	"github.com/goaspire/goaspire/internal/otlptest"
	"github.com/goaspire/goaspire/servicedefaults"
	"github.com/goaspire/goaspire/servicedefaults/servicedefaultstest"
	"github.com/goaspire/goaspire/testserver"
)

// These tests try to make a Redis password leave the process through every
// way out the App has: returned errors, console logs, exported spans,
// metrics and logs, and the detailed health JSON. Each secret is a
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
	cfg := merge(exportTo(rcv, "http/protobuf",
		"DOTNET_ENVIRONMENT", "Development",
		"OTEL_TRACES_SAMPLER", "always_on",
		"Logging:LogLevel:Default", "Debug",
	), values)
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

func TestSecretsRedisRefused(t *testing.T) {
	addr := freeAddr(t)
	const secret = "RedisPassw0rdLeak"
	for _, tt := range []struct{ name, cs string }{
		{"stackexchange", addr + ",user=app,password=" + secret},
		{"url", "redis://app:" + secret + "@" + addr + "/0"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newLeakApp(t, map[string]string{"ConnectionStrings:cache": tt.cs})
			rdb, err := aspireredis.Client(context.Background(), s.app, "cache")
			if err != nil {
				t.Fatal(err)
			}
			ctx, span := s.app.Tracer("test").Start(context.Background(), "request")
			s.err(rdb.Ping(ctx).Err())
			span.End()
			var healthOut string
			waitFor(t, "the Redis check to fail", func() bool {
				healthOut = s.health()
				return strings.Contains(healthOut, "Unhealthy")
			})
			s.check(healthOut, secret)
		})
	}
}

func TestSecretsRedisWrongPassword(t *testing.T) {
	srv := testserver.NewRedis(t)
	const wrong = "RedisWr0ngLeak"
	s := newLeakApp(t, map[string]string{"ConnectionStrings:cache": srv.Addr() + ",password=" + wrong})
	rdb, err := aspireredis.Client(context.Background(), s.app, "cache")
	if err != nil {
		t.Fatal(err)
	}
	ctx, span := s.app.Tracer("test").Start(context.Background(), "request")
	s.err(rdb.Set(ctx, "k", "v", 0).Err())
	span.End()
	var healthOut string
	waitFor(t, "the Redis check to fail", func() bool {
		healthOut = s.health()
		return strings.Contains(healthOut, "Unhealthy")
	})
	s.check(healthOut, wrong, srv.Password())
}
