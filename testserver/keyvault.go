package testserver

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// KeyVaultResource is the resource a KeyVault's authentication challenge
// names, as Azure Key Vault's does: clients ask for a token of scope
// KeyVaultResource + "/.default".
const KeyVaultResource = "https://vault.azure.net"

// KeyVaultOptions configures StartKeyVault. The zero value works.
type KeyVaultOptions struct {
	// Tenant is the Microsoft Entra tenant the challenge names
	// (authorization="https://login.microsoftonline.com/{Tenant}");
	// default "00000000-0000-0000-0000-000000000000".
	Tenant string
	// PageSize is how many secrets a page of the list holds when the
	// request sets no maxresults; default 25, as Key Vault.
	PageSize int
	// ValidateToken checks the bearer token of every request. A request
	// whose token it refuses gets 401 with the challenge. Nil accepts any
	// non-empty token.
	ValidateToken func(token string) error
}

// KeyVaultStats counts the requests a KeyVault answered.
type KeyVaultStats struct {
	// Challenges are the 401 answers to requests without a token.
	Challenges int
	// Refused are the 401 answers to requests whose token ValidateToken
	// refused.
	Refused int
	// ListPages are the pages of GET /secrets served.
	ListPages int
	// Gets are the answers to GET /secrets/{name}[/{version}], found or
	// not.
	Gets int
}

// KeyVault is a stand-in for an Azure Key Vault's secrets API, for tests of
// code that uses the real azsecrets client
// (github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets). It
// serves HTTPS on a free 127.0.0.1 port with a throwaway CA (CACertPool,
// CACertFile) and speaks what that client uses:
//
//   - challenge-based authentication: a request without a bearer token
//     gets 401 with WWW-Authenticate: Bearer
//     authorization="https://login.microsoftonline.com/{tenant}",
//     resource="https://vault.azure.net"; the client then asks its
//     credential for a token of scope "https://vault.azure.net/.default"
//     in that tenant and sends the request again. Because the vault's host
//     (127.0.0.1) is not under vault.azure.net, the client must be made
//     with azsecrets.ClientOptions.DisableChallengeResourceVerification;
//   - GET /secrets?api-version=...[&maxresults=n]: the secrets' IDs and
//     attributes (enabled, created, updated), never their values, by pages
//     linked with nextLink;
//   - GET /secrets/{name}/[{version}]?api-version=...: a secret's value
//     and attributes; 404 SecretNotFound for an unknown name, 403
//     Forbidden (SecretDisabled) for a disabled secret, as Key Vault.
//
// Secret names are compared without regard to case, as Key Vault does.
// SetSecret, SetEnabled and DeleteSecret change the vault while it runs.
// A secret's "updated" time moves on (by at least a second, Key Vault's
// resolution) at every change, so a client comparing it sees the change.
//
// A KeyVault is safe for concurrent use.
type KeyVault struct {
	ln       net.Listener
	srv      *http.Server
	tls      *serverTLS
	dir      string
	url      string
	tenant   string
	pageSize int
	validate func(string) error

	mu      sync.Mutex
	secrets map[string]*vaultSecret // by lower-cased name
	clock   time.Time               // the last "updated" time given
	stats   KeyVaultStats
	done    chan struct{}
}

type vaultSecret struct {
	name, value, version string
	enabled              bool
	created, updated     time.Time
}

// StartKeyVault starts a KeyVault. Close stops it.
func StartKeyVault(opts KeyVaultOptions) (*KeyVault, error) {
	dir, err := os.MkdirTemp("", "goaspire-keyvault-")
	if err != nil {
		return nil, fmt.Errorf("testserver: key vault: %w", err)
	}
	st, err := writeTLSFiles(dir)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("testserver: key vault: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(st.certFile, st.keyFile)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("testserver: key vault: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("testserver: key vault: %w", err)
	}
	kv := &KeyVault{
		ln:       ln,
		tls:      st,
		dir:      dir,
		url:      "https://" + ln.Addr().String() + "/",
		tenant:   opts.Tenant,
		pageSize: opts.PageSize,
		validate: opts.ValidateToken,
		secrets:  map[string]*vaultSecret{},
		done:     make(chan struct{}),
	}
	if kv.tenant == "" {
		kv.tenant = "00000000-0000-0000-0000-000000000000"
	}
	if kv.pageSize <= 0 {
		kv.pageSize = 25
	}
	kv.srv = &http.Server{
		Handler:           http.HandlerFunc(kv.serve),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: time.Minute,
		ErrorLog:          log.New(io.Discard, "", 0), // handshakes tests break on purpose
	}
	go func() {
		defer close(kv.done)
		_ = kv.srv.ServeTLS(ln, "", "")
	}()
	return kv, nil
}

// NewKeyVault starts a KeyVault for tb and closes it in tb.Cleanup. It
// fails tb if the vault cannot start.
func NewKeyVault(tb testing.TB, opts KeyVaultOptions) *KeyVault {
	tb.Helper()
	kv, err := StartKeyVault(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = kv.Close() })
	return kv
}

// URL returns the vault URI, "https://127.0.0.1:{port}/": what Aspire
// gives a service as ConnectionStrings__{name} for a referenced Key Vault.
func (kv *KeyVault) URL() string { return kv.url }

// Tenant returns the tenant the challenge names.
func (kv *KeyVault) Tenant() string { return kv.tenant }

// CACertPool returns a pool holding only the CA that signed the vault's
// certificate.
func (kv *KeyVault) CACertPool() *x509.CertPool { return kv.tls.caPool() }

// CACertFile returns the PEM file of the CA that signed the vault's
// certificate (for SSL_CERT_FILE).
func (kv *KeyVault) CACertFile() string { return kv.tls.caFilePath() }

// String describes the vault without its secrets.
func (kv *KeyVault) String() string { return "testserver.KeyVault(" + kv.url + ")" }

// SetSecret creates the secret name with value, or gives it a new version
// holding value; the secret is enabled either way.
func (kv *KeyVault) SetSecret(name, value string) {
	kv.mu.Lock()
	defer kv.mu.Unlock()
	now := kv.tick()
	s := kv.secrets[strings.ToLower(name)]
	if s == nil {
		s = &vaultSecret{name: name, created: now}
		kv.secrets[strings.ToLower(name)] = s
	}
	s.value, s.version, s.enabled, s.updated = value, newVersion(), true, now
}

// SetEnabled enables or disables the secret name, as
// az keyvault secret set-attributes --enabled does. It reports whether the
// secret exists.
func (kv *KeyVault) SetEnabled(name string, enabled bool) bool {
	kv.mu.Lock()
	defer kv.mu.Unlock()
	s := kv.secrets[strings.ToLower(name)]
	if s == nil {
		return false
	}
	s.enabled, s.updated = enabled, kv.tick()
	return true
}

// DeleteSecret removes the secret name (and, unlike Key Vault's soft
// delete, purges it). It reports whether the secret existed.
func (kv *KeyVault) DeleteSecret(name string) bool {
	kv.mu.Lock()
	defer kv.mu.Unlock()
	_, ok := kv.secrets[strings.ToLower(name)]
	delete(kv.secrets, strings.ToLower(name))
	return ok
}

// Stats returns how many requests of each kind the vault answered.
func (kv *KeyVault) Stats() KeyVaultStats {
	kv.mu.Lock()
	defer kv.mu.Unlock()
	return kv.stats
}

// Close stops the vault and removes its certificate files.
func (kv *KeyVault) Close() error {
	err := kv.srv.Close()
	<-kv.done
	if rerr := os.RemoveAll(kv.dir); err == nil {
		err = rerr
	}
	return err
}

// tick returns the "updated" time of a change: now, or a second past the
// previous change when that is not earlier, since Key Vault's times are
// whole seconds. kv.mu is held.
func (kv *KeyVault) tick() time.Time {
	now := time.Now().Truncate(time.Second)
	if !now.After(kv.clock) {
		now = kv.clock.Add(time.Second)
	}
	kv.clock = now
	return now
}

// newVersion returns a random secret version, 32 hex digits as Key
// Vault's.
func newVersion() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // never fails
	return hex.EncodeToString(b)
}

// vaultError writes Key Vault's error body.
func vaultError(w http.ResponseWriter, status int, code, inner, msg string) {
	body := map[string]any{"code": code, "message": msg}
	if inner != "" {
		body["innererror"] = map[string]string{"code": inner}
	}
	writeJSON(w, status, map[string]any{"error": body})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (kv *KeyVault) serve(w http.ResponseWriter, r *http.Request) {
	if !kv.authorized(w, r) {
		return
	}
	if r.URL.Query().Get("api-version") == "" {
		vaultError(w, http.StatusBadRequest, "BadParameter", "", "The request URI contains an invalid version: missing api-version")
		return
	}
	if r.Method != http.MethodGet {
		vaultError(w, http.StatusMethodNotAllowed, "BadParameter", "", "this stand-in serves only GET")
		return
	}
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	switch {
	case len(parts) == 1 && parts[0] == "secrets":
		kv.list(w, r)
	case len(parts) >= 2 && len(parts) <= 3 && parts[0] == "secrets" && parts[1] != "":
		version := ""
		if len(parts) == 3 {
			version = parts[2]
		}
		kv.get(w, parts[1], version)
	default:
		vaultError(w, http.StatusNotFound, "NotFound", "", "no such operation in this stand-in")
	}
}

// authorized answers 401 with the challenge, and returns false, for a
// request without an acceptable bearer token.
func (kv *KeyVault) authorized(w http.ResponseWriter, r *http.Request) bool {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	token = strings.TrimSpace(token)
	var err error
	switch {
	case !ok || token == "":
		err = errors.New("AKV10000: Request is missing a Bearer or PoP token")
	case kv.validate != nil:
		if verr := kv.validate(token); verr != nil {
			err = fmt.Errorf("AKV10022: Invalid token: %v", verr)
		}
	}
	if err == nil {
		return true
	}
	kv.mu.Lock()
	if !ok || token == "" {
		kv.stats.Challenges++
	} else {
		kv.stats.Refused++
	}
	kv.mu.Unlock()
	w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer authorization="https://login.microsoftonline.com/%s", resource="%s"`, kv.tenant, KeyVaultResource))
	vaultError(w, http.StatusUnauthorized, "Unauthorized", "", err.Error())
	return false
}

// attributes renders a secret's attributes as Key Vault does (times in
// Unix seconds).
func (s *vaultSecret) attributes() map[string]any {
	return map[string]any{
		"enabled":         s.enabled,
		"created":         s.created.Unix(),
		"updated":         s.updated.Unix(),
		"recoveryLevel":   "Recoverable+Purgeable",
		"recoverableDays": 90,
	}
}

func (kv *KeyVault) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	size := kv.pageSize
	if m := q.Get("maxresults"); m != "" {
		n, err := strconv.Atoi(m)
		if err != nil || n < 1 || n > 25 {
			vaultError(w, http.StatusBadRequest, "BadParameter", "", "maxresults must be from 1 to 25")
			return
		}
		size = n
	}
	skip := 0
	if t := q.Get("$skiptoken"); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil || n < 0 {
			vaultError(w, http.StatusBadRequest, "BadParameter", "", "invalid $skiptoken")
			return
		}
		skip = n
	}
	kv.mu.Lock()
	kv.stats.ListPages++
	names := make([]string, 0, len(kv.secrets))
	for k := range kv.secrets {
		names = append(names, k)
	}
	sort.Strings(names)
	items := []map[string]any{}
	for i := skip; i < len(names) && i < skip+size; i++ {
		s := kv.secrets[names[i]]
		items = append(items, map[string]any{
			"id":         kv.url + "secrets/" + s.name,
			"attributes": s.attributes(),
			"tags":       map[string]string{},
		})
	}
	more := skip+size < len(names)
	kv.mu.Unlock()
	page := map[string]any{"value": items, "nextLink": nil}
	if more {
		next := fmt.Sprintf("%ssecrets?api-version=%s&$skiptoken=%d&maxresults=%d",
			kv.url, q.Get("api-version"), skip+size, size)
		page["nextLink"] = next
	}
	writeJSON(w, http.StatusOK, page)
}

func (kv *KeyVault) get(w http.ResponseWriter, name, version string) {
	kv.mu.Lock()
	kv.stats.Gets++
	s := kv.secrets[strings.ToLower(name)]
	var body map[string]any
	var enabled bool
	if s != nil && (version == "" || version == s.version) {
		enabled = s.enabled
		body = map[string]any{
			"value":      s.value,
			"id":         kv.url + "secrets/" + s.name + "/" + s.version,
			"attributes": s.attributes(),
			"tags":       map[string]string{},
		}
	}
	kv.mu.Unlock()
	switch {
	case body == nil:
		vaultError(w, http.StatusNotFound, "SecretNotFound", "",
			fmt.Sprintf("A secret with (name/id) %s was not found in this key vault.", name))
	case !enabled:
		vaultError(w, http.StatusForbidden, "Forbidden", "SecretDisabled", "Operation get is not allowed on a disabled secret.")
	default:
		writeJSON(w, http.StatusOK, body)
	}
}
