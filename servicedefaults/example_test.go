package servicedefaults_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/servicedefaults"
)

func ExampleAdd() {
	ctx := context.Background()
	mux := http.NewServeMux()

	// A real service calls servicedefaults.Add(ctx, mux), which reads the
	// environment the AppHost injects (OTEL_*, PORT, ConnectionStrings__*,
	// services__*). Here the configuration is given explicitly.
	cfg := discovery.FromMap(map[string]string{"PORT": "8080"})
	app, err := servicedefaults.Add(ctx, mux, servicedefaults.WithConfig(cfg), servicedefaults.WithLogWriter(io.Discard))
	if err != nil {
		log.Fatal(err)
	}
	defer app.Shutdown(context.Background())

	// The service's own telemetry, as Aspire's production patterns' orders service has it.
	meter := app.Meter("example/orders")
	created, _ := meter.Int64Counter("orders.created")
	value, _ := meter.Float64Histogram("orders.value")
	tracer := app.Tracer("example/orders")

	// Its own health check: /health runs it, /alive (live checks only)
	// does not.
	_ = app.Health().Register(health.Check{
		Name:  "queue",
		Tags:  []string{health.TagReady},
		Check: func(context.Context) error { return nil },
	})

	mux.HandleFunc("POST /orders", func(w http.ResponseWriter, r *http.Request) {
		ctx, span := tracer.Start(r.Context(), "create order")
		defer span.End()
		created.Add(ctx, 1)
		value.Record(ctx, 42.5)
		slog.InfoContext(ctx, "order created") // carries trace_id and span_id
		w.WriteHeader(http.StatusCreated)
	})

	// app.Run(ctx) would listen on PORT and drain on SIGTERM; a test
	// server stands in for it here.
	srv := httptest.NewServer(app.Handler())
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/orders", "application/json", nil)
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	fmt.Println(resp.Status)

	resp, err = http.Get(srv.URL + "/health")
	if err != nil {
		log.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(resp.StatusCode, string(body))
	// Output:
	// 201 Created
	// 200 Healthy
}

// A service calling another by its logical name: the AppHost injects the
// callee's endpoints (services__catalog__http__0 here, pointing at a test
// server), and the client resolves them on every attempt, retries
// transient failures and propagates the trace context.
func ExampleApp_HTTPClient() {
	var calls atomic.Int32
	catalog := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 { // one transient failure, retried by the client
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, "product ", strings.TrimPrefix(r.URL.Path, "/products/"))
	}))
	defer catalog.Close()

	cfg := discovery.FromMap(map[string]string{"services__catalog__http__0": catalog.URL})
	app, err := servicedefaults.Add(context.Background(), nil, servicedefaults.WithConfig(cfg), servicedefaults.WithLogWriter(io.Discard))
	if err != nil {
		log.Fatal(err)
	}
	defer app.Shutdown(context.Background())

	client := app.HTTPClient("catalog")
	resp, err := client.Get("https+http://catalog/products/7")
	if err != nil {
		log.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(resp.StatusCode, string(body))
	// Output:
	// 200 product 7
}
