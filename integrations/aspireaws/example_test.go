package aspireaws_test

import (
	"context"
	"log"
	"net/http"

	"github.com/goaspire/goaspire/cqrs"
	"github.com/goaspire/goaspire/integrations/aspireaws"
	"github.com/goaspire/goaspire/integrations/aspirepostgres"
	"github.com/goaspire/goaspire/servicedefaults"
)

// A service deployed to AWS with Amazon RDS for PostgreSQL and IAM
// database authentication: the connection string names the host, the
// database and the user, and no password, e.g.
//
//	ConnectionStrings__db=Host=db.abc.eu-west-1.rds.amazonaws.com;Database=shop;Username=shop_app;SSL Mode=Require
//	AWS__Region=eu-west-1
//
// and each new connection signs a 15-minute token with the task role's
// credentials. Run locally, the AppHost's connection string has a
// password, and the same code uses it.
func ExampleRDSIAMAuth() {
	mux := http.NewServeMux()
	app, err := servicedefaults.Add(context.Background(), mux)
	if err != nil {
		log.Fatal(err)
	}
	db, err := aspirepostgres.DB(context.Background(), app, "db", aspireaws.RDSIAMAuth(app))
	if err != nil {
		log.Fatal(err)
	}
	mux.HandleFunc("GET /orders/count", func(w http.ResponseWriter, r *http.Request) {
		var n int
		if err := db.QueryRow(r.Context(), "SELECT count(*) FROM orders").Scan(&n); err != nil {
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
		log.Println(n)
	})
	if err := app.Run(context.Background()); err != nil {
		log.Fatal(err)
	}
}

// Without configuration: a pool whose connections use the AWS SDK's
// standard chain (AWS_REGION, the instance or task role), installed by
// hand on a cqrs.PoolConfig.
func ExampleRDSAuth_ConnCredentials() {
	ctx := context.Background()
	auth, err := aspireaws.LoadRDSAuth(ctx, nil)
	if err != nil {
		log.Fatal(err) // names AWS:Region when no region is known
	}
	pc, err := cqrs.ParseConnectionString("Host=db.abc.eu-west-1.rds.amazonaws.com;Database=shop;Username=shop_app;SSL Mode=Require")
	if err != nil {
		log.Fatal(err)
	}
	pool, err := cqrs.NewPool(ctx, &cqrs.PoolConfig{Name: "shop", Config: pc, Credentials: auth.ConnCredentials})
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
}
