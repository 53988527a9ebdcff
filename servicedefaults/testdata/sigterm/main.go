// Command sigterm is the service TestREADMEMainSIGTERM runs: the main of
// the README's first example, without the database and the cache.
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
	defer app.Shutdown(context.Background())

	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) {
		app.Logger().InfoContext(r.Context(), "hello")
		io.WriteString(w, "hello")
	})
	// Serves on PORT; on SIGTERM drains in-flight requests and returns nil.
	if err := app.Run(ctx); err != nil {
		log.Fatal(err)
	}
}
