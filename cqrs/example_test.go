package cqrs_test

import (
	"context"
	"fmt"
	"log"
	"net/http"

	"github.com/goaspire/goaspire/cqrs"
	"github.com/goaspire/goaspire/discovery"
)

func ExampleParseConnectionString() {
	c, err := cqrs.ParseConnectionString(
		"Host=pg1:5433,pg2;Username=app;Password=secret;Database=shop;SSL Mode=Require;Maximum Pool Size=20;Timeout=5")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(c.ConnConfig.Host, c.ConnConfig.Port, c.ConnConfig.User, c.ConnConfig.Database)
	fmt.Println(c.MaxConns, c.ConnConfig.ConnectTimeout)

	_, err = cqrs.ParseConnectionString("Host=pg;Password=secret;Port=5432;Pool Size=20")
	fmt.Println(err)
	// Output:
	// pg1 5433 app shop
	// 20 5s
	// cqrs: connection string keyword "Pool Size": unknown keyword
}

func ExampleOpenDB() {
	ctx := context.Background()
	// What an AppHost injects for the seed's three connections.
	cfg := discovery.FromMap(map[string]string{
		"ConnectionStrings__db-primary":        "Host=pg-primary;Username=postgres;Password=p;Database=shop",
		"ConnectionStrings__db-replica-east":   "Host=pg-east;Username=postgres;Password=p;Database=shop",
		"ConnectionStrings__db-replica-west":   "Host=pg-west;Username=postgres;Password=p;Database=shop",
		"Aspire__Npgsql__db__Replicas__MaxLag": "00:00:05",
	})
	db, err := cqrs.OpenDB(ctx, cfg, "db")
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	// Writes go to the primary, reads to a replica in rotation (or the
	// primary when none is).
	if _, err := db.Exec(ctx, "insert into products (id, name) values ($1, $2)", 1, "tea"); err != nil {
		log.Fatal(err)
	}
	var name string
	if err := db.QueryRow(ctx, "select name from products where id = $1", 1).Scan(&name); err != nil {
		log.Fatal(err)
	}

	// The seed's keyed handles.
	primary, _ := db.Keyed("primary")
	replica, _ := db.Keyed("replica")
	_, _ = primary, replica
}

func ExampleDB_Reader() {
	ctx := context.Background()
	cfg, err := discovery.Load()
	if err != nil {
		log.Fatal(err)
	}
	db, err := cqrs.OpenDB(ctx, cfg, "db")
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	// With sqlc (sql_package: pgx/v5), each handle is a DBTX:
	//
	//	reads, writes := queries.New(db.Reader()), queries.New(db.Writer())
	//
	// and queries.New(db) sends each statement where its text says it
	// belongs. Here the handles are used directly.
	reader, writer := db.Reader(), db.Writer()
	sctx := cqrs.WithSession(ctx)
	var id int64
	err = writer.QueryRow(sctx, "insert into products (name) values ($1) returning id", "tea").Scan(&id)
	if err != nil {
		log.Fatal(err)
	}
	// In the session, the read sees the insert: it goes to a replica that
	// has replayed it, or to the primary.
	var name string
	if err := reader.QueryRow(sctx, "select name from products where id = $1", id).Scan(&name); err != nil {
		log.Fatal(err)
	}
}

func ExampleWithPrimary() {
	ctx := context.Background()
	cfg, err := discovery.Load()
	if err != nil {
		log.Fatal(err)
	}
	db, err := cqrs.OpenDB(ctx, cfg, "db")
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	// claim_ticket() updates a table, which its SELECT does not show: on a
	// replica it would fail with SQLSTATE 25006. WithPrimary sends it to
	// the primary.
	var ticket int64
	if err := db.QueryRow(cqrs.WithPrimary(ctx), "select claim_ticket()").Scan(&ticket); err != nil {
		log.Fatal(err)
	}
	// An INSERT ... RETURNING needs nothing: DB.QueryRow sends what is not
	// read-only to the primary.
	if err := db.QueryRow(ctx, "insert into tickets default values returning id").Scan(&ticket); err != nil {
		log.Fatal(err)
	}
}

func ExampleOpenPool() {
	ctx := context.Background()
	cfg, err := discovery.Load()
	if err != nil {
		log.Fatal(err)
	}
	pool, err := cqrs.OpenPool(ctx, cfg, "catalogdb") // ConnectionStrings__catalogdb
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	var n int
	if err := pool.QueryRow(ctx, "select count(*) from products").Scan(&n); err != nil {
		log.Print(err)
	}
}

func ExampleWithSession() {
	ctx := context.Background()
	cfg, err := discovery.Load()
	if err != nil {
		log.Fatal(err)
	}
	db, err := cqrs.OpenDB(ctx, cfg, "db")
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	// Within a session, a read after a write sees the write: it goes to a
	// replica that has replayed it, or else to the primary.
	sctx := cqrs.WithSession(ctx)
	if _, err := db.Exec(sctx, "update carts set total = total + 1 where id = $1", 7); err != nil {
		log.Fatal(err)
	}
	var total int
	if err := db.QueryRow(sctx, "select total from carts where id = $1", 7).Scan(&total); err != nil {
		log.Fatal(err)
	}
}

func ExampleMiddleware() {
	mux := http.NewServeMux()
	// Every request is a read-your-writes session.
	log.Fatal(http.ListenAndServe(":8080", cqrs.Middleware(mux)))
}
