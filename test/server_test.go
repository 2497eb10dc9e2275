package e2e

import (
	"testing"
	"time"

	"github.com/smtpout/smtpout/testsupport/mailpit"
	"github.com/smtpout/smtpout/testsupport/testcert"
)

// server is the SMTP server the scenarios deliver to: mailpit with implicit TLS and a
// certificate from a throw-away CA that the plugin is told to trust.
type server struct {
	mp   *mailpit.Server
	cert *testcert.Cert
}

// message is what the scenarios check of one received email.
type message struct {
	ID        string // mailpit's ID
	MessageID string
	Subject   string
	To        []string // bare addresses
	Text      string   // the decoded text/plain part: the JSON payload
}

// startServer starts mailpit for the test (skipped, or failed with SMTPOUT_REQUIRE_MAILPIT=1,
// when the binary is missing).
func startServer(t testing.TB) *server {
	t.Helper()
	cert := testcert.New(t)
	mp := mailpit.Start(t, mailpit.Options{TLS: mailpit.ImplicitTLS, CertFile: cert.CertFile, KeyFile: cert.KeyFile})
	return &server{mp: mp, cert: cert}
}

// keys are the configuration keys that point an instance at this server.
func (s *server) keys() map[string]string {
	return map[string]string{
		"dest_host":       s.mp.SMTPAddr(),
		"tls_ca_file":     s.cert.CAFile,
		"tls_server_name": "localhost",
	}
}

// messages returns every message the server holds.
func (s *server) messages(t testing.TB) []message {
	t.Helper()
	sums, err := s.mp.Messages()
	if err != nil {
		t.Fatal(err)
	}
	return s.full(t, sums)
}

// waitMessages waits (bounded) until the server holds at least n messages and returns all.
func (s *server) waitMessages(t testing.TB, n int) []message {
	t.Helper()
	sums, err := s.mp.WaitForCount(n, time.Minute)
	if err != nil {
		t.Fatalf("%v\nmailpit log:\n%s", err, s.mp.Log())
	}
	return s.full(t, sums)
}

func (s *server) full(t testing.TB, sums []mailpit.Summary) []message {
	t.Helper()
	out := make([]message, 0, len(sums))
	for _, sum := range sums {
		m, err := s.mp.Message(sum.ID)
		if err != nil {
			t.Fatal(err)
		}
		msg := message{ID: m.ID, MessageID: m.MessageID, Subject: m.Subject, Text: m.Text}
		for _, a := range m.To {
			msg.To = append(msg.To, a.Address)
		}
		out = append(out, msg)
	}
	return out
}

// raw returns a message's source as stored.
func (s *server) raw(t testing.TB, id string) string {
	t.Helper()
	b, err := s.mp.Raw(id)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
