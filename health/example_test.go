package health_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/goaspire/goaspire/health"
)

func ExampleRegistry_Handler() {
	reg := health.NewRegistry()
	_ = reg.Register(
		health.Check{Name: "self", Tags: []string{health.TagLive}, Check: func(context.Context) error { return nil }},
		health.Check{
			Name:          "cache",
			Tags:          []string{health.TagReady},
			FailureStatus: health.Degraded, // the service works without its cache, only slower
			Check:         func(context.Context) error { return errors.New("connection refused") },
		},
	)

	mux := http.NewServeMux()
	mux.Handle("GET /health", reg.Handler(health.HandlerOptions{CacheDuration: 2 * time.Second}))
	mux.Handle("GET /alive", reg.Handler(health.HandlerOptions{Predicate: health.Tagged(health.TagLive)}))

	for _, path := range []string{"/health", "/alive"} {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		fmt.Println(path, rec.Code, rec.Body.String())
	}
	// Output:
	// /health 200 Degraded
	// /alive 200 Healthy
}
