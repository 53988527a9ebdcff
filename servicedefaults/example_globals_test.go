package servicedefaults_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"net/http"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/servicedefaults"
)

// Two services in one process, each with its own telemetry: neither
// touches the OpenTelemetry globals or slog's default, and every client an
// App makes reports through that App. A library of your own gets the
// App's providers explicitly.
func ExampleWithoutGlobals() {
	before := slog.Default()
	open := func(name, otlp string) *servicedefaults.App {
		app, err := servicedefaults.Add(context.Background(), http.NewServeMux(),
			servicedefaults.WithoutGlobals(),
			servicedefaults.WithConfig(discovery.FromMap(map[string]string{
				"OTEL_SERVICE_NAME":           name,
				"OTEL_EXPORTER_OTLP_ENDPOINT": otlp,
			})))
		if err != nil {
			log.Fatal(err)
		}
		return app
	}
	orders := open("orders", "")
	defer orders.Shutdown(context.Background())
	billing := open("billing", "")
	defer billing.Shutdown(context.Background())

	tracer := billing.TracerProvider().Tracer("example.com/billing/ledger")
	_, span := tracer.Start(context.Background(), "post entry")
	span.End()
	orders.Logger().Info("order placed")
	fmt.Println("slog's default untouched:", slog.Default() == before)
	// Output: slog's default untouched: true
}
