package resiliencetest_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/goaspire/goaspire/resilience"
	"github.com/goaspire/goaspire/resilience/resiliencetest"
)

// productName is the code under test: it fetches a product from the
// catalog service.
func productName(client *http.Client, id int) (string, error) {
	resp, err := client.Get(fmt.Sprintf("http://catalog/products/%d", id))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("catalog answered %s", resp.Status)
	}
	var p struct{ Name string }
	err = json.NewDecoder(resp.Body).Decode(&p)
	return p.Name, err
}

// A unit test of productName under failure, without a network: the
// catalog fails twice, asks to be called back later, then answers. With
// resiliencetest.TimeScale the retries take milliseconds instead of seconds.
func Example() {
	fake := resiliencetest.NewTransport(
		resiliencetest.Respond(503).Times(2),
		resiliencetest.Respond(429).RetryAfter(5*time.Second),
		resiliencetest.Respond(200).Body(`{"Name":"Widget"}`),
	)
	rt, err := resilience.NewTransport(fake, &resilience.TransportConfig{TimeScale: resiliencetest.TimeScale})
	if err != nil {
		panic(err)
	}
	client := &http.Client{Transport: rt}

	name, err := productName(client, 7)
	fmt.Println(name, err)
	fmt.Println("requests:", fake.Calls(), "open bodies:", fake.OpenBodies())

	// Once the retries are used up, the last response reaches the caller.
	fake = resiliencetest.NewTransport(resiliencetest.Respond(503))
	client, _ = resiliencetest.NewClient(fake, nil)
	_, err = productName(client, 7)
	fmt.Println(err, "after", fake.Calls(), "requests")
	// Output:
	// Widget <nil>
	// requests: 4 open bodies: 0
	// catalog answered 503 Service Unavailable after 4 requests
}
