package oauth

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/oauth2"

	"github.com/smtpout/smtpout/config"
	"github.com/smtpout/smtpout/testsupport/oauthtest"
)

// clock is a settable time source.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// script is a fetcher whose answers the test sets; it counts calls and can hold them.
type script struct {
	c        *clock
	lifetime time.Duration
	fail     atomic.Bool
	calls    atomic.Int64
	hold     chan struct{} // when not nil, each fetch waits for it
}

func (s *script) fetch(context.Context) (*oauth2.Token, error) {
	n := s.calls.Add(1)
	if s.hold != nil {
		<-s.hold
	}
	if s.fail.Load() {
		return nil, errors.New("connection refused")
	}
	return &oauth2.Token{AccessToken: fmt.Sprintf("tok%d", n), Expiry: s.c.Now().Add(s.lifetime)}, nil
}

func newScripted(lifetime time.Duration) (*Provider, *script, *clock) {
	c := &clock{now: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
	s := &script{c: c, lifetime: lifetime}
	return &Provider{src: s, endpoint: "https://idp.example/token", now: c.Now}, s, c
}

func mustToken(t *testing.T, p *Provider) string {
	t.Helper()
	tok, err := p.Token(context.Background())
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	return tok.Value
}

// Tokens are renewed a minute before expiry, or a third of a short lifetime before it.
func TestRefreshAhead(t *testing.T) {
	for _, tc := range []struct {
		lifetime, renewAt time.Duration
	}{
		{time.Hour, 59 * time.Minute},
		{3 * time.Minute, 2 * time.Minute},
		{3 * time.Second, 2 * time.Second},
	} {
		t.Run(tc.lifetime.String(), func(t *testing.T) {
			p, s, c := newScripted(tc.lifetime)
			var got []string
			got = append(got, mustToken(t, p))
			c.Add(tc.renewAt - time.Millisecond)
			got = append(got, mustToken(t, p))
			c.Add(time.Millisecond)
			got = append(got, mustToken(t, p))
			if diff := cmp.Diff([]string{"tok1", "tok1", "tok2"}, got); diff != "" {
				t.Errorf("tokens (-want +got):\n%s", diff)
			}
			if s.calls.Load() != 2 {
				t.Errorf("%d fetches, want 2", s.calls.Load())
			}
		})
	}
}

// Concurrent callers with no token make one request; while a renewal is in flight the
// current token is handed out if it has margin left, else callers wait for the new one.
func TestSingleFlight(t *testing.T) {
	p, s, c := newScripted(time.Hour)
	s.hold = make(chan struct{})
	var wg sync.WaitGroup
	got := make([]string, 10)
	for i := range got {
		wg.Add(1)
		go func() { defer wg.Done(); got[i] = mustToken(t, p) }()
	}
	for s.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	close(s.hold)
	wg.Wait()
	for _, g := range got {
		if g != "tok1" {
			t.Fatalf("tokens %v, want tok1 for all", got)
		}
	}
	if s.calls.Load() != 1 {
		t.Fatalf("%d fetches for 10 concurrent callers, want 1", s.calls.Load())
	}

	// In the renewal window with a fetch in flight: the old token while it has over 30s.
	s.hold = make(chan struct{})
	c.Add(59*time.Minute + time.Second)
	done := make(chan string)
	go func() { done <- mustToken(t, p) }()
	for s.calls.Load() == 1 {
		time.Sleep(time.Millisecond)
	}
	if v := mustToken(t, p); v != "tok1" {
		t.Errorf("during renewal with 59s left: %s, want tok1", v)
	}
	c.Add(30 * time.Second) // 29s left: less than half the margin
	waiter := make(chan string)
	go func() { waiter <- mustToken(t, p) }()
	select {
	case v := <-waiter:
		t.Errorf("a token with 29s left was handed out (%s) while the renewal was in flight", v)
	case <-time.After(50 * time.Millisecond):
	}
	close(s.hold)
	if v, w := <-done, <-waiter; v != "tok2" || w != "tok2" {
		t.Errorf("after the renewal: %s %s, want tok2", v, w)
	}
}

// After a failed request, callers get the failure at once until the back-off has passed:
// 1s, 2s, 4s... up to a minute; a success resets it.
func TestBackoff(t *testing.T) {
	p, s, c := newScripted(time.Hour)
	s.fail.Store(true)
	var waits []time.Duration
	for range 9 {
		before := s.calls.Load()
		if _, err := p.Token(context.Background()); err == nil {
			t.Fatal("Token succeeded while the endpoint fails")
		}
		if s.calls.Load() != before+1 {
			t.Fatal("no request made after the back-off")
		}
		// Every call within the back-off fails without a request, with the same text.
		_, err1 := p.Token(context.Background())
		var we *WaitError
		if !errors.As(err1, &we) || s.calls.Load() != before+1 {
			t.Fatalf("within the back-off: %v, %d calls", err1, s.calls.Load())
		}
		w := we.Until.Sub(c.Now())
		waits = append(waits, w)
		c.Add(w)
	}
	checkBackoff(t, waits)
	s.fail.Store(false)
	if v := mustToken(t, p); v != "tok10" {
		t.Errorf("after recovery: %s", v)
	}
	if st := p.Stats(); st != (Stats{OK: 1, Failed: 9}) {
		t.Errorf("Stats = %+v", st)
	}
}

// checkBackoff fails t unless waits are the back-off's: 1s, doubling up to a minute, then a
// minute.
func checkBackoff(t *testing.T, waits []time.Duration) {
	t.Helper()
	var want []time.Duration
	for w := time.Second; len(want) < len(waits); w = min(2*w, time.Minute) {
		want = append(want, w)
	}
	if diff := cmp.Diff(want, waits); diff != "" {
		t.Errorf("back-off (-want +got):\n%s", diff)
	}
}

// Refused drops only the token named, so a late refusal of a replaced token costs nothing,
// and concurrent refusals of one token count once.
func TestRefusedDropsOnlyThatToken(t *testing.T) {
	p, s, _ := newScripted(time.Hour)
	refusal := errors.New("smtp AUTH: 535 5.7.3 refused")
	old, err := p.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !p.Refused(old, refusal) || !p.Refused(old, refusal) {
		t.Fatal("the first refusal of a token (from two connections) must allow one more try")
	}
	fresh := mustToken(t, p)
	p.Refused(old, refusal) // a late refusal of the old token
	if v := mustToken(t, p); v != fresh || s.calls.Load() != 2 {
		t.Errorf("got %s after %d fetches, want %s after 2", v, s.calls.Load(), fresh)
	}
	// A connection that tried the old token hears its refusal only after the new one was
	// accepted elsewhere: it may try the current token at once (it once failed the message).
	cur, err := p.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	p.Accepted(cur)
	if !p.Refused(old, refusal) {
		t.Error("a late refusal of a replaced token, after its successor was accepted, allowed no try with the current token")
	}
	if v := mustToken(t, p); v != fresh || s.calls.Load() != 2 {
		t.Errorf("got %s after %d fetches, want %s after 2", v, s.calls.Load(), fresh)
	}
}

// A server that refuses every token: the first refusal gets a new token at once, every
// refusal after it backs off exactly as a failing endpoint does (1s, 2s, 4s... a minute),
// with the refusal as the error; a token accepted ends it.
func TestRefusedTokensBackOff(t *testing.T) {
	p, s, c := newScripted(time.Hour)
	refusal := errors.New("smtp AUTH: 535 5.7.3 refused")
	ctx := context.Background()
	tok, err := p.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Refused(tok, refusal) {
		t.Fatal("first refusal: no second try")
	}
	var waits []time.Duration
	for range 8 {
		tok, err := p.Token(ctx)
		if err != nil {
			t.Fatalf("after the back-off: %v", err)
		}
		before := s.calls.Load()
		if p.Refused(tok, refusal) {
			t.Fatal("a refusal in a row allowed another try at once")
		}
		var we *WaitError
		for range 3 {
			_, err := p.Token(ctx)
			if !errors.As(err, &we) || !errors.Is(err, refusal) || s.calls.Load() != before {
				t.Fatalf("within the back-off: %v, %d fetches (want %d)", err, s.calls.Load(), before)
			}
		}
		waits = append(waits, we.Until.Sub(c.Now()))
		c.Add(we.Until.Sub(c.Now()))
	}
	checkBackoff(t, waits)
	if n := s.calls.Load(); n != 9 {
		t.Errorf("%d token requests for 9 refusals, want 9", n)
	}
	// Accepted: the next refusal (a token revoked later) is again retried at once.
	tok = Token{}
	if tok, err = p.Token(ctx); err != nil {
		t.Fatal(err)
	}
	p.Accepted(tok)
	if !p.Refused(tok, refusal) {
		t.Error("after a token was accepted, a refusal did not allow a new token at once")
	}
	if st := p.Stats(); st.Failed != 0 {
		t.Errorf("Stats = %+v: refusals are not failed requests", st)
	}
}

// A token that has already expired when it arrives is a failure: Token returns promptly with
// an error naming the source, and requests back off as after a failed one (before, every
// caller fetched again at once, for ever).
func TestExpiredTokenBacksOff(t *testing.T) {
	p, s, c := newScripted(-time.Minute)
	var waits []time.Duration
	for range 8 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		before := s.calls.Load()
		_, err := p.Token(ctx)
		cancel()
		var we *WaitError
		if !errors.As(err, &we) || !strings.Contains(err.Error(), "https://idp.example/token: the token expired at 2026-") {
			t.Fatalf("Token = %v after %d fetches; want a *WaitError saying the token expired", err, s.calls.Load()-before)
		}
		if n := s.calls.Load() - before; n != 1 {
			t.Fatalf("%d fetches for one call, want 1", n)
		}
		if _, err := p.Token(context.Background()); !errors.As(err, &we) || s.calls.Load() != before+1 {
			t.Fatalf("within the back-off: %v, %d fetches", err, s.calls.Load()-before)
		}
		waits = append(waits, we.Until.Sub(c.Now()))
		c.Add(we.Until.Sub(c.Now()))
	}
	checkBackoff(t, waits)
	if st := p.Stats(); st != (Stats{Failed: 8}) {
		t.Errorf("Stats = %+v, want 8 failed", st)
	}
}

// jwtExpiring is an unsigned JWT whose exp is at.
func jwtExpiring(at time.Time) string {
	return "eyJhbGciOiJub25lIn0." + b64(fmt.Sprintf(`{"exp":%d,"aud":"https://outlook.office.com"}`, at.Unix())) + ".c2ln"
}

// A token file holding an expired token: an error naming the file at once, no read again
// while the file stays as it is (however often Token is called), a read as soon as it
// changes (also when only its inode does: a Kubernetes secret swapped in place), and the
// valid token written then is used at once, back-off or not.
func TestTokenFileExpired(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "token")
	expired := jwtExpiring(time.Now().Add(-time.Hour))
	if err := os.WriteFile(f, []byte(expired+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := New(config.Config{AuthMechanism: config.MechXOAuth2, Auth: config.Auth{Source: config.SourceTokenFile, TokenFile: f}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for range 1000 {
		_, err = p.Token(ctx)
		if err == nil || errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Token = %v, want the expired token's error", err)
		}
	}
	for _, want := range []string{"file " + f, "the token expired at", "auth_token_file"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if st := p.Stats(); st != (Stats{Failed: 1}) {
		t.Errorf("Stats = %+v after 1000 calls on an unchanged file, want one read (1 failed)", st)
	}

	// Same size and time, another inode: read again.
	fi, err := os.Stat(f)
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "token.new")
	if err := os.WriteFile(tmp, []byte(jwtExpiring(time.Now().Add(-2*time.Hour))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(tmp, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, f); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Token(ctx); err == nil {
		t.Fatal("an expired token was handed out")
	}
	if st := p.Stats(); st != (Stats{Failed: 2}) {
		t.Errorf("Stats = %+v after the inode changed, want a second read (2 failed)", st)
	}

	valid := jwtExpiring(time.Now().Add(time.Hour))
	if err := os.WriteFile(f, []byte(valid+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if v := mustToken(t, p); v != valid {
		t.Errorf("after a valid token was written: %q", v)
	}
	if st := p.Stats(); st != (Stats{OK: 1, Failed: 2}) {
		t.Errorf("Stats = %+v, want 1 ok, 2 failed", st)
	}
}

// A token file is read again when it changes, and its JWT expiry is used.
func TestTokenFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "token")
	write := func(v string) {
		if err := os.WriteFile(f, []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("opaque-1")
	p, err := New(config.Config{AuthMechanism: config.MechXOAuth2, Auth: config.Auth{Source: config.SourceTokenFile, TokenFile: f}})
	if err != nil {
		t.Fatal(err)
	}
	if v := mustToken(t, p); v != "opaque-1" {
		t.Errorf("first read %q", v)
	}
	write("opaque-2-longer")
	if v := mustToken(t, p); v != "opaque-2-longer" {
		t.Errorf("after the file changed: %q", v)
	}
	exp := time.Now().Add(time.Hour).Unix()
	jwt := "eyJhbGciOiJub25lIn0." + b64(fmt.Sprintf(`{"exp":%d,"aud":"https://outlook.office.com","roles":["SMTP.SendAsApp"]}`, exp)) + ".c2ln"
	write(jwt)
	tok, err := p.Token(context.Background())
	if err != nil || tok.Value != jwt || tok.Expiry.Unix() != exp {
		t.Errorf("JWT token file: %v expiry %v, want exp %d", err, tok.Expiry, exp)
	}
	os.Remove(f)
	if _, err := p.Token(context.Background()); err == nil || !strings.Contains(err.Error(), "auth_token_file") {
		t.Errorf("a removed file: %v, want an error naming auth_token_file", err)
	}
}

// Every grant against the real test endpoint, which checks it; the errors the endpoint
// answers come back with its error code, a hint, and no trace ids or secret.
func TestGrantsAgainstEndpoint(t *testing.T) {
	ep := oauthtest.NewEndpoint(t, "mailbox@corp.example")
	caPEM, err := os.ReadFile(ep.CA.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	g := func(kv ...string) config.Config {
		m := config.MapGetter{"dest_host": "smtp.example.com", "dest_email": "a@b.example", "from_email": "mailbox@corp.example",
			"secret_key": "0123456789abcdef0123", "auth_mechanism": "xoauth2", "tls_ca_file": ep.CA.CAFile}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		c, err := config.Parse(m)
		if err != nil {
			t.Fatalf("Parse: %v", err)
		}
		c.TLSCAPEM = caPEM
		return c
	}
	cc := []string{"auth_token_url", ep.URL, "auth_client_id", ep.ClientID, "auth_scope", ep.Scope}
	for _, tc := range []struct {
		name    string
		cfg     config.Config
		wantErr []string // substrings; nil: success
	}{
		{"secret post", g(append(cc, "auth_client_secret", ep.ClientSecret)...), nil},
		{"secret basic", g(append(cc, "auth_client_secret", ep.ClientSecret, "auth_client_auth", "basic")...), nil},
		{"certificate", g(append(cc, "auth_client_cert_file", ep.CertFile, "auth_client_key_file", ep.KeyFile)...), nil},
		{"federated", g(append(cc, "auth_client_assertion_file", ep.AssertionFile)...), nil},
		{"service account", g("auth_service_account_file", ep.ServiceAccountFile), nil},
		{"wrong secret", g(append(cc, "auth_client_secret", "nope-WRONG")...),
			[]string{"HTTP 401 invalid_client: AADSTS7000215: Invalid client secret provided", "set auth_client_secret to the secret's Value"}},
		{"wrong scope", g("auth_token_url", ep.URL, "auth_client_id", ep.ClientID, "auth_scope", "https://graph.microsoft.com/.default", "auth_client_secret", ep.ClientSecret),
			[]string{"HTTP 400 invalid_scope", "AADSTS70011", "check auth_scope"}},
		{"unknown client", g("auth_token_url", ep.URL, "auth_client_id", "00000000-0000-0000-0000-000000000000", "auth_scope", ep.Scope, "auth_client_secret", ep.ClientSecret),
			[]string{"AADSTS700016", "check auth_client_id"}},
		{"service account for another user", g("auth_service_account_file", ep.ServiceAccountFile, "username", "intruder@corp.example"),
			[]string{"HTTP 400 invalid_grant: Invalid email or User ID", "username is not a user"}},
		{"service account, wrong scope", g("auth_service_account_file", ep.ServiceAccountFile, "auth_scope", "https://www.googleapis.com/auth/gmail.send"),
			[]string{"unauthorized_client", "domain-wide delegation"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := New(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			tok, err := p.Token(context.Background())
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("Token: %v (endpoint: %v)", err, ep.Problems())
				}
				if !ep.Live(tok.Value, "mailbox@corp.example") || tok.Lifetime() < 59*time.Minute {
					t.Errorf("token not live, or lifetime %v", tok.Lifetime())
				}
				return
			}
			if err == nil {
				t.Fatal("Token succeeded")
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
			for _, bad := range []string{"Trace ID", "nope-WRONG", ep.ClientSecret} {
				if strings.Contains(err.Error(), bad) {
					t.Errorf("error holds %q: %v", bad, err)
				}
			}
		})
	}
	// A federated assertion rotated by the kubelet is read again for the next request.
	p, _ := New(g(append(cc, "auth_client_assertion_file", ep.AssertionFile)...))
	mustToken(t, p)
	ep.SetFederated("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJyb3RhdGVkIn0.c2lnbmF0dXJl")
	tok, err := p.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	p.Refused(tok, errors.New("refused"))
	if _, err := p.Token(context.Background()); err != nil {
		t.Errorf("after rotation: %v", err)
	}
}

// The endpoint's certificate is checked: without tls_ca_file the test CA is not trusted.
func TestEndpointCertificateChecked(t *testing.T) {
	ep := oauthtest.NewEndpoint(t, "mailbox@corp.example")
	p, err := New(config.Config{AuthMechanism: config.MechXOAuth2, Auth: config.Auth{
		Source: config.SourceClientSecret, TokenURL: ep.URL, ClientID: ep.ClientID,
		ClientSecret: config.Secret(ep.ClientSecret), Scopes: []string{ep.Scope}}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Token(context.Background())
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("Token with an untrusted endpoint certificate: %v, want a certificate error", err)
	}
}

func TestReadClaims(t *testing.T) {
	tok := "eyJhbGciOiJub25lIn0." + b64(`{"aud":"https://outlook.office.com","roles":["SMTP.SendAsApp"],"appid":"app","exp":1700000000}`) + ".sig"
	got, ok := ReadClaims(tok)
	want := Claims{Audience: []string{"https://outlook.office.com"}, Roles: []string{"SMTP.SendAsApp"}, AppID: "app", Expiry: 1700000000}
	if !ok {
		t.Fatal("not read")
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("claims (-want +got):\n%s", diff)
	}
	if _, ok := ReadClaims("ya29.opaque-google-token"); ok {
		t.Error("an opaque token read as a JWT")
	}
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// A caller whose context ends stops waiting for a request in flight (shutdown is not held
// up by a slow endpoint); the request still serves the others.
func TestCancelledCallerReturns(t *testing.T) {
	p, s, _ := newScripted(time.Hour)
	s.hold = make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error)
	go func() { _, err := p.Token(ctx); errc <- err }()
	for s.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a cancelled caller still waits for the token request")
	}
	close(s.hold)
	if v := mustToken(t, p); v != "tok1" || s.calls.Load() != 1 {
		t.Errorf("after the request ended: %s with %d calls, want tok1 with 1", v, s.calls.Load())
	}
}

// BenchmarkClientAssertion measures signing one private_key_jwt assertion (RS256, 2048-bit
// key): the cost per token request, paid once per token lifetime.
func BenchmarkClientAssertion(b *testing.B) {
	ep := oauthtest.NewEndpoint(b, "mailbox@corp.example")
	certPEM, _ := os.ReadFile(ep.CertFile)
	keyPEM, _ := os.ReadFile(ep.KeyFile)
	s, err := newClientCert(config.Auth{TokenURL: ep.URL, ClientID: ep.ClientID, ClientCertPEM: certPEM, ClientKeyPEM: config.Secret(keyPEM)}, nil)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := s.assertion(); err != nil {
			b.Fatal(err)
		}
	}
}
