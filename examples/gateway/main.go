// Command gateway is the example API gateway: it calls the catalog only by
// its logical name, https+http://catalog, through App.HTTPClient, so
// service discovery picks the instances the AppHost injected and the
// standard resilience pipeline retries, times out and breaks circuits for
// it.
//
// Endpoints:
//
//	GET  /api/products/{id}   proxied to the catalog
//	PUT  /api/products/{id}   proxied (PUT is idempotent, so it is retried)
//	POST /api/orders          proxied with an Idempotency-Key, so it is retried safely
//	GET  /api/users/{id}      the users service's GetUser, over gRPC (users.go)
//	GET  /stats               the circuit breaker state of each catalog instance
//	GET  /health, /alive      probes
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"github.com/goaspire/goaspire/examples/internal/httpapi"
	"github.com/goaspire/goaspire/resilience"
	"github.com/goaspire/goaspire/servicedefaults"
)

// catalogURL is the catalog's logical address. "https+http" prefers an
// https endpoint when the AppHost gives one and falls back to http.
const catalogURL = "https+http://catalog"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context) error {
	mux := http.NewServeMux()
	app, err := servicedefaults.Add(ctx, mux)
	if err != nil {
		return err
	}
	defer app.Shutdown(context.Background())

	g := &gateway{app: app, catalog: app.HTTPClient("catalog")}
	mux.HandleFunc("GET /api/products/{id}", g.proxy("/products/"))
	mux.HandleFunc("PUT /api/products/{id}", g.proxy("/products/"))
	mux.HandleFunc("POST /api/orders", g.proxy("/orders"))
	mux.HandleFunc("GET /stats", g.stats)
	users, err := newUsersAPI(ctx, app)
	if err != nil {
		return err
	}
	mux.HandleFunc("GET /api/users/{id}", users.get)
	return app.Run(ctx)
}

type gateway struct {
	app     *servicedefaults.App
	catalog *http.Client
}

// proxy forwards the request to the catalog path (plus the {id} when the
// route has one) and copies the answer back.
func (g *gateway) proxy(path string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		target := catalogURL + path + r.PathValue("id")
		// Buffer the body: http.NewRequest then sets GetBody, so the
		// resilience pipeline can send it again on a retry.
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			httpapi.WriteError(w, http.StatusBadRequest, "invalid_request", "request body too large or unreadable")
			return
		}
		var rd io.Reader
		if len(body) > 0 {
			rd = bytes.NewReader(body)
		}
		req, err := http.NewRequestWithContext(r.Context(), r.Method, target, rd)
		if err != nil {
			httpapi.WriteError(w, http.StatusBadRequest, "invalid_request", "cannot build the catalog request")
			return
		}
		req.Header.Set("Content-Type", r.Header.Get("Content-Type"))
		req.Header.Set("Accept", "application/json")
		if r.Method == http.MethodPost {
			key := r.Header.Get("Idempotency-Key")
			if key == "" {
				key = newKey()
			}
			// With a key the catalog answers a repeated order with the
			// first one, so the pipeline may retry the POST.
			req.Header.Set("Idempotency-Key", key)
		}

		resp, err := g.catalog.Do(req)
		if err != nil {
			status, code := http.StatusBadGateway, "catalog_unavailable"
			if errors.Is(err, resilience.ErrCircuitOpen) {
				status, code = http.StatusServiceUnavailable, "catalog_circuit_open"
			}
			g.app.Logger().WarnContext(r.Context(), "calling the catalog failed", "error", err)
			httpapi.WriteError(w, status, code, "the catalog did not answer")
			return
		}
		defer resp.Body.Close()
		for _, h := range []string{"Content-Type", "X-Served-By"} {
			if v := resp.Header.Get(h); v != "" {
				w.Header().Set(h, v)
			}
		}
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	}
}

// stats answers the state of the circuit breaker of every catalog
// instance discovery knows, for the launcher's scenario.
func (g *gateway) stats(w http.ResponseWriter, r *http.Request) {
	circuits := map[string]string{}
	u, _ := url.Parse(catalogURL)
	if eps, err := g.app.Resolver().Endpoints(u); err == nil {
		for _, ep := range eps {
			circuits[ep.Host] = g.app.CircuitState("catalog", ep.Host).String()
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"circuits": circuits})
}

func newKey() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
