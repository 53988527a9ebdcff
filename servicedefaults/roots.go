package servicedefaults

import (
	"crypto/x509"
	"sync"

	"github.com/goaspire/goaspire/discovery"
	"github.com/goaspire/goaspire/internal/roots"
)

// trustedRoots are the roots an App trusts for TLS: the system roots plus
// the certificates of SSL_CERT_FILE and of the files in the SSL_CERT_DIR
// directories (a colon-separated list; missing directories are skipped, as
// OpenSSL does), as the App's configuration names them.
//
// Parsing a distribution's CA bundle takes tens of milliseconds, so Add
// does not: it only checks that SSL_CERT_FILE holds a certificate (see
// readRoots). The roots are read when TLS first needs them (an https OTLP
// endpoint, the App's first HTTP client, an integration calling
// App.RootCAs), once per process for each pair of values (package internal/roots).
// When the values are the process environment's own, Go's system roots
// already hold those certificates (see roots.InSystemRoots): the App then
// trusts the system roots and reads nothing itself.
type trustedRoots struct {
	file, dirs string
	warnOnce   sync.Once // the App logs a failed read once
}

// readRoots reads SSL_CERT_FILE and SSL_CERT_DIR and checks that the file,
// if any, can be read and holds a certificate, so that a wrong path fails
// Add with the variable's name. Certificates are parsed later, when TLS
// needs them. On error it returns roots meaning the system roots, for the
// rest of the settings to be read.
func readRoots(e envReader) (*trustedRoots, error) {
	r := &trustedRoots{file: e.get("SSL_CERT_FILE"), dirs: e.get("SSL_CERT_DIR")}
	if r.file != "" {
		if err := roots.CheckFile(r.file); err != nil {
			return &trustedRoots{}, &discovery.KeyError{Key: "SSL_CERT_FILE", Err: err}
		}
	}
	return r, nil
}

// pool returns the roots (see roots.Pool): nil, meaning the system roots,
// when neither variable is set or when the system roots hold them
// already; otherwise the pool read once per process for these values. The
// pool is shared: callers must not add to it (Clone it first). An error
// names the variable whose file could not be read since Add checked it;
// the pool then holds the other roots.
func (r *trustedRoots) pool() (*x509.CertPool, error) {
	if r == nil {
		return nil, nil
	}
	return roots.Pool(r.file, r.dirs)
}

// rootsReads returns how many times the roots of file and dirs were read.
func rootsReads(file, dirs string) int { return roots.Reads(file, dirs) }
