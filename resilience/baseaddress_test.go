package resilience_test

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/goaspire/goaspire/resilience"
)

// TestBaseAddress: a request URL without a host goes to BaseAddress,
// resolved on every attempt (a retry goes to the other instance, with
// that instance's Host header); a relative path gets its "/"; a full URL
// is sent as is; the caller's request is not modified. The hedging
// pipeline does the same.
func TestBaseAddress(t *testing.T) {
	base := &url.URL{Scheme: "http", Host: "catalog"}
	for _, hedged := range []bool{false, true} {
		name := "standard"
		if hedged {
			name = "hedging"
		}
		t.Run(name, func(t *testing.T) {
			a := newServer(t, status(http.StatusServiceUnavailable))
			b := newServer(t, func(_ int, w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "b") })
			var (
				mu         sync.Mutex
				toB, wantB []string // what reached b, what should have
			)
			tr := newBase(t)
			send := roundTripFunc(func(r *http.Request) (*http.Response, error) {
				if r.URL.Host == b.authority() {
					mu.Lock()
					toB = append(toB, r.URL.RequestURI())
					mu.Unlock()
				}
				return tr.RoundTrip(r)
			})
			var rt http.RoundTripper
			if hedged {
				h, err := resilience.NewHedgingTransport(send, &resilience.HedgingConfig{Resolver: resolverFor(a, b), BaseAddress: base})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = h.Close() })
				rt = h
			} else {
				s, err := resilience.NewTransport(send, &resilience.TransportConfig{Options: testOptions(), Resolver: resolverFor(a, b), BaseAddress: base})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = s.Close() })
				rt = s
			}
			for _, tc := range []struct{ url, host, want string }{
				{"/products/1?color=red", "", "/products/1?color=red"},
				{"products/2", "", "/products/2"},
				{"/products/3", "", "/products/3"},        // the round-robin now starts elsewhere
				{"/products/4", "catalog", "/products/4"}, // the logical host is not sent as Host
				{b.URL + "/full", "", "/full"},
			} {
				req, err := http.NewRequest(http.MethodGet, tc.url, nil)
				if err != nil {
					t.Fatal(err)
				}
				if tc.host != "" {
					req.Host = tc.host
				}
				resp, err := rt.RoundTrip(req)
				if err != nil {
					t.Fatalf("GET %s: %v", tc.url, err)
				}
				body, _ := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusOK || string(body) != "b" {
					t.Errorf("GET %s: %d %q, want 200 from b", tc.url, resp.StatusCode, body)
				}
				if req.URL.String() != tc.url || (tc.host == "" && req.Host != req.URL.Host) {
					t.Errorf("GET %s: the request became %s (Host %q)", tc.url, req.URL, req.Host)
				}
				wantB = append(wantB, tc.want)
			}
			mu.Lock()
			defer mu.Unlock()
			if strings.Join(toB, " ") != strings.Join(wantB, " ") {
				t.Errorf("b got %q, want %q", toB, wantB)
			}
			b.mu.Lock()
			defer b.mu.Unlock()
			if got := strings.Join(b.hosts, " "); got != strings.Repeat(b.authority()+" ", len(wantB)-1)+b.authority() {
				t.Errorf("b saw Host headers %s, want %s each time", got, b.authority())
			}
			if a.hits.Load() == 0 {
				t.Error("no attempt went to a: the round-robin did not spread the calls")
			}
		})
	}
}

// TestBaseAddressRejected: a BaseAddress that is not a scheme and host
// alone fails the constructors, naming the field and hiding a password.
func TestBaseAddressRejected(t *testing.T) {
	for _, raw := range []string{"/products", "catalog", "http://catalog/api", "http://catalog?x=1", "http://catalog#f", "http://user:s3cret@catalog/api"} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		_, err1 := resilience.NewTransport(nil, &resilience.TransportConfig{BaseAddress: u})
		_, err2 := resilience.NewHedgingTransport(nil, &resilience.HedgingConfig{BaseAddress: u})
		for _, err := range []error{err1, err2} {
			if err == nil || !strings.Contains(err.Error(), "BaseAddress") || strings.Contains(err.Error(), "s3cret") {
				t.Errorf("BaseAddress %s: error %v, want one naming BaseAddress without the password", raw, err)
			}
		}
	}
	for _, raw := range []string{"http://catalog", "https+http://catalog/"} {
		u, _ := url.Parse(raw)
		tr, err := resilience.NewTransport(nil, &resilience.TransportConfig{BaseAddress: u})
		if err != nil {
			t.Errorf("BaseAddress %s: %v", raw, err)
			continue
		}
		_ = tr.Close()
	}
}
