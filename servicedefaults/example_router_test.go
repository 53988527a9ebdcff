package servicedefaults_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"

	"github.com/go-chi/chi/v5"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/servicedefaults"
)

// Any router works: /health and /alive are served in front of it, and
// WithRouteFunc names spans and metrics after its routes. For chi, the
// route is the pattern the router matches.
func ExampleWithRouteFunc() {
	router := chi.NewRouter()
	router.Get("/orders/{id}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "order %s", chi.URLParam(r, "id"))
	})
	app, err := servicedefaults.Add(context.Background(), router,
		servicedefaults.WithRouteFunc(func(r *http.Request) string {
			return router.Find(chi.NewRouteContext(), r.Method, r.URL.Path) // "/orders/{id}"
		}),
		servicedefaults.WithConfig(discovery.FromMap(nil)), servicedefaults.WithLogWriter(io.Discard))
	if err != nil {
		log.Fatal(err)
	}
	defer app.Shutdown(context.Background())

	srv := httptest.NewServer(app.Handler())
	defer srv.Close()
	for _, path := range []string{"/orders/7", "/health"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			log.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(path, resp.StatusCode, string(body))
	}
	// Output:
	// /orders/7 200 order 7
	// /health 200 Healthy
}
