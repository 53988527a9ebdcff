package discovery

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestParseQuery(t *testing.T) {
	tests := []struct {
		in      string
		want    Query
		wantErr bool
	}{
		{"http://catalog", Query{Schemes: []string{"http"}, Service: "catalog"}, false},
		{"https+http://catalog/x", Query{Schemes: []string{"https", "http"}, Service: "catalog"}, false},
		{"http://_grpc.catalog", Query{Schemes: []string{"http"}, Service: "catalog", Endpoint: "grpc"}, false},
		{"http://_x.", Query{Schemes: []string{"http"}, Service: "_x."}, false},
		{"http://_.catalog", Query{Schemes: []string{"http"}, Service: "_.catalog"}, false},
		{"HTTP://catalog:99", Query{Schemes: []string{"http"}, Service: "catalog"}, false},
		{"https+://catalog", Query{}, true},
		{"/relative", Query{}, true},
		{"http:///nohost", Query{}, true},
	}
	for _, tt := range tests {
		got, err := ParseQuery(mustURL(t, tt.in))
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseQuery(%q) error = %v", tt.in, err)
			continue
		}
		if !tt.wantErr && fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("ParseQuery(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestResolve(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		in   string
		want []string // successive results
	}{
		{"form 1 http", map[string]string{"services__catalog__http__0": "http://localhost:5001"},
			"http://catalog/products/1?x=y", []string{"http://localhost:5001/products/1?x=y"}},
		{"single value without index", map[string]string{"services__catalog__http": "http://localhost:5001"},
			"http://catalog", []string{"http://localhost:5001"}},
		{"https preferred over http", map[string]string{
			"services__catalog__http__0":  "http://localhost:5001",
			"services__catalog__https__0": "https://localhost:5002"},
			"https+http://catalog/p", []string{"https://localhost:5002/p"}},
		{"http when no https", map[string]string{"services__catalog__http__0": "http://localhost:5001"},
			"https+http://catalog/p", []string{"http://localhost:5001/p"}},
		{"default endpoint first", map[string]string{
			"services__catalog__default__0": "http://localhost:6000",
			"services__catalog__http__0":    "http://localhost:5001"},
			"http://catalog", []string{"http://localhost:6000"}},
		{"mixed schemes in one endpoint keep the best", map[string]string{
			"services__catalog__default__0": "http://localhost:6000",
			"services__catalog__default__1": "https://localhost:6001"},
			"https+http://catalog", []string{"https://localhost:6001", "https://localhost:6001"}},
		{"named endpoint", map[string]string{
			"services__catalog__http__0": "http://localhost:5001",
			"services__catalog__grpc__0": "http://localhost:5003"},
			"http://_grpc.catalog", []string{"http://localhost:5003"}},
		{"named endpoint in scheme-keyed form 2", map[string]string{
			"services__catalog__http__0": "http://localhost:5003"},
			"http://_grpc.catalog", []string{"http://localhost:5003"}},
		{"named endpoint prefers form 3 over form 2", map[string]string{
			"services__catalog__http__0": "http://localhost:5001",
			"CATALOG_GRPC":               "http://localhost:5003"},
			"http://_grpc.catalog", []string{"http://localhost:5003"}},
		{"form 3", map[string]string{"CATALOG_HTTP": "http://localhost:5001"},
			"http://catalog/a", []string{"http://localhost:5001/a"}},
		{"form 3 https preferred", map[string]string{"CATALOG_HTTP": "http://localhost:5001", "CATALOG_HTTPS": "https://localhost:5002"},
			"https+http://catalog", []string{"https://localhost:5002"}},
		{"form 3 encoded name", map[string]string{"MY_API_HTTP": "http://localhost:5001"},
			"http://my-api", []string{"http://localhost:5001"}},
		{"form 1 wins over form 3", map[string]string{"CATALOG_HTTP": "http://localhost:1", "services__catalog__http__0": "http://localhost:2"},
			"http://catalog", []string{"http://localhost:2"}},
		{"round robin", map[string]string{
			"services__catalog__http__0": "http://localhost:5001",
			"services__catalog__http__1": "http://localhost:5002",
			"services__catalog__http__2": "http://localhost:5003"},
			"http://catalog", []string{"http://localhost:5001", "http://localhost:5002", "http://localhost:5003", "http://localhost:5001"}},
		{"indices in numeric order", map[string]string{
			"services__catalog__http__10": "http://localhost:5010",
			"services__catalog__http__2":  "http://localhost:5002"},
			"http://catalog", []string{"http://localhost:5002", "http://localhost:5010"}},
		{"bare host:port takes the first scheme", map[string]string{"services__catalog__http__0": "localhost:5001"},
			"https+http://catalog", []string{"https://localhost:5001"}},
		{"case-insensitive service", map[string]string{"services__Catalog__HTTP__0": "http://localhost:5001"},
			"http://catalog", []string{"http://localhost:5001"}},
		{"pass-through", nil, "http://catalog/p?q=1", []string{"http://catalog/p?q=1"}},
		{"pass-through first scheme", nil, "https+http://catalog/p", []string{"https://catalog/p"}},
		{"pass-through keeps port", nil, "http://localhost:9999/p", []string{"http://localhost:9999/p"}},
		{"scheme filtered out", map[string]string{"services__catalog__http__0": "ftp://localhost:21"},
			"http://catalog", []string{"http://catalog"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewResolver(FromMap(tt.env))
			in := mustURL(t, tt.in)
			for i, want := range tt.want {
				got, err := r.Resolve(in)
				if err != nil {
					t.Fatalf("Resolve #%d: %v", i, err)
				}
				if got.String() != want {
					t.Errorf("Resolve #%d = %s, want %s", i, got, want)
				}
			}
			if in.String() != tt.in {
				t.Errorf("Resolve modified its input: %s", in)
			}
		})
	}
}

func TestResolveErrors(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		in      string
		wantKey string
	}{
		{"non-numeric index", map[string]string{"services__catalog__http__first": "http://localhost:1"}, "http://catalog", "services:catalog:http:first"},
		{"negative index", map[string]string{"services__catalog__http__-1": "http://localhost:1"}, "http://catalog", "services:catalog:http:-1"},
		{"malformed URL", map[string]string{"services__catalog__http__0": "http://[::1"}, "http://catalog", "services:catalog:http:0"},
		{"empty instance", map[string]string{"services__catalog__http__0": " ", "services__catalog__http__1": "http://h:1"}, "http://catalog", "services:catalog:http:0"},
		{"bad host:port", map[string]string{"services__catalog__http__0": "a:b:c"}, "http://catalog", "services:catalog:http:0"},
		{"user info", map[string]string{"CATALOG_HTTP": "http://u:hunter2@h:1"}, "http://catalog", "CATALOG_HTTP"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewResolver(FromMap(tt.env))
			_, err := r.Resolve(mustURL(t, tt.in))
			var re *ResolveError
			if !errors.As(err, &re) || re.Key != tt.wantKey {
				t.Fatalf("error = %v, want a ResolveError naming %q", err, tt.wantKey)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("error leaks a secret: %v", err)
			}
			// The error is cached, not recomputed into a different answer.
			if _, err2 := r.Resolve(mustURL(t, tt.in)); err2 == nil {
				t.Fatal("second Resolve succeeded")
			}
		})
	}
}

func TestEndpoints(t *testing.T) {
	r := NewResolver(FromMap(map[string]string{
		"services__catalog__http__0": "http://localhost:5001",
		"services__catalog__http__1": "http://localhost:5002",
	}))
	eps, err := r.Endpoints(mustURL(t, "http://catalog"))
	if err != nil || len(eps) != 2 || eps[1].Host != "localhost:5002" || eps[0].Source != "services:catalog:http:0" {
		t.Fatalf("Endpoints = %+v, %v", eps, err)
	}
	eps, err = r.Endpoints(mustURL(t, "http://unknown"))
	if err != nil || eps != nil {
		t.Fatalf("Endpoints(unknown) = %+v, %v", eps, err)
	}
}

func TestTransport(t *testing.T) {
	var gotHost, gotPath string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotHost, gotPath = r.Host, r.URL.RequestURI()
		io.WriteString(w, "ok")
	}))
	defer srv.Close()
	u := mustURL(t, srv.URL)

	r := NewResolver(FromMap(map[string]string{"services__catalog__http__0": srv.URL}))
	client := &http.Client{Transport: NewTransport(r, nil)}

	resp, err := client.Get("https+http://catalog/products/7?fields=name")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "ok" || gotPath != "/products/7?fields=name" || gotHost != u.Host {
		t.Errorf("body=%q path=%q host=%q", body, gotPath, gotHost)
	}

	// A Host header the caller chose is kept.
	req, _ := http.NewRequest("GET", "http://catalog/x", nil)
	req.Host = "custom.example"
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if gotHost != "custom.example" {
		t.Errorf("Host = %q, want custom.example", gotHost)
	}
	if req.URL.Host != "catalog" {
		t.Errorf("the caller's request was modified: %s", req.URL)
	}

	// A resolution error is returned, not a panic, and closes the body.
	bad := &http.Client{Transport: NewTransport(NewResolver(FromMap(map[string]string{"services__x__http__a": "http://h:1"})), nil)}
	if _, err := bad.Post("http://x/", "text/plain", strings.NewReader("b")); err == nil {
		t.Error("no error for a bad endpoint index")
	}
}

func BenchmarkResolve(b *testing.B) {
	r := NewResolver(FromMap(map[string]string{
		"services__catalog__http__0": "http://localhost:5001",
		"services__catalog__http__1": "http://localhost:5002",
	}))
	u := mustURL(b, "https+http://catalog/products/1")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := r.Resolve(u); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func FuzzResolve(f *testing.F) {
	f.Add("services__catalog__http__0", "http://localhost:5001", "https+http://catalog/p")
	f.Add("CATALOG_GRPC", "localhost:1", "http://_grpc.catalog")
	f.Add("services__x__http__y", "::", "http://x")
	f.Fuzz(func(t *testing.T, key, value, raw string) {
		u, err := url.Parse(raw)
		if err != nil {
			return
		}
		r := NewResolver(FromMap(map[string]string{key: value}))
		got, err := r.Resolve(u)
		if err == nil && got == nil {
			t.Fatal("nil URL without error")
		}
		if err == nil && strings.Contains(got.Scheme, "+") {
			t.Fatalf("resolved scheme %q still has '+'", got.Scheme)
		}
	})
}
