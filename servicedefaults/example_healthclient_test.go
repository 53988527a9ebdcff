package servicedefaults_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/servicedefaults"
)

// A URL without a host goes to the client's own service; the health
// check of that dependency uses HealthHTTPClient, outside the resilience
// pipeline, so a failing probe is sent once and leaves the breakers alone.
func ExampleApp_HealthHTTPClient() {
	catalog := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, r.URL.Path)
	}))
	defer catalog.Close()

	cfg := discovery.FromMap(map[string]string{"services__catalog__http__0": catalog.URL})
	app, err := servicedefaults.Add(context.Background(), nil, servicedefaults.WithConfig(cfg), servicedefaults.WithLogWriter(io.Discard))
	if err != nil {
		log.Fatal(err)
	}
	defer app.Shutdown(context.Background())

	resp, err := app.HTTPClient("catalog").Get("/products/1") // https+http://catalog/products/1
	if err != nil {
		log.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(string(body))

	if err := app.Health().Register(health.HTTP("catalog", app.HealthHTTPClient("catalog"), "/health")); err != nil {
		log.Fatal(err)
	}
	fmt.Println(app.Health().Run(context.Background(), nil).Status)
	// Output:
	// /products/1
	// Healthy
}
