// Package integrations_test holds the tests that span the integration
// packages.
package integrations_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/goaspire/goaspire/cqrs"
	"github.com/goaspire/goaspire/integrations/aspirenats"
	"github.com/goaspire/goaspire/integrations/aspirepostgres"
	"github.com/goaspire/goaspire/integrations/aspirerabbitmq"
	"github.com/goaspire/goaspire/integrations/aspireredis"
	"github.com/goaspire/goaspire/servicedefaults/servicedefaultstest"
)

type product struct{}

// TestErrorsNameOnce: opening each integration against a missing or bad
// configuration, or a server that is down when the open waits for it,
// fails with an error that names the connection once: the App's layer
// does not repeat the client package's prefix.
func TestErrorsNameOnce(t *testing.T) {
	down := "127.0.0.1:1"
	app := servicedefaultstest.NewUnstarted(t, nil, map[string]string{
		"ConnectionStrings:badredis":                         "nohost:notaport",
		"ConnectionStrings:downredis":                        down + ",abortConnect=true,connectTimeout=200",
		"ConnectionStrings:badpg":                            "Host=x;Bogus=1",
		"ConnectionStrings:downpg":                           "Host=127.0.0.1;Port=1;Username=u;Password=p;Database=d",
		"Aspire:Npgsql:downpg:ConnectRetry:WaitOnOpen":       "300ms",
		"ConnectionStrings:badmq":                            "http://x",
		"ConnectionStrings:downmq":                           "amqp://guest:guest@" + down + "/",
		"Aspire:RabbitMQ:Client:downmq:MaxConnectRetryCount": "0",
		"Aspire:RabbitMQ:Client:downmq:WaitOnOpen":           "300ms", // else Client connects in the background, without an error
		"ConnectionStrings:badnats":                          "http://x",
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name string
		open func() error
	}{
		{"missing", func() error { _, err := aspireredis.Client(ctx, app, "missing"); return err }},
		{"badredis", func() error { _, err := aspireredis.Client(ctx, app, "badredis"); return err }},
		{"downredis", func() error { _, err := aspireredis.Client(ctx, app, "downredis"); return err }},
		{"missing", func() error { _, err := aspireredis.NewCache[product](ctx, app, "missing", "c"); return err }},
		{"downredis", func() error { _, err := aspireredis.NewCache[product](ctx, app, "downredis", "c"); return err }},
		{"missing", func() error { _, err := aspirepostgres.DB(ctx, app, "missing"); return err }},
		{"missing", func() error { _, err := aspirepostgres.Pool(ctx, app, "missing"); return err }},
		{"badpg", func() error { _, err := aspirepostgres.Pool(ctx, app, "badpg"); return err }},
		{"badpg", func() error { _, err := aspirepostgres.DB(ctx, app, "badpg", func(*cqrs.Config) {}); return err }},
		{"downpg", func() error { _, err := aspirepostgres.Pool(ctx, app, "downpg"); return err }},
		{"downpg", func() error { _, err := aspirepostgres.DB(ctx, app, "downpg"); return err }},
		{"missing", func() error { _, err := aspirerabbitmq.Client(ctx, app, "missing"); return err }},
		{"badmq", func() error { _, err := aspirerabbitmq.Client(ctx, app, "badmq"); return err }},
		{"downmq", func() error { _, err := aspirerabbitmq.Client(ctx, app, "downmq"); return err }},
		{"missing", func() error { _, err := aspirenats.Conn(ctx, app, "missing"); return err }},
		{"badnats", func() error { _, err := aspirenats.Conn(ctx, app, "badnats"); return err }},
	} {
		err := tc.open()
		if err == nil {
			t.Errorf("%s: no error", tc.name)
			continue
		}
		if n := strings.Count(err.Error(), `"`+tc.name+`"`); n != 1 {
			t.Errorf("%s: named %d times: %v", tc.name, n, err)
		}
	}
}
