// Package roots reads the roots goaspire trusts for TLS: the system roots
// plus the certificates of SSL_CERT_FILE and of the files in the
// SSL_CERT_DIR directories (a colon-separated list; missing directories
// are skipped, as OpenSSL does), as the configuration names them. The App
// (servicedefaults) and the Redis client (cache) read them through this
// one implementation, once per process for each pair of values.
package roots

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

// Pool returns the roots for file (SSL_CERT_FILE) and dirs (SSL_CERT_DIR):
// nil, meaning the system roots, when both are empty or when Go's system
// roots hold them already (they are the process environment's own, on a
// platform where crypto/x509 reads them); otherwise the pool read once per
// process for these values. The pool is shared: callers must not add to
// it (Clone it first). When file cannot be read, the error is a
// *discovery.KeyError naming SSL_CERT_FILE and the pool holds the other
// roots.
func Pool(file, dirs string) (*x509.CertPool, error) {
	if (file == "" && dirs == "") || InSystemRoots(file, dirs) {
		return nil, nil
	}
	return cachedRoots(file, dirs)
}

// InSystemRoots reports whether Go's system roots already hold what file
// and dirs add: on the platforms where crypto/x509 reads the system roots
// from SSL_CERT_FILE (instead of its default bundle) and SSL_CERT_DIR
// (instead of its default directories), when the values are the process
// environment's, the system roots are exactly "the system roots plus
// SSL_CERT_FILE plus SSL_CERT_DIR". Leaving RootCAs nil then lets
// crypto/tls load them on the first verification, once per process, and
// saves a second copy. (Go reads the environment when it first loads
// them: a program that changes SSL_CERT_FILE after its first TLS
// handshake is not served by this.)
func InSystemRoots(file, dirs string) bool {
	return SSLVarsInSystemRoots(runtime.GOOS) && os.Getenv("SSL_CERT_FILE") == file && os.Getenv("SSL_CERT_DIR") == dirs
}

// CheckFile reports whether file can be read and holds a PEM certificate
// that parses, which is what x509.CertPool.AppendCertsFromPEM needs to
// succeed. It reads the file until the first such certificate: in a
// distribution's bundle, the first few kilobytes.
func CheckFile(file string) error {
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

// SSLVarsInSystemRoots reports whether crypto/x509 reads the system roots
// of goos from SSL_CERT_FILE and SSL_CERT_DIR (its root_unix.go); on
// macOS and Windows the platform verifier ignores them.
func SSLVarsInSystemRoots(goos string) bool {
	switch goos {
	case "aix", "android", "dragonfly", "freebsd", "illumos", "js", "linux", "netbsd", "openbsd", "solaris", "wasip1":
		return true
	}
	return false
}

// rootsCache holds the roots read for each (SSL_CERT_FILE, SSL_CERT_DIR)
// pair, shared by every App of the process. It is goaspire's one piece of
// process-wide state besides OpenTelemetry's globals: an entry is
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

// Reads returns how many times the roots of file and dirs were read, for
// tests.
func Reads(file, dirs string) int {
	rootsCache.mu.Lock()
	defer rootsCache.mu.Unlock()
	return rootsCache.reads[[2]string{file, dirs}]
}

// loadRoots reads the system roots plus file and the files of dirs. When
// file cannot be read (it could when Add checked it), it returns the
// other roots and an error naming SSL_CERT_FILE.
func loadRoots(file, dirs string) (*x509.CertPool, error) {
	pool := SystemPool()
	var err error
	if file != "" {
		if e := AppendCertFile(pool, file); e != nil {
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

// SystemPool returns a copy of the system roots, or an empty pool where
// they cannot be read.
func SystemPool() *x509.CertPool {
	if p, err := x509.SystemCertPool(); err == nil && p != nil {
		return p
	}
	return x509.NewCertPool()
}

// AppendCertFile adds the PEM certificates of file to pool, and fails when
// there is none.
func AppendCertFile(pool *x509.CertPool, file string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	if !pool.AppendCertsFromPEM(data) {
		return fmt.Errorf("no PEM certificate in %s", file)
	}
	return nil
}
