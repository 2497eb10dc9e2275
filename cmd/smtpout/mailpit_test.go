package main

import (
	"bytes"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/smtpout/smtpout/output"
	"github.com/smtpout/smtpout/testsupport/mailpit"
	"github.com/smtpout/smtpout/testsupport/testcert"
)

// TestMailpit runs probe and send against a real mail server (mailpit) with STARTTLS and
// implicit TLS, AUTH, and a recipient mailpit refuses.
func TestMailpit(t *testing.T) {
	cert := testcert.New(t)
	modes := []struct {
		name  string
		mode  mailpit.TLSMode
		extra []string
		label string
	}{
		{"STARTTLS", mailpit.STARTTLS, []string{"is_starttls true"}, "(STARTTLS)"},
		{"implicit TLS", mailpit.ImplicitTLS, nil, "(implicit TLS)"},
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			mp := mailpit.Start(t, mailpit.Options{
				TLS: m.mode, CertFile: cert.CertFile, KeyFile: cert.KeyFile,
				Auth:              map[string]string{"alerts": testPassword},
				AllowedRecipients: `@corp\.com$`,
			})
			lines := append([]string{
				"tls_ca_file " + cert.CAFile, "tls_server_name localhost",
				"username alerts", "password " + testPassword, "cc_email boss@corp.com, nobody@elsewhere.org",
			}, m.extra...)
			conf := writeFile(t, t.TempDir(), "fb.conf", outputConf(mp.SMTPAddr(), lines...))

			r := runCmd(t, nil, "", "probe", "-c", conf)
			if r.code != exitOK {
				t.Fatalf("probe = %d\n%s%s", r.code, r.stdout, r.stderr)
			}
			assertInOrder(t, r.stdout, []string{
				m.label, "tls:         TLS 1.", `certificate: subject "CN=localhost"`,
				"extensions:  SIZE", "auth offers: ", "PLAIN", "auth:        PLAIN as alerts: accepted", "OK smtp.0",
			})
			if n, err := mp.Count(); err != nil || n != 0 {
				t.Errorf("after probe mailpit holds %d message(s) (err %v), want 0", n, err)
			}

			r = runCmd(t, nil, "", "send", "-c", conf, "--record", `{"msg":"from the mailpit test"}`, "--tag", "mailpit.test")
			// nobody@elsewhere.org is refused (550), so not every recipient got it: exit 1.
			if r.code != exitFail {
				t.Errorf("send = %d, want %d\n%s%s", r.code, exitFail, r.stdout, r.stderr)
			}
			assertInOrder(t, r.stdout, []string{
				": delivered", "soc@corp.com: accepted", "oncall@corp.com: accepted", "boss@corp.com: accepted",
				"nobody@elsewhere.org: rejected 550",
			})
			msgs, err := mp.WaitForCount(1, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			var to []string
			for _, a := range append(msgs[0].To, msgs[0].Cc...) {
				to = append(to, a.Address)
			}
			sort.Strings(to)
			if diff := cmp.Diff([]string{"boss@corp.com", "nobody@elsewhere.org", "oncall@corp.com", "soc@corp.com"}, to); diff != "" {
				t.Errorf("To+Cc headers (-want +got):\n%s", diff)
			}
			raw, err := mp.Raw(msgs[0].ID)
			if err != nil {
				t.Fatal(err)
			}
			if err := output.Verify(bytes.NewReader(raw), []byte(testSecret)); err != nil {
				t.Errorf("the message mailpit stored does not verify: %v", err)
			}
			if !strings.Contains(r.stdout, "<"+msgs[0].MessageID+">") {
				t.Errorf("send did not print the Message-ID mailpit stored (%s):\n%s", msgs[0].MessageID, r.stdout)
			}
			assertNoSecrets(t, r, testSecret, testPassword)
		})
	}
}
