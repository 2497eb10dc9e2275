package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/smtpout/smtpout/testsupport/oauthtest"
)

// coreKeys are keys Fluent Bit core consumes for every output (4.2 and 5.x): a Go plugin
// never sees them.
var coreKeys = []string{"name", "host", "port", "tls", "workers", "alias", "log_level", "log_suppress_interval",
	"retry_limit", "match", "match_regex", "ipv6"}

// Fluent Bit 5.x takes every key starting with oauth2 (and net., tls., storage.) for itself
// and stops at start-up on one it does not know: no key of ours may look like that.
func TestKeysNeverCollideWithFluentBit(t *testing.T) {
	if len(Keys) < 30 {
		t.Fatalf("Keys has %d entries: the auth keys are missing", len(Keys))
	}
	seen := map[string]bool{}
	for _, k := range Keys {
		l := strings.ToLower(k)
		for _, p := range []string{"oauth2", "net.", "tls.", "storage."} {
			if strings.HasPrefix(l, p) {
				t.Errorf("key %q starts with %q, which Fluent Bit core takes for itself", k, p)
			}
		}
		for _, c := range coreKeys {
			if l == c {
				t.Errorf("key %q is a Fluent Bit core key", k)
			}
		}
		if seen[l] {
			t.Errorf("key %q listed twice", k)
		}
		seen[l] = true
	}
	for _, k := range []string{
		"auth_mechanism", "password_file", "secret_key_file",
		"auth_token_url", "auth_client_id", "auth_client_secret", "auth_client_secret_file",
		"auth_client_key_file", "auth_client_cert_file", "auth_client_assertion_file",
		"auth_client_auth", "auth_scope", "auth_service_account_file", "auth_token_file",
	} {
		if !seen[k] {
			t.Errorf("auth key %q is not in Keys", k)
		}
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseAuth(t *testing.T) {
	ep := oauthtest.NewEndpoint(t, "lc@corp.com")
	certPEM, _ := os.ReadFile(ep.CertFile)
	keyPEM, _ := os.ReadFile(ep.KeyFile)
	saJSON, _ := os.ReadFile(ep.ServiceAccountFile)
	secretFile := writeFile(t, "secret", "file-secret-VALUE\n")
	tokenFile := writeFile(t, "token", "tok\n")
	cc := map[string]string{"auth_mechanism": "xoauth2", "auth_token_url": ep.URL, "auth_client_id": "app-id",
		"auth_scope": "https://outlook.office365.com/.default"}
	with := func(a map[string]string, kv ...string) map[string]string {
		out := map[string]string{}
		for k, v := range a {
			out[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	ccAuth := func(a Auth) Auth {
		a.TokenURL, a.ClientID, a.Scopes = ep.URL, "app-id", []string{"https://outlook.office365.com/.default"}
		return a
	}
	for _, tc := range []struct {
		name     string
		in       map[string]string
		mech     string
		username string
		want     Auth
	}{
		{"secret", with(cc, "auth_client_secret", "s3cret"), MechXOAuth2, "lc@corp.com",
			ccAuth(Auth{Source: SourceClientSecret, ClientSecret: "s3cret"})},
		{"secret file, basic, oauthbearer, username", with(cc, "auth_mechanism", "OAuthBearer", "auth_client_secret_file", secretFile,
			"auth_client_auth", "basic", "username", "shared@corp.com"), MechOAuthBearer, "shared@corp.com",
			ccAuth(Auth{Source: SourceClientSecret, ClientSecret: "file-secret-VALUE", ClientAuthBasic: true})},
		{"certificate", with(cc, "auth_client_cert_file", ep.CertFile, "auth_client_key_file", ep.KeyFile), MechXOAuth2, "lc@corp.com",
			ccAuth(Auth{Source: SourceClientCert, ClientCertFile: ep.CertFile, ClientKeyFile: ep.KeyFile,
				ClientCertPEM: certPEM, ClientKeyPEM: Secret(keyPEM)})},
		{"assertion", with(cc, "auth_client_assertion_file", ep.AssertionFile, "auth_scope", "a, b c"), MechXOAuth2, "lc@corp.com",
			Auth{Source: SourceClientAssertion, ClientAssertionFile: ep.AssertionFile, TokenURL: ep.URL, ClientID: "app-id", Scopes: []string{"a", "b", "c"}}},
		{"service account", map[string]string{"auth_mechanism": "xoauth2", "auth_service_account_file": ep.ServiceAccountFile}, MechXOAuth2, "lc@corp.com",
			Auth{Source: SourceServiceAccount, ServiceAccountFile: ep.ServiceAccountFile, ServiceAccountJSON: Secret(saJSON),
				ServiceAccountKeyID: oauthtest.DefaultServiceKeyID, TokenURL: ep.URL, ClientID: oauthtest.DefaultServiceEmail,
				Scopes: []string{DefaultGoogleScope}}},
		{"token file", map[string]string{"auth_mechanism": "oauthbearer", "auth_token_file": tokenFile}, MechOAuthBearer, "lc@corp.com",
			Auth{Source: SourceTokenFile, TokenFile: tokenFile}},
		{"plain loopback http endpoint", with(cc, "auth_token_url", "http://127.0.0.1:8080/token", "auth_client_secret", "s"), MechXOAuth2, "lc@corp.com",
			Auth{Source: SourceClientSecret, ClientSecret: "s", TokenURL: "http://127.0.0.1:8080/token", ClientID: "app-id",
				Scopes: []string{"https://outlook.office365.com/.default"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(base(tc.in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got.AuthMechanism != tc.mech || got.Username != tc.username || got.Password != "" {
				t.Errorf("mechanism %q username %q password set %v, want %q %q false", got.AuthMechanism, got.Username, got.Password != "", tc.mech, tc.username)
			}
			if diff := cmp.Diff(tc.want, got.Auth, cmp.Comparer(func(a, b Secret) bool { return a == b })); diff != "" {
				t.Errorf("Auth (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseAuthErrors(t *testing.T) {
	ep := oauthtest.NewEndpoint(t, "lc@corp.com")
	ecKey := writeFile(t, "ec.key", "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB\n-----END EC PRIVATE KEY-----\n")
	notSA := writeFile(t, "sa.json", `{"type":"authorized_user"}`)
	empty := writeFile(t, "empty", "\n")
	cc := []string{"auth_mechanism", "xoauth2", "auth_token_url", ep.URL, "auth_client_id", "app", "auth_scope", "s"}
	for _, tc := range []struct {
		name string
		kv   []string
		want []error
	}{
		{"unknown mechanism", []string{"auth_mechanism", "cram-md5"},
			[]error{&KeyError{Key: "auth_mechanism", Value: "cram-md5", Reason: "must be plain, login, xoauth2 or oauthbearer"}}},
		{"login disagrees with is_authlogin", []string{"auth_mechanism", "login", "is_authlogin", "false", "username", "u", "password", "p"},
			[]error{&KeyError{Key: "auth_mechanism", Value: "login", Reason: "disagrees with is_authlogin false: remove is_authlogin"}}},
		{"no token source", []string{"auth_mechanism", "xoauth2"},
			[]error{&KeyError{Key: "auth_mechanism", Value: "xoauth2", Reason: "needs a token source: auth_token_url (with auth_client_id), auth_service_account_file or auth_token_file"}}},
		{"password with a token", append(cc, "auth_client_secret", "s", "password", "p"),
			[]error{&KeyError{Key: "password", Reason: "cannot be used with auth_mechanism xoauth2: the token replaces it"}}},
		{"token keys with plain", []string{"auth_token_url", ep.URL, "username", "u", "password", "p"},
			[]error{&KeyError{Key: "auth_token_url", Reason: "is only used with auth_mechanism xoauth2 or oauthbearer"}}},
		{"two sources", append(cc, "auth_client_secret", "s", "auth_token_file", empty),
			[]error{&KeyError{Key: "auth_token_file", Reason: "cannot be used with auth_token_url: give exactly one token source"}}},
		{"two credentials", append(cc, "auth_client_secret", "s", "auth_client_assertion_file", ep.AssertionFile),
			[]error{&KeyError{Key: "auth_client_assertion_file", Reason: "cannot be used with auth_client_secret: give one kind of client credential"}}},
		{"no credential", cc,
			[]error{&KeyError{Key: "auth_token_url", Value: ep.URL, Reason: "needs client credentials: auth_client_secret (or auth_client_secret_file), auth_client_key_file with auth_client_cert_file, or auth_client_assertion_file"}}},
		{"secret both ways", append(cc, "auth_client_secret", "s", "auth_client_secret_file", empty),
			[]error{&KeyError{Key: "auth_client_secret", Reason: "is set both directly and with auth_client_secret_file: use one"}}},
		{"http endpoint", []string{"auth_mechanism", "xoauth2", "auth_token_url", "http://login.example.com/token", "auth_client_id", "a", "auth_client_secret", "s"},
			[]error{&KeyError{Key: "auth_token_url", Value: "http://login.example.com/token", Reason: "must be https:// (plain http only for a loopback address)"}}},
		{"no client id", []string{"auth_mechanism", "xoauth2", "auth_token_url", ep.URL, "auth_client_secret", "s", "auth_scope", "s"},
			[]error{&KeyError{Key: "auth_client_id", Reason: "is required with auth_token_url: the application (client) id"}}},
		{"basic with certificate", append(cc, "auth_client_cert_file", ep.CertFile, "auth_client_key_file", ep.KeyFile, "auth_client_auth", "basic"),
			[]error{&KeyError{Key: "auth_client_auth", Value: "basic", Reason: "basic only goes with auth_client_secret: a certificate or assertion is always sent in the form"}}},
		{"bad client auth", append(cc, "auth_client_secret", "s", "auth_client_auth", "jwt"),
			[]error{&KeyError{Key: "auth_client_auth", Value: "jwt", Reason: "must be post or basic"}}},
		{"certificate without key", append(cc, "auth_client_cert_file", ep.CertFile),
			[]error{&KeyError{Key: "auth_client_key_file", Reason: "is required with auth_client_cert_file: the certificate's private key"}}},
		{"key of another certificate", append(cc, "auth_client_cert_file", ep.CA.CertFile, "auth_client_key_file", ep.KeyFile),
			[]error{&KeyError{Key: "auth_client_key_file", Value: ep.KeyFile, Reason: "does not hold the private key of auth_client_cert_file (PEM, PKCS #1 or #8): tls: private key type does not match public key type"}}},
		{"EC key", append(cc, "auth_client_cert_file", ep.CA.CertFile, "auth_client_key_file", ecKey), nil},
		{"not a service account", []string{"auth_mechanism", "xoauth2", "auth_service_account_file", notSA},
			[]error{&KeyError{Key: "auth_service_account_file", Value: notSA, Reason: `is not a service-account key (type "authorized_user", want "service_account")`}}},
		{"service account with a client id", []string{"auth_mechanism", "xoauth2", "auth_service_account_file", ep.ServiceAccountFile, "auth_client_id", "x"},
			[]error{&KeyError{Key: "auth_client_id", Reason: "cannot be used with auth_service_account_file"}}},
		{"missing token file", []string{"auth_mechanism", "xoauth2", "auth_token_file", "/nonexistent/token"},
			[]error{&KeyError{Key: "auth_token_file", Value: "/nonexistent/token", Reason: "cannot be used: no such file or directory"}}},
		{"empty secret file", append(cc, "auth_client_secret_file", empty),
			[]error{&KeyError{Key: "auth_client_secret_file", Value: empty, Reason: "is empty"},
				&KeyError{Key: "auth_token_url", Value: ep.URL, Reason: "needs client credentials: auth_client_secret (or auth_client_secret_file), auth_client_key_file with auth_client_cert_file, or auth_client_assertion_file"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := map[string]string{}
			for i := 0; i < len(tc.kv); i += 2 {
				m[tc.kv[i]] = tc.kv[i+1]
			}
			_, err := Parse(base(m))
			if tc.want == nil { // only: an error naming the key
				if err == nil || !strings.Contains(err.Error(), "auth_client_key_file") {
					t.Errorf("Parse: %v, want an error naming auth_client_key_file", err)
				}
				return
			}
			if diff := cmp.Diff(strings.Split(errors.Join(tc.want...).Error(), "\n"), strings.Split(fmt.Sprint(err), "\n")); diff != "" {
				t.Errorf("Parse() error (-want +got):\n%s", diff)
			}
			if err != nil && strings.Contains(err.Error(), "s3cret") {
				t.Errorf("a secret in the error: %v", err)
			}
		})
	}
}

// Secrets from files: the final newline is trimmed; a key set both ways is an error; the
// same trimming applies to secret_key set directly.
func TestSecretFiles(t *testing.T) {
	pw := writeFile(t, "password", "hunter2-from-file\n")
	sk := writeFile(t, "secret_key", "a-long-secret-key-from-a-file\r\n")
	got, err := Parse(base(map[string]string{"username": "u", "password_file": pw, "secret_key": "<unset>", "secret_key_file": sk}))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if got.Password.Reveal() != "hunter2-from-file" || got.SecretKey.Reveal() != "a-long-secret-key-from-a-file" {
		t.Errorf("password %d bytes, secret_key %d bytes: the final newline was not trimmed", len(got.Password), len(got.SecretKey))
	}
	got, _ = Parse(base(map[string]string{"secret_key": testSecret + "\n"}))
	if got.SecretKey.Reveal() != testSecret {
		t.Errorf("secret_key set directly keeps its newline")
	}
	_, err = Parse(base(map[string]string{"username": "u", "password": "p", "password_file": pw, "secret_key_file": sk}))
	want := errors.Join(
		&KeyError{Key: "password", Reason: "is set both directly and with password_file: use one"},
		&KeyError{Key: "secret_key", Reason: "is set both directly and with secret_key_file: use one"})
	if err == nil || err.Error() != want.Error() {
		t.Errorf("Parse() error = %v, want %v", err, want)
	}
	_, err = Parse(base(map[string]string{"secret_key": "<unset>", "secret_key_file": "/nonexistent"}))
	if err == nil || !strings.Contains(err.Error(), `secret_key_file: "/nonexistent": cannot be read: no such file or directory`) {
		t.Errorf("missing secret_key_file: %v", err)
	}
}
