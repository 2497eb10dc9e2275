package main

import (
	"os"
	"strings"
	"testing"

	"github.com/smtpout/smtpout/testsupport/oauthtest"
)

// oauthConf is an output for srv authenticating with the endpoint's client certificate (or,
// google true, its service account).
func oauthConf(ep *oauthtest.Endpoint, srv *oauthtest.SMTP, google bool) []string {
	lines := []string{"tls_ca_file " + ep.CA.CAFile, "tls_server_name localhost", "auth_mechanism xoauth2"}
	if google {
		return append(lines, "auth_service_account_file "+ep.ServiceAccountFile)
	}
	return append(lines, "auth_token_url "+ep.URL, "auth_client_id "+ep.ClientID, "auth_scope "+ep.Scope,
		"auth_client_secret "+ep.ClientSecret)
}

func TestProbeOAuth(t *testing.T) {
	ep := oauthtest.NewEndpoint(t, "alerts@corp.com")
	srv := oauthtest.NewSMTP(t, ep)
	dir := t.TempDir()

	conf := writeFile(t, dir, "entra.conf", outputConf(srv.Addr, oauthConf(ep, srv, false)...))
	r := runCmd(t, nil, "", "probe", "-c", conf)
	if r.code != exitOK {
		t.Fatalf("probe = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	t.Logf("probe output:\n%s", r.stdout)
	assertInOrder(t, r.stdout, []string{
		"  auth offers: XOAUTH2 OAUTHBEARER",
		"  token:       " + ep.URL + " (client_secret): obtained, lifetime 1h0m0s,",
		"  token says:  audience https://outlook.office.com; roles SMTP.SendAsApp; app " + ep.ClientID,
		"  auth:        XOAUTH2 as alerts@corp.com: accepted",
		"OK smtp.0",
	})

	google := writeFile(t, dir, "google.conf", outputConf(srv.Addr, oauthConf(ep, srv, true)...))
	r = runCmd(t, nil, "", "probe", "-c", google)
	if r.code != exitOK {
		t.Fatalf("probe (service account) = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	assertInOrder(t, r.stdout, []string{"(service_account): obtained, lifetime 1h0m0s", "(opaque: not a readable JWT)", "XOAUTH2 as alerts@corp.com: accepted"})

	// A server that refuses every token: the step, the refusal and the hint.
	srv.RefuseAll.Store(true)
	r = runCmd(t, nil, "", "probe", "-c", conf)
	if r.code != exitFail {
		t.Fatalf("probe with refused tokens = %d\n%s", r.code, r.stdout)
	}
	assertInOrder(t, r.stdout, []string{"  token:       " + ep.URL, "FAILED smtp.0: smtp AUTH", "535 5.7.3", "hint: the server refused a freshly issued token", "SMTP.SendAsApp"})
	srv.RefuseAll.Store(false)

	// A wrong secret: the token step fails with the endpoint's error.
	bad := writeFile(t, dir, "bad.conf", strings.Replace(outputConf(srv.Addr, oauthConf(ep, srv, false)...), ep.ClientSecret, "WRONG-secret-value", 1))
	r = runCmd(t, nil, "", "probe", "-c", bad)
	assertInOrder(t, r.stdout, []string{"FAILED smtp.0: smtp token: token endpoint " + ep.URL + ": HTTP 401 invalid_client: AADSTS7000215", "set auth_client_secret"})
	assertNoSecrets(t, r, "WRONG-secret-value", ep.ClientSecret, testSecret)
	for _, tok := range ep.Tokens() {
		assertNoSecrets(t, r, tok)
	}
}

func TestSendOAuthEverySource(t *testing.T) {
	ep := oauthtest.NewEndpoint(t, "alerts@corp.com")
	srv := oauthtest.NewSMTP(t, ep)
	dir := t.TempDir()
	tokenFile := writeFile(t, dir, "token", ep.Mint(3600e9)+"\n")
	base := []string{"tls_ca_file " + ep.CA.CAFile, "tls_server_name localhost"}
	cc := []string{"auth_token_url " + ep.URL, "auth_client_id " + ep.ClientID, "auth_scope " + ep.Scope}
	for _, tc := range []struct {
		name  string
		lines []string
	}{
		{"secret", append(append([]string{"auth_mechanism xoauth2", "auth_client_secret " + ep.ClientSecret}, cc...), base...)},
		{"certificate", append(append([]string{"auth_mechanism oauthbearer", "auth_client_cert_file " + ep.CertFile, "auth_client_key_file " + ep.KeyFile}, cc...), base...)},
		{"federated", append(append([]string{"auth_mechanism xoauth2", "auth_client_assertion_file " + ep.AssertionFile}, cc...), base...)},
		{"service account", append([]string{"auth_mechanism oauthbearer", "auth_service_account_file " + ep.ServiceAccountFile}, base...)},
		{"token file", append([]string{"auth_mechanism xoauth2", "auth_token_file " + tokenFile}, base...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(srv.Messages())
			conf := writeFile(t, t.TempDir(), "fb.conf", outputConf(srv.Addr, tc.lines...))
			r := runCmd(t, nil, "", "send", "-c", conf, "--record", `{"msg":"`+tc.name+`"}`)
			if r.code != exitOK {
				t.Fatalf("send = %d\n%s%s", r.code, r.stdout, r.stderr)
			}
			if n := len(srv.Messages()) - before; n != 1 {
				t.Errorf("server stored %d messages, want 1", n)
			}
			assertNoSecrets(t, r, ep.ClientSecret, testSecret)
		})
	}
}

// check warns about password authentication to Exchange Online and Gmail, naming the date
// and the key to switch to.
func TestCheckWarnsAboutPasswordsToExchangeAndGmail(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		host string
		want []string
	}{
		{"smtp.office365.com:587", []string{"Exchange Online", "end of December 2026", "auth_mechanism xoauth2", "auth_token_url"}},
		{"smtp.gmail.com", []string{"Gmail", "May 1, 2025", "auth_mechanism xoauth2", "auth_service_account_file"}},
	} {
		conf := writeFile(t, dir, "fb.conf", outputConf(tc.host, "is_starttls true", "username alerts@corp.com", "password "+testPassword))
		r := runCmd(t, nil, "", "check", "-c", conf)
		if r.code != exitOK {
			t.Errorf("check %s = %d:\n%s", tc.host, r.code, r.stdout)
		}
		var line string
		for _, l := range strings.Split(r.stdout, "\n") {
			if strings.Contains(l, "[ warn]") && strings.Contains(l, "dest_host") {
				line = l
			}
		}
		for _, w := range tc.want {
			if !strings.Contains(line, w) {
				t.Errorf("check %s: the warning lacks %q:\n%s", tc.host, w, r.stdout)
			}
		}
		assertNoSecrets(t, r, testPassword, testSecret)
	}
	// No warning for another relay, or for Exchange with a token.
	conf := writeFile(t, dir, "ok.conf", outputConf("smtp.example.com", "username u", "password "+testPassword))
	if r := runCmd(t, nil, "", "check", "-c", conf); strings.Contains(r.stdout, "December 2026") {
		t.Errorf("a warning for another relay:\n%s", r.stdout)
	}
	_ = os.Remove(conf)
}

// check accepts an OAuth output and shows where its tokens come from, never the secret.
func TestCheckOAuthOutput(t *testing.T) {
	ep := oauthtest.NewEndpoint(t, "alerts@corp.com")
	srv := oauthtest.NewSMTP(t, ep)
	conf := writeFile(t, t.TempDir(), "fb.conf", outputConf(srv.Addr, oauthConf(ep, srv, false)...))
	r := runCmd(t, nil, "", "check", "-c", conf)
	if r.code != exitOK {
		t.Fatalf("check = %d:\n%s", r.code, r.stdout)
	}
	assertInOrder(t, r.stdout, []string{"OK smtp.0:", "auth=xoauth2", "username=alerts@corp.com", "auth_source=client_secret",
		"auth_token_url=" + ep.URL, "auth_client_secret=[redacted]"})
	if strings.Contains(r.stdout, "[ warn]") {
		t.Errorf("warnings for a valid OAuth output:\n%s", r.stdout)
	}
	assertNoSecrets(t, r, ep.ClientSecret, testSecret)
}

// verify takes secret_key_file from the configuration, trimmed as the plugin trims it.
func TestVerifySecretKeyFile(t *testing.T) {
	dir := t.TempDir()
	keyFile := writeFile(t, dir, "hmac", testSecret+"\n")
	conf := writeFile(t, dir, "fb.conf", strings.Replace(outputConf("127.0.0.1:1"), "secret_key "+testSecret, "secret_key_file "+keyFile, 1))
	if b, _ := os.ReadFile(conf); strings.Contains(string(b), testSecret) {
		t.Fatal("the configuration still holds secret_key itself")
	}
	sent := runCmd(t, nil, "", "send", "-c", conf, "--dry-run", "--record", `{"msg":"x"}`)
	if sent.code != exitOK {
		t.Fatalf("send --dry-run = %d: %s%s", sent.code, sent.stdout, sent.stderr)
	}
	for _, args := range [][]string{{"verify", "-c", conf}, {"verify", "--secret-file", keyFile}} {
		v := runCmd(t, nil, sent.stdout, args...)
		if v.code != exitOK || !strings.Contains(v.stdout, "(stdin): ok") {
			t.Errorf("%v = %d: %s%s", args, v.code, v.stdout, v.stderr)
		}
	}
}
