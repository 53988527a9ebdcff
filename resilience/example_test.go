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

// The standard pipeline under an http.Client, without servicedefaults:
// the settings of the client "catalog" are read from configuration, and
// the logical name is resolved through discovery on every attempt, so the
// retry goes to the other instance. Here the network is a scripted fake.
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
	c, err := resilience.LoadTransportConfig(cfg, "catalog")
	if err != nil {
		fmt.Println(err)
		return
	}
	c.Resolver = discovery.NewResolver(cfg)
	c.TimeScale = 0.01 // a fast example; leave it out in production
	rt, err := resilience.NewTransport(network, c)
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

// Without configuration: a nil config is Aspire's defaults, and options
// set in code start from DefaultOptions.
func ExampleNewTransport_options() {
	o := resilience.DefaultOptions()
	o.Retry.MaxRetryAttempts = 1
	o.Retry.Delay = 10 * time.Millisecond
	network := resiliencetest.NewTransport(resiliencetest.Fail(resiliencetest.ErrConnectionReset))
	rt, err := resilience.NewTransport(network, &resilience.TransportConfig{Options: o})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer rt.Close()
	_, err = (&http.Client{Transport: rt}).Get("http://10.0.0.1:8080/")
	fmt.Println(errors.Is(err, resilience.ErrRetriesExceeded), network.Calls())
	// Output: true 2
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
	rt, err := resilience.NewHedgingTransport(network, &resilience.HedgingConfig{
		Options:  h,
		Resolver: discovery.NewResolver(cfg),
	})
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
	p, err := resilience.NewPipeline(&resilience.PipelineConfig{Name: "orders-db", TimeScale: 0.01})
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

// A non-HTTP pipeline's settings come from
// Aspire:Resilience:Pipelines:{name}.
func ExampleLoadPipelineConfig() {
	cfg := discovery.FromMap(map[string]string{
		"Aspire:Resilience:Pipelines:orders-db:Retry:MaxRetryAttempts": "5",
	})
	c, err := resilience.LoadPipelineConfig(cfg, "orders-db")
	if err != nil {
		fmt.Println(err)
		return
	}
	p, err := resilience.NewPipeline(c)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer p.Close()
	err = p.Run(context.Background(), func(ctx context.Context) error { return nil })
	fmt.Println(c.Name, c.Options.Retry.MaxRetryAttempts, err)
	// Output: orders-db 5 <nil>
}

// Configuration keys override the defaults; values that break the rules
// .NET enforces are a *discovery.KeyError naming the full key.
func ExampleLoadTransportConfig() {
	cfg := discovery.FromMap(map[string]string{
		"Aspire:Resilience:Http:Retry:Delay":                            "00:00:00.5",
		"Aspire:Resilience:Http:Clients:catalog:AttemptTimeout:Timeout": "00:01:00",
	})
	c, err := resilience.LoadTransportConfig(cfg, "")
	fmt.Println(c.Options.Retry.Delay, c.Options.AttemptTimeout, err)
	_, err = resilience.LoadTransportConfig(cfg, "catalog")
	var ke *discovery.KeyError
	if errors.As(err, &ke) {
		fmt.Println(ke.Key)
	}
	fmt.Println(err)
	// Output:
	// 500ms 10s <nil>
	// Aspire:Resilience:Http:Clients:catalog:AttemptTimeout:Timeout
	// resilience: config key "Aspire:Resilience:Http:Clients:catalog:AttemptTimeout:Timeout": the attempt timeout (1m0s) must not exceed the total request timeout TotalRequestTimeout:Timeout (30s)
}

// A reconnect loop of one's own with the retry strategy's delays.
func ExampleNewBackoff() {
	b := resilience.NewBackoff(resilience.RetryOptions{
		BackoffType: resilience.BackoffExponential,
		Delay:       100 * time.Millisecond,
		MaxDelay:    time.Second,
	})
	for range 5 {
		fmt.Print(b.Next(), " ")
	}
	b.Reset() // after a success
	fmt.Println(b.Next())
	// Output: 100ms 200ms 400ms 800ms 1s 100ms
}
