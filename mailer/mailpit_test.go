package mailer

import (
	"context"
	"errors"
	"net/mail"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/smtpout/smtpout/config"
	"github.com/smtpout/smtpout/testsupport/mailpit"
	"github.com/smtpout/smtpout/testsupport/testcert"
)

// mailpitConfig is a Config for srv that trusts cert's CA.
func mailpitConfig(t *testing.T, srv *mailpit.Server, cert *testcert.Cert, startTLS bool) config.Config {
	cfg := testConfig(t, srv.SMTPAddr(), cert, startTLS)
	cfg.Username, cfg.Password = "smtpout", "Corr3ct-h0rse"
	return cfg
}

func startMailpit(t *testing.T, mode mailpit.TLSMode) (*mailpit.Server, *testcert.Cert) {
	cert := testcert.New(t)
	srv := mailpit.Start(t, mailpit.Options{TLS: mode, CertFile: cert.CertFile, KeyFile: cert.KeyFile,
		Auth: map[string]string{"smtpout": "Corr3ct-h0rse"}})
	return srv, cert
}

// wantStepError checks that r is a Retry whose error is a *StepError at step with the hint.
func wantStepError(t *testing.T, r Result, step Step, operator bool, hint string) *StepError {
	t.Helper()
	var se *StepError
	if !errors.As(r.Err, &se) {
		t.Fatalf("Err = %v, want a *StepError", r.Err)
	}
	if r.Outcome != Retry || se.Step != step || se.Operator() != operator || !strings.Contains(se.Error(), hint) {
		t.Errorf("got %v, step %s, operator %v: %q; want retry, step %s, operator %v, hint %q",
			r.Outcome, se.Step, se.Operator(), se, step, operator, hint)
	}
	t.Logf("error: %s", se)
	if strings.Contains(se.Error(), "Corr3ct-h0rse") {
		t.Errorf("error shows the password: %q", se)
	}
	return se
}

func TestMailpitDelivery(t *testing.T) {
	for _, tc := range []struct {
		name      string
		mode      mailpit.TLSMode
		startTLS  bool
		authLogin bool
	}{
		{"implicit TLS + PLAIN", mailpit.ImplicitTLS, false, false},
		{"implicit TLS + LOGIN", mailpit.ImplicitTLS, false, true},
		{"STARTTLS + LOGIN", mailpit.STARTTLS, true, true},
		{"STARTTLS + PLAIN", mailpit.STARTTLS, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, cert := startMailpit(t, tc.mode)
			cfg := mailpitConfig(t, srv, cert, tc.startTLS)
			cfg.AuthLogin = tc.authLogin
			m := newMailer(t, cfg)
			msgs := []Message{msg("mp1", "a@example.com", "b@example.com"), msg("mp2", "a@example.com")}
			mustDeliver(t, m.Send(context.Background(), msgs))
			got, err := srv.WaitForCount(2, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			byID := map[string]mailpit.Summary{}
			for _, s := range got {
				byID[s.MessageID] = s
			}
			if diff := cmp.Diff([]*mail.Address{{Address: "a@example.com"}, {Address: "b@example.com"}}, byID["mp1@example.com"].To); diff != "" {
				t.Errorf("mp1 To (-want +got):\n%s", diff)
			}
			full, err := srv.Message(byID["mp2@example.com"].ID)
			if err != nil {
				t.Fatal(err)
			}
			if full.Subject != "mp2" || !strings.Contains(full.Text, `{"id":"mp2"}`) || !strings.Contains(full.Text, "\n.leading dot") {
				t.Errorf("mp2 = subject %q, text %q", full.Subject, full.Text)
			}
		})
	}
}

func TestMailpitFailures(t *testing.T) {
	implicit, implicitCert := startMailpit(t, mailpit.ImplicitTLS)
	starttls, starttlsCert := startMailpit(t, mailpit.STARTTLS)

	t.Run("wrong password", func(t *testing.T) {
		cfg := mailpitConfig(t, implicit, implicitCert, false)
		cfg.Password = "wrong-pw"
		rs := newMailer(t, cfg).Send(context.Background(), []Message{msg("x")})
		se := wantStepError(t, rs[0], StepAUTH, true, "authentication failed: check username/password")
		if se.Code != 535 {
			t.Errorf("Code = %d, want 535", se.Code)
		}
		if strings.Contains(se.Error(), "wrong-pw") {
			t.Errorf("error shows the password: %q", se)
		}
	})
	t.Run("untrusted certificate", func(t *testing.T) {
		cfg := mailpitConfig(t, implicit, implicitCert, false)
		cfg.TLSCAPEM = nil
		rs := newMailer(t, cfg).Send(context.Background(), []Message{msg("x")})
		wantStepError(t, rs[0], StepTLS, true, "set tls_ca_file")
	})
	t.Run("untrusted certificate, STARTTLS", func(t *testing.T) {
		cfg := mailpitConfig(t, starttls, starttlsCert, true)
		cfg.TLSCAPEM = nil
		rs := newMailer(t, cfg).Send(context.Background(), []Message{msg("x")})
		wantStepError(t, rs[0], StepTLS, true, "set tls_ca_file")
	})
	t.Run("wrong server name", func(t *testing.T) {
		cfg := mailpitConfig(t, implicit, implicitCert, false)
		cfg.TLSServerName = "mail.example.com"
		rs := newMailer(t, cfg).Send(context.Background(), []Message{msg("x")})
		wantStepError(t, rs[0], StepTLS, true, "set tls_server_name")
	})
	t.Run("tls_verify false", func(t *testing.T) {
		cfg := mailpitConfig(t, implicit, implicitCert, false)
		cfg.TLSCAPEM, cfg.TLSVerify = nil, false
		mustDeliver(t, newMailer(t, cfg).Send(context.Background(), []Message{msg("x")}))
	})
	t.Run("implicit TLS against a STARTTLS port", func(t *testing.T) {
		cfg := mailpitConfig(t, starttls, starttlsCert, false)
		rs := newMailer(t, cfg).Send(context.Background(), []Message{msg("x")})
		wantStepError(t, rs[0], StepTLS, true, "speaks plaintext SMTP first: set is_starttls true")
	})
	t.Run("STARTTLS against an implicit-TLS port", func(t *testing.T) {
		cfg := mailpitConfig(t, implicit, implicitCert, true)
		cfg.Timeout = 500 * time.Millisecond // the greeting never comes: the timeout ends the wait
		rs := newMailer(t, cfg).Send(context.Background(), []Message{msg("x")})
		wantStepError(t, rs[0], StepGreeting, true, "set is_starttls false")
	})
}
