package aspirepostgres_test

import (
	"context"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/goaspire/goaspire/cqrs"
	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/integrations/aspirepostgres"
	"github.com/goaspire/goaspire/servicedefaults/servicedefaultstest"
	"github.com/goaspire/goaspire/testserver"
)

// TestRefusedConnection: a server that refuses the connection (wrong
// password, unknown database) is reported as such: one error record naming
// the connection, without the password; the check Unhealthy with the
// server's reason; and the background retry waits its longest interval
// instead of hammering the server.
func TestRefusedConnection(t *testing.T) {
	srv := testserver.NewPostgres(t)
	const wrong = "Wr0ngPassw0rdLeak"
	port := strconv.Itoa(srv.Port())
	for _, tc := range []struct {
		name, cs, reason string
	}{
		{"wrong password", "Host=127.0.0.1;Port=" + port + ";Username=" + srv.User() + ";Password=" + wrong + ";Database=" + srv.Database(),
			`password authentication failed for user "` + srv.User() + `" (SQLSTATE 28P01)`},
		{"unknown database", "Host=127.0.0.1;Port=" + port + ";Username=" + srv.User() + ";Password=" + srv.Password() + ";Database=nosuchdb",
			`database "nosuchdb" does not exist (SQLSTATE 3D000)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := servicedefaultstest.NewUnstarted(t, nil, map[string]string{
				"ConnectionStrings:db":                       tc.cs,
				"Aspire:Npgsql:ConnectRetry:InitialInterval": "10ms",
				"Aspire:Npgsql:ConnectRetry:MaxInterval":     "1h",
			})
			var attempts atomic.Int32
			_, err := aspirepostgres.Pool(context.Background(), app, "db", func(c *cqrs.PoolConfig) {
				c.Config.BeforeConnect = func(context.Context, *pgx.ConnConfig) error {
					attempts.Add(1)
					return nil
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			const logged = "postgres refused the connection"
			waitFor(t, "the refusal to be logged", func() bool { return strings.Contains(app.Logs.String(), logged) })

			// The retry now waits about an hour: no attempt in a second
			// (a loop starting at 10 ms and doubling would make several).
			n := attempts.Load()
			time.Sleep(time.Second)
			if more := attempts.Load() - n; more != 0 {
				t.Errorf("%d more connection attempts within a second of the refusal, want none (backed off)", more)
			}

			var e health.Entry
			for _, x := range app.Health().Run(context.Background(), nil).Entries {
				if x.Name == "postgres:db" {
					e = x
				}
			}
			if e.Status != health.Unhealthy || !strings.Contains(e.Error, tc.reason) || !strings.Contains(e.Error, `postgres "db": refused by the server`) {
				t.Errorf("postgres:db = %s %q, want Unhealthy with %q", e.Status, e.Error, tc.reason)
			}

			logs := app.Logs.String()
			if c := strings.Count(logs, logged); c != 1 {
				t.Errorf("the refusal logged %d times, want once:\n%s", c, logs)
			}
			if strings.Contains(logs, "not reachable yet") {
				t.Errorf("a refusal logged as the server being unreachable:\n%s", logs)
			}
			for _, line := range strings.Split(logs, "\n") {
				if strings.Contains(line, logged) && (!strings.Contains(line, `"db"`) || !strings.Contains(line, "ERROR")) {
					t.Errorf("the refusal record %q is not an error naming the connection", line)
				}
			}
			if strings.Contains(logs+e.Error, wrong) {
				t.Errorf("the password leaked:\n%s\n%s", logs, e.Error)
			}
		})
	}
}
