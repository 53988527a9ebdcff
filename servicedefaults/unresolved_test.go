package servicedefaults_test

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/servicedefaults/servicedefaultstest"
)

// TestHTTPClientUnresolvedService: a client named after a service nothing
// configures (a typo) fails at once with an error naming the variables,
// and the App warns once however many calls fail. (That no attempt is
// retried and each call makes one DNS lookup: resilience's
// TestUnresolvedServiceIsNotRetried, against a DNS server of its own.)
func TestHTTPClientUnresolvedService(t *testing.T) {
	// The name goes to the system's DNS, which must say it has no such host.
	_, err := net.DefaultResolver.LookupHost(context.Background(), "pricng")
	var dnsErr *net.DNSError
	if !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
		if os.Getenv("CI") != "" && os.Getenv("CI") != "false" {
			t.Fatalf("the system's DNS does not answer NXDOMAIN for pricng: %v", err)
		}
		t.Skipf("the system's DNS does not answer NXDOMAIN for pricng: %v", err)
	}

	app := servicedefaultstest.New(t, nil, map[string]string{"services__pricing__http__0": "http://127.0.0.1:1"})
	client := app.HTTPClient("pricng")
	const calls = 4
	for i := range calls {
		_, err := client.Get("/prices")
		var uerr *discovery.UnresolvedError
		if !errors.As(err, &uerr) {
			t.Fatalf("call %d: err = %v, want a *discovery.UnresolvedError", i, err)
		}
		for _, v := range []string{"services__pricng__http__0", "PRICNG_HTTP", "services__pricng__https__0", "PRICNG_HTTPS"} {
			if !strings.Contains(err.Error(), v) {
				t.Errorf("error %q does not name %s", err, v)
			}
		}
		if strings.Contains(err.Error(), "attempts") {
			t.Errorf("call %d was retried: %v", i, err)
		}
	}
	// Another client of the same App calling the same name: still one.
	if _, err := app.HTTPClient("other").Get("http://pricng/"); err == nil {
		t.Fatal("other client: no error")
	}
	if n := strings.Count(app.Logs.String(), "DNS does not know it"); n != 1 {
		t.Errorf("%d warnings for %d calls, want 1:\n%s", n, calls+1, app.Logs.String())
	}
}
