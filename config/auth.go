package config

// This file holds the authentication keys: auth_mechanism, the OAuth 2.0 token sources
// (auth_*), and the secrets read from files (password_file, secret_key_file,
// auth_client_secret_file). Parse calls (*parser).auth once; the keys themselves are rows of
// the key table (keys.go).

import (
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
)

// The values of auth_mechanism.
const (
	MechPlain       = "plain"
	MechLogin       = "login"
	MechXOAuth2     = "xoauth2"
	MechOAuthBearer = "oauthbearer"
)

// The OAuth 2.0 token sources (Auth.Source).
const (
	// SourceClientSecret: client-credentials grant, client id and secret (auth_client_secret).
	SourceClientSecret = "client_secret"
	// SourceClientCert: client-credentials grant with private_key_jwt client authentication
	// (RFC 7523) signed with auth_client_key_file, auth_client_cert_file's thumbprint in the header.
	SourceClientCert = "client_certificate"
	// SourceClientAssertion: client-credentials grant with a federated client assertion read
	// from auth_client_assertion_file for every request (Kubernetes workload identity).
	SourceClientAssertion = "client_assertion"
	// SourceServiceAccount: Google service account, JWT-bearer grant (RFC 7523) impersonating
	// the mailbox (domain-wide delegation).
	SourceServiceAccount = "service_account"
	// SourceTokenFile: a ready access token in auth_token_file, kept fresh by something else.
	SourceTokenFile = "token_file"
)

// DefaultGoogleScope is auth_scope's default with auth_service_account_file.
const DefaultGoogleScope = "https://mail.google.com/"

// DefaultGoogleTokenURL is used when a service-account key has no token_uri.
const DefaultGoogleTokenURL = "https://oauth2.googleapis.com/token"

// Auth is the OAuth 2.0 part of a Config: set when auth_mechanism is xoauth2 or oauthbearer.
type Auth struct {
	// Source is one of the Source* constants.
	Source string
	// TokenURL is the token endpoint (auth_token_url, or the service account's token_uri).
	TokenURL string
	// ClientID is auth_client_id (for a service account: its client_email).
	ClientID     string
	ClientSecret Secret
	// ClientCertPEM and ClientKeyPEM are auth_client_cert_file and auth_client_key_file's
	// contents, checked at Parse: an RSA key matching the certificate.
	ClientCertFile, ClientKeyFile string
	ClientCertPEM                 []byte
	ClientKeyPEM                  Secret
	// ClientAssertionFile is read for every token request.
	ClientAssertionFile string
	// ClientAuthBasic sends the client id and secret with HTTP Basic instead of in the form.
	ClientAuthBasic bool
	// Scopes are auth_scope's scopes.
	Scopes []string
	// ServiceAccountFile is auth_service_account_file; ServiceAccountJSON its contents, and
	// ServiceAccountKeyID the key's private_key_id.
	ServiceAccountFile  string
	ServiceAccountJSON  Secret
	ServiceAccountKeyID string
	// TokenFile is auth_token_file, re-read whenever it changes.
	TokenFile string
}

// OAuth reports whether c authenticates with a token (xoauth2 or oauthbearer).
func (c Config) OAuth() bool {
	return c.AuthMechanism == MechXOAuth2 || c.AuthMechanism == MechOAuthBearer
}

// TrimSecret is the trimming every secret gets, from a key or a file (and in smtpout verify):
// surrounding white space, the final newline of a mounted file included, is removed, as
// Fluent Bit removes it around a value in its configuration.
func TrimSecret(s string) string { return strings.TrimSpace(s) }

// secret reads a secret from key or from the file named by fileKey (not both).
func (p *parser) secret(key, fileKey string) Secret {
	v := TrimSecret(p.get.Get(key))
	path := p.value(fileKey)
	if path == "" {
		return Secret(v)
	}
	if v != "" {
		p.fail(key, "", "is set both directly and with %s: use one", fileKey)
		return Secret(v)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		p.fail(fileKey, path, "cannot be read: %v", unwrapPathError(err))
		return ""
	}
	v = TrimSecret(string(data))
	if v == "" {
		p.fail(fileKey, path, "is empty")
	}
	return Secret(v)
}

// auth parses username, password(_file), is_authlogin, auth_mechanism and the token source
// keys into c (c.From must be parsed already).
func (p *parser) auth(c *Config) {
	c.Username = p.value("username")
	c.Password = p.secret("password", "password_file")
	if strings.ContainsAny(c.Username, "\r\n\x00") {
		p.fail("username", c.Username, "must not contain CR, LF or NUL")
	}

	mech := strings.ToLower(p.value("auth_mechanism"))
	switch mech {
	case "":
		mech = MechPlain
		if c.AuthLogin {
			mech = MechLogin
		}
	case MechPlain, MechLogin, MechXOAuth2, MechOAuthBearer:
		if p.value("is_authlogin") != "" && c.AuthLogin != (mech == MechLogin) {
			p.fail("auth_mechanism", mech, "disagrees with is_authlogin %s: remove is_authlogin", p.value("is_authlogin"))
		}
	default:
		p.fail("auth_mechanism", mech, "must be plain, login, xoauth2 or oauthbearer")
		mech = MechPlain
	}
	c.AuthMechanism = mech
	c.AuthLogin = mech == MechLogin

	set := func(keys ...string) []string {
		var out []string
		for _, k := range keys {
			if p.value(k) != "" {
				out = append(out, k)
			}
		}
		return out
	}
	tokenKeys := set("auth_token_url", "auth_client_id", "auth_client_secret", "auth_client_secret_file",
		"auth_client_key_file", "auth_client_cert_file", "auth_client_assertion_file", "auth_client_auth",
		"auth_scope", "auth_service_account_file", "auth_token_file")

	if !c.OAuth() {
		for _, k := range tokenKeys {
			p.fail(k, "", "is only used with auth_mechanism xoauth2 or oauthbearer")
		}
		if c.Password != "" {
			if w := passwordWarning(c.Host); w != "" {
				c.Warnings = append(c.Warnings, w)
			}
		}
		if (c.Username == "") != (c.Password == "") {
			if c.Username == "" {
				p.fail("username", "", "is required when password is set (set both or neither)")
			} else {
				p.fail("password", "", "is required when username is set (set both or neither)")
			}
		}
		return
	}

	if c.Password != "" {
		p.fail("password", "", "cannot be used with auth_mechanism %s: the token replaces it", mech)
	}
	if c.Username == "" {
		c.Username = c.From.Address
	}
	a := &c.Auth
	sources := set("auth_token_url", "auth_service_account_file", "auth_token_file")
	switch {
	case len(sources) == 0:
		p.fail("auth_mechanism", mech, "needs a token source: auth_token_url (with auth_client_id), auth_service_account_file or auth_token_file")
		return
	case len(sources) > 1:
		p.fail(sources[1], "", "cannot be used with %s: give exactly one token source", sources[0])
		return
	}
	only := func(allowed ...string) {
		for _, k := range tokenKeys {
			ok := false
			for _, a := range allowed {
				ok = ok || a == k
			}
			if !ok {
				p.fail(k, "", "cannot be used with %s", sources[0])
			}
		}
	}
	switch sources[0] {
	case "auth_token_file":
		only("auth_token_file")
		a.Source = SourceTokenFile
		a.TokenFile = p.value("auth_token_file")
		if _, err := os.Stat(a.TokenFile); err != nil {
			p.fail("auth_token_file", a.TokenFile, "cannot be used: %v", unwrapPathError(err))
		}
	case "auth_service_account_file":
		only("auth_service_account_file", "auth_scope")
		a.Source = SourceServiceAccount
		a.ServiceAccountFile = p.value("auth_service_account_file")
		p.serviceAccount(a)
		a.Scopes = p.scopes(DefaultGoogleScope)
	case "auth_token_url":
		only("auth_token_url", "auth_client_id", "auth_client_secret", "auth_client_secret_file",
			"auth_client_key_file", "auth_client_cert_file", "auth_client_assertion_file", "auth_client_auth", "auth_scope")
		a.TokenURL = p.tokenURL("auth_token_url", p.value("auth_token_url"))
		a.ClientID = p.value("auth_client_id")
		if a.ClientID == "" {
			p.fail("auth_client_id", "", "is required with auth_token_url: the application (client) id")
		}
		a.Scopes = p.scopes("")
		if len(a.Scopes) == 0 {
			c.Warnings = append(c.Warnings, "auth_scope is empty: most token endpoints need one (Exchange Online: https://outlook.office365.com/.default)")
		}
		secret := p.secret("auth_client_secret", "auth_client_secret_file")
		var creds []string // the kinds of client credential given
		if secret != "" {
			creds = append(creds, "auth_client_secret")
		}
		if len(set("auth_client_key_file", "auth_client_cert_file")) > 0 {
			creds = append(creds, "auth_client_key_file")
		}
		if len(set("auth_client_assertion_file")) > 0 {
			creds = append(creds, "auth_client_assertion_file")
		}
		switch {
		case len(creds) == 0:
			p.fail("auth_token_url", a.TokenURL, "needs client credentials: auth_client_secret (or auth_client_secret_file), auth_client_key_file with auth_client_cert_file, or auth_client_assertion_file")
			return
		case len(creds) > 1:
			p.fail(creds[1], "", "cannot be used with %s: give one kind of client credential", creds[0])
			return
		}
		switch creds[0] {
		case "auth_client_secret":
			a.Source = SourceClientSecret
			a.ClientSecret = secret
		case "auth_client_assertion_file":
			a.Source = SourceClientAssertion
			a.ClientAssertionFile = p.value("auth_client_assertion_file")
			if _, err := os.ReadFile(a.ClientAssertionFile); err != nil {
				p.fail("auth_client_assertion_file", a.ClientAssertionFile, "cannot be read: %v", unwrapPathError(err))
			}
		default:
			a.Source = SourceClientCert
			p.clientCert(a)
		}
		switch v := strings.ToLower(p.value("auth_client_auth")); v {
		case "", "post":
		case "basic":
			if a.Source != SourceClientSecret {
				p.fail("auth_client_auth", v, "basic only goes with auth_client_secret: a certificate or assertion is always sent in the form")
			}
			a.ClientAuthBasic = true
		default:
			p.fail("auth_client_auth", v, "must be post or basic")
		}
	}
}

// passwordWarning warns about password authentication to a relay that is turning it off.
func passwordWarning(host string) string {
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	switch {
	case h == "smtp.office365.com" || h == "smtp-legacy.office365.com" || strings.HasSuffix(h, ".outlook.com"):
		return fmt.Sprintf("dest_host %s is Exchange Online, which disables password (Basic) authentication for SMTP AUTH by default at the end of December 2026 (MC786329; then 535 5.7.139 or 550 5.7.30): switch to auth_mechanism xoauth2 with auth_token_url, auth_client_id and auth_client_secret, a certificate or workload identity (README: Exchange Online)", host)
	case h == "smtp.gmail.com" || h == "smtp-relay.gmail.com":
		return fmt.Sprintf("dest_host %s is Gmail, which accepts no account password from Google Workspace accounts since May 1, 2025 (an app password only where the administrator allows it): switch to auth_mechanism xoauth2 with auth_service_account_file (README: Google Workspace)", host)
	}
	return ""
}

// SecretKey reads secret_key, or secret_key_file, with the trimming Parse applies, for
// tools that need only the shared secret (smtpout verify). It never returns the value in an
// error.
func SecretKey(g Getter) (Secret, error) {
	p := &parser{get: g}
	s := p.secret("secret_key", "secret_key_file")
	if len(p.errs) > 0 {
		return "", errors.Join(p.errs...)
	}
	return s, nil
}

// scopes splits auth_scope at spaces and commas.
func (p *parser) scopes(def string) []string {
	v := p.value("auth_scope")
	if v == "" {
		v = def
	}
	return strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
}

// tokenURL checks a token endpoint: https, or http only to a loopback address.
func (p *parser) tokenURL(key, v string) string {
	if v == "" {
		return ""
	}
	u, err := url.Parse(v)
	if err != nil || u.Host == "" {
		p.fail(key, v, "is not an absolute URL such as https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token")
		return v
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && loopback(u.Hostname()):
	case u.Scheme == "http":
		p.fail(key, v, "must be https:// (plain http only for a loopback address)")
	default:
		p.fail(key, v, "must be an https:// URL")
	}
	if u.User != nil {
		p.fail(key, "", "must not carry credentials in the URL")
		return ""
	}
	return v
}

func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// clientCert reads and checks auth_client_cert_file and auth_client_key_file: a certificate
// and the RSA key that matches it (Entra ID signs client assertions with RS256).
func (p *parser) clientCert(a *Auth) {
	a.ClientCertFile = p.value("auth_client_cert_file")
	a.ClientKeyFile = p.value("auth_client_key_file")
	if a.ClientCertFile == "" {
		p.fail("auth_client_cert_file", "", "is required with auth_client_key_file: the certificate uploaded to the app registration")
		return
	}
	if a.ClientKeyFile == "" {
		p.fail("auth_client_key_file", "", "is required with auth_client_cert_file: the certificate's private key")
		return
	}
	certPEM, err := os.ReadFile(a.ClientCertFile)
	if err != nil {
		p.fail("auth_client_cert_file", a.ClientCertFile, "cannot be read: %v", unwrapPathError(err))
		return
	}
	keyPEM, err := os.ReadFile(a.ClientKeyFile)
	if err != nil {
		p.fail("auth_client_key_file", a.ClientKeyFile, "cannot be read: %v", unwrapPathError(err))
		return
	}
	if b, _ := pem.Decode(certPEM); b == nil || b.Type != "CERTIFICATE" {
		p.fail("auth_client_cert_file", a.ClientCertFile, "holds no PEM certificate")
		return
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// The error text never contains key material.
		p.fail("auth_client_key_file", a.ClientKeyFile, "does not hold the private key of auth_client_cert_file (PEM, PKCS #1 or #8): %v", err)
		return
	}
	if _, ok := pair.PrivateKey.(*rsa.PrivateKey); !ok {
		p.fail("auth_client_key_file", a.ClientKeyFile, "must hold an RSA key: Entra ID accepts RS256 client assertions only")
		return
	}
	a.ClientCertPEM = certPEM
	a.ClientKeyPEM = Secret(keyPEM)
}

// ServiceAccountKey is the part of a Google service-account JSON key that smtpout uses.
type ServiceAccountKey struct {
	Type         string `json:"type"`
	ClientEmail  string `json:"client_email"`
	PrivateKey   string `json:"private_key"`
	PrivateKeyID string `json:"private_key_id"`
	TokenURI     string `json:"token_uri"`
}

// serviceAccount reads and checks auth_service_account_file.
func (p *parser) serviceAccount(a *Auth) {
	const key = "auth_service_account_file"
	data, err := os.ReadFile(a.ServiceAccountFile)
	if err != nil {
		p.fail(key, a.ServiceAccountFile, "cannot be read: %v", unwrapPathError(err))
		return
	}
	var sa ServiceAccountKey
	if err := json.Unmarshal(data, &sa); err != nil {
		p.fail(key, a.ServiceAccountFile, "is not a service-account JSON key")
		return
	}
	switch {
	case sa.Type != "service_account":
		p.fail(key, a.ServiceAccountFile, "is not a service-account key (type %q, want \"service_account\")", sa.Type)
		return
	case sa.ClientEmail == "":
		p.fail(key, a.ServiceAccountFile, "has no client_email")
		return
	}
	b, _ := pem.Decode([]byte(sa.PrivateKey))
	if b == nil {
		p.fail(key, a.ServiceAccountFile, "has no PEM private_key")
		return
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		if k, err = x509.ParsePKCS1PrivateKey(b.Bytes); err != nil {
			p.fail(key, a.ServiceAccountFile, "has a private_key that is not an RSA key")
			return
		}
	}
	if _, ok := k.(*rsa.PrivateKey); !ok {
		p.fail(key, a.ServiceAccountFile, "has a private_key that is not an RSA key")
		return
	}
	if sa.TokenURI == "" {
		sa.TokenURI = DefaultGoogleTokenURL
	}
	a.TokenURL = p.tokenURL(key, sa.TokenURI)
	a.ClientID = sa.ClientEmail
	a.ServiceAccountJSON = Secret(data)
	a.ServiceAccountKeyID = sa.PrivateKeyID
}
