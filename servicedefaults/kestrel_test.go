package servicedefaults_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/internal/otlptest"
	"github.com/goaspire/goaspire/servicedefaults"
)

// writeCert writes a throwaway certificate and its key as PEM files and
// returns their paths and a pool trusting the certificate.
func writeCert(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	cert, certPEM := otlptest.NewCertificate(t)
	der, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	return certFile, keyFile, pool
}

func protoHandler() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /proto", func(w http.ResponseWriter, r *http.Request) {
		tlsState := "plain"
		if r.TLS != nil {
			tlsState = "tls"
		}
		io.WriteString(w, r.Proto+" "+tlsState)
	})
	mux.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, "reading the body: "+err.Error(), http.StatusBadRequest)
			return
		}
		w.Write(body)
	})
	return mux
}

func h2cClient() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &p}}
}

// TestServerHTTPS serves HTTPS from ASPNETCORE_URLS and a Kestrel
// default certificate, HTTP/2 negotiated by ALPN and HTTP/1.1 both.
func TestServerHTTPS(t *testing.T) {
	certFile, keyFile, pool := writeCert(t)
	tests := []struct {
		name   string
		values map[string]string
	}{
		{"ASPNETCORE_URLS", map[string]string{
			"ASPNETCORE_URLS":                         "https://127.0.0.1:0",
			"Kestrel__Certificates__Default__Path":    certFile,
			"Kestrel__Certificates__Default__KeyPath": keyFile,
		}},
		{"Kestrel endpoint", map[string]string{
			"Kestrel__Endpoints__web__Url":                  "https://127.0.0.1:0",
			"Kestrel__Endpoints__web__Certificate__Path":    certFile,
			"Kestrel__Endpoints__web__Certificate__KeyPath": keyFile,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app, _ := newApp(t, tt.values, protoHandler())
			url := "https" + strings.TrimPrefix(serve(t, app), "http")
			for _, c := range []struct {
				h2   bool
				want string
			}{{true, "HTTP/2.0 tls"}, {false, "HTTP/1.1 tls"}} {
				tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: c.h2}
				code, body := get(t, &http.Client{Transport: tr}, url+"/proto")
				tr.CloseIdleConnections()
				if code != http.StatusOK || body != c.want {
					t.Errorf("GET /proto (h2 %t) = %d %q, want 200 %q", c.h2, code, body, c.want)
				}
			}
			// Plain HTTP on the TLS port fails.
			if resp, err := http.Get("http" + strings.TrimPrefix(url, "https") + "/proto"); err == nil {
				if resp.StatusCode == http.StatusOK {
					t.Error("plain HTTP was served on the https endpoint")
				}
				resp.Body.Close()
			}
		})
	}
}

// encryptKey encrypts keyFile as PKCS#8 with openssl (PBES2, PBKDF2 with
// HMAC-SHA256, the given AES-CBC cipher) and returns the new file's path.
func encryptKey(t *testing.T, keyFile, cipher, password string) string {
	t.Helper()
	bin, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("openssl not found")
		}
		t.Skip("openssl not found")
	}
	out := filepath.Join(t.TempDir(), "encrypted-"+cipher+".pem")
	cmd := exec.Command(bin, "pkcs8", "-topk8", "-in", keyFile, "-out", out, "-v2", cipher, "-v2prf", "hmacWithSHA256", "-passout", "pass:"+password)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("openssl pkcs8: %v\n%s", err, b)
	}
	return out
}

// TestServerEncryptedKey serves HTTPS with a key encrypted by openssl,
// decrypted with Kestrel:Certificates:Default:Password.
func TestServerEncryptedKey(t *testing.T) {
	certFile, keyFile, pool := writeCert(t)
	for _, cipher := range []string{"aes-256-cbc", "aes-128-cbc"} {
		t.Run(cipher, func(t *testing.T) {
			app, _ := newApp(t, map[string]string{
				"ASPNETCORE_URLS":                          "https://127.0.0.1:0",
				"Kestrel__Certificates__Default__Path":     certFile,
				"Kestrel__Certificates__Default__KeyPath":  encryptKey(t, keyFile, cipher, "s3cret pass"),
				"Kestrel__Certificates__Default__Password": "s3cret pass",
			}, protoHandler())
			url := "https" + strings.TrimPrefix(serve(t, app), "http")
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
			defer tr.CloseIdleConnections()
			if code, body := get(t, &http.Client{Transport: tr}, url+"/proto"); code != http.StatusOK || body != "HTTP/1.1 tls" {
				t.Errorf("GET /proto = %d %q", code, body)
			}
		})
	}
}

// TestServerH2C speaks HTTP/2 with prior knowledge over plain TCP, unless
// Protocols says Http1.
func TestServerH2C(t *testing.T) {
	tests := []struct {
		protocols string
		wantH2C   bool
	}{
		{"", true},
		{"Http1AndHttp2", true},
		{"Http2", true},
		{"Http1", false},
	}
	for _, tt := range tests {
		t.Run("protocols="+tt.protocols, func(t *testing.T) {
			values := map[string]string{}
			if tt.protocols != "" {
				values["Kestrel__EndpointDefaults__Protocols"] = tt.protocols
			}
			app, _ := newApp(t, values, protoHandler())
			url := serve(t, app)
			client := h2cClient()
			defer client.CloseIdleConnections()
			resp, err := client.Get(url + "/proto")
			if !tt.wantH2C {
				if err == nil {
					resp.Body.Close()
					t.Fatalf("h2c request answered %s with Protocols=Http1", resp.Proto)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) != "HTTP/2.0 plain" {
				t.Errorf("h2c GET /proto = %q, want HTTP/2.0 plain", body)
			}
			served := false
			if resp, err := http.Get(url + "/proto"); err == nil {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				served = resp.StatusCode == http.StatusOK && string(body) == "HTTP/1.1 plain"
			}
			if wantH1 := tt.protocols != "Http2"; served != wantH1 {
				t.Errorf("HTTP/1.1 GET /proto served %t, want %t", served, wantH1)
			}
		})
	}
}

// TestServerMaxRequestBodySize answers 413 to a body over
// Kestrel:Limits:MaxRequestBodySize, whether its length is declared or
// not, and serves one at the limit.
func TestServerMaxRequestBodySize(t *testing.T) {
	app, _ := newApp(t, map[string]string{"Kestrel__Limits__MaxRequestBodySize": "10"}, protoHandler())
	url := serve(t, app)
	unlimited, _ := newApp(t, map[string]string{"Kestrel__Limits__MaxRequestBodySize": "null"}, protoHandler())
	unlimitedURL := serve(t, unlimited)

	h2c := h2cClient()
	defer h2c.CloseIdleConnections()
	// chunked hides the length from the client, so the body goes without
	// Content-Length (chunked over HTTP/1.1, plain DATA frames over h2c).
	chunked := func(s string) io.Reader { return io.MultiReader(strings.NewReader(s)) }
	tests := []struct {
		name   string
		client *http.Client
		url    string
		body   func() io.Reader
		want   int
	}{
		{"declared, at the limit", http.DefaultClient, url, func() io.Reader { return strings.NewReader("0123456789") }, http.StatusOK},
		{"declared, over", http.DefaultClient, url, func() io.Reader { return strings.NewReader("0123456789a") }, http.StatusRequestEntityTooLarge},
		{"chunked, at the limit", http.DefaultClient, url, func() io.Reader { return chunked("0123456789") }, http.StatusOK},
		{"chunked, over", http.DefaultClient, url, func() io.Reader { return chunked(strings.Repeat("x", 100)) }, http.StatusRequestEntityTooLarge},
		{"h2c, over", h2c, url, func() io.Reader { return chunked(strings.Repeat("x", 100)) }, http.StatusRequestEntityTooLarge},
		{"no limit", http.DefaultClient, unlimitedURL, func() io.Reader { return strings.NewReader(strings.Repeat("x", 1000)) }, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := tt.client.Post(tt.url+"/echo", "text/plain", tt.body())
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("POST /echo = %d, want %d", resp.StatusCode, tt.want)
			}
		})
	}
}

// TestServerMaxRequestHeadersTotalSize answers 431 to headers over
// Kestrel:Limits:MaxRequestHeadersTotalSize.
func TestServerMaxRequestHeadersTotalSize(t *testing.T) {
	tests := []struct {
		limit string
		want  int
	}{
		{"1024", http.StatusRequestHeaderFieldsTooLarge},
		{"", http.StatusOK}, // 32 KB by default
	}
	for _, tt := range tests {
		t.Run("limit="+tt.limit, func(t *testing.T) {
			app, _ := newApp(t, map[string]string{"Kestrel__Limits__MaxRequestHeadersTotalSize": tt.limit}, protoHandler())
			req, _ := http.NewRequest("GET", serve(t, app)+"/proto", nil)
			req.Header.Set("X-Big", strings.Repeat("x", 8<<10))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("8 KB header: %d, want %d", resp.StatusCode, tt.want)
			}
		})
	}
}

// TestServerRequestHeadersTimeout shows Kestrel:Limits:RequestHeadersTimeout
// applied: a client that never finishes its headers is disconnected. The
// read deadline is only a safety net; with the 30 s default the test
// fails on it.
func TestServerRequestHeadersTimeout(t *testing.T) {
	app, _ := newApp(t, map[string]string{"Kestrel__Limits__RequestHeadersTimeout": "00:00:00.2"}, protoHandler())
	addr := strings.TrimPrefix(serve(t, app), "http://")
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /proto HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = io.Copy(io.Discard, bufio.NewReader(conn))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the server kept waiting for the rest of the headers")
	}
}

// TestServerSettingsErrors: a bad server setting fails Add with an error
// naming the key, never quoting a password.
func TestServerSettingsErrors(t *testing.T) {
	certFile, keyFile, _ := writeCert(t)
	dir := t.TempDir()
	encrypted := filepath.Join(dir, "encrypted.pem")
	if err := os.WriteFile(encrypted, pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte("opaque")}), 0o600); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	https := func(kv ...string) map[string]string {
		m := map[string]string{"ASPNETCORE_URLS": "https://127.0.0.1:0"}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	const (
		path    = "Kestrel:Certificates:Default:Path"
		keyPath = "Kestrel:Certificates:Default:KeyPath"
		pass    = "Kestrel:Certificates:Default:Password"
	)
	tests := []struct {
		name    string
		values  map[string]string
		wantKey string
	}{
		{"keep-alive", map[string]string{"Kestrel:Limits:KeepAliveTimeout": "soon"}, "Kestrel:Limits:KeepAliveTimeout"},
		{"headers timeout", map[string]string{"Kestrel:Limits:RequestHeadersTimeout": "-00:00:01"}, "Kestrel:Limits:RequestHeadersTimeout"},
		{"header size", map[string]string{"Kestrel:Limits:MaxRequestHeadersTotalSize": "0"}, "Kestrel:Limits:MaxRequestHeadersTotalSize"},
		{"body size", map[string]string{"Kestrel:Limits:MaxRequestBodySize": "-1"}, "Kestrel:Limits:MaxRequestBodySize"},
		{"frame size", map[string]string{"Kestrel:Limits:Http2:MaxFrameSize": "100"}, "Kestrel:Limits:Http2:MaxFrameSize"},
		{"streams", map[string]string{"Kestrel:Limits:Http2:MaxStreamsPerConnection": "0"}, "Kestrel:Limits:Http2:MaxStreamsPerConnection"},
		{"window", map[string]string{"Kestrel:Limits:Http2:InitialStreamWindowSize": "1"}, "Kestrel:Limits:Http2:InitialStreamWindowSize"},
		{"ping timeout", map[string]string{"Kestrel:Limits:Http2:KeepAlivePingTimeout": "x"}, "Kestrel:Limits:Http2:KeepAlivePingTimeout"},
		{"protocols", map[string]string{"Kestrel:EndpointDefaults:Protocols": "Http9"}, "Kestrel:EndpointDefaults:Protocols"},
		{"https without certificate", https(), path},
		{"missing certificate", https(path, filepath.Join(dir, "nope.pem"), keyPath, keyFile), path},
		{"missing key", https(path, certFile, keyPath, filepath.Join(dir, "nope.pem")), keyPath},
		{"certificate without key", https(path, certFile), path},
		{"garbage key", https(path, certFile, keyPath, garbage), keyPath},
		{"garbage certificate", https(path, garbage, keyPath, keyFile), path},
		{"encrypted key without password", https(path, certFile, keyPath, encrypted), pass},
		{"corrupt encrypted key", https(path, certFile, keyPath, encrypted, pass, "hunter2-secret"), keyPath},
		{"wrong password", https(path, certFile, keyPath, encryptKey(t, keyFile, "aes-256-cbc", "right-password"), pass, "hunter2-secret"), pass},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := servicedefaults.Add(context.Background(), nil,
				servicedefaults.WithConfig(discovery.FromMap(tt.values)), servicedefaults.WithoutGlobals(),
				servicedefaults.WithLogWriter(io.Discard))
			if err == nil {
				t.Fatal("Add succeeded")
			}
			if !strings.Contains(err.Error(), `"`+tt.wantKey+`"`) {
				t.Errorf("error %q does not name %s", err, tt.wantKey)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error %q quotes the password", err)
			}
			var ke *discovery.KeyError
			if !errors.As(err, &ke) {
				t.Errorf("error %q is not a *discovery.KeyError", err)
			}
		})
	}
}
