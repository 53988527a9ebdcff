package aspirerabbitmq_test

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/goaspire/goaspire/integrations/aspirerabbitmq"
	"github.com/goaspire/goaspire/internal/otlptest"
	"github.com/goaspire/goaspire/servicedefaults/servicedefaultstest"
)

// TestClientTLSTrustsAppRoots: an amqps:// broker whose certificate only
// SSL_CERT_FILE vouches for is trusted, as the App's HTTP, gRPC and NATS
// clients trust it; without SSL_CERT_FILE the client refuses the
// certificate. The listener completes the TLS handshake only (it is not a
// broker), which is what the roots decide.
func TestClientTLSTrustsAppRoots(t *testing.T) {
	cert, certPEM := otlptest.NewCertificate(t)
	file := filepath.Join(t.TempDir(), "broker.pem")
	if err := os.WriteFile(file, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		trust     bool
		wantShake bool
	}{
		{"trusted through SSL_CERT_FILE", true, true},
		{"system roots only", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			shakes := make(chan error, 16)
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					go func(c net.Conn) {
						defer c.Close()
						_ = c.SetDeadline(time.Now().Add(time.Minute))
						shakes <- c.(*tls.Conn).Handshake()
					}(c)
				}
			}()
			_, port, _ := net.SplitHostPort(ln.Addr().String())
			values := map[string]string{"ConnectionStrings__messaging": "amqps://guest:guest@localhost:" + port + "/"}
			if tc.trust {
				values["SSL_CERT_FILE"] = file
			}
			app := servicedefaultstest.NewUnstarted(t, nil, values)
			if _, err := aspirerabbitmq.Client(t.Context(), app, "messaging"); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-shakes:
				if got := err == nil; got != tc.wantShake {
					t.Fatalf("TLS handshake error = %v; want success %t", err, tc.wantShake)
				}
			case <-time.After(2 * time.Minute):
				t.Fatal("the client never dialled the broker")
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_ = app.Shutdown(ctx)
		})
	}
}
