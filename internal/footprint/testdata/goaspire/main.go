// Command goaspire is the goaspire side of the footprint comparison: a
// service set up by servicedefaults.Add, with one handler that calls
// another service through App.HTTPClient.
package main

import (
	"context"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/goaspire/goaspire/servicedefaults"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	mux := http.NewServeMux()
	app, err := servicedefaults.Add(ctx, mux)
	if err != nil {
		log.Fatal(err)
	}
	pricing := app.HTTPClient("pricing")
	mux.HandleFunc("GET /price/{id}", func(w http.ResponseWriter, r *http.Request) {
		req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, "/prices/"+r.PathValue("id"), nil)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		resp, err := pricing.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	})
	if err := app.Run(ctx); err != nil {
		log.Fatal(err)
	}
}
