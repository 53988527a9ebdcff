package aspireredis_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/goaspire/goaspire/integrations/aspireredis"
	"github.com/goaspire/goaspire/internal/leaktest"
	"github.com/goaspire/goaspire/internal/otlptest"
	"github.com/goaspire/goaspire/servicedefaults/servicedefaultstest"
	"github.com/goaspire/goaspire/testserver"
)

// These tests try to make a Redis password leave the process through every
// way out the App has: returned errors, console logs, exported spans,
// metrics and logs, and the detailed health JSON. Each secret is a
// distinctive string so a leak anywhere is found by substring.

// leakSink gathers everything that left an App (see package leaktest).
type leakSink struct{ *leaktest.Sink }

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
	return &leakSink{leaktest.New(t, app.App, app.Logs, rcv)}
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
			rdb, err := aspireredis.Client(context.Background(), s.App, "cache")
			if err != nil {
				t.Fatal(err)
			}
			ctx, span := s.App.Tracer("test").Start(context.Background(), "request")
			s.Err(rdb.Ping(ctx).Err())
			span.End()
			var healthOut string
			waitFor(t, "the Redis check to fail", func() bool {
				healthOut = s.Health()
				return strings.Contains(healthOut, "Unhealthy")
			})
			s.Check(healthOut, secret)
		})
	}
}

func TestSecretsRedisWrongPassword(t *testing.T) {
	srv := testserver.NewRedis(t)
	const wrong = "RedisWr0ngLeak"
	s := newLeakApp(t, map[string]string{"ConnectionStrings:cache": srv.Addr() + ",password=" + wrong})
	rdb, err := aspireredis.Client(context.Background(), s.App, "cache")
	if err != nil {
		t.Fatal(err)
	}
	ctx, span := s.App.Tracer("test").Start(context.Background(), "request")
	s.Err(rdb.Set(ctx, "k", "v", 0).Err())
	span.End()
	var healthOut string
	waitFor(t, "the Redis check to fail", func() bool {
		healthOut = s.Health()
		return strings.Contains(healthOut, "Unhealthy")
	})
	s.Check(healthOut, wrong, srv.Password())
}
