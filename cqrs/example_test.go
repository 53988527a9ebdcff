package cqrs_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"time"

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

func ExampleLoadConfig() {
	// What an AppHost injects for Aspire's production patterns' three connections.
	cfg := discovery.FromMap(map[string]string{
		"ConnectionStrings__db-primary":        "Host=pg-primary;Username=postgres;Password=p;Database=shop",
		"ConnectionStrings__db-replica-east":   "Host=pg-east;Username=postgres;Password=p;Database=shop",
		"ConnectionStrings__db-replica-west":   "Host=pg-west;Username=postgres;Password=p;Database=shop;Maximum Pool Size=20",
		"Aspire__Npgsql__db__Replicas__MaxLag": "00:00:05",
	})
	c, err := cqrs.LoadConfig(cfg, "db")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(c.Primary.Name, "from", c.Primary.Source, c.Primary.Config.ConnConfig.Host)
	for _, r := range c.Replicas {
		fmt.Println(r.Name, r.Config.ConnConfig.Host, r.Config.MaxConns)
	}
	fmt.Println(c.MaxLag)

	// Code may adjust the result before New opens it.
	c.ReadYourWrites = true
	c.Primary.Config.MinConns = 2

	// A bad key is a *discovery.KeyError naming it, without the password.
	_, err = cqrs.LoadConfig(discovery.FromMap(map[string]string{
		"ConnectionStrings__db": "Host=pg;Password=p;Pool Size=20",
	}), "db")
	var keyErr *discovery.KeyError
	if errors.As(err, &keyErr) {
		fmt.Println(keyErr.Key)
	}
	// Output:
	// db-primary from ConnectionStrings:db-primary pg-primary
	// db-replica-east pg-east 100
	// db-replica-west pg-west 20
	// 5s
	// ConnectionStrings:db
}

func ExampleNew() {
	ctx := context.Background()
	// Without discovery: a Config built by hand. Zero fields take their
	// defaults; the database need not be up (the pools connect lazily).
	primary, err := cqrs.ParseConnectionString("postgres://app:secret@127.0.0.1:1/shop")
	if err != nil {
		log.Fatal(err)
	}
	replica, err := cqrs.ParseConnectionString("Host=127.0.0.1;Port=1;Username=app;Password=secret;Database=shop")
	if err != nil {
		log.Fatal(err)
	}
	db, err := cqrs.New(ctx, &cqrs.Config{
		Name:     "shop",
		Primary:  cqrs.PoolConfig{Name: "shop-primary", Config: primary},
		Replicas: []cqrs.PoolConfig{{Name: "shop-replica", Config: replica}},
		MaxLag:   5 * time.Second,
		Logger:   slog.New(slog.DiscardHandler),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	fmt.Println(db.Name(), db.Replicas()[0].Name)
	for _, c := range db.HealthChecks() {
		fmt.Println(c.Name)
	}
	// Output:
	// shop shop-replica
	// postgres:shop-primary
	// postgres:shop-replica
}

func ExampleNewPool() {
	ctx := context.Background()
	cfg, err := discovery.Load()
	if err != nil {
		log.Fatal(err)
	}
	c, err := cqrs.LoadPoolConfig(cfg, "catalogdb") // ConnectionStrings__catalogdb
	if err != nil {
		log.Fatal(err)
	}
	c.WaitOnOpen = 10 * time.Second // fail unless the database answers within 10 s
	pool, err := cqrs.NewPool(ctx, c)
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	var n int
	if err := pool.QueryRow(ctx, "select count(*) from products").Scan(&n); err != nil {
		log.Print(err)
	}
}

func ExampleDB_Reader() {
	ctx := context.Background()
	cfg, err := discovery.Load()
	if err != nil {
		log.Fatal(err)
	}
	c, err := cqrs.LoadConfig(cfg, "db")
	if err != nil {
		log.Fatal(err)
	}
	db, err := cqrs.New(ctx, c)
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
	c, err := cqrs.LoadConfig(cfg, "db")
	if err != nil {
		log.Fatal(err)
	}
	db, err := cqrs.New(ctx, c)
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

func ExampleWithSession() {
	ctx := context.Background()
	cfg, err := discovery.Load()
	if err != nil {
		log.Fatal(err)
	}
	c, err := cqrs.LoadConfig(cfg, "db")
	if err != nil {
		log.Fatal(err)
	}
	db, err := cqrs.New(ctx, c)
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

func ExampleWithMinLSN() {
	ctx := context.Background()
	cfg, err := discovery.Load()
	if err != nil {
		log.Fatal(err)
	}
	c, err := cqrs.LoadConfig(cfg, "db")
	if err != nil {
		log.Fatal(err)
	}
	db, err := cqrs.New(ctx, c)
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	// Another service wrote, and sent along the position of its write
	// (cqrs.SessionLSN after the write, or pg_current_wal_insert_lsn()).
	lsn, err := cqrs.ParseLSN("16/B374D848")
	if err != nil {
		log.Fatal(err)
	}
	// The read goes to a replica that has replayed it, else to the
	// primary. (A cache.Cache does this by itself for a load that follows
	// an invalidation carrying a write's position.)
	var total int
	if err := db.QueryRow(cqrs.WithMinLSN(ctx, lsn), "select total from carts where id = $1", 7).Scan(&total); err != nil {
		log.Fatal(err)
	}
}
