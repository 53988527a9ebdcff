package servicedefaults_test

import (
	"context"
	"strings"
	"testing"

	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/testserver"
)

func checkNames(checks []health.Check) string {
	var names []string
	for _, c := range checks {
		names = append(names, c.Name)
	}
	return strings.Join(names, ",")
}

// TestDB opens Aspire's production patterns' primary/replica database through the App and
// checks that it is shared, health-checked and closed by Shutdown.
func TestDB(t *testing.T) {
	primary := testserver.NewPostgres(t)
	replica := primary.NewReplica(t)
	app, _ := newApp(t, map[string]string{
		"ConnectionStrings__db-primary":            primary.ConnectionString(),
		"ConnectionStrings__db-replica-east":       replica.ConnectionString(),
		"Aspire__Npgsql__ConnectRetry__WaitOnOpen": "10s",
	}, nil)

	db, err := app.DB("db")
	if err != nil {
		t.Fatal(err)
	}
	again, err := app.DB("db")
	if err != nil || again != db {
		t.Fatalf("second DB(db) = %p, %v; want the same %p", again, err, db)
	}
	ctx := context.Background()
	if _, err := db.Exec(ctx, "CREATE TABLE t (id int)"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Keyed("replica"); err != nil {
		t.Fatal(err)
	}
	names := checkNames(app.Health().Checks())
	for _, want := range []string{"db-primary", "db-replica-east"} {
		if !strings.Contains(names, want) {
			t.Errorf("health checks %q lack %q", names, want)
		}
	}

	pool, err := app.Postgres("db-primary")
	if err != nil {
		t.Fatal(err)
	}
	if err := pool.Ping(ctx); err != nil {
		t.Fatal(err)
	}

	if err := app.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pool.Ping(ctx); err == nil {
		t.Error("the pool still works after Shutdown")
	}
}

func TestDBErrors(t *testing.T) {
	tests := []struct {
		name   string
		values map[string]string
		want   string
	}{
		{"missing", nil, "db"},
		{"unknown keyword", map[string]string{"ConnectionStrings__db": "Host=h;Pasword=hunter2"}, "Pasword"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app, _ := newApp(t, tt.values, nil)
			_, err := app.DB("db")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("DB error = %v, want one naming %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("DB error leaks the password: %v", err)
			}
		})
	}
}
