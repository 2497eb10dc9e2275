package mailer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/smtpout/smtpout/config"
	"github.com/smtpout/smtpout/testsupport/oauthtest"
)

const oauthUser = "alerts@corp.example"

// oauthKeys returns the configuration keys for source against ep and srv.
func oauthKeys(ep *oauthtest.Endpoint, srv *oauthtest.SMTP, mech, source string) config.MapGetter {
	g := config.MapGetter{
		"dest_host":      srv.Addr,
		"dest_email":     "soc@corp.example",
		"from_email":     oauthUser,
		"secret_key":     "a-long-enough-shared-secret-key",
		"tls_ca_file":    ep.CA.CAFile,
		"auth_mechanism": mech,
	}
	cc := func() {
		g["auth_token_url"] = ep.URL
		g["auth_client_id"] = ep.ClientID
		g["auth_scope"] = ep.Scope
	}
	switch source {
	case "secret_post":
		cc()
		g["auth_client_secret"] = ep.ClientSecret
	case "secret_basic":
		cc()
		g["auth_client_secret"] = ep.ClientSecret
		g["auth_client_auth"] = "basic"
	case "certificate":
		cc()
		g["auth_client_cert_file"] = ep.CertFile
		g["auth_client_key_file"] = ep.KeyFile
	case "federated":
		cc()
		g["auth_client_assertion_file"] = ep.AssertionFile
	case "service_account":
		g["auth_service_account_file"] = ep.ServiceAccountFile
	default:
		panic(source)
	}
	return g
}

// tokenFileKeys returns the configuration keys for a token in file, for srv.
func tokenFileKeys(ep *oauthtest.Endpoint, srv *oauthtest.SMTP, mech, file string) config.MapGetter {
	g := oauthKeys(ep, srv, mech, "secret_post")
	for _, k := range []string{"auth_token_url", "auth_client_id", "auth_scope", "auth_client_secret"} {
		delete(g, k)
	}
	g["auth_token_file"] = file
	return g
}

func oauthMailer(t *testing.T, g config.Getter, opts ...Option) *Mailer {
	t.Helper()
	cfg, err := config.Parse(g)
	if err != nil {
		t.Fatalf("config.Parse: %v", err)
	}
	m, err := New(cfg, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

func msgs(n int) []Message {
	out := make([]Message, n)
	for i := range out {
		out[i] = Message{ID: fmt.Sprint(i), From: oauthUser, To: []string{"soc@corp.example"},
			Data: []byte(fmt.Sprintf("Subject: %d\r\n\r\nbody %d\r\n", i, i))}
	}
	return out
}

// Every token source and both mechanisms deliver, each grant checked for real by the
// endpoint, and one token serves every connection.
func TestOAuthEverySourceDelivers(t *testing.T) {
	for _, tc := range []struct {
		source, mech, grant string
	}{
		{"secret_post", "xoauth2", oauthtest.GrantSecretPost},
		{"secret_basic", "oauthbearer", oauthtest.GrantSecretBasic},
		{"certificate", "xoauth2", oauthtest.GrantPrivateKeyJWT},
		{"federated", "oauthbearer", oauthtest.GrantFederated},
		{"service_account", "xoauth2", oauthtest.GrantServiceAccount},
		{"service_account", "oauthbearer", oauthtest.GrantServiceAccount},
	} {
		t.Run(tc.source+"/"+tc.mech, func(t *testing.T) {
			ep := oauthtest.NewEndpoint(t, oauthUser)
			srv := oauthtest.NewSMTP(t, ep)
			m := oauthMailer(t, oauthKeys(ep, srv, tc.mech, tc.source))
			for _, r := range m.Send(context.Background(), msgs(12)) {
				if r.Outcome != Delivered {
					t.Fatalf("outcome %v: %v (endpoint problems: %v)", r.Outcome, r.Err, ep.Problems())
				}
			}
			got := srv.Messages()
			if len(got) != 12 {
				t.Fatalf("server stored %d messages, want 12", len(got))
			}
			for _, g := range got {
				if g.User != oauthUser {
					t.Errorf("authenticated as %q, want %q", g.User, oauthUser)
				}
			}
			if diff := cmp.Diff(map[string]int{tc.grant + "/ok": 1}, ep.Requests()); diff != "" {
				t.Errorf("token requests (-want +got):\n%s", diff)
			}
			ok, failed, _ := srv.AuthCounts()
			if ok[strings.ToUpper(tc.mech)] < 2 || len(failed) != 0 {
				t.Errorf("AUTH ok %v failed %v: want several %s connections, none refused", ok, failed, tc.mech)
			}
			if st := m.AuthStats(); st != (AuthStats{TokenOK: 1}) {
				t.Errorf("AuthStats = %+v, want one token, no failure", st)
			}
		})
	}
}

// A token file's token is used as it is, and the file is read again when it changes.
func TestOAuthTokenFileReread(t *testing.T) {
	ep := oauthtest.NewEndpoint(t, oauthUser)
	srv := oauthtest.NewSMTP(t, ep)
	// Tokens from the endpoint, written to a file as a sidecar would.
	m0 := oauthMailer(t, oauthKeys(ep, srv, "xoauth2", "secret_post"))
	first, err := m0.tokens.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(first.Value+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	g := tokenFileKeys(ep, srv, "xoauth2", file)
	m := oauthMailer(t, g)
	mustDeliver(t, m.Send(context.Background(), msgs(1)))

	// The sidecar writes a new token and the old one is revoked: the next connection uses
	// the new one, without a refusal.
	m0.tokens.Refused(first, errors.New("revoked")) // m0 drops it and fetches another
	srv.Revoke()
	second, err := m0.tokens.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(second.Value+"\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m.Close()
	m = oauthMailer(t, g)
	mustDeliver(t, m.Send(context.Background(), msgs(1)))
	if _, failed, reasons := srv.AuthCounts(); len(failed) != 0 {
		t.Errorf("AUTH refused: %v", reasons)
	}
}

// A revoked token is dropped after one refusal, a new one fetched, and AUTH tried again on a
// new connection.
func TestOAuthRevokedTokenReplaced(t *testing.T) {
	ep := oauthtest.NewEndpoint(t, oauthUser)
	srv := oauthtest.NewSMTP(t, ep)
	m := oauthMailer(t, oauthKeys(ep, srv, "xoauth2", "secret_post"))
	mustDeliver(t, m.Send(context.Background(), msgs(3)))
	srv.Revoke()
	// The pooled connections now get 421; the new connection's AUTH is refused once.
	for _, r := range m.Send(context.Background(), msgs(3)) {
		if r.Outcome != Delivered {
			t.Fatalf("after revocation: %v: %v", r.Outcome, r.Err)
		}
	}
	_, failed, _ := srv.AuthCounts()
	if failed["XOAUTH2"] < 1 {
		t.Errorf("no AUTH was refused: the test did not exercise the revocation")
	}
	if got := ep.Requests()["secret_post/ok"]; got != 2 {
		t.Errorf("token requests = %d, want 2 (one more after the refusal)", got)
	}
	if st := m.AuthStats(); st.AuthFailures != int64(failed["XOAUTH2"]) {
		t.Errorf("AuthStats.AuthFailures = %d, server refused %d", st.AuthFailures, failed["XOAUTH2"])
	}
}

// A token the server refuses even when fresh (no permission for the mailbox): Retry, with a
// hint naming what to check, and exactly one more token fetched.
func TestOAuthRefusedTwiceGivesHint(t *testing.T) {
	for _, mech := range []string{"xoauth2", "oauthbearer"} {
		t.Run(mech, func(t *testing.T) {
			ep := oauthtest.NewEndpoint(t, oauthUser)
			srv := oauthtest.NewSMTP(t, ep)
			srv.RefuseAll.Store(true)
			m := oauthMailer(t, oauthKeys(ep, srv, mech, "secret_post"))
			rs := m.Send(context.Background(), msgs(1)) // one connection: counts are exact
			var se *StepError
			if rs[0].Outcome != Retry || !errors.As(rs[0].Err, &se) || se.Step != StepAUTH || !se.Operator() {
				t.Fatalf("result %v %v, want Retry with an operator AUTH error", rs[0].Outcome, rs[0].Err)
			}
			text := rs[0].Err.Error()
			for _, want := range []string{"535", "5.7.3", "refused a freshly issued token", "SMTP.SendAsApp", "mail.google.com"} {
				if !strings.Contains(text, want) {
					t.Errorf("error lacks %q: %s", want, text)
				}
			}
			for _, tok := range ep.Tokens() {
				if strings.Contains(text, tok) {
					t.Errorf("the error holds a token")
				}
			}
			if got := ep.Requests()["secret_post/ok"]; got != 2 {
				t.Errorf("token requests = %d, want 2 (the first, one after the refusal)", got)
			}
			_, failed, _ := srv.AuthCounts()
			if failed[strings.ToUpper(mech)] != 2 {
				t.Errorf("AUTH refused %d times, want 2", failed[strings.ToUpper(mech)])
			}
		})
	}
}

// A token endpoint that refuses the client: Retry at the token step with the endpoint's
// error and a hint, never the secret; the next send within the back-off asks nothing.
func TestOAuthBadSecret(t *testing.T) {
	ep := oauthtest.NewEndpoint(t, oauthUser)
	srv := oauthtest.NewSMTP(t, ep)
	g := oauthKeys(ep, srv, "xoauth2", "secret_post")
	g["auth_client_secret"] = "wrong-secret-VALUE"
	m := oauthMailer(t, g)
	for round := range 2 {
		rs := m.Send(context.Background(), msgs(3))
		var se *StepError
		if rs[0].Outcome != Retry || !errors.As(rs[0].Err, &se) || se.Step != StepToken || !se.Operator() {
			t.Fatalf("round %d: %v %v, want Retry at the token step", round, rs[0].Outcome, rs[0].Err)
		}
		text := rs[0].Err.Error()
		for _, want := range []string{ep.URL, "HTTP 401", "invalid_client", "AADSTS7000215", "auth_client_secret"} {
			if !strings.Contains(text, want) {
				t.Errorf("error lacks %q: %s", want, text)
			}
		}
		for _, bad := range []string{"wrong-secret-VALUE", "Trace ID", "Correlation ID"} {
			if strings.Contains(text, bad) {
				t.Errorf("error holds %q: %s", bad, text)
			}
		}
	}
	if diff := cmp.Diff(map[string]int{"secret_post/error": 1}, ep.Requests()); diff != "" {
		t.Errorf("token requests (-want +got): one request, then back-off\n%s", diff)
	}
	if len(srv.Messages()) != 0 {
		t.Errorf("messages stored without a token")
	}
}

// Many concurrent sends with no token yet make one token request.
func TestOAuthSingleFlight(t *testing.T) {
	ep := oauthtest.NewEndpoint(t, oauthUser)
	srv := oauthtest.NewSMTP(t, ep)
	g := oauthKeys(ep, srv, "oauthbearer", "certificate")
	g["max_connections"] = "8"
	m := oauthMailer(t, g)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mustDeliver(t, m.Send(context.Background(), msgs(2)))
		}()
	}
	wg.Wait()
	if diff := cmp.Diff(map[string]int{"private_key_jwt/ok": 1}, ep.Requests()); diff != "" {
		t.Errorf("token requests (-want +got):\n%s", diff)
	}
}

// A connection opened with a token that then expires keeps working: the token is checked at
// AUTH only, and the pooled connection is reused without a new token.
func TestOAuthConnectionOutlivesItsToken(t *testing.T) {
	ep := oauthtest.NewEndpoint(t, oauthUser)
	ep.Lifetime.Store(int64(time.Second))
	srv := oauthtest.NewSMTP(t, ep)
	g := oauthKeys(ep, srv, "xoauth2", "secret_post")
	g["max_connections"] = "1"
	m := oauthMailer(t, g)
	mustDeliver(t, m.Send(context.Background(), msgs(1)))
	toks := ep.Tokens()
	if len(toks) != 1 {
		t.Fatalf("%d tokens issued, want 1", len(toks))
	}
	for ep.Live(toks[0], oauthUser) {
		time.Sleep(50 * time.Millisecond) // until the token has expired at the endpoint
	}
	mustDeliver(t, m.Send(context.Background(), msgs(1)))
	if d := m.Dials(); d != 1 {
		t.Errorf("%d connections opened, want 1 (the first, reused after its token expired)", d)
	}
	if got := ep.Requests()["secret_post/ok"]; got != 1 {
		t.Errorf("%d token requests, want 1", got)
	}
}

// A server that refuses every token: one more token after the first refusal, then the token
// requests back off as after a failed request, so ten sends in a row cost two token
// requests and two refused AUTHs (before: 11 and 20), and every send gets the same error.
func TestOAuthRefusedTokenBacksOff(t *testing.T) {
	ep := oauthtest.NewEndpoint(t, oauthUser)
	srv := oauthtest.NewSMTP(t, ep)
	srv.RefuseAll.Store(true)
	m := oauthMailer(t, oauthKeys(ep, srv, "xoauth2", "secret_post"))
	var texts []string
	for range 10 {
		rs := m.Send(context.Background(), msgs(1))
		if rs[0].Outcome != Retry || rs[0].Err == nil {
			t.Fatalf("result %v %v, want Retry with an error", rs[0].Outcome, rs[0].Err)
		}
		texts = append(texts, rs[0].Err.Error())
	}
	if got := ep.Requests()["secret_post/ok"]; got != 2 {
		t.Errorf("token requests = %d for 10 sends, want 2 (the first, one after the refusal)", got)
	}
	if _, failed, _ := srv.AuthCounts(); failed["XOAUTH2"] != 2 {
		t.Errorf("AUTH refused %d times for 10 sends, want 2", failed["XOAUTH2"])
	}
	for i, text := range texts {
		if text != texts[0] || !strings.Contains(text, "refused a freshly issued token") {
			t.Errorf("send %d: %s\nwant the first send's error with the hint: %s", i, text, texts[0])
		}
	}
	if st := m.AuthStats(); st != (AuthStats{TokenOK: 2, AuthFailures: 2}) {
		t.Errorf("AuthStats = %+v", st)
	}
}

// A token file holding an expired token: Send returns at once with Retry and an error naming
// the file, without opening a connection, and without reading the unchanged file again;
// once a valid token is written, the next Send delivers.
func TestOAuthExpiredTokenFile(t *testing.T) {
	ep := oauthtest.NewEndpoint(t, oauthUser)
	srv := oauthtest.NewSMTP(t, ep)
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(ep.Mint(-time.Hour)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := oauthMailer(t, tokenFileKeys(ep, srv, "oauthbearer", file))
	for range 5 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		rs := m.Send(ctx, msgs(3))
		cancel()
		for _, r := range rs {
			var se *StepError
			if r.Outcome != Retry || !errors.As(r.Err, &se) || se.Step != StepToken || !se.Operator() ||
				!strings.Contains(r.Err.Error(), "file "+file+": the token expired at ") {
				t.Fatalf("result %v %v, want Retry at the token step naming the file and the expiry", r.Outcome, r.Err)
			}
		}
	}
	if st := m.AuthStats(); st != (AuthStats{TokenFailed: 1}) {
		t.Errorf("AuthStats = %+v after 5 sends, want the file read once (1 failed)", st)
	}
	if n := m.Dials(); n != 0 {
		t.Errorf("%d connections opened without a usable token, want 0", n)
	}
	if err := os.WriteFile(file, []byte(ep.Mint(time.Hour)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustDeliver(t, m.Send(context.Background(), msgs(3)))
	if _, failed, _ := srv.AuthCounts(); len(failed) != 0 {
		t.Errorf("AUTH refused: %v", failed)
	}
}
