package aspirepostgres_test

import (
	"context"
	"log"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/goaspire/goaspire/cqrs"
	"github.com/goaspire/goaspire/integrations/aspirepostgres"
	"github.com/goaspire/goaspire/servicedefaults"
)

// A service with Aspire's primary/replica database "db"
// (ConnectionStrings__db-primary, __db-replica-east, ...): reads go to
// the replicas, writes to the primary. With
// Aspire:Npgsql:ConnectRetry:WaitOnOpen set, the open waits for the
// primary, bounded here by ctx; other names open meanwhile.
func ExampleDB() {
	mux := http.NewServeMux()
	app, err := servicedefaults.Add(context.Background(), mux)
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := aspirepostgres.DB(ctx, app, "db")
	if err != nil {
		log.Fatal(err) // names the key or connection; context.DeadlineExceeded when ctx ran out
	}
	mux.HandleFunc("GET /products/{id}", func(w http.ResponseWriter, r *http.Request) {
		var name string
		err := db.QueryRow(r.Context(), "SELECT name FROM products WHERE id = $1", r.PathValue("id")).Scan(&name)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte(name))
	})
	if err := app.Run(context.Background()); err != nil { // closes db at shutdown
		log.Fatal(err)
	}
}

// Settings configuration cannot express, set in code before the DB
// opens: a hook on every new connection of the primary and of each
// replica, the primary's pool size, read-your-writes for every read, and
// a wait for the primary at start-up.
func ExampleDB_configure() {
	app, err := servicedefaults.Add(context.Background(), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer app.Shutdown(context.Background())

	setSearchPath := func(ctx context.Context, conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, "SET search_path TO catalog, public")
		return err
	}
	db, err := aspirepostgres.DB(context.Background(), app, "db", func(c *cqrs.Config) {
		c.Primary.Config.AfterConnect = setSearchPath
		for i := range c.Replicas {
			c.Replicas[i].Config.AfterConnect = setSearchPath
		}
		c.Primary.Config.MaxConns = 20
		c.ReadYourWrites = true
		c.WaitOnOpen = 10 * time.Second
	})
	if err != nil {
		log.Fatal(err)
	}
	_ = db
}

// A worker with one database and no read/write split: the *cqrs.Pool
// embeds *pgxpool.Pool. configure sizes the pool and waits for the first
// connection.
func ExamplePool() {
	app, err := servicedefaults.Add(context.Background(), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer app.Shutdown(context.Background())

	ctx := context.Background()
	pool, err := aspirepostgres.Pool(ctx, app, "jobs", func(c *cqrs.PoolConfig) {
		c.Config.MaxConns = 8
		c.WaitOnOpen = 10 * time.Second
	})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "UPDATE job_totals SET processed = processed + 1"); err != nil {
		log.Print(err)
	}
}
