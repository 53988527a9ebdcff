package servicedefaults

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/goaspire/goaspire/discovery"
)

// Kestrel's defaults for the server limits Serve applies, each
// overridable under Kestrel:Limits (see the package documentation).
const (
	// DefaultKeepAliveTimeout is how long an idle keep-alive connection
	// stays open (Kestrel:Limits:KeepAliveTimeout).
	DefaultKeepAliveTimeout = 130 * time.Second
	// DefaultRequestHeadersTimeout bounds reading a request's headers
	// (Kestrel:Limits:RequestHeadersTimeout).
	DefaultRequestHeadersTimeout = 30 * time.Second
	// DefaultMaxRequestHeadersTotalSize bounds the request line and
	// headers, in bytes (Kestrel:Limits:MaxRequestHeadersTotalSize).
	DefaultMaxRequestHeadersTotalSize = 32 << 10
	// DefaultMaxRequestBodySize bounds a request body, in bytes
	// (Kestrel:Limits:MaxRequestBodySize); a larger one is answered 413.
	DefaultMaxRequestBodySize = 30_000_000
)

// Kestrel's HTTP/2 defaults (Kestrel:Limits:Http2).
const (
	defaultHTTP2MaxStreams       = 100
	defaultHTTP2HeaderTableSize  = 4096
	defaultHTTP2MaxFrameSize     = 16 << 10
	defaultHTTP2ConnectionWindow = 1 << 20
	defaultHTTP2StreamWindow     = 768 << 10
	defaultHTTP2PingTimeout      = 20 * time.Second
	minHTTP2MaxFrameSize         = 16 << 10
	maxHTTP2MaxFrameSize         = 16<<20 - 1
	minHTTP2Window               = 65535
	maxHTTP2Window               = 1<<31 - 1
	kestrelLimits                = "Kestrel:Limits"
	kestrelDefaultCertificate    = "Kestrel:Certificates:Default"
	kestrelEndpointDefaults      = "Kestrel:EndpointDefaults"
)

// serverSettings are the HTTP server's settings, read by Add.
type serverSettings struct {
	endpoint       discovery.ListenEndpoint
	keepAlive      time.Duration
	headersTimeout time.Duration
	maxHeaderBytes int
	maxBody        int64 // < 0: no limit
	http2          http.HTTP2Config
	http1, http2On bool        // the endpoint's Protocols
	protocolsKey   string      // the key Protocols came from, "" for the default
	tls            *tls.Config // nil for plain HTTP
	worker         bool        // Add was given no handler
}

// listens reports whether Run listens: a service with a handler always
// (on ":8080" when nothing names an endpoint); a worker, Add given a nil
// handler, only on an endpoint the configuration names (PORT,
// HTTP_PORTS, ASPNETCORE_URLS, Kestrel:Endpoints ...), as Aspire gives a
// worker without endpoints no port, and two such workers on one host
// must not collide on ":8080".
func (s *serverSettings) listens() bool { return !s.worker || s.endpoint.Key != "" }

// noListener is the listener Serve is given for a worker that listens
// nowhere: it accepts no connection, and Accept returns net.ErrClosed
// once it is closed (when the server shuts down).
type noListener struct {
	once sync.Once
	done chan struct{}
}

func newNoListener() *noListener { return &noListener{done: make(chan struct{})} }

// Accept waits for Close.
func (l *noListener) Accept() (net.Conn, error) {
	<-l.done
	return nil, net.ErrClosed
}

// Close ends Accept.
func (l *noListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

// Addr returns an address that names no endpoint.
func (l *noListener) Addr() net.Addr { return noAddr{} }

type noAddr struct{}

func (noAddr) Network() string { return "none" }
func (noAddr) String() string  { return "none" }

// readServerSettings reads the listening endpoint, Kestrel's limits, the
// endpoint's protocols and, for https, its certificate. Errors name the
// key at fault and never quote a password.
func readServerSettings(cfg *discovery.Config) (serverSettings, error) {
	var s serverSettings
	var errs []error
	ep, err := cfg.ListenEndpoint()
	if err != nil {
		return s, err
	}
	s.endpoint = ep

	lim := cfg.Section(kestrelLimits)
	positiveDuration := func(c *discovery.Config, key string, def time.Duration) time.Duration {
		d, err := c.Duration(key, def)
		if err == nil && d <= 0 {
			err = &discovery.KeyError{Key: c.Path() + ":" + key, Err: errors.New("must be positive")}
		}
		errs = append(errs, err)
		return d
	}
	intIn := func(c *discovery.Config, key string, def, lo, hi int) int {
		n, err := c.Int(key, def)
		if err == nil && (n < lo || n > hi) {
			err = &discovery.KeyError{Key: c.Path() + ":" + key, Err: fmt.Errorf("must be between %d and %d", lo, hi)}
		}
		errs = append(errs, err)
		return n
	}
	s.keepAlive = positiveDuration(lim, "KeepAliveTimeout", DefaultKeepAliveTimeout)
	s.headersTimeout = positiveDuration(lim, "RequestHeadersTimeout", DefaultRequestHeadersTimeout)
	s.maxHeaderBytes = intIn(lim, "MaxRequestHeadersTotalSize", DefaultMaxRequestHeadersTotalSize, 1, math.MaxInt32)
	if v, _ := lim.Lookup("MaxRequestBodySize"); strings.EqualFold(strings.TrimSpace(v), "null") {
		s.maxBody = -1 // as Kestrel's null: no limit
	} else {
		s.maxBody = int64(intIn(lim, "MaxRequestBodySize", DefaultMaxRequestBodySize, 0, math.MaxInt))
	}

	h2 := lim.Section("Http2")
	s.http2.MaxConcurrentStreams = intIn(h2, "MaxStreamsPerConnection", defaultHTTP2MaxStreams, 1, math.MaxInt32)
	s.http2.MaxDecoderHeaderTableSize = intIn(h2, "HeaderTableSize", defaultHTTP2HeaderTableSize, 0, math.MaxInt32)
	s.http2.MaxReadFrameSize = intIn(h2, "MaxFrameSize", defaultHTTP2MaxFrameSize, minHTTP2MaxFrameSize, maxHTTP2MaxFrameSize)
	s.http2.MaxReceiveBufferPerConnection = intIn(h2, "InitialConnectionWindowSize", defaultHTTP2ConnectionWindow, minHTTP2Window, maxHTTP2Window)
	s.http2.MaxReceiveBufferPerStream = intIn(h2, "InitialStreamWindowSize", defaultHTTP2StreamWindow, minHTTP2Window, maxHTTP2Window)
	// KeepAlivePingDelay: Kestrel's default TimeSpan.MaxValue means no
	// pings; Go's SendPingTimeout 0 means the same.
	if v, _ := h2.Lookup("KeepAlivePingDelay"); strings.TrimSpace(v) != "" && strings.TrimSpace(v) != "10675199.02:48:05.4775807" {
		s.http2.SendPingTimeout = positiveDuration(h2, "KeepAlivePingDelay", 0)
	}
	s.http2.PingTimeout = positiveDuration(h2, "KeepAlivePingTimeout", defaultHTTP2PingTimeout)

	s.http1, s.http2On, s.protocolsKey, err = readProtocols(cfg, ep)
	errs = append(errs, err)

	if ep.TLS {
		s.tls, err = readCertificate(cfg, ep)
		errs = append(errs, err)
	}
	return s, errors.Join(errs...)
}

// readProtocols reads the endpoint's Protocols (Kestrel:Endpoints:{name}:
// Protocols, else Kestrel:EndpointDefaults:Protocols): Http1, Http2,
// Http1AndHttp2 (the default) or Http1AndHttp2AndHttp3 (HTTP/3 is not
// served).
func readProtocols(cfg *discovery.Config, ep discovery.ListenEndpoint) (http1, http2 bool, key string, err error) {
	for _, section := range []string{ep.Section, kestrelEndpointDefaults} {
		if section == "" {
			continue
		}
		k := section + ":Protocols"
		v := strings.TrimSpace(cfg.String(k))
		if v == "" {
			continue
		}
		switch strings.ToLower(v) {
		case "http1":
			return true, false, k, nil
		case "http2":
			return false, true, k, nil
		case "http1andhttp2", "http1andhttp2andhttp3":
			return true, true, k, nil
		}
		return false, false, k, &discovery.KeyError{Key: k, Err: fmt.Errorf("invalid protocols %q (want Http1, Http2 or Http1AndHttp2)", v)}
	}
	return true, true, "", nil
}

// readCertificate loads the https endpoint's certificate: the endpoint's
// own Certificate section, else Kestrel:Certificates:Default. Path is a
// PEM file holding the certificate (and the key when KeyPath is not set);
// KeyPath a PEM file holding its private key, unencrypted or encrypted
// PKCS#8 (PBES2: PBKDF2 with AES-CBC) with the password in Password.
func readCertificate(cfg *discovery.Config, ep discovery.ListenEndpoint) (*tls.Config, error) {
	section := kestrelDefaultCertificate
	if ep.Section != "" && cfg.Exists(ep.Section+":Certificate") {
		section = ep.Section + ":Certificate"
	}
	pathKey, keyPathKey, passwordKey := section+":Path", section+":KeyPath", section+":Password"
	path := strings.TrimSpace(cfg.String(pathKey))
	if path == "" {
		return nil, &discovery.KeyError{Key: pathKey, Err: fmt.Errorf("an https endpoint (%s) needs a certificate: set it to a PEM certificate file, and KeyPath to its key", ep.Key)}
	}
	certPEM, err := os.ReadFile(path)
	if err != nil {
		return nil, &discovery.KeyError{Key: pathKey, Err: err}
	}
	keyPEM, keySource := certPEM, pathKey
	if kp := strings.TrimSpace(cfg.String(keyPathKey)); kp != "" {
		if keyPEM, err = os.ReadFile(kp); err != nil {
			return nil, &discovery.KeyError{Key: keyPathKey, Err: err}
		}
		keySource = keyPathKey
	}
	password, hasPassword := cfg.Lookup(passwordKey)
	if block := encryptedPEM(keyPEM); block != nil {
		switch {
		case block.Type != "ENCRYPTED PRIVATE KEY":
			return nil, &discovery.KeyError{Key: keySource, Err: errors.New("legacy PEM encryption (Proc-Type) is not supported: convert the key to encrypted PKCS#8 (openssl pkcs8 -topk8) or give it unencrypted")}
		case !hasPassword:
			return nil, &discovery.KeyError{Key: passwordKey, Err: fmt.Errorf("the key in %s is encrypted: set the password", keySource)}
		}
		der, err := decryptPKCS8(block.Bytes, password)
		if err == nil {
			if _, perr := x509.ParsePKCS8PrivateKey(der); perr != nil {
				err = errWrongPassword
			}
		}
		if err != nil {
			k := keySource
			if errors.Is(err, errWrongPassword) {
				k = passwordKey
			}
			return nil, &discovery.KeyError{Key: k, Err: err}
		}
		keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	if !hasPEM(certPEM, "CERTIFICATE") {
		return nil, &discovery.KeyError{Key: pathKey, Err: errors.New("no PEM certificate in the file (PKCS#12 .pfx files are not supported: convert it to PEM)")}
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// X509KeyPair's errors describe the PEM blocks, never the key.
		return nil, &discovery.KeyError{Key: keySource, Err: err}
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

func hasPEM(data []byte, typ string) bool {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return false
		}
		if b.Type == typ {
			return true
		}
	}
}

// encryptedPEM returns the first encrypted key block of data: PKCS#8
// encrypted, or a legacy one with a Proc-Type: 4,ENCRYPTED header; nil
// when there is none.
func encryptedPEM(data []byte) *pem.Block {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil
		}
		if b.Type == "ENCRYPTED PRIVATE KEY" || strings.Contains(b.Headers["Proc-Type"], "ENCRYPTED") {
			return b
		}
	}
}

// httpServer builds the http.Server Serve runs, from the server settings.
func (a *App) httpServer() *http.Server {
	s := &a.server
	h2 := s.http2
	srv := &http.Server{
		Handler:           limitBody(a.handler, s.maxBody),
		ReadHeaderTimeout: s.headersTimeout,
		IdleTimeout:       s.keepAlive,
		MaxHeaderBytes:    s.maxHeaderBytes,
		HTTP2:             &h2,
		TLSConfig:         s.tls.Clone(),
		ErrorLog:          slog.NewLogLogger(a.logger.Handler(), slog.LevelWarn),
	}
	srv.Protocols, _ = s.protocols(false) // cannot fail without gRPC
	return srv
}

// protocols decides the server's protocols, the one place that does:
// the endpoint's Protocols, HTTP/2 being negotiated by ALPN over TLS and
// spoken with prior knowledge (h2c) over plain TCP. grpcShared reports a
// gRPC server on the HTTP listener, which needs HTTP/2.
func (s *serverSettings) protocols(grpcShared bool) (*http.Protocols, error) {
	if grpcShared && !s.http2On {
		return nil, &discovery.KeyError{Key: s.protocolsKey, Err: errors.New("gRPC shares the HTTP port and needs HTTP/2: allow Http2, or give gRPC its own port")}
	}
	var p http.Protocols
	p.SetHTTP1(s.http1)
	if s.tls != nil {
		p.SetHTTP2(s.http2On)
	} else {
		p.SetUnencryptedHTTP2(s.http2On)
	}
	return &p, nil
}

// schemeName returns "https" or "http".
func (s *serverSettings) schemeName() string {
	if s.tls != nil {
		return "https"
	}
	return "http"
}

// limitBody answers 413 to a request whose body is larger than max bytes,
// as Kestrel's MaxRequestBodySize: at once when Content-Length says so;
// for a body of unknown length (chunked, HTTP/2 without Content-Length)
// when the handler reads past the limit, the read failing with
// *http.MaxBytesError and the response, unless already started, getting
// status 413 whatever the handler writes. max < 0 means no limit.
func limitBody(h http.Handler, max int64) http.Handler {
	if max < 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.ContentLength > max:
			w.Header().Set("Connection", "close")
			http.Error(w, http.StatusText(http.StatusRequestEntityTooLarge), http.StatusRequestEntityTooLarge)
			return
		case r.ContentLength >= 0 || r.Body == nil || r.Body == http.NoBody:
			// The server reads no more than Content-Length.
			h.ServeHTTP(w, r)
			return
		}
		st := &limitState{} // one allocation for both wrappers
		lw := &st.w
		lw.ResponseWriter = w
		st.r = limitReader{ReadCloser: http.MaxBytesReader(w, r.Body, max), over: &lw.over}
		r.Body = &st.r
		h.ServeHTTP(lw, r)
		if !lw.written && lw.over.Load() {
			lw.WriteHeader(http.StatusRequestEntityTooLarge)
		}
	})
}

type limitState struct {
	w limitWriter
	r limitReader
}

// limitReader notes that the body went over the limit.
type limitReader struct {
	io.ReadCloser
	over *atomic.Bool
}

func (r *limitReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
			r.over.Store(true)
		}
	}
	return n, err
}

// limitWriter turns the status of a response to a body over the limit
// into 413.
type limitWriter struct {
	http.ResponseWriter
	over    atomic.Bool
	written bool
}

func (w *limitWriter) WriteHeader(code int) {
	if !w.written && w.over.Load() {
		code = http.StatusRequestEntityTooLarge
	}
	w.written = true
	w.ResponseWriter.WriteHeader(code)
}

func (w *limitWriter) Write(p []byte) (int, error) {
	if !w.written {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(p)
}

// Flush passes a handler's flush on, so streaming keeps working.
func (w *limitWriter) Flush() { _ = http.NewResponseController(w.ResponseWriter).Flush() }

// Unwrap gives http.ResponseController the underlying writer.
func (w *limitWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
