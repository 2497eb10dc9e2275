// Package oauthtest holds the OAuth 2.0 parts tests run against: an in-process token endpoint
// (HTTPS, a certificate from testsupport/testcert) that checks every grant smtpout uses for real
// and issues short-lived tokens, and an in-process SMTP server (emersion/go-smtp) offering
// XOAUTH2 and OAUTHBEARER that accepts only live tokens that endpoint issued.
package oauthtest

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // x5t is a SHA-1 thumbprint
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smtpout/smtpout/testsupport/testcert"
)

// Grants as the endpoint counts them.
const (
	GrantSecretPost      = "secret_post"
	GrantSecretBasic     = "secret_basic"
	GrantPrivateKeyJWT   = "private_key_jwt"
	GrantFederated       = "federated"
	GrantServiceAccount  = "service_account"
	jwtBearerGrant       = "urn:ietf:params:oauth:grant-type:jwt-bearer"
	assertionType        = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
	DefaultScope         = "https://outlook.office365.com/.default"
	GoogleScope          = "https://mail.google.com/"
	DefaultClientID      = "11111111-2222-3333-4444-555555555555"
	DefaultClientSecret  = "Cl13nt~S3cret-value-NEVER-logged"
	DefaultServiceEmail  = "smtpout@project.iam.gserviceaccount.com"
	DefaultServiceKeyID  = "0123456789abcdef"
	DefaultFederatedJWT  = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6bG9nZ2luZzpmbHVlbnQtYml0In0.RkVERVJBVEVELUFTU0VSVElPTi1ORVZFUi1MT0dHRUQ"
	tokenPath            = "/tenant/oauth2/v2.0/token"
	maxAssertionLifetime = 10 * time.Minute
)

// Endpoint is an HTTPS token endpoint. Configure it before the first request; the
// atomic fields may change at any time.
type Endpoint struct {
	// URL is the token URL; CA the certificate authority its server certificate chains to.
	URL string
	CA  *testcert.Cert

	ClientID, ClientSecret string
	Scope                  string
	// ClientCert is the certificate whose key signs private_key_jwt assertions; CertFile and
	// KeyFile hold it (RSA, PEM).
	ClientCert        *x509.Certificate
	CertFile, KeyFile string
	// AssertionFile holds the federated assertion the endpoint accepts (Federated).
	AssertionFile string
	// ServiceAccountFile is a Google service-account key whose token_uri is URL; Subject is the
	// mailbox its assertions must impersonate.
	ServiceAccountFile string
	ServiceEmail       string
	Subject            string
	saKey              *rsa.PrivateKey

	// Lifetime is the lifetime of issued tokens (default one hour).
	Lifetime atomic.Int64
	// Down makes the endpoint drop every connection without an answer.
	Down atomic.Bool

	srv *httptest.Server

	mu        sync.Mutex
	federated string
	tokens    map[string]*issued
	requests  map[string]int // by grant + "/ok" or "/error"
	jtis      map[string]bool
	problems  []string // why requests were refused
}

type issued struct {
	subject string
	expiry  time.Time
	revoked bool
}

// NewEndpoint starts an endpoint with a client secret, a client certificate, a federated
// assertion and a service account, all valid; subject is the mailbox Google assertions must
// name. It stops when the test ends.
func NewEndpoint(t testing.TB, subject string) *Endpoint {
	t.Helper()
	dir := t.TempDir()
	e := &Endpoint{
		CA:           testcert.New(t),
		ClientID:     DefaultClientID,
		ClientSecret: DefaultClientSecret,
		Scope:        DefaultScope,
		ServiceEmail: DefaultServiceEmail,
		Subject:      subject,
		tokens:       make(map[string]*issued),
		requests:     make(map[string]int),
		jtis:         make(map[string]bool),
	}
	e.Lifetime.Store(int64(time.Hour))
	e.srv = httptest.NewUnstartedServer(http.HandlerFunc(e.serve))
	e.srv.TLS = e.CA.ServerTLS()
	e.srv.StartTLS()
	t.Cleanup(e.srv.Close)
	u, _ := url.Parse(e.srv.URL)
	e.URL = "https://localhost:" + u.Port() + tokenPath

	var err error
	if e.ClientCert, e.CertFile, e.KeyFile, err = writeClientCert(dir); err != nil {
		t.Fatal(err)
	}
	e.AssertionFile = filepath.Join(dir, "azure-identity-token")
	e.SetFederated(DefaultFederatedJWT)
	if e.saKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	e.ServiceAccountFile = filepath.Join(dir, "service-account.json")
	if err := e.writeServiceAccount(); err != nil {
		t.Fatal(err)
	}
	return e
}

// SetFederated makes value the only federated assertion accepted and writes it to
// AssertionFile, as the kubelet rotates the projected token.
func (e *Endpoint) SetFederated(value string) {
	e.mu.Lock()
	e.federated = value
	e.mu.Unlock()
	if err := os.WriteFile(e.AssertionFile, []byte(value+"\n"), 0o600); err != nil {
		panic(err)
	}
}

func writeClientCert(dir string) (*x509.Certificate, string, string, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(42),
		Subject:      pkix.Name{CommonName: "smtpout test client"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, "", "", err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, "", "", err
	}
	pk8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, "", "", err
	}
	certFile, keyFile := filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return nil, "", "", err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk8}), 0o600); err != nil {
		return nil, "", "", err
	}
	return cert, certFile, keyFile, nil
}

func (e *Endpoint) writeServiceAccount() error {
	pk8, err := x509.MarshalPKCS8PrivateKey(e.saKey)
	if err != nil {
		return err
	}
	data, err := json.MarshalIndent(map[string]string{
		"type":           "service_account",
		"project_id":     "project",
		"private_key_id": DefaultServiceKeyID,
		"private_key":    string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk8})),
		"client_email":   e.ServiceEmail,
		"client_id":      "123456789012345678901",
		"auth_uri":       "https://accounts.google.com/o/oauth2/auth",
		"token_uri":      e.URL,
	}, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(e.ServiceAccountFile, data, 0o600)
}

// Requests returns how many token requests each grant made, by result
// ("secret_post/ok", "private_key_jwt/error", ...).
func (e *Endpoint) Requests() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[string]int, len(e.requests))
	for k, v := range e.requests {
		out[k] = v
	}
	return out
}

// Issued returns how many tokens the endpoint issued.
func (e *Endpoint) Issued() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.tokens)
}

// Tokens returns every token issued so far (for tests that check logs for them).
func (e *Endpoint) Tokens() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]string, 0, len(e.tokens))
	for k := range e.tokens {
		out = append(out, k)
	}
	return out
}

// Problems returns why refused requests were refused.
func (e *Endpoint) Problems() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.problems...)
}

// Mint issues a token without a request, as a sidecar that keeps auth_token_file fresh
// would have obtained it; it is not counted in Requests.
func (e *Endpoint) Mint(lifetime time.Duration) string {
	return e.issue(GrantSecretPost, "", lifetime)
}

// RevokeAll revokes every token issued so far.
func (e *Endpoint) RevokeAll() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, t := range e.tokens {
		t.revoked = true
	}
}

// Check reports why token cannot act for user, or nil when it is live: issued here, not
// expired, not revoked, and (for a delegated token) for that user.
func (e *Endpoint) Check(token, user string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	t, ok := e.tokens[token]
	switch {
	case !ok:
		return errors.New("unknown token")
	case t.revoked:
		return errors.New("token revoked")
	case time.Now().After(t.expiry):
		return errors.New("token expired")
	case t.subject != "" && !strings.EqualFold(t.subject, user):
		return fmt.Errorf("token is for %s, not %s", t.subject, user)
	}
	return nil
}

// Live reports whether token is live for user.
func (e *Endpoint) Live(token, user string) bool { return e.Check(token, user) == nil }

// oauthError is an RFC 6749 5.2 error response.
type oauthError struct {
	status int
	code   string
	desc   string
}

// entraTrace imitates what Entra ID appends to each error_description.
func entraTrace() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return fmt.Sprintf(" Trace ID: %x Correlation ID: %x Timestamp: %s", b, b, time.Now().UTC().Format("2006-01-02 15:04:05Z"))
}

func (e *Endpoint) serve(w http.ResponseWriter, r *http.Request) {
	if e.Down.Load() {
		e.mu.Lock()
		e.requests["down/error"]++
		e.mu.Unlock()
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				_ = c.Close()
				return
			}
		}
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	if r.URL.Path != tokenPath || r.Method != http.MethodPost {
		http.NotFound(w, r)
		return
	}
	if err := r.ParseForm(); err != nil {
		writeError(w, oauthError{400, "invalid_request", err.Error()})
		return
	}
	grant, subject, oe := e.check(r)
	result := "ok"
	if oe != nil {
		result = "error"
	}
	e.mu.Lock()
	e.requests[grant+"/"+result]++
	if oe != nil {
		e.problems = append(e.problems, grant+": "+oe.code+": "+oe.desc)
	}
	e.mu.Unlock()
	if oe != nil {
		writeError(w, *oe)
		return
	}
	lifetime := time.Duration(e.Lifetime.Load())
	tok := e.issue(grant, subject, lifetime)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"token_type":   "Bearer",
		"expires_in":   int(lifetime.Seconds()),
		"access_token": tok,
	})
}

func writeError(w http.ResponseWriter, oe oauthError) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(oe.status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": oe.code, "error_description": oe.desc})
}

// issue makes a new token: a readable JWT like Entra ID's for client credentials, an opaque
// one like Google's for service accounts.
func (e *Endpoint) issue(grant, subject string, lifetime time.Duration) string {
	rnd := make([]byte, 24)
	_, _ = rand.Read(rnd)
	exp := time.Now().Add(lifetime)
	var tok string
	if grant == GrantServiceAccount {
		tok = "ya29." + base64.RawURLEncoding.EncodeToString(rnd)
	} else {
		h, _ := json.Marshal(map[string]string{"typ": "JWT", "alg": "RS256"})
		c, _ := json.Marshal(map[string]any{
			"aud": "https://outlook.office.com", "iss": "https://sts.windows.net/tenant/",
			"appid": e.ClientID, "roles": []string{"SMTP.SendAsApp"}, "exp": exp.Unix(),
		})
		tok = base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c) + "." +
			base64.RawURLEncoding.EncodeToString(rnd)
	}
	e.mu.Lock()
	e.tokens[tok] = &issued{subject: subject, expiry: exp}
	e.mu.Unlock()
	return tok
}

// check validates one token request and returns its grant and the subject its token acts for.
func (e *Endpoint) check(r *http.Request) (grant, subject string, _ *oauthError) {
	f := r.PostForm
	switch f.Get("grant_type") {
	case jwtBearerGrant:
		return GrantServiceAccount, e.Subject, e.checkServiceAccount(f.Get("assertion"))
	case "client_credentials":
	default:
		return "unknown", "", &oauthError{400, "unsupported_grant_type", "AADSTS70003: unsupported grant_type"}
	}
	if got := f.Get("scope"); got != e.Scope {
		return "scope", "", &oauthError{400, "invalid_scope", fmt.Sprintf("AADSTS70011: The provided value %q for the input parameter 'scope' is not valid.%s", got, entraTrace())}
	}
	if id, secret, ok := r.BasicAuth(); ok {
		id, _ = url.QueryUnescape(id)
		secret, _ = url.QueryUnescape(secret)
		if f.Get("client_secret") != "" || f.Get("client_assertion") != "" {
			return GrantSecretBasic, "", &oauthError{400, "invalid_request", "AADSTS90000: more than one client authentication"}
		}
		return GrantSecretBasic, "", e.checkSecret(id, secret)
	}
	switch {
	case f.Get("client_secret") != "":
		if f.Get("client_assertion") != "" {
			return GrantSecretPost, "", &oauthError{400, "invalid_request", "AADSTS90000: more than one client authentication"}
		}
		return GrantSecretPost, "", e.checkSecret(f.Get("client_id"), f.Get("client_secret"))
	case f.Get("client_assertion") != "":
		if f.Get("client_assertion_type") != assertionType {
			return GrantPrivateKeyJWT, "", &oauthError{400, "invalid_request", "AADSTS50027: client_assertion_type is wrong"}
		}
		if f.Get("client_id") != e.ClientID {
			return GrantPrivateKeyJWT, "", &oauthError{400, "unauthorized_client", "AADSTS700016: Application not found in the directory." + entraTrace()}
		}
		a := f.Get("client_assertion")
		e.mu.Lock()
		fed := e.federated
		e.mu.Unlock()
		if !hasThumbprint(a) {
			// A federated assertion comes from another issuer: no x5t of ours.
			if subtle.ConstantTimeCompare([]byte(a), []byte(fed)) != 1 {
				return GrantFederated, "", &oauthError{401, "invalid_client", "AADSTS70021: No matching federated identity record found for presented assertion." + entraTrace()}
			}
			return GrantFederated, "", nil
		}
		return GrantPrivateKeyJWT, "", e.checkClientAssertion(a)
	}
	return "none", "", &oauthError{401, "invalid_client", "AADSTS7000218: The request body must contain the following parameter: 'client_assertion' or 'client_secret'." + entraTrace()}
}

func (e *Endpoint) checkSecret(id, secret string) *oauthError {
	if id != e.ClientID {
		return &oauthError{400, "unauthorized_client", "AADSTS700016: Application with identifier '" + id + "' was not found in the directory." + entraTrace()}
	}
	if subtle.ConstantTimeCompare([]byte(secret), []byte(e.ClientSecret)) != 1 {
		return &oauthError{401, "invalid_client", "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID." + entraTrace()}
	}
	return nil
}

// jwtParts decodes a compact JWS and verifies its RS256 signature with pub.
func jwtParts(token string, pub *rsa.PublicKey) (header, claims map[string]any, err error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, nil, errors.New("not a JWT")
	}
	dec := func(s string, v any) error {
		b, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil {
			return err
		}
		d := json.NewDecoder(strings.NewReader(string(b)))
		d.UseNumber()
		return d.Decode(v)
	}
	if err := dec(parts[0], &header); err != nil {
		return nil, nil, fmt.Errorf("header: %v", err)
	}
	if err := dec(parts[1], &claims); err != nil {
		return nil, nil, fmt.Errorf("claims: %v", err)
	}
	if header["alg"] != "RS256" {
		return nil, nil, fmt.Errorf("alg %v, want RS256", header["alg"])
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return nil, nil, fmt.Errorf("signature: %v", err)
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig); err != nil {
		return nil, nil, errors.New("signature does not verify")
	}
	return header, claims, nil
}

func num(v any) int64 {
	n, _ := v.(json.Number)
	i, _ := n.Int64()
	return i
}

// checkTimes checks exp (future, bounded) and, when present, iat and nbf (not in the future).
func checkTimes(claims map[string]any, maxLife time.Duration) error {
	now := time.Now().Unix()
	exp := num(claims["exp"])
	switch {
	case exp == 0:
		return errors.New("no exp")
	case exp <= now:
		return errors.New("assertion expired")
	case exp > now+int64(maxLife.Seconds())+5:
		return fmt.Errorf("exp %ds ahead, more than %v", exp-now, maxLife)
	}
	for _, k := range []string{"iat", "nbf"} {
		if v, ok := claims[k]; ok && num(v) > now+5 {
			return fmt.Errorf("%s in the future", k)
		}
	}
	return nil
}

// checkClientAssertion checks a private_key_jwt assertion as Entra ID does: the thumbprint
// headers name the registered certificate, its key signed it, and the claims are right.
func (e *Endpoint) checkClientAssertion(a string) *oauthError {
	bad := func(why string) *oauthError {
		return &oauthError{401, "invalid_client", "AADSTS700027: Client assertion failed signature validation: " + why + "." + entraTrace()}
	}
	h, c, err := jwtParts(a, e.ClientCert.PublicKey.(*rsa.PublicKey))
	if err != nil {
		return bad(err.Error())
	}
	s1 := sha1.Sum(e.ClientCert.Raw) //nolint:gosec // x5t
	s256 := sha256.Sum256(e.ClientCert.Raw)
	if h["x5t"] != base64.RawURLEncoding.EncodeToString(s1[:]) {
		return bad("x5t does not name the registered certificate")
	}
	if h["x5t#S256"] != base64.RawURLEncoding.EncodeToString(s256[:]) {
		return bad("x5t#S256 does not name the registered certificate")
	}
	switch {
	case c["aud"] != e.URL:
		return bad(fmt.Sprintf("aud %v, want the token URL", c["aud"]))
	case c["iss"] != e.ClientID, c["sub"] != e.ClientID:
		return bad("iss and sub must be the client id")
	case c["jti"] == nil || c["jti"] == "":
		return bad("no jti")
	}
	if err := checkTimes(c, maxAssertionLifetime); err != nil {
		return bad(err.Error())
	}
	jti := fmt.Sprint(c["jti"])
	e.mu.Lock()
	reused := e.jtis[jti]
	e.jtis[jti] = true
	e.mu.Unlock()
	if reused {
		return bad("jti replayed")
	}
	return nil
}

// checkServiceAccount checks a Google JWT-bearer assertion: signed with the service
// account's key (kid), iss the account, sub the mailbox, scope, aud the token URL, exp.
func (e *Endpoint) checkServiceAccount(a string) *oauthError {
	h, c, err := jwtParts(a, &e.saKey.PublicKey)
	if err != nil {
		return &oauthError{400, "invalid_grant", "Invalid JWT Signature: " + err.Error()}
	}
	switch {
	case h["kid"] != DefaultServiceKeyID:
		return &oauthError{400, "invalid_grant", "Invalid JWT Signature: unknown kid"}
	case c["iss"] != e.ServiceEmail:
		return &oauthError{400, "invalid_grant", "Invalid issuer"}
	case !strings.EqualFold(fmt.Sprint(c["sub"]), e.Subject):
		return &oauthError{400, "invalid_grant", "Invalid email or User ID"}
	case c["scope"] != GoogleScope:
		return &oauthError{400, "unauthorized_client", "Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested."}
	case c["aud"] != e.URL:
		return &oauthError{400, "invalid_grant", "Invalid JWT: aud is not the token URL"}
	}
	if err := checkTimes(c, time.Hour); err != nil {
		return &oauthError{400, "invalid_grant", "Invalid JWT: " + err.Error()}
	}
	return nil
}

// Listener is the endpoint's address, for tests that need the port.
func (e *Endpoint) Listener() net.Addr { return e.srv.Listener.Addr() }

// Fingerprint returns the hex SHA-1 of the client certificate, as the Entra portal shows it.
func (e *Endpoint) Fingerprint() string {
	s := sha1.Sum(e.ClientCert.Raw) //nolint:gosec // display
	return strings.ToUpper(hex.EncodeToString(s[:]))
}

// hasThumbprint reports whether a JWT's header carries x5t or x5t#S256.
func hasThumbprint(a string) bool {
	head, _, _ := strings.Cut(a, ".")
	b, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		return false
	}
	var h map[string]any
	if json.Unmarshal(b, &h) != nil {
		return false
	}
	_, x1 := h["x5t"]
	_, x2 := h["x5t#S256"]
	return x1 || x2
}
