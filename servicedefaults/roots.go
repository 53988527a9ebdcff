package servicedefaults

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/goaspire/goaspire/discovery"
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
// App.RootCAs), once per process for each pair of values (rootsCache).
// When the values are the process environment's own, Go's system roots
// already hold those certificates (see sslVarsInSystemRoots): the App then
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
		if err := checkCertFile(r.file); err != nil {
			return &trustedRoots{}, &discovery.KeyError{Key: "SSL_CERT_FILE", Err: err}
		}
	}
	return r, nil
}

// checkCertFile reports whether file can be read and holds a PEM
// certificate that parses, which is what x509.CertPool.AppendCertsFromPEM
// needs to succeed. It reads the file until the first such certificate:
// in a distribution's bundle, the first few kilobytes.
func checkCertFile(file string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 16<<10)
	var data []byte // read and not yet decoded: a block's beginning, or text without one
	for {
		n, rerr := f.Read(buf)
		data = append(data, buf[:n]...)
		for {
			block, rest := pem.Decode(data)
			if block == nil {
				break // no block, or one not read to its end yet
			}
			data = rest
			if block.Type != "CERTIFICATE" || len(block.Headers) != 0 {
				continue
			}
			if _, err := x509.ParseCertificate(block.Bytes); err == nil {
				return nil
			}
		}
		if rerr == io.EOF {
			return fmt.Errorf("no PEM certificate in %s", file)
		}
		if rerr != nil {
			return rerr
		}
	}
}

// pool returns the roots: nil, meaning the system roots, when neither
// variable is set or when the system roots hold them already; otherwise
// the pool read once per process for these values. The pool is shared:
// callers must not add to it (Clone it first). An error names the variable
// whose file could not be read since Add checked it; the pool then holds
// the other roots.
func (r *trustedRoots) pool() (*x509.CertPool, error) {
	if r == nil || (r.file == "" && r.dirs == "") || r.inSystemRoots() {
		return nil, nil
	}
	return cachedRoots(r.file, r.dirs)
}

// inSystemRoots reports whether Go's system roots already hold what r
// adds: on the platforms where crypto/x509 reads the system roots from
// SSL_CERT_FILE (instead of its default bundle) and SSL_CERT_DIR (instead
// of its default directories), when r's values are the process
// environment's, the system roots are exactly "the system roots plus
// SSL_CERT_FILE plus SSL_CERT_DIR". Leaving RootCAs nil then lets
// crypto/tls load them on the first verification, once per process, and
// saves a second copy. (Go reads the environment when it first loads
// them: a program that changes SSL_CERT_FILE after its first TLS
// handshake is not served by this.)
func (r *trustedRoots) inSystemRoots() bool {
	return sslVarsInSystemRoots(runtime.GOOS) && os.Getenv("SSL_CERT_FILE") == r.file && os.Getenv("SSL_CERT_DIR") == r.dirs
}

// sslVarsInSystemRoots reports whether crypto/x509 reads the system roots
// of goos from SSL_CERT_FILE and SSL_CERT_DIR (its root_unix.go); on
// macOS and Windows the platform verifier ignores them.
func sslVarsInSystemRoots(goos string) bool {
	switch goos {
	case "aix", "android", "dragonfly", "freebsd", "illumos", "js", "linux", "netbsd", "openbsd", "solaris", "wasip1":
		return true
	}
	return false
}

// rootsCache holds the roots read for each (SSL_CERT_FILE, SSL_CERT_DIR)
// pair, shared by every App of the process. It is the package's one piece
// of process-wide state besides OpenTelemetry's globals: an entry is
// immutable once read and keyed by the values it was read from. Like Go's
// own system roots, the files are read once per process: a bundle
// changed on disk afterwards is trusted after a restart.
var rootsCache struct {
	mu      sync.Mutex
	entries map[[2]string]*rootsEntry
	reads   map[[2]string]int // loadRoots calls per key, for tests
}

type rootsEntry struct {
	once sync.Once
	pool *x509.CertPool
	err  error
}

// cachedRoots returns the roots for file and dirs, reading them on the
// first call for this pair.
func cachedRoots(file, dirs string) (*x509.CertPool, error) {
	key := [2]string{file, dirs}
	rootsCache.mu.Lock()
	if rootsCache.entries == nil {
		rootsCache.entries = map[[2]string]*rootsEntry{}
		rootsCache.reads = map[[2]string]int{}
	}
	e := rootsCache.entries[key]
	if e == nil {
		e = &rootsEntry{}
		rootsCache.entries[key] = e
	}
	rootsCache.mu.Unlock()
	e.once.Do(func() {
		rootsCache.mu.Lock()
		rootsCache.reads[key]++
		rootsCache.mu.Unlock()
		e.pool, e.err = loadRoots(file, dirs)
	})
	return e.pool, e.err
}

// rootsReads returns how many times the roots of file and dirs were read.
func rootsReads(file, dirs string) int {
	rootsCache.mu.Lock()
	defer rootsCache.mu.Unlock()
	return rootsCache.reads[[2]string{file, dirs}]
}

// loadRoots reads the system roots plus file and the files of dirs. When
// file cannot be read (it could when Add checked it), it returns the
// other roots and an error naming SSL_CERT_FILE.
func loadRoots(file, dirs string) (*x509.CertPool, error) {
	pool := systemPool()
	var err error
	if file != "" {
		if e := appendCertFile(pool, file); e != nil {
			err = &discovery.KeyError{Key: "SSL_CERT_FILE", Err: e}
		}
	}
	for _, dir := range filepath.SplitList(dirs) {
		entries, e := os.ReadDir(dir)
		if e != nil {
			continue
		}
		for _, ent := range entries {
			if ent.IsDir() {
				continue
			}
			data, e := os.ReadFile(filepath.Join(dir, ent.Name()))
			if e == nil {
				pool.AppendCertsFromPEM(data)
			}
		}
	}
	return pool, err
}

func systemPool() *x509.CertPool {
	if p, err := x509.SystemCertPool(); err == nil && p != nil {
		return p
	}
	return x509.NewCertPool()
}

func appendCertFile(pool *x509.CertPool, file string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	if !pool.AppendCertsFromPEM(data) {
		return fmt.Errorf("no PEM certificate in %s", file)
	}
	return nil
}
