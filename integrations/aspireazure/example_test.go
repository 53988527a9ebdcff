package aspireazure_test

import (
	"context"
	"fmt"
	"io"
	"log"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/integrations/aspireazure"
	"github.com/goaspire/goaspire/integrations/aspireredis"
	"github.com/goaspire/goaspire/servicedefaults"
)

func ExampleCredential() {
	ctx := context.Background()
	// As Aspire's Azure deployment configures a service; on App Service and
	// Container Apps the platform adds IDENTITY_ENDPOINT and IDENTITY_HEADER.
	cfg := discovery.FromMap(map[string]string{
		"AZURE_TOKEN_CREDENTIALS": "ManagedIdentityCredential",
		"AZURE_CLIENT_ID":         "9f2c4a8e-0000-0000-0000-000000000000",
	})
	app, err := servicedefaults.Add(ctx, nil, servicedefaults.WithConfig(cfg), servicedefaults.WithLogWriter(io.Discard))
	if err != nil {
		log.Fatal(err)
	}
	defer app.Shutdown(ctx)

	cred, err := aspireazure.Credential(ctx, app) // one per App, shared by its clients
	if err != nil {
		log.Fatal(err)
	}
	tok, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{aspireazure.RedisScope}})
	if err != nil {
		log.Fatal(err)
	}
	claims, err := aspireazure.ParseClaims(tok.Token)
	if err != nil {
		log.Fatal(err)
	}
	user, err := claims.RedisUser() // the identity's object ID
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("AUTH", user, "<token>")
}

func ExampleNewCredential() {
	_, err := aspireazure.NewCredential(discovery.FromMap(map[string]string{"AZURE_TOKEN_CREDENTIALS": "ManagedIdentity"}))
	fmt.Println(err)
	// Output:
	// config key "AZURE_TOKEN_CREDENTIALS": unknown credential "ManagedIdentity": want dev, prod, EnvironmentCredential, WorkloadIdentityCredential, ManagedIdentityCredential, AzureCLICredential, AzureDeveloperCLICredential or AzurePowerShellCredential
}

func ExampleParseClaims() {
	// A token's payload, as Microsoft Entra ID issues it to a user-assigned
	// managed identity (header and signature elided).
	token := "e30.eyJvaWQiOiJiMmM0IiwieG1zX21pcmlkIjoiL3N1YnNjcmlwdGlvbnMvcy9yZXNvdXJjZWdyb3Vwcy9yZy9wcm92aWRlcnMvTWljcm9zb2Z0Lk1hbmFnZWRJZGVudGl0eS91c2VyQXNzaWduZWRJZGVudGl0aWVzL29yZGVycy1hcGkifQ.c2ln"
	claims, err := aspireazure.ParseClaims(token)
	if err != nil {
		log.Fatal(err)
	}
	pg, _ := claims.PostgresUser()
	redis, _ := claims.RedisUser()
	fmt.Println(pg, redis)
	// Output: orders-api b2c4
}

func ExampleRedisAuth() {
	ctx := context.Background()
	// As Aspire's Azure deployment configures a service referencing Azure
	// Managed Redis in Entra mode: no password, the managed identity's
	// client ID (the platform adds IDENTITY_ENDPOINT and IDENTITY_HEADER).
	cfg := discovery.FromMap(map[string]string{
		"ConnectionStrings:cache": "mycache.westeurope.redis.azure.net:10000,ssl=true",
		"AZURE_TOKEN_CREDENTIALS": "ManagedIdentityCredential",
		"AZURE_CLIENT_ID":         "9f2c4a8e-0000-0000-0000-000000000000",
	})
	app, err := servicedefaults.Add(ctx, nil, servicedefaults.WithConfig(cfg), servicedefaults.WithLogWriter(io.Discard))
	if err != nil {
		log.Fatal(err)
	}
	defer app.Shutdown(ctx)

	// Open the connection with RedisAuth before making caches on it: they
	// share its client.
	rdb, err := aspireredis.Client(ctx, app, "cache", aspireazure.RedisAuth(app))
	if err != nil {
		log.Fatal(err)
	}
	products, err := aspireredis.NewCache[string](ctx, app, "cache", "product")
	if err != nil {
		log.Fatal(err)
	}
	_, _ = rdb, products
}
