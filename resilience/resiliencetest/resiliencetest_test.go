package resiliencetest_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/goaspire/goaspire/resilience"
	"github.com/goaspire/goaspire/resilience/resiliencetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestScriptPlaysInOrderThenRepeatsLast(t *testing.T) {
	fake := resiliencetest.NewTransport(
		resiliencetest.Respond(503).Times(2),
		resiliencetest.Fail(resiliencetest.ErrConnectionReset),
		resiliencetest.Respond(200).Body("ok").Header("X-Step", "last"),
	)
	c := &http.Client{Transport: fake}
	var got []string
	for i := 0; i < 5; i++ {
		resp, err := c.Get("http://svc/")
		if err != nil {
			got = append(got, "error")
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got = append(got, resp.Status+" "+string(b)+" "+resp.Header.Get("X-Step"))
	}
	want := []string{"503 Service Unavailable  ", "503 Service Unavailable  ", "error", "200 OK ok last", "200 OK ok last"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	if fake.Calls() != 5 || fake.OpenBodies() != 0 {
		t.Fatalf("calls %d, open bodies %d", fake.Calls(), fake.OpenBodies())
	}
}

func TestRetriesThroughThePipelineInMilliseconds(t *testing.T) {
	fake := resiliencetest.NewTransport(
		resiliencetest.Respond(503),
		resiliencetest.Respond(429).RetryAfter(2*time.Second),
		resiliencetest.Fail(resiliencetest.ErrConnectionRefused),
		resiliencetest.Respond(200).Body("done"),
	)
	c, err := resiliencetest.NewClient(fake, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	req, _ := http.NewRequest("PUT", "http://svc/items/1", strings.NewReader("payload"))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "done" || fake.Calls() != 4 {
		t.Fatalf("got %q after %d calls", b, fake.Calls())
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("took %v; TimeScale should make it milliseconds", d)
	}
	reqs := fake.Requests()
	for i, r := range reqs {
		if string(r.Body) != "payload" || r.Method != "PUT" || r.URL.Path != "/items/1" {
			t.Fatalf("request %d = %s %s %q", i, r.Method, r.URL, r.Body)
		}
	}
	// Retry-After: 2 s, scaled to 20 ms.
	if gap := reqs[2].Time.Sub(reqs[1].Time); gap < 20*time.Millisecond {
		t.Fatalf("retry after the 429 came %v later, want at least the scaled Retry-After", gap)
	}
	if fake.OpenBodies() != 0 {
		t.Fatalf("%d response bodies left open: failed responses must be drained and closed", fake.OpenBodies())
	}
}

func TestHangAndAfterHonourTheContext(t *testing.T) {
	fake := resiliencetest.NewTransport(resiliencetest.Hang(), resiliencetest.Delay(time.Hour))
	c, err := resiliencetest.NewClient(fake, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Get("http://svc/")
	if !errors.Is(err, resilience.ErrTimeout) {
		t.Fatalf("error = %v, want a timeout (100 ms attempts, 300 ms in total once scaled)", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://svc/", nil)
	if _, err := fake.RoundTrip(req); !errors.Is(err, context.Canceled) {
		t.Fatalf("RoundTrip with a canceled context = %v", err)
	}
}

func TestRetryAfterDate(t *testing.T) {
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	fake := resiliencetest.NewTransport(resiliencetest.Respond(503).RetryAfterDate(at))
	resp, err := fake.RoundTrip(httpGet("http://svc/"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("Retry-After"); got != "Wed, 02 Jan 2030 03:04:05 GMT" {
		t.Fatalf("Retry-After = %q", got)
	}
}

func httpGet(url string) *http.Request {
	req, _ := http.NewRequest("GET", url, nil)
	return req
}
