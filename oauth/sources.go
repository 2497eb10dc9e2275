package oauth

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // x5t is defined as the SHA-1 thumbprint (RFC 7515 4.1.7)
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"golang.org/x/oauth2/jwt"

	"github.com/smtpout/smtpout/config"
)

// AssertionType is the client_assertion_type of a JWT client assertion (RFC 7523 2.2).
const AssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// withClient makes golang.org/x/oauth2 use hc for its requests.
func withClient(ctx context.Context, hc *http.Client) context.Context {
	return context.WithValue(ctx, oauth2.HTTPClient, hc)
}

// clientSecret is the client-credentials grant with a client secret, in the form (post) or
// with HTTP Basic.
type clientSecret struct {
	auth config.Auth
	hc   *http.Client
}

func (s *clientSecret) fetch(ctx context.Context) (*oauth2.Token, error) {
	style := oauth2.AuthStyleInParams
	if s.auth.ClientAuthBasic {
		style = oauth2.AuthStyleInHeader
	}
	c := clientcredentials.Config{
		ClientID:     s.auth.ClientID,
		ClientSecret: s.auth.ClientSecret.Reveal(),
		TokenURL:     s.auth.TokenURL,
		Scopes:       s.auth.Scopes,
		AuthStyle:    style,
	}
	return c.Token(withClient(ctx, s.hc))
}

// assertionGrant runs the client-credentials grant authenticated by a client assertion.
func assertionGrant(ctx context.Context, hc *http.Client, a config.Auth, assertion string) (*oauth2.Token, error) {
	c := clientcredentials.Config{
		ClientID:  a.ClientID,
		TokenURL:  a.TokenURL,
		Scopes:    a.Scopes,
		AuthStyle: oauth2.AuthStyleInParams,
		EndpointParams: url.Values{
			"client_assertion_type": {AssertionType},
			"client_assertion":      {assertion},
		},
	}
	return c.Token(withClient(ctx, hc))
}

// clientCert is private_key_jwt client authentication (RFC 7523 2.2, OpenID Connect Core 9):
// a fresh RS256 assertion for each request, the certificate's SHA-1 and SHA-256 thumbprints
// in its header (x5t, x5t#S256), as Entra ID matches them against the certificates uploaded
// to the app registration.
type clientCert struct {
	auth        config.Auth
	hc          *http.Client
	key         *rsa.PrivateKey
	x5t, x5t256 string
	now         func() time.Time
}

func newClientCert(a config.Auth, hc *http.Client) (*clientCert, error) {
	pair, err := tls.X509KeyPair(a.ClientCertPEM, []byte(a.ClientKeyPEM.Reveal()))
	if err != nil {
		return nil, fmt.Errorf("oauth: auth_client_key_file %q: %w", a.ClientKeyFile, err)
	}
	key, ok := pair.PrivateKey.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("oauth: auth_client_key_file %q: not an RSA key", a.ClientKeyFile)
	}
	der := pair.Certificate[0]
	s1 := sha1.Sum(der) //nolint:gosec // see the import
	s256 := sha256.Sum256(der)
	return &clientCert{
		auth: a, hc: hc, key: key,
		x5t:    base64.RawURLEncoding.EncodeToString(s1[:]),
		x5t256: base64.RawURLEncoding.EncodeToString(s256[:]),
		now:    time.Now,
	}, nil
}

// AssertionLifetime is how long a signed client assertion is valid.
const AssertionLifetime = 5 * time.Minute

func (s *clientCert) assertion() (string, error) {
	now := s.now()
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", err
	}
	header := map[string]any{"alg": "RS256", "typ": "JWT", "x5t": s.x5t, "x5t#S256": s.x5t256}
	claims := map[string]any{
		"aud": s.auth.TokenURL,
		"iss": s.auth.ClientID,
		"sub": s.auth.ClientID,
		"jti": hex.EncodeToString(jti),
		"iat": now.Unix(),
		"nbf": now.Unix(),
		"exp": now.Add(AssertionLifetime).Unix(),
	}
	return signRS256(header, claims, s.key)
}

func (s *clientCert) fetch(ctx context.Context) (*oauth2.Token, error) {
	jwt, err := s.assertion()
	if err != nil {
		return nil, fmt.Errorf("signing the client assertion: %w", err)
	}
	return assertionGrant(ctx, s.hc, s.auth, jwt)
}

// clientAssertion presents a federated client assertion (a Kubernetes service-account
// token, for Entra workload identity), read from its file for every request: the kubelet
// replaces it before it expires.
type clientAssertion struct {
	auth config.Auth
	hc   *http.Client
}

func (s *clientAssertion) fetch(ctx context.Context) (*oauth2.Token, error) {
	data, err := os.ReadFile(s.auth.ClientAssertionFile)
	if err != nil {
		return nil, &Error{Text: fmt.Sprintf("auth_client_assertion_file %q cannot be read: %v", s.auth.ClientAssertionFile, unwrapPath(err))}
	}
	a := strings.TrimSpace(string(data))
	if a == "" {
		return nil, &Error{Text: fmt.Sprintf("auth_client_assertion_file %q is empty", s.auth.ClientAssertionFile)}
	}
	return assertionGrant(ctx, s.hc, s.auth, a)
}

// serviceAccount is a Google service account's JWT-bearer grant (RFC 7523 2.1) impersonating
// subject, the mailbox (domain-wide delegation), through golang.org/x/oauth2/jwt.
type serviceAccount struct {
	auth    config.Auth
	subject string
	hc      *http.Client
}

func (s *serviceAccount) fetch(ctx context.Context) (*oauth2.Token, error) {
	var sa config.ServiceAccountKey
	if err := jsonUnmarshal([]byte(s.auth.ServiceAccountJSON.Reveal()), &sa); err != nil {
		return nil, errors.New("auth_service_account_file: not a service-account JSON key")
	}
	c := jwt.Config{
		Email:        sa.ClientEmail,
		PrivateKey:   []byte(sa.PrivateKey),
		PrivateKeyID: sa.PrivateKeyID,
		Subject:      s.subject,
		Scopes:       s.auth.Scopes,
		TokenURL:     s.auth.TokenURL,
	}
	return c.TokenSource(withClient(ctx, s.hc)).Token()
}

// tokenFile reads a ready access token from a file, again whenever the file changes.
type tokenFile struct {
	path string
	// seen is the file as the last read found it (read under the Provider's lock, or by the
	// one fetch in flight, never both at once).
	seen fileState
}

// fileState is what tells one version of a file from another: whether it exists, its
// modification time, size and inode (a Kubernetes secret volume swaps a symbolic link, so
// the inode changes even when the time and size do not).
type fileState struct {
	exists bool
	mod    time.Time
	size   int64
	ino    uint64
}

// stat returns the state of path; a file that cannot be stat'ed is one that does not exist
// (err says why).
func stat(path string) (fileState, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileState{}, err
	}
	return fileState{exists: true, mod: fi.ModTime(), size: fi.Size(), ino: inode(fi)}, nil
}

// same reports whether a and b are the same version of the file.
func (a fileState) same(b fileState) bool {
	return a.exists == b.exists && a.mod.Equal(b.mod) && a.size == b.size && a.ino == b.ino
}

func (s *tokenFile) fetch(context.Context) (*oauth2.Token, error) {
	// The state is noted before the read and whatever its outcome: a file that changes while
	// it is read is read again, one that does not is not read again until the back-off.
	var err error
	if s.seen, err = stat(s.path); err != nil {
		return nil, &Error{Text: fmt.Sprintf("auth_token_file %q: %v", s.path, unwrapPath(err))}
	}
	data, err := os.ReadFile(s.path)
	if err != nil {
		return nil, &Error{Text: fmt.Sprintf("auth_token_file %q cannot be read: %v", s.path, unwrapPath(err))}
	}
	v := strings.TrimSpace(string(data))
	if v == "" {
		return nil, &Error{Text: fmt.Sprintf("auth_token_file %q is empty", s.path)}
	}
	t := &oauth2.Token{AccessToken: v}
	if c, ok := ReadClaims(v); ok && c.Expiry != 0 {
		t.Expiry = time.Unix(c.Expiry, 0)
	}
	return t, nil
}

// changed reports whether the file differs from what the last read found (called under the
// Provider's lock).
func (s *tokenFile) changed() bool {
	now, _ := stat(s.path)
	return !now.same(s.seen)
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// Thumbprints returns a certificate's x5t and x5t#S256 (base64url SHA-1 and SHA-256 of its
// DER), as a client assertion's header carries them; tests and the CLI use it.
func Thumbprints(cert *x509.Certificate) (x5t, x5t256 string) {
	s1 := sha1.Sum(cert.Raw) //nolint:gosec // see the import
	s256 := sha256.Sum256(cert.Raw)
	return base64.RawURLEncoding.EncodeToString(s1[:]), base64.RawURLEncoding.EncodeToString(s256[:])
}
