package servicedefaults_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/internal/otlptest"
	"github.com/goaspire/goaspire/servicedefaults"
)

// TestRouters serves routes through a ServeMux, a chi router and a plain
// handler with a route function, and checks at an OTLP receiver that
// each request's server span is named after its route with http.route
// set, that its duration point carries the route, and that the health
// endpoints answer in front of the router, untraced.
func TestRouters(t *testing.T) {
	reply := func(w http.ResponseWriter, s string) { _, _ = io.WriteString(w, s) }
	tests := []struct {
		name    string
		handler func() http.Handler
		opts    []servicedefaults.Option
		path    string // requested
		body    string // the handler's answer
		route   string // expected http.route; "" for none
	}{
		{
			name: "ServeMux",
			handler: func() http.Handler {
				mux := http.NewServeMux()
				mux.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) { reply(w, r.PathValue("id")) })
				return mux
			},
			path: "/items/7", body: "7", route: "/items/{id}",
		},
		{
			name:    "chi",
			handler: func() http.Handler { return chiRouter(reply) },
			opts:    []servicedefaults.Option{chiRoutes},
			path:    "/items/7", body: "7", route: "/items/{id}",
		},
		{
			name:    "chi subrouter",
			handler: func() http.Handler { return chiRouter(reply) },
			opts:    []servicedefaults.Option{chiRoutes},
			path:    "/orders/9/lines", body: "lines of 9", route: "/orders/{id}/lines",
		},
		{
			name:    "chi unmatched",
			handler: func() http.Handler { return chiRouter(reply) },
			opts:    []servicedefaults.Option{chiRoutes},
			path:    "/nowhere", body: "404 page not found\n", route: "",
		},
		{
			name: "user function",
			handler: func() http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					reply(w, strings.TrimPrefix(r.URL.Path, "/items/"))
				})
			},
			opts: []servicedefaults.Option{servicedefaults.WithRouteFunc(func(r *http.Request) string {
				if strings.HasPrefix(r.URL.Path, "/items/") {
					return "/items/:id"
				}
				return ""
			})},
			path: "/items/7", body: "7", route: "/items/:id",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rcv := otlptest.Start(t)
			app, _ := newApp(t, with(slowExport, "OTEL_EXPORTER_OTLP_ENDPOINT", rcv.HTTPEndpoint), tt.handler(), tt.opts...)
			base := serve(t, app)
			if _, body := get(t, nil, base+tt.path); body != tt.body {
				t.Fatalf("GET %s = %q, want %q", tt.path, body, tt.body)
			}
			for _, p := range []string{servicedefaults.HealthPath, servicedefaults.AlivePath} {
				if code, body := get(t, nil, base+p); code != 200 || body != "Healthy" {
					t.Fatalf("GET %s = %d %q", p, code, body)
				}
			}
			if code, _ := do(t, nil, "POST", base+servicedefaults.HealthPath); code != http.StatusMethodNotAllowed {
				t.Errorf("POST /health = %d, want 405", code)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := app.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}

			spans := rcv.Spans()
			if len(spans) != 1 {
				t.Fatalf("spans %v, want one (the probes untraced)", spanNames(rcv))
			}
			span := spans[0].Span
			want := "GET"
			if tt.route != "" {
				want += " " + tt.route
			}
			if span.Name != want || span.Kind != tracepb.Span_SPAN_KIND_SERVER {
				t.Errorf("span %q (%v), want %q (server)", span.Name, span.Kind, want)
			}
			if got, _ := otlptest.Attr(span.Attributes, "http.route"); got != tt.route {
				t.Errorf("span http.route = %q, want %q", got, tt.route)
			}
			if got, _ := otlptest.Attr(span.Attributes, "url.path"); got != tt.path {
				t.Errorf("span url.path = %q, want %q", got, tt.path)
			}
			m, ok := rcv.MetricNamed("http.server.request.duration")
			if !ok {
				t.Fatal("no http.server.request.duration")
			}
			var routes []string
			for _, dp := range m.Metric.GetHistogram().GetDataPoints() {
				r, _ := otlptest.Attr(dp.Attributes, "http.route")
				routes = append(routes, r)
			}
			if !slices.Equal(routes, []string{tt.route}) {
				t.Errorf("duration points' routes = %q, want [%q]", routes, tt.route)
			}
		})
	}
}

// chiRoutes is the documented one-liner for a chi router (the router is
// found from the request, so one option serves every subtest).
var chiRoutes = servicedefaults.WithRouteFunc(func(r *http.Request) string {
	return chiMux.Find(chi.NewRouteContext(), r.Method, r.URL.Path)
})

var chiMux *chi.Mux

func chiRouter(reply func(http.ResponseWriter, string)) *chi.Mux {
	r := chi.NewRouter()
	r.Get("/items/{id}", func(w http.ResponseWriter, r *http.Request) { reply(w, chi.URLParam(r, "id")) })
	r.Route("/orders", func(r chi.Router) {
		r.Get("/{id}/lines", func(w http.ResponseWriter, r *http.Request) { reply(w, "lines of "+chi.URLParam(r, "id")) })
	})
	chiMux = r
	return r
}

// TestServerConventions serves one request through App.Handler and one
// through otelhttp.NewHandler on the App's own providers: the server
// spans and the duration points carry the same attributes (App.Handler
// adding http.route to the span, which otelhttp leaves out), with the
// same values where they do not depend on the connection.
func TestServerConventions(t *testing.T) {
	rcv := otlptest.Start(t)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /items/{id}", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, "created")
	})
	app, _ := newApp(t, with(slowExport, "OTEL_EXPORTER_OTLP_ENDPOINT", rcv.HTTPEndpoint), mux)
	ours := serve(t, app)
	peer := httptest.NewServer(otelhttp.NewHandler(mux, "",
		otelhttp.WithTracerProvider(app.TracerProvider()), otelhttp.WithMeterProvider(app.MeterProvider())))
	t.Cleanup(peer.Close)
	for _, base := range []string{ours, peer.URL} {
		req, _ := http.NewRequest("POST", base+"/items/7", strings.NewReader("payload"))
		req.Header.Set("User-Agent", "conventions-test")
		req.Header.Set("X-Forwarded-For", "203.0.113.9, 10.0.0.1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("POST %s = %d", base, resp.StatusCode)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := app.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	spans := rcv.Spans()
	if len(spans) != 2 {
		t.Fatalf("spans %v, want 2", spanNames(rcv))
	}
	// Our server serves first; otelhttp's span lacks http.route.
	a, b := attrMap(spans[0].Span.Attributes), attrMap(spans[1].Span.Attributes)
	if spans[0].Span.Name != "POST /items/{id}" || spans[1].Span.Name != "POST /items/{id}" {
		t.Errorf("span names %q, %q", spans[0].Span.Name, spans[1].Span.Name)
	}
	if a["http.route"] != "/items/{id}" {
		t.Errorf("http.route = %q", a["http.route"])
	}
	delete(a, "http.route")
	compareAttrs(t, "span", a, b, "server.port", "network.peer.port")
	if spans[0].Scope.GetName() != spans[1].Scope.GetName() || spans[0].Scope.GetVersion() != spans[1].Scope.GetVersion() {
		t.Errorf("scopes %v, %v", spans[0].Scope, spans[1].Scope)
	}

	for _, name := range []string{"http.server.request.duration", "http.server.request.body.size", "http.server.response.body.size"} {
		m, ok := rcv.MetricNamed(name)
		if !ok {
			t.Fatalf("no %s", name)
		}
		points := m.Metric.GetHistogram().GetDataPoints()
		if len(points) != 2 {
			t.Fatalf("%s: %d points, want 2 (one per server port)", name, len(points))
		}
		compareAttrs(t, name, attrMap(points[0].Attributes), attrMap(points[1].Attributes), "server.port")
		if name != "http.server.request.duration" && points[0].GetSum() != points[1].GetSum() {
			t.Errorf("%s sums %v, %v", name, points[0].GetSum(), points[1].GetSum())
		}
	}
}

func attrMap(kvs []*commonpb.KeyValue) map[string]string {
	m := map[string]string{}
	for _, kv := range kvs {
		v := kv.GetValue()
		switch {
		case v.GetStringValue() != "":
			m[kv.Key] = v.GetStringValue()
		default:
			m[kv.Key] = v.String()
		}
	}
	return m
}

// compareAttrs wants the same keys in a and b, and the same values except
// for the keys in differ (such as ports, which differ by connection).
func compareAttrs(t *testing.T, what string, a, b map[string]string, differ ...string) {
	t.Helper()
	for k, v := range b {
		w, ok := a[k]
		if !ok {
			t.Errorf("%s: %s = %q missing from App.Handler's", what, k, v)
		} else if w != v && !slices.Contains(differ, k) {
			t.Errorf("%s: %s = %q, otelhttp's %q", what, k, w, v)
		}
	}
	for k, v := range a {
		if _, ok := b[k]; !ok {
			t.Errorf("%s: %s = %q not in otelhttp's", what, k, v)
		}
	}
}

// TestServerSpanPerRequest serves requests one after another through the
// same App.Handler (whose per-request state is reused): each span gets
// its own status code, body sizes and span status; 5xx is an Error, 4xx
// is not, a handler that writes nothing answers 200, and one aborted
// with http.ErrAbortHandler still ends its span.
func TestServerSpanPerRequest(t *testing.T) {
	rcv := otlptest.Start(t)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /fail", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "boom", http.StatusBadGateway) })
	mux.HandleFunc("GET /silent", func(http.ResponseWriter, *http.Request) {})
	mux.HandleFunc("GET /missing", func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) })
	mux.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) { _, _ = io.Copy(w, r.Body) })
	mux.HandleFunc("GET /abort", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "partial")
		panic(http.ErrAbortHandler)
	})
	app, _ := newApp(t, with(slowExport, "OTEL_EXPORTER_OTLP_ENDPOINT", rcv.HTTPEndpoint), mux)
	base := serve(t, app)
	tests := []struct {
		method, path, body string
		code               int // 0: connection cut
		span               string
		status             string // span http.response.status_code
		respSize, reqSize  string // span body-size attributes; "" for absent
		isError            bool
	}{
		{"GET", "/fail", "", 502, "GET /fail", "502", "5", "", true},
		{"GET", "/silent", "", 200, "GET /silent", "200", "", "", false},
		{"GET", "/missing", "", 404, "GET /missing", "404", "19", "", false},
		{"POST", "/echo", "hello", 200, "POST /echo", "200", "5", "5", false},
		{"GET", "/abort", "", 0, "GET /abort", "200", "7", "", false},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest(tt.method, base+tt.path, strings.NewReader(tt.body))
		resp, err := http.DefaultClient.Do(req)
		if tt.code == 0 {
			if err == nil {
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			if err == nil {
				t.Errorf("%s %s: complete response, want the connection cut", tt.method, tt.path)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.code {
			t.Errorf("%s %s = %d, want %d", tt.method, tt.path, resp.StatusCode, tt.code)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := app.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		s, ok := rcv.SpanNamed(tt.span)
		if !ok {
			t.Errorf("no span %q; got %v", tt.span, spanNames(rcv))
			continue
		}
		a := attrMap(s.Span.Attributes)
		for key, want := range map[string]string{
			"http.response.status_code": tt.status,
			"http.response.body.size":   tt.respSize,
			"http.request.body.size":    tt.reqSize,
		} {
			if got := strings.TrimPrefix(a[key], "int_value:"); got != want {
				t.Errorf("%s: %s = %q, want %q", tt.span, key, got, want)
			}
		}
		if isError := s.Span.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR; isError != tt.isError {
			t.Errorf("%s: span status %v, want error %v", tt.span, s.Span.GetStatus(), tt.isError)
		}
	}
}

// TestAddRefusesShadowedProbes: a ServeMux route for a health endpoint
// would never be reached behind the App's, so Add fails naming it; a
// catch-all "/" is fine.
func TestAddRefusesShadowedProbes(t *testing.T) {
	for _, tt := range []struct {
		pattern string
		fails   bool
	}{
		{"GET /health", true},
		{"/alive", true},
		{"/", false},
		{"GET /healthz", false},
	} {
		t.Run(tt.pattern, func(t *testing.T) {
			restoreGlobals(t)
			mux := http.NewServeMux()
			mux.HandleFunc(tt.pattern, func(http.ResponseWriter, *http.Request) {})
			app, err := servicedefaults.Add(context.Background(), mux,
				servicedefaults.WithConfig(discovery.FromMap(nil)), servicedefaults.WithLogWriter(io.Discard))
			if err == nil {
				_ = app.Shutdown(context.Background())
			}
			if tt.fails != (err != nil) || err != nil && !strings.Contains(err.Error(), tt.pattern) {
				t.Errorf("Add with %q: %v", tt.pattern, err)
			}
		})
	}
}
