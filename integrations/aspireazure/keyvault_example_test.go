package aspireazure_test

import (
	"context"
	"log"
	"net/http"
	"time"

	"github.com/goaspire/goaspire/integrations/aspireazure"
	"github.com/goaspire/goaspire/servicedefaults"
)

// The secrets of the Key Vault an AppHost references as "secrets"
// (ConnectionStrings__secrets=https://{vault}.vault.azure.net/), read as
// configuration: the secret ApiKeys--External is ApiKeys:External. The
// App reloads them every five minutes until it shuts down.
func ExampleKeyVaultSecrets() {
	ctx := context.Background()
	secrets := aspireazure.KeyVaultSecrets("secrets")
	secrets.ReloadInterval = 5 * time.Minute
	app, err := servicedefaults.Add(ctx, http.NewServeMux(), servicedefaults.WithConfigSource(secrets))
	if err != nil {
		log.Fatal(err)
	}
	apiKey := app.Config().String("ApiKeys:External")
	_ = apiKey // use it; never log it
	if err := app.Run(ctx); err != nil {
		log.Fatal(err)
	}
}
