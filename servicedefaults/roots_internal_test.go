package servicedefaults

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/internal/otlptest"
	"github.com/goaspire/goaspire/internal/roots"
	"github.com/goaspire/goaspire/internal/syncbuf"
)

// newRootsApp makes an App from values, without the process-wide globals.
func newRootsApp(t *testing.T, values map[string]string) (*App, *syncbuf.Buffer) {
	t.Helper()
	logs := &syncbuf.Buffer{}
	app, err := Add(context.Background(), nil, WithConfig(discovery.FromMap(values)), WithLogWriter(logs), WithoutGlobals())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = app.Shutdown(context.Background()) })
	return app, logs
}

// writeCert writes a fresh self-signed certificate to a file of its own,
// so its roots have a cache key no other test uses, and returns the file
// and the certificate for a TLS server.
func writeCert(t *testing.T) (string, tls.Certificate) {
	t.Helper()
	cert, certPEM := otlptest.NewCertificate(t)
	file := filepath.Join(t.TempDir(), "dev.pem")
	if err := os.WriteFile(file, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return file, cert
}

func probe(t *testing.T, app *App) {
	t.Helper()
	rec := httptest.NewRecorder()
	app.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, HealthPath, nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /health = %d", rec.Code)
	}
}

// TestRootsReadOncePerProcess: Add and serving do not read the trusted
// roots; the first use does, once for every App of the process, and the
// roots read are the ones TLS uses.
func TestRootsReadOncePerProcess(t *testing.T) {
	file, cert := writeCert(t)
	backend := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "secure")
	}))
	backend.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	backend.StartTLS()
	defer backend.Close()

	values := map[string]string{"SSL_CERT_FILE": file, "services__api__https__0": backend.URL}
	first, _ := newRootsApp(t, values)
	second, _ := newRootsApp(t, values)
	probe(t, first)
	probe(t, second)
	if n := rootsReads(file, ""); n != 0 {
		t.Fatalf("Add and /health read the roots %d times, want 0", n)
	}

	pool := first.RootCAs()
	if pool == nil {
		t.Fatal("RootCAs = nil with SSL_CERT_FILE set")
	}
	if second.RootCAs() != pool {
		t.Error("two Apps of the same configuration have two pools")
	}
	for _, app := range []*App{first, second} {
		resp, err := app.HTTPClient("api").Get("https+http://api/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "secure" {
			t.Fatalf("GET = %d %q", resp.StatusCode, body)
		}
	}
	if n := rootsReads(file, ""); n != 1 {
		t.Errorf("the roots were read %d times, want 1", n)
	}
}

// TestRootsNotReadWithoutTLS: a service that serves and calls over plain
// HTTP never reads the roots when its configuration names the process
// environment's SSL_CERT_FILE and SSL_CERT_DIR (as discovery.Load does):
// Go's system roots hold them.
func TestRootsNotReadWithoutTLS(t *testing.T) {
	if !roots.SSLVarsInSystemRoots(runtime.GOOS) {
		t.Skipf("crypto/x509 does not read SSL_CERT_FILE on %s", runtime.GOOS)
	}
	file, _ := writeCert(t)
	dir := t.TempDir()
	t.Setenv("SSL_CERT_FILE", file)
	t.Setenv("SSL_CERT_DIR", dir)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "plain") }))
	defer backend.Close()

	app, _ := newRootsApp(t, map[string]string{"SSL_CERT_FILE": file, "SSL_CERT_DIR": dir, "services__api__http__0": backend.URL})
	probe(t, app)
	resp, err := app.HTTPClient("api").Get("http://api/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if pool := app.RootCAs(); pool != nil {
		t.Error("RootCAs != nil: the system roots already hold the process environment's SSL_CERT_FILE")
	}
	if n := rootsReads(file, dir); n != 0 {
		t.Errorf("the roots were read %d times, want 0", n)
	}

	// The same values read from elsewhere than the environment are read.
	t.Setenv("SSL_CERT_DIR", "")
	if app.RootCAs() == nil || rootsReads(file, dir) != 1 {
		t.Errorf("with SSL_CERT_DIR only in the configuration: RootCAs = %v, %d reads, want a pool, 1 read", app.RootCAs(), rootsReads(file, dir))
	}
}

// TestRootsReadForHTTPSExporter: an https OTLP endpoint needs the roots at
// Add; an http one does not.
func TestRootsReadForHTTPSExporter(t *testing.T) {
	for _, tt := range []struct {
		endpoint string
		reads    int
	}{{"http://127.0.0.1:4318", 0}, {"https://127.0.0.1:4318", 1}} {
		t.Run(tt.endpoint, func(t *testing.T) {
			file, _ := writeCert(t)
			newRootsApp(t, map[string]string{"SSL_CERT_FILE": file, "OTEL_EXPORTER_OTLP_ENDPOINT": tt.endpoint})
			newRootsApp(t, map[string]string{"SSL_CERT_FILE": file, "OTEL_EXPORTER_OTLP_ENDPOINT": tt.endpoint})
			if n := rootsReads(file, ""); n != tt.reads {
				t.Errorf("read %d times, want %d", n, tt.reads)
			}
		})
	}
}

// TestAddChecksSSLCertFile: Add fails, naming SSL_CERT_FILE, when the file
// cannot be read or holds no certificate, without reading the roots.
func TestAddChecksSSLCertFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for name, file := range map[string]string{
		"missing":     filepath.Join(dir, "missing.pem"),
		"directory":   dir,
		"not PEM":     write("text.pem", "not a certificate\n"),
		"private key": write("key.pem", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
		"bad DER":     write("bad.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
	} {
		t.Run(name, func(t *testing.T) {
			app, err := Add(context.Background(), nil, WithConfig(discovery.FromMap(map[string]string{"SSL_CERT_FILE": file})), WithLogWriter(io.Discard), WithoutGlobals())
			if err == nil {
				_ = app.Shutdown(context.Background())
				t.Fatal("Add succeeded")
			}
			if !strings.Contains(err.Error(), "SSL_CERT_FILE") {
				t.Errorf("error %q does not name SSL_CERT_FILE", err)
			}
			if n := rootsReads(file, ""); n != 0 {
				t.Errorf("Add read the roots %d times", n)
			}
		})
	}
	// A bundle whose first certificate is broken still passes, as
	// AppendCertsFromPEM takes the rest.
	good, _ := writeCert(t)
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	mixed := write("mixed.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"+string(data))
	app, _ := newRootsApp(t, map[string]string{"SSL_CERT_FILE": mixed})
	if app.RootCAs() == nil {
		t.Error("RootCAs = nil")
	}
	// The certificate is found wherever it lies, across the reads too.
	for _, pad := range []int{16<<10 - 300, 16 << 10, 40 << 10} {
		file := write(fmt.Sprintf("padded-%d.pem", pad), strings.Repeat("# comment\n", pad/10)+string(data))
		if err := roots.CheckFile(file); err != nil {
			t.Errorf("certificate after %d bytes: %v", pad, err)
		}
	}
}

// TestRootsFileGoneAfterAdd: an SSL_CERT_FILE removed between Add and the
// first use is reported once, naming the variable, and the other roots
// are still trusted.
func TestRootsFileGoneAfterAdd(t *testing.T) {
	file, _ := writeCert(t)
	app, logs := newRootsApp(t, map[string]string{"SSL_CERT_FILE": file})
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if app.RootCAs() == nil {
			t.Fatal("RootCAs = nil: want the system roots")
		}
	}
	out := logs.String()
	if n := strings.Count(out, "reading the trusted roots failed"); n != 1 || !strings.Contains(out, "SSL_CERT_FILE") {
		t.Errorf("want one warning naming SSL_CERT_FILE, got %d:\n%s", n, out)
	}
}

// BenchmarkAdd measures Add without an OTLP endpoint, with the CA
// variables of a Debian image (SSL_CERT_FILE and SSL_CERT_DIR) in the
// configuration. Profile it with -cpuprofile.
func BenchmarkAdd(b *testing.B) {
	values := map[string]string{}
	for _, k := range []string{"SSL_CERT_FILE", "SSL_CERT_DIR"} {
		if v := os.Getenv(k); v != "" {
			values[k] = v
		}
	}
	cfg := discovery.FromMap(values)
	for b.Loop() {
		app, err := Add(context.Background(), nil, WithConfig(cfg), WithLogWriter(io.Discard), WithoutGlobals())
		if err != nil {
			b.Fatal(err)
		}
		_ = app.Shutdown(context.Background())
	}
}
