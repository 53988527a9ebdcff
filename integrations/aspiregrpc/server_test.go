package aspiregrpc_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/goaspire/goaspire/integrations/aspiregrpc"
	"github.com/goaspire/goaspire/internal/grpctest/echopb"
	"github.com/goaspire/goaspire/internal/otlptest"
	"github.com/goaspire/goaspire/servicedefaults"
)

// writeCert writes a certificate for localhost and its key as PEM files,
// and returns them with a pool trusting the certificate.
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

// TestServerGRPCShared serves gRPC on the HTTPS port (HTTP/2 by ALPN) and
// refuses to share a port whose Protocols exclude HTTP/2.
func TestServerGRPCShared(t *testing.T) {
	t.Run("https", func(t *testing.T) {
		certFile, keyFile, pool := writeCert(t)
		app := newApp(t, map[string]string{
			"ASPNETCORE_URLS":                         "https://127.0.0.1:0",
			"Kestrel__Certificates__Default__Path":    certFile,
			"Kestrel__Certificates__Default__KeyPath": keyFile,
		})
		addr, _ := serveGRPC(t, app, "secure")
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool})))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		if inst, err := getInstance(echopb.NewEchoClient(cc)); err != nil || inst != "secure" {
			t.Fatalf("gRPC over TLS = %q, %v", inst, err)
		}
	})
	t.Run("Http1 only", func(t *testing.T) {
		app := newApp(t, map[string]string{"Kestrel:EndpointDefaults:Protocols": "Http1"})
		grpcServer(t, app)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if err := app.Serve(context.Background(), ln); err == nil || !strings.Contains(err.Error(), "Kestrel:EndpointDefaults:Protocols") {
			t.Fatalf("Serve error = %v, want one naming Kestrel:EndpointDefaults:Protocols", err)
		}
	})
	t.Run("Http1 only, gRPC on its own port", func(t *testing.T) {
		port := freePort(t)
		app := newApp(t, map[string]string{"Kestrel:EndpointDefaults:Protocols": "Http1", "GRPC_PORT": port})
		echopb.RegisterEchoServer(grpcServer(t, app), &echoServer{})
		app.Start()
		c := echopb.NewEchoClient(plainClient(t, "127.0.0.1:"+port))
		waitFor(t, "a gRPC call on the gRPC port", func() bool {
			_, err := getInstance(c)
			return err == nil
		})
	})
}

type echoServer struct{ echopb.UnimplementedEchoServer }

func (echoServer) Get(_ context.Context, req *echopb.EchoRequest) (*echopb.EchoReply, error) {
	return &echopb.EchoReply{Message: req.GetMessage()}, nil
}

// TestGRPCServerOnce: an App has one gRPC server, whatever options later
// calls pass; none is made once Serve has started or the App is shut
// down, since it would not be served.
func TestGRPCServerOnce(t *testing.T) {
	app := newApp(t, nil)
	a := grpcServer(t, app)
	if b := grpcServer(t, app, grpc.MaxRecvMsgSize(1)); b != a {
		t.Fatalf("second Server = %p, want the first %p", b, a)
	}

	serving := newApp(t, nil)
	serving.Start()
	if code, _ := get(t, serving.URL+"/health"); code != 200 { // Serve runs
		t.Fatalf("GET /health = %d", code)
	}
	if _, err := aspiregrpc.Server(serving.App); !errors.Is(err, servicedefaults.ErrClosed) {
		t.Fatalf("Server after Serve started = %v, want ErrClosed", err)
	}

	closed := newApp(t, nil)
	if err := closed.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := aspiregrpc.Server(closed.App); !errors.Is(err, servicedefaults.ErrClosed) {
		t.Fatalf("Server after Shutdown = %v, want ErrClosed", err)
	}
}
