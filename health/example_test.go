package health_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
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

// A registry used alone, without servicedefaults: register checks, then
// run the ready ones.
func ExampleRegistry_Run() {
	reg := health.NewRegistry(health.WithDefaultTimeout(time.Second))
	err := reg.Register(
		health.Check{Name: "db", Tags: []string{health.TagReady}, Check: func(context.Context) error { return nil }},
		health.Check{
			Name: "payments",
			Tags: []string{health.TagReady},
			Check: func(context.Context) error {
				return errors.New("dial https://user:s3cret@payments.internal: refused")
			},
		},
	)
	if err != nil {
		fmt.Println(err)
		return
	}
	rep := reg.Run(context.Background(), health.Tagged(health.TagReady))
	fmt.Println(rep.Status)
	for _, e := range rep.Entries {
		fmt.Println(e.Name, e.Status, strings.Contains(e.Error, "s3cret"))
	}
	// Output:
	// Unhealthy
	// db Healthy false
	// payments Unhealthy false
}
