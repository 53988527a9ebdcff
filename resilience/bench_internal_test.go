package resilience

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/goaspire/goaspire/discovery"
)

type nopRT struct{}

func (nopRT) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader("")), Request: r}, nil
}

// BenchmarkPipelineOverhead measures the pipeline alone, over a base
// transport that answers at once.
func BenchmarkPipelineOverhead(b *testing.B) {
	cfg := discovery.FromMap(map[string]string{"services__catalog__http__0": "http://127.0.0.1:1"})
	rt, err := NewTransport(nopRT{}, &TransportConfig{Resolver: discovery.NewResolver(cfg)})
	if err != nil {
		b.Fatal(err)
	}
	req, _ := http.NewRequest("GET", "http://catalog/x", nil)
	b.ReportAllocs()
	for b.Loop() {
		resp, err := rt.RoundTrip(req)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
	}
}
