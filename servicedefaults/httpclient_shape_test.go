package servicedefaults_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/resilience"
	"github.com/goaspire/goaspire/servicedefaults"
)

// TestHTTPClientBaseAddress: a request URL without a host goes to the
// client's own service, as .NET's BaseAddress "https+http://{name}", under
// every handler, with and without a middleware (without one, the
// pipeline applies it in its own copy of the request); the middleware
// sees the full logical URL and a full URL is left alone.
func TestHTTPClientBaseAddress(t *testing.T) {
	tests := []struct {
		name     string
		values   map[string]string
		opts     []servicedefaults.Option
		client   func(*servicedefaults.App) *http.Client
		url      string
		wantPath string // "" means the catalog server gets no request
		wantMW   string
	}{
		{"standard", nil, nil, nil, "/products/1?color=red", "/products/1?color=red", "https+http://catalog/products/1?color=red"},
		{"relative path", nil, nil, nil, "products/2", "/products/2", "https+http://catalog/products/2"},
		{"hedging", nil, []servicedefaults.Option{servicedefaults.WithHedging("catalog")}, nil, "/products/3", "/products/3", "https+http://catalog/products/3"},
		{"none", map[string]string{"Aspire__ServiceDefaults__HttpClients__catalog__Resilience": "None"}, nil, nil, "/products/4", "/products/4", "https+http://catalog/products/4"},
		{"health client", nil, nil, func(a *servicedefaults.App) *http.Client { return a.HealthHTTPClient("catalog") }, "/health", "/health", ""},
		{"full URL kept", nil, nil, nil, "http://other/x", "", "http://other/x"},
	}
	for _, tt := range tests {
		for _, withMW := range []bool{true, false} {
			name := tt.name
			if !withMW {
				name += " without middleware"
			}
			t.Run(name, func(t *testing.T) {
				var (
					mu  sync.Mutex
					got []string
				)
				record := func(s *[]string, v string) {
					mu.Lock()
					defer mu.Unlock()
					*s = append(*s, v)
				}
				catalog := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					record(&got, r.URL.RequestURI())
				}))
				defer catalog.Close()
				other := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
				defer other.Close()
				values := map[string]string{
					"services__catalog__http__0": catalog.URL,
					"services__other__http__0":   other.URL,
				}
				for k, v := range tt.values {
					values[k] = v
				}
				var seen []string
				opts := tt.opts
				if withMW {
					opts = append([]servicedefaults.Option{servicedefaults.WithHTTPMiddleware(func(_ string, next http.RoundTripper) http.RoundTripper {
						return roundTripFunc(func(r *http.Request) (*http.Response, error) {
							record(&seen, r.URL.String())
							return next.RoundTrip(r)
						})
					})}, tt.opts...)
				}
				app, _ := newApp(t, values, nil, opts...)
				client := app.HTTPClient("catalog")
				if tt.client != nil {
					client = tt.client(app)
				}
				if code, body := get(t, client, tt.url); code != http.StatusOK {
					t.Fatalf("GET %s: %d %q", tt.url, code, body)
				}
				mu.Lock()
				defer mu.Unlock()
				if want := []string{tt.wantPath}; tt.wantPath != "" && (len(got) != 1 || got[0] != tt.wantPath) {
					t.Errorf("catalog got %q, want %q", got, want)
				} else if tt.wantPath == "" && len(got) != 0 {
					t.Errorf("catalog got %q, want nothing", got)
				}
				if withMW && tt.wantMW != "" && (len(seen) != 1 || seen[0] != tt.wantMW) {
					t.Errorf("middleware saw %q, want %q", seen, tt.wantMW)
				}
			})
		}
	}
}

// TestCircuitState: App.CircuitState reads a client's breakers by the
// client's name, through any middleware, and a health probe sent with
// HealthHTTPClient neither goes through the pipeline (one request, no
// retries) nor counts toward its breakers.
func TestCircuitState(t *testing.T) {
	tests := []struct {
		name          string
		client        func(*servicedefaults.App) *http.Client
		wantPerProbe  int32
		wantAfterward resilience.CircuitState
	}{
		{"pipeline", func(a *servicedefaults.App) *http.Client { return a.HTTPClient("catalog") }, 2, resilience.CircuitOpen},
		{"health client", func(a *servicedefaults.App) *http.Client { return a.HealthHTTPClient("catalog") }, 1, resilience.CircuitClosed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				calls.Add(1)
				w.WriteHeader(http.StatusServiceUnavailable)
			}))
			defer srv.Close()
			host := strings.TrimPrefix(srv.URL, "http://")
			app, _ := newApp(t, map[string]string{
				"services__catalog__http__0":                                  srv.URL,
				"Aspire__Resilience__Http__Retry__MaxRetryAttempts":           "1",
				"Aspire__Resilience__Http__Retry__Delay":                      "1ms",
				"Aspire__Resilience__Http__CircuitBreaker__MinimumThroughput": "4",
				"Aspire__Resilience__Http__CircuitBreaker__FailureRatio":      "0.5",
			}, nil, servicedefaults.WithHTTPMiddleware(func(_ string, next http.RoundTripper) http.RoundTripper {
				return roundTripFunc(next.RoundTrip) // hides the pipeline's type
			}))
			if s := app.CircuitState("catalog", host); s != resilience.CircuitClosed {
				t.Fatalf("before any call: %v", s)
			}
			client := tt.client(app)
			app.HTTPClient("catalog") // the pipeline exists in both cases
			check := health.HTTP("catalog", client, "/health")
			for i := range 2 {
				before := calls.Load()
				if err := check.Check(t.Context()); err == nil {
					t.Fatal("check passed against a 503")
				}
				if n := calls.Load() - before; n != tt.wantPerProbe {
					t.Errorf("probe %d: %d requests, want %d", i, n, tt.wantPerProbe)
				}
			}
			if s := app.CircuitState("catalog", host); s != tt.wantAfterward {
				t.Errorf("after the probes: %v, want %v", s, tt.wantAfterward)
			}
			if s := app.CircuitState("nosuch", host); s != resilience.CircuitClosed {
				t.Errorf("unknown client: %v", s)
			}
		})
	}
}
