package aspireredis_test

import (
	"maps"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/goaspire/goaspire/health"
	"github.com/goaspire/goaspire/internal/otlptest"
	"github.com/goaspire/goaspire/internal/poll"
)

func TestMain(m *testing.M) {
	// go-redis's re-authentication workers (one per connection marked
	// after a credentials refresh) may outlive the client's Close by up to
	// its PoolTimeout, waiting for a connection that was closed.
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/auth/streaming.(*ReAuthPoolHook).OnPut.func1"))
}

// hangGuard bounds waits for something that must happen on its own; it is
// far above any deadline the tests set, so it only catches hangs.
const hangGuard = 60 * time.Second

type product struct {
	Name string `json:"name"`
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, 10*time.Second, what, cond)
}

func checkNames(checks []health.Check) string {
	var names []string
	for _, c := range checks {
		names = append(names, c.Name)
	}
	return strings.Join(names, ",")
}

// exportTo is the configuration of an App exporting every signal to rcv
// over protocol ("grpc" or "http/protobuf") whose processors never export
// on their own during a test, so what arrives was flushed by Shutdown,
// plus the key/value pairs kv.
func exportTo(rcv *otlptest.Receiver, protocol string, kv ...string) map[string]string {
	endpoint := rcv.GRPCEndpoint
	if protocol != "grpc" {
		endpoint = rcv.HTTPEndpoint
	}
	m := map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
		"OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
		"OTEL_BSP_SCHEDULE_DELAY":     "600000",
		"OTEL_BLRP_SCHEDULE_DELAY":    "600000",
		"OTEL_METRIC_EXPORT_INTERVAL": "600000",
	}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// merge returns the union of ms, later maps winning.
func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		maps.Copy(out, m)
	}
	return out
}

func spanNames(rcv *otlptest.Receiver) []string {
	var out []string
	for _, s := range rcv.Spans() {
		out = append(out, s.Span.Name)
	}
	return out
}

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
