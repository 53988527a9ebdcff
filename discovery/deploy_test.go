package discovery

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/goaspire/goaspire/internal/dnstest"
)

// TestDeployTargetForms: aspire publish/deploy (Docker Compose,
// Kubernetes) drops the services__ variables of https endpoints and may
// keep {SERVICE}_HTTPS; the more preferred scheme wins wherever it is.
func TestDeployTargetForms(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		in   string
		want []string // endpoints as scheme://host (source)
	}{
		{"API_HTTPS beats services http", map[string]string{
			"API_HTTPS":              "https://api:8443",
			"services__api__http__0": "http://api:8080"},
			"https+http://api", []string{"https://api:8443 (API_HTTPS)"}},
		{"services http without API_HTTPS", map[string]string{
			"services__api__http__0": "http://api:8080"},
			"https+http://api", []string{"http://api:8080 (services:api:http:0)"}},
		{"services https kept beats API_HTTPS", map[string]string{
			"API_HTTPS":               "https://api:9443",
			"services__api__https__0": "https://api:8443",
			"services__api__http__0":  "http://api:8080"},
			"https+http://api", []string{"https://api:8443 (services:api:https:0)"}},
		{"only API_HTTPS", map[string]string{"API_HTTPS": "https://api:8443"},
			"https+http://api", []string{"https://api:8443 (API_HTTPS)"}},
		{"only API_HTTP", map[string]string{"API_HTTP": "http://api:8080"},
			"https+http://api", []string{"http://api:8080 (API_HTTP)"}},
		{"http only query ignores API_HTTPS", map[string]string{
			"API_HTTPS":              "https://api:8443",
			"services__api__http__0": "http://api:8080"},
			"http://api", []string{"http://api:8080 (services:api:http:0)"}},
		{"API_HTTPS holding http is not preferred", map[string]string{
			"API_HTTPS":              "http://api:9999",
			"services__api__http__0": "http://api:8080"},
			"https+http://api", []string{"http://api:8080 (services:api:http:0)"}},
		{"default endpoint http, API_HTTPS", map[string]string{
			"API_HTTPS":                 "https://api:8443",
			"services__api__default__0": "http://api:8080"},
			"https+http://api", []string{"https://api:8443 (API_HTTPS)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewResolver(FromMap(tt.env))
			eps, err := r.Endpoints(mustURL(t, tt.in))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, ep := range eps {
				got = append(got, ep.Scheme+"://"+ep.Host+" ("+ep.Source+")")
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Endpoints(%s) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}

	t.Run("bad API_HTTPS is an error naming it", func(t *testing.T) {
		r := NewResolver(FromMap(map[string]string{
			"API_HTTPS":              "https://",
			"services__api__http__0": "http://api:8080"}))
		_, err := r.Endpoints(mustURL(t, "https+http://api"))
		var re *ResolveError
		if !errors.As(err, &re) || re.Key != "API_HTTPS" {
			t.Fatalf("err = %v, want a ResolveError naming API_HTTPS", err)
		}
	})

	t.Run("portable connection string alone", func(t *testing.T) {
		c := FromMap(map[string]string{"ConnectionStrings__my_db": "Host=db;Database=shop"})
		cs, err := c.ConnectionString("my-db")
		if err != nil || cs != "Host=db;Database=shop" {
			t.Fatalf("ConnectionString(my-db) = %q, %v", cs, err)
		}
	})
}

func TestServiceVariables(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want []string
	}{
		{"https+http://pricing", []string{"services__pricing__https__0", "PRICING_HTTPS", "services__pricing__http__0", "PRICING_HTTP"}},
		{"http://order-api", []string{"services__order-api__http__0", "ORDER_API_HTTP"}},
		{"http://_grpc.pricing", []string{"services__pricing__grpc__0", "PRICING_GRPC"}},
	} {
		q, err := ParseQuery(mustURL(t, tt.in))
		if err != nil {
			t.Fatal(err)
		}
		if got := ServiceVariables(q); !slices.Equal(got, tt.want) {
			t.Errorf("ServiceVariables(%s) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// dnsTransport is an http.Transport resolving host names through dns only.
func dnsTransport(t *testing.T, dns *dnstest.Server) *http.Transport {
	d := &net.Dialer{Resolver: dns.Resolver(), Timeout: time.Minute}
	tr := &http.Transport{DialContext: d.DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

func TestTransportUnresolvedService(t *testing.T) {
	dns := dnstest.Start(t)
	r := NewResolver(FromMap(map[string]string{"services__pricing__http__0": "http://127.0.0.1:1"}))
	client := &http.Client{Transport: NewTransport(r, dnsTransport(t, dns))}

	_, err := client.Get("https+http://pricng/prices")
	var uerr *UnresolvedError
	if !errors.As(err, &uerr) {
		t.Fatalf("err = %v, want an *UnresolvedError", err)
	}
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("err = %v does not match ErrNotFound", err)
	}
	for _, v := range []string{"services__pricng__http__0", "PRICNG_HTTP", "services__pricng__https__0", "PRICNG_HTTPS"} {
		if !strings.Contains(err.Error(), v) {
			t.Errorf("error %q does not name %s", err, v)
		}
	}
	if uerr.Service != "pricng" {
		t.Errorf("Service = %q", uerr.Service)
	}
}

func TestUnresolved(t *testing.T) {
	notFound := &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "pricng", IsNotFound: true}}
	r := NewResolver(FromMap(map[string]string{"services__pricing__http__0": "http://127.0.0.1:1"}))

	uerr, first := r.Unresolved(mustURL(t, "https+http://pricng/x"), notFound)
	if uerr == nil || !first {
		t.Fatalf("Unresolved = %v, %v; want an error, first", uerr, first)
	}
	if uerr, first := r.Unresolved(mustURL(t, "http://PRICNG/y"), notFound); uerr == nil || first {
		t.Errorf("second Unresolved = %v, %v; want an error, not first", uerr, first)
	}

	for name, tc := range map[string]struct {
		url string
		err error
	}{
		"configured service": {"http://pricing", &net.DNSError{Err: "no such host", Name: "pricing", IsNotFound: true}},
		"temporary failure":  {"http://pricng", &net.DNSError{Err: "server misbehaving", Name: "pricng", IsTemporary: true}},
		"another name":       {"http://pricng", &net.DNSError{Err: "no such host", Name: "proxy", IsNotFound: true}},
		"not a DNS error":    {"http://pricng", errors.New("connection refused")},
		"canceled":           {"http://pricng", context.Canceled},
	} {
		if uerr, _ := r.Unresolved(mustURL(t, tc.url), tc.err); uerr != nil {
			t.Errorf("%s: Unresolved = %v, want nil", name, uerr)
		}
	}

	var u *url.URL
	if uerr, _ := r.Unresolved(u, notFound); uerr != nil {
		t.Errorf("nil URL: %v", uerr)
	}
}
