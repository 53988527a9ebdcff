// Command plain is the baseline side of the footprint comparison: the
// same service as the goaspire one, written on net/http with the
// OpenTelemetry SDK, the OTLP exporters (traces, metrics and logs, over
// HTTP and gRPC), otelhttp, the otelslog bridge and runtime metrics,
// configured the way a plain program does: exporters only when an OTLP
// endpoint is set, SDK providers without exporters otherwise.
package main

import (
	"context"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"go.opentelemetry.io/contrib/bridges/otelslog"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/contrib/instrumentation/runtime"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploggrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploghttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/log/global"
	"go.opentelemetry.io/otel/propagation"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	shutdown, err := setupOTel(ctx)
	if err != nil {
		log.Fatal(err)
	}
	slog.SetDefault(slog.New(slog.NewJSONHandler(os.Stderr, nil)))
	logger := otelslog.NewLogger("plain")

	pricingBase := os.Getenv("services__pricing__http__0")
	pricing := &http.Client{Transport: otelhttp.NewTransport(http.DefaultTransport), Timeout: 30 * time.Second}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "Healthy") })
	mux.HandleFunc("GET /alive", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "Healthy") })
	mux.HandleFunc("GET /price/{id}", func(w http.ResponseWriter, r *http.Request) {
		req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, pricingBase+"/prices/"+r.PathValue("id"), nil)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		resp, err := pricing.Do(req)
		if err != nil {
			logger.ErrorContext(r.Context(), "pricing", "error", err)
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	})

	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	srv := &http.Server{
		Addr:              net.JoinHostPort("", port),
		Handler:           otelhttp.NewHandler(mux, "server"),
		ReadHeaderTimeout: 30 * time.Second,
	}
	ln, err := net.Listen("tcp", srv.Addr)
	if err != nil {
		log.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		log.Fatal(err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Print(err)
	}
	if err := shutdown(sctx); err != nil {
		log.Print(err)
	}
}

// setupOTel installs tracer, meter and logger providers as the globals,
// each with an OTLP exporter when an endpoint is set (over gRPC when
// OTEL_EXPORTER_OTLP_PROTOCOL is grpc), and returns their shutdown.
func setupOTel(ctx context.Context) (func(context.Context) error, error) {
	res, err := resource.New(ctx, resource.WithFromEnv(), resource.WithTelemetrySDK(), resource.WithHost(),
		resource.WithProcessRuntimeName(), resource.WithProcessRuntimeVersion())
	if err != nil {
		return nil, err
	}
	exporting := os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != ""
	grpc := strings.EqualFold(os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL"), "grpc")

	topts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	mopts := []sdkmetric.Option{sdkmetric.WithResource(res)}
	lopts := []sdklog.LoggerProviderOption{sdklog.WithResource(res)}
	if exporting {
		var (
			te sdktrace.SpanExporter
			me sdkmetric.Exporter
			le sdklog.Exporter
		)
		if grpc {
			if te, err = otlptracegrpc.New(ctx); err == nil {
				if me, err = otlpmetricgrpc.New(ctx); err == nil {
					le, err = otlploggrpc.New(ctx)
				}
			}
		} else {
			if te, err = otlptracehttp.New(ctx); err == nil {
				if me, err = otlpmetrichttp.New(ctx); err == nil {
					le, err = otlploghttp.New(ctx)
				}
			}
		}
		if err != nil {
			return nil, err
		}
		topts = append(topts, sdktrace.WithBatcher(te))
		mopts = append(mopts, sdkmetric.WithReader(sdkmetric.NewPeriodicReader(me, sdkmetric.WithProducer(runtime.NewProducer()))))
		lopts = append(lopts, sdklog.WithProcessor(sdklog.NewBatchProcessor(le)))
	}
	tp := sdktrace.NewTracerProvider(topts...)
	mp := sdkmetric.NewMeterProvider(mopts...)
	lp := sdklog.NewLoggerProvider(lopts...)
	otel.SetTracerProvider(tp)
	otel.SetMeterProvider(mp)
	global.SetLoggerProvider(lp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	if exporting {
		if err := runtime.Start(runtime.WithMeterProvider(mp)); err != nil {
			return nil, err
		}
	}
	return func(ctx context.Context) error {
		return errors.Join(tp.Shutdown(ctx), mp.Shutdown(ctx), lp.Shutdown(ctx))
	}, nil
}
