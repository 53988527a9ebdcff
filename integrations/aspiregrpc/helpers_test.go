package aspiregrpc_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/goaspire/goaspire/integrations/aspiregrpc"
	"github.com/goaspire/goaspire/internal/grpctest"
	"github.com/goaspire/goaspire/internal/grpctest/echopb"
	"github.com/goaspire/goaspire/internal/otlptest"
	"github.com/goaspire/goaspire/internal/poll"
	"github.com/goaspire/goaspire/servicedefaults"
	"github.com/goaspire/goaspire/servicedefaults/servicedefaultstest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fastRetries makes gRPC retries wait milliseconds instead of seconds.
var fastRetries = map[string]string{"Aspire__Resilience__Grpc__Retry__Delay": "00:00:00.01"}

// slowExport keeps the SDK's batches until Shutdown flushes them.
var slowExport = map[string]string{
	"OTEL_BSP_SCHEDULE_DELAY":     "600000",
	"OTEL_BLRP_SCHEDULE_DELAY":    "600000",
	"OTEL_METRIC_EXPORT_INTERVAL": "600000",
}

// with returns a copy of base with the key-value pairs kv set.
func with(base map[string]string, kv ...string) map[string]string {
	out := map[string]string{}
	for k, v := range base {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

// newApp makes an App (not serving yet) with exactly values as its
// configuration; it is shut down when the test ends.
func newApp(t testing.TB, values map[string]string, opts ...servicedefaults.Option) *servicedefaultstest.App {
	t.Helper()
	return servicedefaultstest.NewUnstarted(t, nil, values, opts...)
}

func echoClient(t testing.TB, h servicedefaults.Host, name string) echopb.EchoClient {
	t.Helper()
	cc, err := aspiregrpc.Client(context.Background(), h, name)
	if err != nil {
		t.Fatal(err)
	}
	return echopb.NewEchoClient(cc)
}

func getInstance(c echopb.EchoClient) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rep, err := c.Get(ctx, &echopb.EchoRequest{Message: "hi"})
	return rep.GetInstance(), err
}

// grpcServer returns app's gRPC server, failing the test on an error.
func grpcServer(t testing.TB, app *servicedefaultstest.App, opts ...grpc.ServerOption) *grpc.Server {
	t.Helper()
	gs, err := aspiregrpc.Server(app.App, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return gs
}

// serveGRPC serves app, with an Echo registered on its gRPC server, and
// returns the HTTP listener's address.
func serveGRPC(t *testing.T, app *servicedefaultstest.App, instance string) (string, *grpctest.Echo) {
	t.Helper()
	e := &grpctest.Echo{Instance: instance}
	echopb.RegisterEchoServer(grpcServer(t, app), e)
	app.Start()
	return strings.TrimPrefix(app.URL, "http://"), e
}

func plainClient(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, 10*time.Second, what, cond)
}

func get(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

func spanNames(rcv *otlptest.Receiver) []string {
	var out []string
	for _, s := range rcv.Spans() {
		out = append(out, s.Span.Name)
	}
	return out
}

func hexID(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}
