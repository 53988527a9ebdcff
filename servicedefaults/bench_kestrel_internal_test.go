package servicedefaults

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// BenchmarkLimitBody measures what the MaxRequestBodySize check adds to a
// request, next to the same handler without it: a GET (no body) and a
// POST of unknown length (the wrapped reader and writer).
func BenchmarkLimitBody(b *testing.B) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	})
	limited := limitBody(h, DefaultMaxRequestBodySize)
	for _, c := range []struct {
		name    string
		length  int64
		hasBody bool
	}{{"GET", 0, false}, {"POST chunked", -1, true}} {
		for _, side := range []struct {
			name string
			h    http.Handler
		}{{"plain", h}, {"limited", limited}} {
			b.Run(c.name+"/"+side.name, func(b *testing.B) {
				w := &discardWriter{h: http.Header{}}
				body := strings.NewReader("")
				r, _ := http.NewRequest("POST", "http://x/", nil)
				r.ContentLength = c.length
				b.ReportAllocs()
				for b.Loop() {
					r.Body = http.NoBody
					if c.hasBody {
						body.Reset("0123456789")
						r.Body = io.NopCloser(body)
					}
					side.h.ServeHTTP(w, r)
				}
			})
		}
	}
}
