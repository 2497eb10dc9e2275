package mailpit

import (
	"crypto/tls"
	"net/mail"
	"net/smtp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/smtpout/smtpout/testsupport/testcert"
)

const testMsg = "From: Sender <from@example.com>\r\n" +
	"To: A <a@example.com>\r\n" +
	"Cc: c@example.com\r\n" +
	"Subject: hello mailpit\r\n" +
	"Message-ID: <abc123@example.com>\r\n" +
	"X-Test: yes\r\n" +
	"\r\n" +
	"body line\r\n"

func TestPlainRoundTrip(t *testing.T) {
	s := Start(t, Options{})
	if s.SMTPHost() != "127.0.0.1" || s.SMTPPort() == 0 {
		t.Fatalf("SMTPHost/SMTPPort = %q/%d", s.SMTPHost(), s.SMTPPort())
	}
	if err := smtp.SendMail(s.SMTPAddr(), nil, "from@example.com",
		[]string{"a@example.com", "c@example.com", "hidden@example.com"}, []byte(testMsg)); err != nil {
		t.Fatalf("SendMail: %v", err)
	}
	msgs, err := s.WaitForCount(1, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 {
		t.Fatalf("got %d messages, want 1", len(msgs))
	}
	m, err := s.Message(msgs[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	want := &Message{
		ID:        msgs[0].ID,
		MessageID: "abc123@example.com",
		From:      &mail.Address{Name: "Sender", Address: "from@example.com"},
		To:        []*mail.Address{{Name: "A", Address: "a@example.com"}},
		Cc:        []*mail.Address{{Address: "c@example.com"}},
		Bcc:       []*mail.Address{{Address: "hidden@example.com"}},
		ReplyTo:   []*mail.Address{},
		Subject:   "hello mailpit",
		Text:      "body line",
	}
	got := *m
	got.Date, got.Size, got.HTML = time.Time{}, 0, ""
	got.Text = strings.TrimSpace(got.Text)
	if diff := cmp.Diff(want, &got); diff != "" {
		t.Errorf("Message (-want +got):\n%s", diff)
	}
	raw, err := s.Raw(m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), "X-Test: yes\r\n") {
		t.Errorf("Raw lacks the X-Test header:\n%s", raw)
	}
	h, err := s.Headers(m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"yes"}, h["X-Test"]); diff != "" {
		t.Errorf("Headers[X-Test] (-want +got):\n%s", diff)
	}
	if err := s.DeleteAll(); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Count(); err != nil || n != 0 {
		t.Errorf("Count after DeleteAll = %d, %v; want 0", n, err)
	}
}

func TestImplicitTLSWithAuth(t *testing.T) {
	cert := testcert.New(t)
	s := Start(t, Options{TLS: ImplicitTLS, CertFile: cert.CertFile, KeyFile: cert.KeyFile,
		Auth: map[string]string{"user": "s3cret"}})
	conn, err := tls.Dial("tcp", s.SMTPAddr(), cert.ClientTLS())
	if err != nil {
		t.Fatalf("TLS dial: %v", err)
	}
	c, err := smtp.NewClient(conn, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Mail("from@example.com"); err == nil {
		t.Error("MAIL before AUTH accepted; want mailpit to require AUTH")
	}
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}
	if err := c.Auth(smtp.PlainAuth("", "user", "s3cret", "localhost")); err != nil {
		t.Fatalf("AUTH: %v", err)
	}
	if err := c.Mail("from@example.com"); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("a@example.com"); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte(testMsg)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.WaitForCount(1, 10*time.Second); err != nil {
		t.Fatal(err)
	}
}
