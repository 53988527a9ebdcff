package servicedefaults_test

import (
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// buildREADMEMain builds testdata/sigterm, the main of the README's first
// example, into dir.
func buildREADMEMain(dir string) (string, error) {
	bin := filepath.Join(dir, "sigterm")
	out, err := exec.Command("go", "build", "-o", bin, "./testdata/sigterm").CombinedOutput()
	if err != nil {
		return "", errors.New(string(out) + err.Error())
	}
	return bin, nil
}

// TestREADMEMainSIGTERM runs a main shaped like the README's first example
// (signal.NotifyContext, Add, a deferred Shutdown, log.Fatal on Run's
// error) as a process, waits for /health, sends SIGTERM and checks that it
// exits with status 0 and logs no error: with no collector, and with a
// collector that is down (a closed port) or black-holed (a listener that
// accepts and never answers), over OTLP/HTTP and OTLP/gRPC. A collector
// that is down costs a warning with what was dropped, not the exit status.
func TestREADMEMainSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a child process")
	}
	if _, err := exec.LookPath("go"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip("no go tool to build the child:", err)
	}
	bin, err := buildREADMEMain(t.TempDir())
	if err != nil {
		t.Fatalf("building testdata/sigterm: %v", err)
	}

	closed := freeAddr(t)
	hole, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hole.Close()
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := hole.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c) // never read, never answered
		}
	}()

	const flush = 5 * time.Second
	for _, tt := range []struct {
		name, endpoint, proto string
	}{
		{"no collector", "", ""},
		{"closed port http", "http://" + closed, "http/protobuf"},
		{"closed port grpc", "http://" + closed, "grpc"},
		{"black hole http", "http://" + hole.Addr().String(), "http/protobuf"},
		{"black hole grpc", "http://" + hole.Addr().String(), "grpc"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			addr := freeAddr(t)
			_, port, _ := net.SplitHostPort(addr)
			cmd := exec.Command(bin)
			cmd.Env = []string{
				"PORT=" + port,
				"OTEL_SERVICE_NAME=readme-main",
				"Aspire__ServiceDefaults__FlushTimeout=" + flush.String(),
			}
			if tt.endpoint != "" {
				cmd.Env = append(cmd.Env,
					"OTEL_EXPORTER_OTLP_ENDPOINT="+tt.endpoint,
					"OTEL_EXPORTER_OTLP_PROTOCOL="+tt.proto,
					// Everything is exported at shutdown.
					"OTEL_BSP_SCHEDULE_DELAY=600000",
					"OTEL_BLRP_SCHEDULE_DELAY=600000",
					"OTEL_METRIC_EXPORT_INTERVAL=600000",
				)
			}
			var stderr, stdout syncBuffer
			cmd.Stderr, cmd.Stdout = &stderr, &stdout
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			reaped := false
			defer func() {
				if !reaped {
					_ = cmd.Process.Kill()
					<-exited
				}
			}()

			client := &http.Client{Timeout: 5 * time.Second}
			healthy := false
			for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
				select {
				case err := <-exited:
					reaped = true
					t.Fatalf("child exited before serving: %v\n%s", err, stderr.String())
				default:
				}
				if res, err := client.Get("http://" + addr + "/health"); err == nil {
					res.Body.Close()
					if res.StatusCode == http.StatusOK {
						healthy = true
						break
					}
				}
			}
			if !healthy {
				t.Fatalf("/health never answered 200:\n%s", stderr.String())
			}
			// A span and a log record for the collector.
			if res, err := client.Get("http://" + addr + "/hello"); err != nil {
				t.Fatal(err)
			} else {
				res.Body.Close()
			}

			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			// The flush timeout bounds the shutdown; the slack is for a
			// loaded machine, not a measurement.
			select {
			case err = <-exited:
				reaped = true
			case <-time.After(flush + 60*time.Second):
				t.Fatalf("child still running %v after SIGTERM:\n%s", flush+60*time.Second, stderr.String())
			}
			if err != nil {
				t.Errorf("child exited with %v, want status 0:\n%s%s", err, stdout.String(), stderr.String())
			}

			var warnings []map[string]any
			for _, l := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
				var rec map[string]any
				if err := json.Unmarshal([]byte(l), &rec); err != nil {
					t.Errorf("stderr line is not a JSON log record: %q", l)
					continue
				}
				if strings.Contains(l, `"<nil>"`) {
					t.Errorf("record with a <nil> value: %s", l)
				}
				switch rec["level"] {
				case "ERROR":
					t.Errorf("error record: %s", l)
				case "WARN":
					warnings = append(warnings, rec)
				}
			}
			if tt.endpoint == "" {
				if len(warnings) != 0 {
					t.Errorf("warnings without a collector: %v", warnings)
				}
				return
			}
			if len(warnings) != 1 || warnings[0]["msg"] != "telemetry could not be exported at shutdown" {
				t.Fatalf("warnings = %v, want one about the telemetry lost:\n%s", warnings, stderr.String())
			}
			w := warnings[0]
			// The /hello span, at least "listening", "hello" and
			// "shutting down", and the metrics of the request.
			if n, _ := w["dropped_spans"].(float64); n < 1 {
				t.Errorf("dropped_spans = %v, want at least 1", w["dropped_spans"])
			}
			if n, _ := w["dropped_log_records"].(float64); n < 3 {
				t.Errorf("dropped_log_records = %v, want at least 3", w["dropped_log_records"])
			}
			if msg, _ := w["error"].(string); msg == "" {
				t.Errorf("warning without the error: %v", w)
			}
		})
	}
}

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
