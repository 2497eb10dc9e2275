package mailer

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
	"github.com/google/go-cmp/cmp"

	"github.com/smtpout/smtpout/config"
	"github.com/smtpout/smtpout/testsupport/testcert"
)

const probePassword = "probe-Pass-Never-Shown-9"

func TestProbe(t *testing.T) {
	users := map[string]string{"alerts": probePassword}
	implicit := startGoSMTP(t, &fakeBackend{users: users}, false, func(s *smtp.Server) { s.MaxMessageBytes = 10 << 20 })
	starttls := startGoSMTP(t, &fakeBackend{users: users, mechs: []string{"LOGIN"}}, true, nil)
	noAuth := startGoSMTP(t, nil, false, nil)
	other := testcert.New(t) // a CA no server uses

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()

	creds := func(c config.Config, login bool) config.Config {
		c.Username, c.Password, c.AuthLogin = "alerts", probePassword, login
		return c
	}
	// failure is what a failed probe must report: the StepError's step, code, operator flag
	// and the start of its hint.
	type failure struct {
		Step     Step
		Code     int
		Operator bool
		Hint     string
	}
	tests := []struct {
		name      string
		cfg       config.Config
		steps     []Step
		fail      *failure
		ext       []string // extensions that must be advertised
		mechs     []string
		mech      string
		authed    bool
		wantTLS13 bool
	}{
		{
			name:  "implicit TLS, AUTH PLAIN",
			cfg:   creds(testConfig(t, implicit.addr, implicit.cert, false), false),
			steps: []Step{StepDial, StepTLS, StepGreeting, StepEHLO, StepAUTH, StepQUIT},
			ext:   []string{"SIZE", "PIPELINING", "CHUNKING", "8BITMIME", "AUTH"},
			mechs: []string{"PLAIN", "LOGIN"}, mech: "PLAIN", authed: true, wantTLS13: true,
		},
		{
			name:  "STARTTLS, AUTH LOGIN",
			cfg:   creds(testConfig(t, starttls.addr, starttls.cert, true), true),
			steps: []Step{StepDial, StepGreeting, StepEHLO, StepSTARTTLS, StepAUTH, StepQUIT},
			ext:   []string{"PIPELINING", "AUTH"},
			mechs: []string{"LOGIN"}, mech: "LOGIN", authed: true, wantTLS13: true,
		},
		{
			name:  "no credentials: no AUTH",
			cfg:   testConfig(t, noAuth.addr, noAuth.cert, false),
			steps: []Step{StepDial, StepTLS, StepGreeting, StepEHLO, StepQUIT},
			ext:   []string{"PIPELINING"}, wantTLS13: true,
		},
		{
			name: "wrong password",
			cfg: func() config.Config {
				c := creds(testConfig(t, implicit.addr, implicit.cert, false), false)
				c.Password = "not-the-" + probePassword
				return c
			}(),
			steps: []Step{StepDial, StepTLS, StepGreeting, StepEHLO},
			fail:  &failure{StepAUTH, 535, true, "authentication failed: check username/password"},
			mechs: []string{"PLAIN", "LOGIN"}, mech: "PLAIN", wantTLS13: true,
		},
		{
			name:  "PLAIN asked, only LOGIN offered",
			cfg:   creds(testConfig(t, starttls.addr, starttls.cert, true), false),
			steps: []Step{StepDial, StepGreeting, StepEHLO, StepSTARTTLS},
			fail:  &failure{StepAUTH, 0, true, "the server offers LOGIN: set is_authlogin true"},
			mechs: []string{"LOGIN"}, mech: "PLAIN", wantTLS13: true,
		},
		{
			name:  "credentials, no AUTH offered",
			cfg:   creds(testConfig(t, noAuth.addr, noAuth.cert, false), false),
			steps: []Step{StepDial, StepTLS, StepGreeting, StepEHLO},
			fail:  &failure{StepAUTH, 0, true, "username is set but the server does not offer authentication"},
			mech:  "PLAIN", wantTLS13: true,
		},
		{
			name:  "untrusted certificate",
			cfg:   testConfig(t, implicit.addr, other, false),
			steps: []Step{StepDial},
			fail:  &failure{StepTLS, 0, true, "the server certificate is signed by an unknown authority"},
		},
		{
			name:  "implicit TLS to a STARTTLS port",
			cfg:   testConfig(t, starttls.addr, starttls.cert, false),
			steps: []Step{StepDial},
			fail:  &failure{StepTLS, 0, true, "the server speaks plaintext SMTP first: set is_starttls true"},
		},
		{
			name:  "nothing listening",
			cfg:   testConfig(t, closed, nil, false),
			steps: nil,
			fail:  &failure{StepDial, 0, false, ""},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Probe(context.Background(), tc.cfg)
			if diff := cmp.Diff(tc.steps, res.Steps); diff != "" {
				t.Errorf("steps (-want +got):\n%s", diff)
			}
			if res.Address != tc.cfg.Address() {
				t.Errorf("Address = %q, want %q", res.Address, tc.cfg.Address())
			}
			if tc.fail == nil {
				if err != nil {
					t.Fatalf("Probe() error = %v", err)
				}
			} else {
				var se *StepError
				if !errors.As(err, &se) {
					t.Fatalf("Probe() error = %v (%T), want a *StepError", err, err)
				}
				got := failure{se.Step, se.Code, se.Operator(), se.Hint}
				if !strings.HasPrefix(got.Hint, tc.fail.Hint) {
					t.Errorf("hint %q, want it to start with %q", got.Hint, tc.fail.Hint)
				}
				got.Hint = tc.fail.Hint
				if diff := cmp.Diff(*tc.fail, got); diff != "" {
					t.Errorf("failure (-want +got):\n%s\nerror: %v", diff, err)
				}
				if strings.Contains(err.Error(), probePassword) {
					t.Errorf("the error shows the password: %v", err)
				}
			}
			if tc.wantTLS13 {
				if res.TLS == nil || res.TLS.Version != tls.VersionTLS13 {
					t.Errorf("TLS = %+v, want a TLS 1.3 session", res.TLS)
				} else if c := res.Certificate(); c == nil || c.Subject.CommonName != "localhost" || c.NotAfter.IsZero() {
					t.Errorf("certificate = %v, want the server's leaf (CN=localhost)", c)
				}
			} else if res.TLS != nil {
				t.Errorf("TLS = %+v, want none (the probe failed before TLS)", res.TLS)
			}
			for _, ext := range tc.ext {
				if !res.Has(ext) {
					t.Errorf("extension %s not reported; got %v", ext, res.Extensions)
				}
			}
			if res.Has("STARTTLS") && res.Did(StepSTARTTLS) {
				t.Errorf("extensions %v are from the EHLO before STARTTLS, want the one after", res.Extensions)
			}
			if diff := cmp.Diff(tc.mechs, res.AuthMechanisms); diff != "" {
				t.Errorf("AUTH mechanisms (-want +got):\n%s", diff)
			}
			if res.AuthMechanism != tc.mech || res.Authenticated != tc.authed {
				t.Errorf("AuthMechanism %q Authenticated %v, want %q %v", res.AuthMechanism, res.Authenticated, tc.mech, tc.authed)
			}
		})
	}
	for name, be := range map[string]*fakeBackend{"implicit": implicit.fakeBackend, "starttls": starttls.fakeBackend, "noAuth": noAuth.fakeBackend} {
		if got := be.Msgs(); len(got) != 0 {
			t.Errorf("server %s stored %d message(s) from probes, want none", name, len(got))
		}
	}
	r, err := Probe(context.Background(), testConfig(t, implicit.addr, implicit.cert, false))
	if err != nil || r.Extensions["SIZE"] != "10485760" {
		t.Errorf("SIZE parameter = %q (err %v), want the server's limit 10485760", r.Extensions["SIZE"], err)
	}
}
