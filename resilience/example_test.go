package resilience_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/resilience"
	"github.com/goaspire/goaspire/resilience/resiliencetest"
)

// The standard pipeline under an http.Client, resolving the logical name
// "catalog" through discovery on every attempt, with settings from
// configuration. Here the network is a scripted fake.
func ExampleNewTransport() {
	cfg := discovery.FromMap(map[string]string{
		"services__catalog__http__0":                                          "http://10.0.0.1:8080",
		"services__catalog__http__1":                                          "http://10.0.0.2:8080",
		"Aspire__Resilience__Http__Clients__catalog__Retry__MaxRetryAttempts": "2",
	})
	network := resiliencetest.NewTransport(
		resiliencetest.Respond(503),
		resiliencetest.Respond(200).Body("ok"),
	)
	rt, err := resilience.NewTransport(network,
		resilience.WithResolver(discovery.NewResolver(cfg)),
		resilience.WithConfig(cfg, "catalog"),
		resilience.WithTimeScale(0.01), // a fast example; leave it out in production
	)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer rt.Close()
	client := &http.Client{Transport: rt}

	resp, err := client.Get("http://catalog/products/1")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.StatusCode, string(body))
	for _, r := range network.Requests() {
		fmt.Println(r.URL)
	}
	// Output:
	// 200 ok
	// http://10.0.0.1:8080/products/1
	// http://10.0.0.2:8080/products/1
}

// The hedging pipeline: when the first instance is slow, a second attempt
// goes to the next instance and the first answer wins.
func ExampleNewHedgingTransport() {
	cfg := discovery.FromMap(map[string]string{
		"services__search__http__0": "http://10.0.0.1:8080",
		"services__search__http__1": "http://10.0.0.2:8080",
	})
	network := resiliencetest.NewTransport(
		resiliencetest.Respond(200).Body("slow").After(time.Minute),
		resiliencetest.Respond(200).Body("fast"),
	)
	h := resilience.DefaultHedgingOptions()
	h.Hedging.Delay = 20 * time.Millisecond
	rt, err := resilience.NewHedgingTransport(network,
		resilience.WithHedgingOptions(h),
		resilience.WithResolver(discovery.NewResolver(cfg)),
	)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer rt.Close()
	resp, err := (&http.Client{Transport: rt}).Get("http://search/?q=go")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(string(body))
	// Output: fast
}

// The same policies around a database call: transient errors (here a
// broken connection) are retried with backoff.
func ExampleDo() {
	p, err := resilience.NewPipeline(resilience.WithName("orders-db"), resilience.WithTimeScale(0.01))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer p.Close()
	attempts := 0
	total, err := resilience.Do(context.Background(), p, func(ctx context.Context) (int, error) {
		attempts++
		if attempts == 1 {
			return 0, io.ErrUnexpectedEOF // the connection broke mid-query
		}
		return 42, nil // e.g. SELECT count(*) FROM orders
	})
	fmt.Println(total, err, attempts)
	// Output: 42 <nil> 2
}

// Configuration keys override the defaults; values that break the rules .NET
// enforces are errors naming the key.
func ExampleLoadOptions() {
	cfg := discovery.FromMap(map[string]string{
		"Aspire:Resilience:Http:Retry:Delay":                            "00:00:00.5",
		"Aspire:Resilience:Http:Clients:catalog:AttemptTimeout:Timeout": "00:01:00",
	})
	o, err := resilience.LoadOptions(cfg, "")
	fmt.Println(o.Retry.Delay, o.AttemptTimeout, err)
	_, err = resilience.LoadOptions(cfg, "catalog")
	var ve *resilience.ValidationError
	fmt.Println(errors.As(err, &ve), err)
	// Output:
	// 500ms 10s <nil>
	// true resilience: Aspire:Resilience:Http:Clients:catalog:AttemptTimeout:Timeout: the attempt timeout (1m0s) must not exceed the total request timeout TotalRequestTimeout:Timeout (30s)
}
