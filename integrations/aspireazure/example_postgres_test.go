package aspireazure_test

import (
	"context"
	"log"
	"net/http"

	"github.com/goaspire/goaspire/cqrs"
	"github.com/goaspire/goaspire/integrations/aspireazure"
	"github.com/goaspire/goaspire/integrations/aspirepostgres"
	"github.com/goaspire/goaspire/servicedefaults"
)

// A service deployed by Aspire to Azure Container Apps with Azure Database
// for PostgreSQL (AddAzurePostgresFlexibleServer): the connection string
// has no user and no password,
//
//	ConnectionStrings__db=Host=myserver.postgres.database.azure.com;Database=db
//	AZURE_CLIENT_ID=<the service's user-assigned identity>
//	AZURE_TOKEN_CREDENTIALS=ManagedIdentityCredential
//
// and each new connection logs in as the identity with a Microsoft Entra
// ID token. Run locally, the AppHost's connection string has a password,
// and the same code uses it.
func ExamplePostgresAuth() {
	mux := http.NewServeMux()
	app, err := servicedefaults.Add(context.Background(), mux)
	if err != nil {
		log.Fatal(err)
	}
	db, err := aspirepostgres.DB(context.Background(), app, "db", aspireazure.PostgresAuth(app))
	if err != nil {
		log.Fatal(err)
	}
	mux.HandleFunc("POST /orders", func(w http.ResponseWriter, r *http.Request) {
		if _, err := db.Exec(r.Context(), "INSERT INTO orders DEFAULT VALUES"); err != nil {
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusCreated)
	})
	if err := app.Run(context.Background()); err != nil {
		log.Fatal(err)
	}
}

// A credential of your own (here the App's) on a pool built by hand.
func ExamplePostgresCredentials() {
	ctx := context.Background()
	app, err := servicedefaults.Add(ctx, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer app.Shutdown(ctx)
	cred, err := aspireazure.Credential(ctx, app)
	if err != nil {
		log.Fatal(err)
	}
	pc, err := cqrs.ParseConnectionString("Host=myserver.postgres.database.azure.com;Database=db;Username=orders-api-id;SSL Mode=Require")
	if err != nil {
		log.Fatal(err)
	}
	pool, err := cqrs.NewPool(ctx, &cqrs.PoolConfig{Name: "db", Config: pc, Credentials: aspireazure.PostgresCredentials(cred)})
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
}
