package testserver

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// ManagedIdentityAPIVersion is the api-version of the App Service and
// Container Apps managed identity protocol that [ManagedIdentity] speaks, the
// one azidentity (through MSAL for Go) sends.
const ManagedIdentityAPIVersion = "2019-08-01"

// ManagedIdentityConfig configures [StartManagedIdentity]. Its zero value
// works: every identifier is then random, so two servers in one test process
// never issue tokens for the same identity.
//
// The random client ID matters: MSAL for Go keeps its managed identity token
// cache in a package variable, keyed by client ID and resource but not by
// endpoint, so a token issued by one server can be served from the cache to
// a credential pointed at another server with the same client ID, for as long
// as it is valid and more than five minutes from expiry.
type ManagedIdentityConfig struct {
	// ClientID is the identity's client (application) ID, the value of
	// AZURE_CLIENT_ID and of the appid claim. Default: a random UUID.
	ClientID string
	// ObjectID is the identity's object (principal) ID, the oid and sub
	// claims. Default: a random UUID.
	ObjectID string
	// TenantID is the tid claim. Default: a random UUID.
	TenantID string
	// Name is the user-assigned identity's resource name, the last segment
	// of the xms_mirid claim. Default: "goaspire-test-identity".
	Name string
	// SubscriptionID and ResourceGroup complete xms_mirid. Defaults: a
	// random UUID and "goaspire-test".
	SubscriptionID string
	ResourceGroup  string
	// Lifetime is how long an issued token is valid (expires_on and exp).
	// Default: one hour. MSAL serves a cached token only while it is more
	// than five minutes from expiry, so with a Lifetime of five minutes or
	// less every GetToken reaches the server and gets a fresh token.
	Lifetime time.Duration
	// OnToken, if set, is called with every token before the server sends
	// it, for example to make it a Postgres role's or a Redis ACL user's
	// password. An error fails the request with 500 and an error body that
	// does not contain the token. It may be called concurrently.
	OnToken func(ManagedIdentityToken) error
}

// ManagedIdentityToken is a token [ManagedIdentity] issued.
type ManagedIdentityToken struct {
	// AccessToken is the JWT-shaped token: base64url header, claims and a
	// random signature that nothing verifies.
	AccessToken string
	// Resource is the audience the token was asked for ("resource" in the
	// request, the aud claim), such as "https://ossrdbms-aad.database.windows.net".
	Resource string
	// ClientID, ObjectID and Name identify the identity it was issued to.
	ClientID, ObjectID, Name string
	// ExpiresOn is when it expires, to the second.
	ExpiresOn time.Time
}

// ManagedIdentityRequest is one request [ManagedIdentity] answered.
type ManagedIdentityRequest struct {
	// Resource and ClientID are the query parameters "resource" and
	// "client_id" ("" when absent: a system-assigned identity).
	Resource, ClientID string
	// Status is the HTTP status of the answer.
	Status int
}

// ManagedIdentity is a loopback HTTP server speaking the managed identity
// protocol of Azure App Service and Container Apps, the way azidentity's
// ManagedIdentityCredential (MSAL for Go) calls it when IDENTITY_ENDPOINT
// and IDENTITY_HEADER are set:
//
//	GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=R[&client_id=C]
//	X-IDENTITY-HEADER: {IDENTITY_HEADER}
//
// answered with 200 and
//
//	{"access_token":"…","expires_on":"1700000000","resource":"R","token_type":"Bearer","client_id":"C"}
//
// where expires_on is a Unix time in seconds, as a string, as App Service
// sends it. A scope such as "https://redis.azure.com/.default" reaches the
// server as the resource "https://redis.azure.com" (MSAL trims "/.default").
//
// Like the real endpoint it refuses a missing or wrong X-IDENTITY-HEADER
// (401), another api-version, a missing resource, and a client_id, object_id
// or mi_res_id naming an identity other than its own (400: not assigned to
// this resource). A request without an identity parameter gets a token for
// the configured identity, standing in for a system-assigned one.
//
// [ManagedIdentity.Env] gives the environment a test sets so that azidentity
// finds the server. Its methods are safe for concurrent use.
type ManagedIdentity struct {
	cfg    ManagedIdentityConfig
	header string
	ln     net.Listener
	srv    *http.Server
	done   chan struct{}

	mu       sync.Mutex
	requests []ManagedIdentityRequest
	issued   map[string]int // tokens issued per resource
	failures []int          // statuses to answer the next requests with
}

// StartManagedIdentity starts a [ManagedIdentity] on a free port of
// 127.0.0.1 with a random X-IDENTITY-HEADER secret. Stop it with
// [ManagedIdentity.Close].
func StartManagedIdentity(cfg ManagedIdentityConfig) (*ManagedIdentity, error) {
	if cfg.ClientID == "" {
		cfg.ClientID = randomUUID()
	}
	if cfg.ObjectID == "" {
		cfg.ObjectID = randomUUID()
	}
	if cfg.TenantID == "" {
		cfg.TenantID = randomUUID()
	}
	if cfg.Name == "" {
		cfg.Name = "goaspire-test-identity"
	}
	if cfg.SubscriptionID == "" {
		cfg.SubscriptionID = randomUUID()
	}
	if cfg.ResourceGroup == "" {
		cfg.ResourceGroup = "goaspire-test"
	}
	if cfg.Lifetime <= 0 {
		cfg.Lifetime = time.Hour
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("testserver: start managed identity: %w", err)
	}
	m := &ManagedIdentity{
		cfg:    cfg,
		header: rand.Text(),
		ln:     ln,
		done:   make(chan struct{}),
		issued: make(map[string]int),
	}
	m.srv = &http.Server{Handler: http.HandlerFunc(m.serve), ReadHeaderTimeout: time.Minute}
	go func() {
		defer close(m.done)
		_ = m.srv.Serve(ln)
	}()
	return m, nil
}

// NewManagedIdentity starts a [ManagedIdentity] for the test with
// [StartManagedIdentity] and closes it in tb.Cleanup. It fails the test if
// the server cannot start.
func NewManagedIdentity(tb testing.TB, cfg ManagedIdentityConfig) *ManagedIdentity {
	tb.Helper()
	m, err := StartManagedIdentity(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = m.Close() })
	return m
}

// Close stops the server and waits for it.
func (m *ManagedIdentity) Close() error {
	err := m.srv.Close()
	<-m.done
	return err
}

// Endpoint is the value of IDENTITY_ENDPOINT: "http://127.0.0.1:port/msi/token".
func (m *ManagedIdentity) Endpoint() string {
	return "http://" + m.ln.Addr().String() + "/msi/token"
}

// Header is the value of IDENTITY_HEADER, the secret the server expects in
// X-IDENTITY-HEADER.
func (m *ManagedIdentity) Header() string { return m.header }

// ClientID is the identity's client ID (AZURE_CLIENT_ID, the appid claim).
func (m *ManagedIdentity) ClientID() string { return m.cfg.ClientID }

// ObjectID is the identity's object ID (the oid claim), the user name Azure
// Cache for Redis expects.
func (m *ManagedIdentity) ObjectID() string { return m.cfg.ObjectID }

// TenantID is the tid claim.
func (m *ManagedIdentity) TenantID() string { return m.cfg.TenantID }

// Name is the identity's name, the last segment of xms_mirid: the user name
// Azure Database for PostgreSQL expects for a user-assigned identity.
func (m *ManagedIdentity) Name() string { return m.cfg.Name }

// ResourceID is the identity's Azure resource ID, the xms_mirid claim.
func (m *ManagedIdentity) ResourceID() string {
	return "/subscriptions/" + m.cfg.SubscriptionID + "/resourcegroups/" + m.cfg.ResourceGroup +
		"/providers/Microsoft.ManagedIdentity/userAssignedIdentities/" + m.cfg.Name
}

// Env returns the environment of an App Service or Container App with this
// identity assigned, as Aspire's Azure deployment sets it: IDENTITY_ENDPOINT,
// IDENTITY_HEADER, AZURE_CLIENT_ID and
// AZURE_TOKEN_CREDENTIALS=ManagedIdentityCredential.
func (m *ManagedIdentity) Env() map[string]string {
	return map[string]string{
		"IDENTITY_ENDPOINT":       m.Endpoint(),
		"IDENTITY_HEADER":         m.header,
		"AZURE_CLIENT_ID":         m.cfg.ClientID,
		"AZURE_TOKEN_CREDENTIALS": "ManagedIdentityCredential",
	}
}

// Setenv sets [ManagedIdentity.Env] with tb.Setenv, restored when the test
// ends (and so not in parallel tests). azidentity reads IDENTITY_ENDPOINT
// and IDENTITY_HEADER from the process environment only.
func (m *ManagedIdentity) Setenv(tb testing.TB) {
	tb.Helper()
	for k, v := range m.Env() {
		tb.Setenv(k, v)
	}
}

// Fail makes the next n requests fail with status (such as 500, which
// azcore retries, or 400, which it does not) and a JSON error body.
// Requests it fails are still counted by [ManagedIdentity.Requests].
func (m *ManagedIdentity) Fail(status, n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for range n {
		m.failures = append(m.failures, status)
	}
}

// Requests returns the requests answered so far, in order.
func (m *ManagedIdentity) Requests() []ManagedIdentityRequest {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]ManagedIdentityRequest(nil), m.requests...)
}

// Issued returns how many tokens the server issued for resource (as the
// request named it, without "/.default").
func (m *ManagedIdentity) Issued(resource string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.issued[resource]
}

func (m *ManagedIdentity) serve(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	req := ManagedIdentityRequest{Resource: q.Get("resource"), ClientID: q.Get("client_id")}
	status, msg := m.check(r)
	var tok ManagedIdentityToken
	if status == http.StatusOK {
		tok = m.token(req.Resource)
		if m.cfg.OnToken != nil {
			if err := m.cfg.OnToken(tok); err != nil {
				status, msg = http.StatusInternalServerError, "OnToken: "+err.Error()
			}
		}
	}
	req.Status = status
	m.mu.Lock()
	m.requests = append(m.requests, req)
	if status == http.StatusOK {
		m.issued[req.Resource]++
	}
	m.mu.Unlock()

	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	if status != http.StatusOK {
		_ = json.NewEncoder(w).Encode(map[string]any{
			"statusCode": status,
			"message":    msg,
		})
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]string{
		"access_token": tok.AccessToken,
		"expires_on":   strconv.FormatInt(tok.ExpiresOn.Unix(), 10),
		"resource":     tok.Resource,
		"token_type":   "Bearer",
		"client_id":    tok.ClientID,
	})
}

// check returns the status the request gets, and the message of an error.
func (m *ManagedIdentity) check(r *http.Request) (int, string) {
	m.mu.Lock()
	if len(m.failures) > 0 {
		status := m.failures[0]
		m.failures = m.failures[1:]
		m.mu.Unlock()
		return status, "injected failure"
	}
	m.mu.Unlock()
	q := r.URL.Query()
	switch {
	case r.Method != http.MethodGet:
		return http.StatusMethodNotAllowed, "only GET is supported"
	case r.Header.Get("X-IDENTITY-HEADER") != m.header:
		return http.StatusUnauthorized, "missing or wrong X-IDENTITY-HEADER"
	case q.Get("api-version") != ManagedIdentityAPIVersion:
		return http.StatusBadRequest, "unsupported api-version " + strconv.Quote(q.Get("api-version"))
	case q.Get("resource") == "":
		return http.StatusBadRequest, "resource is required"
	}
	for param, want := range map[string]string{
		"client_id": m.cfg.ClientID,
		"object_id": m.cfg.ObjectID,
		"mi_res_id": m.ResourceID(),
	} {
		if v := q.Get(param); v != "" && !strings.EqualFold(v, want) {
			return http.StatusBadRequest, "no managed identity with " + param + " " + strconv.Quote(v) + " is assigned to this resource"
		}
	}
	return http.StatusOK, ""
}

// token makes a new token for resource.
func (m *ManagedIdentity) token(resource string) ManagedIdentityToken {
	now := time.Now()
	exp := now.Add(m.cfg.Lifetime).Truncate(time.Second)
	header := map[string]string{"typ": "JWT", "alg": "RS256", "kid": "goaspire-testserver"}
	claims := map[string]any{
		"aud":       resource,
		"iss":       "https://sts.windows.net/" + m.cfg.TenantID + "/",
		"iat":       now.Unix(),
		"nbf":       now.Unix(),
		"exp":       exp.Unix(),
		"oid":       m.cfg.ObjectID,
		"sub":       m.cfg.ObjectID,
		"tid":       m.cfg.TenantID,
		"appid":     m.cfg.ClientID,
		"appidacr":  "2",
		"idtyp":     "app",
		"xms_mirid": m.ResourceID(),
		"jti":       randomUUID(),
	}
	return ManagedIdentityToken{
		AccessToken: jwtPart(header) + "." + jwtPart(claims) + "." + base64.RawURLEncoding.EncodeToString(randomBytes(32)),
		Resource:    resource,
		ClientID:    m.cfg.ClientID,
		ObjectID:    m.cfg.ObjectID,
		Name:        m.cfg.Name,
		ExpiresOn:   exp,
	}
}

func jwtPart(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(errors.New("testserver: encode token: " + err.Error()))
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// randomUUID returns a random (version 4) UUID.
func randomUUID() string {
	b := randomBytes(16)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
