package interop_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/goaspire/goaspire/internal/otlptest"
	"github.com/goaspire/goaspire/internal/syncbuf"
)

// buildUsers builds the users service of the examples (cmd
// examples/users) into a temporary directory.
func buildUsers(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	}
	bin := filepath.Join(t.TempDir(), "users")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, goBin, "build", "-o", bin, "github.com/goaspire/goaspire/examples/users").CombinedOutput()
	if err != nil {
		t.Fatalf("go build examples/users: %v\n%s", err, out)
	}
	return bin
}

// TestGRPCPythonClientToUsersService runs the users service of the
// examples (aspiregrpc.Server) and calls it from grpcio without generated
// code: GetUser with a hand-encoded UserRequest, the InvalidArgument of a
// bad id, and grpc.health.v1.Health/Check. The traceparent the Python
// client sends by hand as metadata is continued by the server span.
func TestGRPCPythonClientToUsersService(t *testing.T) {
	python(t)
	bin := buildUsers(t)
	rcv := otlptest.Start(t)
	httpPort, grpcPort := freePort(t), freePort(t)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OTEL_") && !strings.HasPrefix(kv, "PORT=") && !strings.HasPrefix(kv, "GRPC_PORT=") &&
			!strings.HasPrefix(kv, "HTTP_PORTS=") && !strings.HasPrefix(kv, "ASPNETCORE_") && !strings.HasPrefix(kv, "Aspire__") {
			env = append(env, kv)
		}
	}
	env = append(env,
		fmt.Sprintf("ASPNETCORE_URLS=http://127.0.0.1:%d", httpPort),
		fmt.Sprint("GRPC_PORT=", grpcPort),
		"OTEL_EXPORTER_OTLP_ENDPOINT="+rcv.HTTPEndpoint,
		"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
		"OTEL_BSP_SCHEDULE_DELAY=100",
		"OTEL_SERVICE_NAME=users",
		"OTEL_RESOURCE_ATTRIBUTES=service.instance.id=users-1",
	)
	cmd := exec.Command(bin)
	cmd.Env = env
	logs := &syncbuf.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("users service: %v; its logs:\n%s", err, logs.String())
			}
		case <-time.After(time.Minute):
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("users service did not stop on SIGTERM; its logs:\n%s", logs.String())
		}
		if t.Failed() {
			t.Logf("users service logs:\n%s", logs.String())
		}
	})

	const traceID, parentID = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
	lines := run(t, nil, "grpc_client.py", fmt.Sprint("127.0.0.1:", grpcPort), "00-"+traceID+"-"+parentID+"-01")
	results := map[string]map[string]any{}
	for _, l := range lines {
		var r map[string]any
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("client line %q: %v", l, err)
		}
		results[fmt.Sprint(r["call"])] = r
	}
	if r := results["GetUser"]; r == nil || r["id"] != float64(7) || r["name"] != "John Doe" || r["served_by"] != "users-1" {
		t.Errorf("GetUser(7) = %v", r)
	}
	if r := results["GetUser0"]; r == nil || r["code"] != "INVALID_ARGUMENT" {
		t.Errorf("GetUser(0) = %v, want INVALID_ARGUMENT", r)
	}
	if r := results["Check"]; r == nil || r["status"] != float64(1) {
		t.Errorf("Health/Check = %v, want SERVING (1)", r)
	}

	otlptest.Wait(t, 2*time.Minute, "the GetUser server span", func() bool {
		for _, s := range rcv.Spans() {
			if s.Span.Kind == tracepb.Span_SPAN_KIND_SERVER && strings.Contains(s.Span.Name, "GetUser") &&
				hex.EncodeToString(s.Span.TraceId) == traceID && hex.EncodeToString(s.Span.ParentSpanId) == parentID {
				return true
			}
		}
		return false
	})
}
