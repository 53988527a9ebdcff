package servicedefaults_test

import (
	"context"
	"net/http"
	"regexp"
	"testing"
	"time"

	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"

	"github.com/goaspire/goaspire/internal/otlptest"
	"github.com/goaspire/goaspire/servicedefaults/servicedefaultstest"
)

// uuidV4 is the canonical form of a random UUID.
var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// received is one App's telemetry as the receiver got it: the resource of
// each signal.
type received struct{ traces, metrics, logs []*resourcepb.Resource }

// receivedFrom sorts the receiver's resources by service.instance.id.
func receivedFrom(rcv *otlptest.Receiver) map[string]*received {
	out := map[string]*received{}
	at := func(res *resourcepb.Resource) *received {
		id := otlptest.ResourceAttr(res, "service.instance.id")
		if out[id] == nil {
			out[id] = &received{}
		}
		return out[id]
	}
	for _, s := range rcv.Spans() {
		r := at(s.Resource)
		r.traces = append(r.traces, s.Resource)
	}
	for _, m := range rcv.Metrics() {
		r := at(m.Resource)
		r.metrics = append(r.metrics, m.Resource)
	}
	for _, l := range rcv.Logs() {
		r := at(l.Resource)
		r.logs = append(r.logs, l.Resource)
	}
	return out
}

// TestDeployEnvironmentReplicas runs two replicas of a service with
// exactly the environment aspire publish gives a service deployed to
// Docker Compose or Kubernetes: the dashboard's OTLP/gRPC endpoint, the
// protocol and the service name, nothing else (no API key, no resource
// attributes, no export intervals). Both export all three signals, each
// under its own service.instance.id, so the dashboard shows two replicas.
func TestDeployEnvironmentReplicas(t *testing.T) {
	rcv := otlptest.Start(t)
	env := map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": rcv.GRPCEndpoint,
		"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
		"OTEL_SERVICE_NAME":           "apiservice",
	}
	for i := range 2 {
		mux := http.NewServeMux()
		app := servicedefaultstest.NewUnstarted(t, mux, env)
		mux.HandleFunc("GET /weather", func(w http.ResponseWriter, r *http.Request) {
			app.Logger().InfoContext(r.Context(), "forecast served")
		})
		app.Start()
		resp, err := http.Get(app.URL + "/weather")
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
		resp.Body.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err = app.Shutdown(ctx) // flushes every signal
		cancel()
		if err != nil {
			t.Fatalf("replica %d: Shutdown: %v", i, err)
		}
	}

	got := receivedFrom(rcv)
	if len(got) != 2 {
		t.Fatalf("telemetry arrived under %d service.instance.id values, want 2: %q", len(got), keys(got))
	}
	for id, r := range got {
		if !uuidV4.MatchString(id) {
			t.Errorf("service.instance.id = %q, want a random UUID", id)
		}
		if len(r.traces) == 0 || len(r.metrics) == 0 || len(r.logs) == 0 {
			t.Errorf("replica %s: %d spans, %d metrics, %d log records; want each signal", id, len(r.traces), len(r.metrics), len(r.logs))
		}
		for _, res := range append(append(r.traces, r.metrics...), r.logs...) {
			if name := otlptest.ResourceAttr(res, "service.name"); name != "apiservice" {
				t.Errorf("replica %s: service.name = %q", id, name)
			}
		}
	}
}

// TestResourceOnlyFromConfiguration: the process's OTEL_RESOURCE_ATTRIBUTES
// and OTEL_SERVICE_NAME, which the SDK merges into every provider's
// resource, reach no signal of an App whose configuration says otherwise;
// a configured service.instance.id is kept.
func TestResourceOnlyFromConfiguration(t *testing.T) {
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "x=y,service.instance.id=fromenv")
	t.Setenv("OTEL_SERVICE_NAME", "fromenv")
	rcv := otlptest.Start(t)
	mux := http.NewServeMux()
	app := servicedefaultstest.NewUnstarted(t, mux, map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": rcv.GRPCEndpoint,
		"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
		"OTEL_SERVICE_NAME":           "fromconfig",
		"OTEL_RESOURCE_ATTRIBUTES":    "service.instance.id=replica-1",
	})
	mux.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) {
		app.Logger().InfoContext(r.Context(), "served")
	})
	app.Start()
	resp, err := http.Get(app.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := app.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}

	got := receivedFrom(rcv)
	r := got["replica-1"]
	if len(got) != 1 || r == nil {
		t.Fatalf("telemetry arrived under service.instance.id %q, want only replica-1", keys(got))
	}
	if len(r.traces) == 0 || len(r.metrics) == 0 || len(r.logs) == 0 {
		t.Fatalf("%d spans, %d metrics, %d log records; want each signal", len(r.traces), len(r.metrics), len(r.logs))
	}
	for sig, list := range map[string][]*resourcepb.Resource{"traces": r.traces, "metrics": r.metrics, "logs": r.logs} {
		res := list[0]
		if name := otlptest.ResourceAttr(res, "service.name"); name != "fromconfig" {
			t.Errorf("%s: service.name = %q, want fromconfig", sig, name)
		}
		if _, ok := otlptest.Attr(res.GetAttributes(), "x"); ok {
			t.Errorf("%s: resource has x from the process environment", sig)
		}
		if otlptest.ResourceAttr(res, "telemetry.sdk.language") != "go" || otlptest.ResourceAttr(res, "host.name") == "" {
			t.Errorf("%s: resource lacks the detected attributes: %v", sig, res.GetAttributes())
		}
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
