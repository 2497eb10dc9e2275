package e2e

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/google/go-cmp/cmp"

	"github.com/smtpout/smtpout/testsupport/oauthtest"
	"github.com/smtpout/smtpout/testsupport/proc"
)

// OAuth 2.0 end to end (issue 12): the plugin, loaded by the C host or by a real Fluent Bit,
// obtains tokens from an in-process HTTPS token endpoint that checks every grant and
// authenticates with them to an in-process SMTP server that accepts only live tokens that
// endpoint issued.

const oauthMailbox = "alerts@corp.example"

// oauthSource is one way of obtaining tokens, as configuration keys.
type oauthSource struct {
	name, mech, grant string
}

var oauthSources = []oauthSource{
	{"secret_post", "xoauth2", oauthtest.GrantSecretPost},
	{"secret_basic", "oauthbearer", oauthtest.GrantSecretBasic},
	{"certificate", "xoauth2", oauthtest.GrantPrivateKeyJWT},
	{"federated", "oauthbearer", oauthtest.GrantFederated},
	{"service_account", "xoauth2", oauthtest.GrantServiceAccount},
	{"token_file", "oauthbearer", ""},
}

// oauthKeys returns an output's keys for source, delivering to to.
func oauthKeys(t testing.TB, ep *oauthtest.Endpoint, srv *oauthtest.SMTP, src oauthSource, to string) map[string]string {
	keys := map[string]string{
		"dest_host":       srv.Addr,
		"tls_ca_file":     ep.CA.CAFile,
		"tls_server_name": "localhost",
		"dest_email":      to,
		"from_email":      "Fluent Bit <" + oauthMailbox + ">",
		"secret_key":      testSecretKey,
		"timeout":         "10s",
		"auth_mechanism":  src.mech,
	}
	cc := func() {
		keys["auth_token_url"] = ep.URL
		keys["auth_client_id"] = ep.ClientID
		keys["auth_scope"] = ep.Scope
	}
	switch src.name {
	case "secret_post":
		cc()
		keys["auth_client_secret"] = ep.ClientSecret
	case "secret_basic":
		cc()
		// From a file, as Kubernetes mounts a secret (with its final newline).
		f := t.TempDir() + "/client-secret"
		if err := os.WriteFile(f, []byte(ep.ClientSecret+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		keys["auth_client_secret_file"] = f
		keys["auth_client_auth"] = "basic"
	case "certificate":
		cc()
		keys["auth_client_cert_file"] = ep.CertFile
		keys["auth_client_key_file"] = ep.KeyFile
	case "federated":
		cc()
		keys["auth_client_assertion_file"] = ep.AssertionFile
	case "service_account":
		keys["auth_service_account_file"] = ep.ServiceAccountFile
	case "token_file":
		f := t.TempDir() + "/access-token"
		if err := os.WriteFile(f, []byte(ep.Mint(time.Hour)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		keys["auth_token_file"] = f
	}
	return keys
}

// secretsOf lists what must never appear in a log: the shared secret, the client secret,
// the federated assertion, every token the endpoint issued, and lines of the private keys.
func secretsOf(t testing.TB, ep *oauthtest.Endpoint, extra ...string) []string {
	out := append([]string{testSecretKey, ep.ClientSecret, oauthtest.DefaultFederatedJWT}, extra...)
	out = append(out, ep.Tokens()...)
	for _, f := range []string{ep.KeyFile, ep.ServiceAccountFile} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(b), "\n")
		for _, l := range lines {
			if len(l) >= 60 && !strings.Contains(l, "PRIVATE KEY") && !strings.Contains(l, ":") {
				out = append(out, l[:60])
			}
			if i := strings.Index(l, `"private_key": "`); i >= 0 {
				out = append(out, l[i+40:i+100])
			}
		}
	}
	return out
}

// checkNoSecrets fails the test when log holds any of secrets.
func checkNoSecrets(t testing.TB, what, log string, secrets []string) {
	t.Helper()
	if len(log) == 0 {
		t.Errorf("%s is empty: nothing was checked", what)
	}
	for _, s := range secrets {
		if s != "" && strings.Contains(log, s) {
			t.Errorf("%s holds a secret or token (%d bytes, starting %.6q...)", what, len(s), s)
		}
	}
}

// recordsByRecipient returns the "n" of each stored message, by envelope recipient, sorted.
func recordsByRecipient(t testing.TB, srv *oauthtest.SMTP) map[string][]int {
	t.Helper()
	out := make(map[string][]int)
	for _, m := range srv.Messages() {
		s := parseStored(m.Data)
		if s.VerifyErr != "" {
			t.Errorf("message %s: %s", s.MessageID, s.VerifyErr)
		}
		to := strings.Join(m.To, ",")
		out[to] = append(out[to], s.N)
	}
	for _, v := range out {
		sort.Ints(v)
	}
	return out
}

func startOAuthHost(t *testing.T, keys map[string]string) *Host {
	t.Helper()
	h := StartHost(t)
	h.Expect("loglevel 0 debug", "ok")
	h.Configure(0, keys)
	if rc := h.Init(0); rc != flbOK {
		t.Fatalf("init = %d, want FLB_OK; log:\n%s", rc, h.Log())
	}
	return h
}

// Every token source delivers through the host: one instance per source, each grant checked
// by the endpoint, one token request per instance, counted in its metrics.
func TestOAuthEverySource(t *testing.T) {
	ep := oauthtest.NewEndpoint(t, oauthMailbox)
	srv := oauthtest.NewSMTP(t, ep)
	h := StartHost(t)
	h.Expect("cmetrics on", "ok")
	want := make(map[string][]int)
	for i, src := range oauthSources {
		h.Expect(fmt.Sprintf("loglevel %d debug", i), "ok")
		to := src.name + "@soc.example"
		h.Configure(i, oauthKeys(t, ep, srv, src, to))
		if rc := h.Init(i); rc != flbOK {
			t.Fatalf("init %s = %d; log:\n%s", src.name, rc, h.Log())
		}
		want[to] = span(i*100, 3)
	}
	for i := range oauthSources {
		if rc := h.Flush(i, faultTag, numbered(i*100, 3)); rc != flbOK {
			t.Errorf("flush %s = %d, want FLB_OK; endpoint problems %v", oauthSources[i].name, rc, ep.Problems())
		}
	}
	checkOneTokenPerSource(t, want, srv, ep)
	m := h.Metrics()
	for i, src := range oauthSources {
		if v := m[fmt.Sprintf(`fluentbit_smtp_token_requests_ok_total{name="smtp.%d"}`, i)]; v != 1 {
			t.Errorf("%s: token_requests_ok_total = %v, want 1", src.name, v)
		}
	}
	for i := range oauthSources {
		h.Exit(i)
	}
	if l := h.LogLines("auth=xoauth2", "auth_source=client_certificate"); len(l) != 1 {
		t.Errorf("want one started line naming the certificate source; log:\n%s", h.Log())
	}
	checkNoSecrets(t, "the host log", h.Log(), secretsOf(t, ep))
}

// Tokens that live 3 seconds, over a 10-second run whose connections the server closes when
// idle: renewed ahead of expiry, no AUTH refused, far fewer token requests than emails.
func TestOAuthShortTokensRenewed(t *testing.T) {
	ep := oauthtest.NewEndpoint(t, oauthMailbox)
	ep.Lifetime.Store(int64(3 * time.Second))
	srv := oauthtest.NewSMTP(t, ep, func(s *smtp.Server) { s.ReadTimeout = 700 * time.Millisecond })
	h := startOAuthHost(t, oauthKeys(t, ep, srv, oauthSources[2], "soc@soc.example"))
	start := time.Now()
	n := 0
	for time.Since(start) < 10*time.Second {
		if rc := h.Flush(0, faultTag, numbered(n, 4)); rc != flbOK {
			t.Fatalf("flush at %v = %d; log:\n%s", time.Since(start), rc, h.Log())
		}
		n += 4
		<-time.After(time.Second) // longer than the server's idle timeout: a new connection
	}
	checkShortTokens(t, ep, srv, n)
	checkNoSecrets(t, "the host log", h.Log(), secretsOf(t, ep))
}

func checkShortTokens(t *testing.T, ep *oauthtest.Endpoint, srv *oauthtest.SMTP, n int) {
	t.Helper()
	if diff := cmp.Diff(map[string][]int{"soc@soc.example": span(0, n)}, recordsByRecipient(t, srv)); diff != "" {
		t.Errorf("records (-want +got):\n%s", diff)
	}
	ok, failed, reasons := srv.AuthCounts()
	if len(failed) != 0 {
		t.Errorf("AUTH refused %v: %v", failed, reasons)
	}
	req := ep.Requests()["private_key_jwt/ok"]
	t.Logf("%d emails, %d AUTHs, %d token requests", n, ok["XOAUTH2"], req)
	if ok["XOAUTH2"] < 5 {
		t.Errorf("only %d AUTHs: the run did not reconnect enough to exercise renewal", ok["XOAUTH2"])
	}
	// 10 s of 3-second tokens renewed a second ahead: about 5 requests; never one per email.
	if req < 3 || req > 8 || req*4 > n {
		t.Errorf("%d token requests for %d emails, want 3..8", req, n)
	}
}

// A token revoked at the server: its connections end, the next AUTH is refused once, a new
// token is fetched and delivery goes on with no [error].
func TestOAuthRevokedTokenReplaced(t *testing.T) {
	ep := oauthtest.NewEndpoint(t, oauthMailbox)
	srv := oauthtest.NewSMTP(t, ep)
	h := startOAuthHost(t, oauthKeys(t, ep, srv, oauthSources[0], "soc@soc.example"))
	if rc := h.Flush(0, faultTag, numbered(0, 3)); rc != flbOK {
		t.Fatalf("flush = %d; log:\n%s", rc, h.Log())
	}
	srv.Revoke()
	// One record: one connection, so exactly one refusal (concurrent connections opened
	// with the revoked token would each see one, and still one new token is fetched).
	if rc := h.Flush(0, faultTag, numbered(3, 1)); rc != flbOK {
		t.Fatalf("flush after revocation = %d; log:\n%s", rc, h.Log())
	}
	checkRevoked(t, ep, srv)
	if l := h.LogLines("[error]"); len(l) != 0 {
		t.Errorf("error lines after a replaced token: %q", l)
	}
	checkNoSecrets(t, "the host log", h.Log(), secretsOf(t, ep))
}

func checkRevoked(t *testing.T, ep *oauthtest.Endpoint, srv *oauthtest.SMTP) {
	t.Helper()
	if diff := cmp.Diff(map[string][]int{"soc@soc.example": span(0, 4)}, recordsByRecipient(t, srv)); diff != "" {
		t.Errorf("records (-want +got):\n%s", diff)
	}
	if _, failed, _ := srv.AuthCounts(); failed["XOAUTH2"] != 1 {
		t.Errorf("AUTH refused %v, want exactly once", failed)
	}
	if diff := cmp.Diff(map[string]int{"secret_post/ok": 2}, ep.Requests()); diff != "" {
		t.Errorf("token requests (-want +got):\n%s", diff)
	}
}

// The token endpoint down at start: RETRY with an [error] naming it, no request while backing
// off; once it is up every record is delivered exactly once.
func TestOAuthEndpointDownAtStart(t *testing.T) {
	ep := oauthtest.NewEndpoint(t, oauthMailbox)
	srv := oauthtest.NewSMTP(t, ep)
	ep.Down.Store(true)
	h := startOAuthHost(t, oauthKeys(t, ep, srv, oauthSources[3], "soc@soc.example"))
	for range 2 {
		if rc := h.Flush(0, faultTag, numbered(0, 10)); rc != flbRetry {
			t.Fatalf("flush with the endpoint down = %d, want FLB_RETRY", rc)
		}
	}
	if got := ep.Requests()["down/error"]; got != 1 {
		t.Errorf("%d requests reached the endpoint, want 1 (the second flush falls in the back-off)", got)
	}
	if l := h.LogLines("[error]", "smtp token: token endpoint "+ep.URL, "cannot be reached"); len(l) != 1 {
		t.Errorf("want one [error] line naming the token endpoint; log:\n%s", h.Log())
	}
	ep.Down.Store(false)
	flushUntilOK(t, h, numbered(0, 10), 40)
	if diff := cmp.Diff(map[string][]int{"soc@soc.example": span(0, 10)}, recordsByRecipient(t, srv)); diff != "" {
		t.Errorf("records (-want +got):\n%s", diff)
	}
	checkNoSecrets(t, "the host log", h.Log(), secretsOf(t, ep))
}

// A wrong client secret: RETRY, one clear [error] line with the endpoint's error and a hint,
// never the secret; the plugin keeps running.
func TestOAuthBadClientSecret(t *testing.T) {
	const wrong = "Wr0ng~client-secret-VALUE"
	ep := oauthtest.NewEndpoint(t, oauthMailbox)
	srv := oauthtest.NewSMTP(t, ep)
	keys := oauthKeys(t, ep, srv, oauthSources[0], "soc@soc.example")
	keys["auth_client_secret"] = wrong
	h := startOAuthHost(t, keys)
	for range 3 {
		if rc := h.Flush(0, faultTag, numbered(0, 3)); rc != flbRetry {
			t.Fatalf("flush = %d, want FLB_RETRY", rc)
		}
	}
	lines := h.LogLines("[error]", "invalid_client")
	if len(lines) != 1 {
		t.Fatalf("want one [error] line with invalid_client (rate-limited), got %d; log:\n%s", len(lines), h.Log())
	}
	for _, want := range []string{ep.URL, "HTTP 401", "AADSTS7000215", "set auth_client_secret to the secret's Value", "will be retried"} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("the [error] line lacks %q: %s", want, lines[0])
		}
	}
	if rc := h.Exit(0); rc != flbOK {
		t.Errorf("exit = %d", rc)
	}
	if len(srv.Messages()) != 0 {
		t.Errorf("messages delivered without a token")
	}
	checkNoSecrets(t, "the host log", h.Log(), secretsOf(t, ep, wrong))
}

// Keys that Fluent Bit 5.x would take for itself: none of ours, and an output with the new
// keys starts under a real Fluent Bit (4.x and 5.x alike) only when none collides.
func TestFluentBitOAuthEverySource(t *testing.T) {
	fluentBit(t)
	ep := oauthtest.NewEndpoint(t, oauthMailbox)
	srv := oauthtest.NewSMTP(t, ep)
	var outs []outputSection
	want := make(map[string][]int)
	for i, src := range oauthSources {
		to := src.name + "@soc.example"
		keys := oauthKeys(t, ep, srv, src, to)
		keys["log_level"] = "debug"
		outs = append(outs, outputSection{match: fmt.Sprintf("src%d.*", i), keys: keys})
		want[to] = span(i*100, 3)
	}
	fb := startFluentBit(t, outs, true)
	for i := range oauthSources {
		fb.send(fmt.Sprintf("src%d.app", i), numbered(i*100, 3))
	}
	srv.WaitMessages(3*len(oauthSources), fbWait)
	fb.stop()
	checkOneTokenPerSource(t, want, srv, ep)
	checkNoSecrets(t, "fluent-bit's log", fb.log(), secretsOf(t, ep))
}

func TestFluentBitOAuthShortTokensRenewed(t *testing.T) {
	fluentBit(t)
	ep := oauthtest.NewEndpoint(t, oauthMailbox)
	ep.Lifetime.Store(int64(3 * time.Second))
	srv := oauthtest.NewSMTP(t, ep, func(s *smtp.Server) { s.ReadTimeout = 700 * time.Millisecond })
	keys := oauthKeys(t, ep, srv, oauthSources[2], "soc@soc.example")
	keys["log_level"] = "debug"
	fb := startFaultFluentBit(t, keys)
	start := time.Now()
	n := 0
	for time.Since(start) < 10*time.Second {
		fb.send(faultTag, numbered(n, 4))
		n += 4
		<-time.After(time.Second)
	}
	srv.WaitMessages(n, fbWait)
	fb.stop()
	checkShortTokens(t, ep, srv, n)
	checkNoSecrets(t, "fluent-bit's log", fb.log(), secretsOf(t, ep))
}

func TestFluentBitOAuthRevokedTokenReplaced(t *testing.T) {
	fluentBit(t)
	ep := oauthtest.NewEndpoint(t, oauthMailbox)
	srv := oauthtest.NewSMTP(t, ep)
	keys := oauthKeys(t, ep, srv, oauthSources[0], "soc@soc.example")
	keys["log_level"] = "debug"
	port := freePort(t)
	fb := startFluentBitWith(t, httpServer(port), []outputSection{{match: "*", keys: keys}}, true)
	fb.send(faultTag, numbered(0, 3))
	srv.WaitMessages(3, fbWait)
	srv.Revoke()
	fb.send(faultTag, numbered(3, 1))
	srv.WaitMessages(4, fbWait)
	// The counters on Fluent Bit's own Prometheus endpoint: two tokens, one refused AUTH.
	want := []string{
		`fluentbit_smtp_token_requests_ok_total{name="smtp.0"} 2`,
		`fluentbit_smtp_token_requests_failed_total{name="smtp.0"} 0`,
		`fluentbit_smtp_auth_failures_total{name="smtp.0"} 1`,
	}
	fb.waitMetrics(port, fmt.Sprintf("Fluent Bit's metrics %q", want), func(body string) bool { return containsAll(body, want) })
	fb.stop()
	checkRevoked(t, ep, srv)
	if l := fb.logLines("[error]", "output:smtp"); len(l) != 0 {
		t.Errorf("error lines after a replaced token: %q", l)
	}
	checkNoSecrets(t, "fluent-bit's log", fb.log(), secretsOf(t, ep))
}

func TestFluentBitOAuthEndpointDownAtStart(t *testing.T) {
	fluentBit(t)
	ep := oauthtest.NewEndpoint(t, oauthMailbox)
	srv := oauthtest.NewSMTP(t, ep)
	ep.Down.Store(true)
	keys := oauthKeys(t, ep, srv, oauthSources[4], "soc@soc.example")
	keys["log_level"] = "debug"
	fb := startFaultFluentBit(t, keys)
	fb.send(faultTag, numbered(0, 10))
	fb.waitLog(time.Minute, "[error] [output:smtp:smtp.0]", "smtp token: token endpoint "+ep.URL, "cannot be reached")
	ep.Down.Store(false)
	srv.WaitMessages(10, fbWait)
	fb.stop()
	if diff := cmp.Diff(map[string][]int{"soc@soc.example": span(0, 10)}, recordsByRecipient(t, srv)); diff != "" {
		t.Errorf("records (-want +got):\n%s", diff)
	}
	checkNoSecrets(t, "fluent-bit's log", fb.log(), secretsOf(t, ep))
}

func TestFluentBitOAuthBadClientSecret(t *testing.T) {
	fluentBit(t)
	const wrong = "Wr0ng~client-secret-VALUE"
	ep := oauthtest.NewEndpoint(t, oauthMailbox)
	srv := oauthtest.NewSMTP(t, ep)
	keys := oauthKeys(t, ep, srv, oauthSources[0], "soc@soc.example")
	keys["auth_client_secret"] = wrong
	keys["log_level"] = "debug"
	fb := startFaultFluentBit(t, keys)
	fb.send(faultTag, numbered(0, 3))
	line := fb.waitLog(time.Minute, "[error] [output:smtp:smtp.0]", "invalid_client")
	for _, want := range []string{ep.URL, "AADSTS7000215", "set auth_client_secret to the secret's Value"} {
		if !strings.Contains(line, want) {
			t.Errorf("the [error] line lacks %q: %s", want, line)
		}
	}
	select {
	case err := <-fb.waited:
		fb.waited <- err
		t.Fatalf("fluent-bit exited: %v", err)
	default:
	}
	fb.stop()
	if len(srv.Messages()) != 0 {
		t.Errorf("messages delivered without a token")
	}
	checkNoSecrets(t, "fluent-bit's log", fb.log(), secretsOf(t, ep, wrong))
}

func containsAll(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

// checkOneTokenPerSource: each source's records reached its recipient (want), and each grant
// asked the endpoint for exactly one token.
func checkOneTokenPerSource(t *testing.T, want map[string][]int, srv *oauthtest.SMTP, ep *oauthtest.Endpoint) {
	t.Helper()
	if diff := cmp.Diff(want, recordsByRecipient(t, srv)); diff != "" {
		t.Errorf("records per source (-want +got):\n%s", diff)
	}
	wantReq := map[string]int{}
	for _, src := range oauthSources {
		if src.grant != "" {
			wantReq[src.grant+"/ok"] = 1
		}
	}
	if diff := cmp.Diff(wantReq, ep.Requests()); diff != "" {
		t.Errorf("token requests (-want +got):\n%s", diff)
	}
}

// An auth_token_file holding an expired token (a JWT whose exp has passed), through a real
// Fluent Bit: the flush returns RETRY at once with one [error] line naming the file, the
// file is not read in a loop, Fluent Bit's HTTP server answers and the process stays nearly
// idle while it waits; a valid token written to the file is picked up by itself and every
// record is delivered once, within 10 s. Fluent Bit's own retry pace is set short
// (scheduler.cap): the plugin is ready at once, Fluent Bit decides when it asks again.
func TestFluentBitOAuthExpiredTokenFile(t *testing.T) {
	fluentBit(t)
	ep := oauthtest.NewEndpoint(t, oauthMailbox)
	srv := oauthtest.NewSMTP(t, ep)
	keys := oauthKeys(t, ep, srv, oauthSources[5], "soc@soc.example")
	file := keys["auth_token_file"]
	if err := os.WriteFile(file, []byte(ep.Mint(-time.Hour)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	service := httpServer(port)
	service["Health_Check"] = "On"
	service["scheduler.base"] = "1"
	service["scheduler.cap"] = "3"
	fb := startFluentBitWith(t, service, []outputSection{{match: "*", retryLimit: "no_limits", keys: keys}}, true)
	fb.send(faultTag, numbered(0, 10))
	fb.waitLog(time.Minute, "[error] [output:smtp:smtp.0]", "file "+file+": the token expired at ")

	// While it waits: Fluent Bit answers, and uses little CPU.
	if code, err := httpStatus(fmt.Sprintf("http://127.0.0.1:%d/api/v1/health", port)); err != nil || code != 200 {
		t.Errorf("/api/v1/health: status %d, %v; want 200 while the token is expired", code, err)
	}
	pid := fb.cmd.Process.Pid
	cpu0, err := proc.CPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	wall0 := time.Now()
	<-time.After(5 * time.Second)
	cpu1, err := proc.CPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	share := float64(cpu1-cpu0) / float64(time.Since(wall0))
	t.Logf("fluent-bit used %v of CPU in %v of waiting: %.1f%% of a core", cpu1-cpu0, time.Since(wall0).Round(time.Millisecond), 100*share)
	if share >= 0.10 {
		t.Errorf("fluent-bit used %.1f%% of a core while the token was expired, want < 10%%", 100*share)
	}
	if n := len(srv.Messages()); n != 0 {
		t.Fatalf("%d messages delivered with an expired token", n)
	}
	reads := fb.waitMetrics(port, "the token file's failed reads", func(body string) bool {
		return strings.Contains(body, `fluentbit_smtp_token_requests_failed_total{name="smtp.0"}`)
	})
	n := metricValue(reads, `fluentbit_smtp_token_requests_failed_total{name="smtp.0"}`)
	t.Logf("the expired token file was read %v time(s)", n)
	if n < 1 || n > 8 {
		t.Errorf("the expired token file was read %v times in about 6 s, want 1..8 (a read per back-off at most)", n)
	}

	written := time.Now()
	if err := os.WriteFile(file, []byte(ep.Mint(time.Hour)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := srv.WaitMessages(10, 10*time.Second); got != 10 {
		t.Fatalf("%d of 10 records delivered within 10 s of a valid token being written", got)
	}
	t.Logf("delivered %v after the valid token was written", time.Since(written).Round(time.Millisecond))
	fb.stop()
	if diff := cmp.Diff(map[string][]int{"soc@soc.example": span(0, 10)}, recordsByRecipient(t, srv)); diff != "" {
		t.Errorf("records (-want +got):\n%s", diff)
	}
	if l := fb.logLines("[error]", "the token expired at"); len(l) != 1 {
		t.Errorf("want one [error] line about the expired token (repeats held back), got %d: %q", len(l), l)
	}
	if _, failed, _ := srv.AuthCounts(); len(failed) != 0 {
		t.Errorf("AUTH refused %v: the expired token reached the server", failed)
	}
	checkNoSecrets(t, "fluent-bit's log", fb.log(), secretsOf(t, ep))
}

// httpStatus returns the status of a GET of url (one connection, a few seconds at most).
func httpStatus(url string) (int, error) {
	resp, err := scrapeClient.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// metricValue returns the value of series in a Prometheus page, or -1 when it is absent.
func metricValue(page, series string) float64 {
	for _, l := range strings.Split(page, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
				return f
			}
		}
	}
	return -1
}
