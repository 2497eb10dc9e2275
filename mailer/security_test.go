package mailer

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"io"
	"log"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/smtpout/smtpout/testsupport/testcert"
)

// Credentials of the security tests; neither may ever reach a server before TLS.
const (
	secUser = "sec-user"
	secPass = "Pl41ntext-N3ver"
)

// plainServer is a raw TCP server that speaks plaintext SMTP, records every byte it receives,
// and answers each command line from its script.
type plainServer struct {
	addr string
	ehlo []string // EHLO keywords advertised after the greeting line
	// reply returns the reply to a command line ("" for the default), and whether the server
	// then stops reading lines (hands the connection over to raw bytes, as after STARTTLS).
	reply func(line string) (rep string, raw bool)

	mu    sync.Mutex
	got   []byte // every byte received, across connections
	done  chan struct{}
	conns int
}

func startPlain(t *testing.T, ehlo []string, reply func(string) (string, bool)) *plainServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &plainServer{addr: l.Addr().String(), ehlo: ehlo, reply: reply, done: make(chan struct{}, 16)}
	acceptLoop(t, l, &s.mu, &s.conns, func(c net.Conn) {
		defer func() { s.done <- struct{}{} }() // after the close: done means disconnected
		defer c.Close()
		s.serve(c)
	})
	return s
}

func (s *plainServer) record(b []byte) {
	s.mu.Lock()
	s.got = append(s.got, b...)
	s.mu.Unlock()
}

func (s *plainServer) serve(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(c)
	say := func(l string) { _, _ = io.WriteString(c, l+"\r\n") }
	say("220 localhost plaintext ESMTP")
	for {
		line, err := r.ReadString('\n')
		s.record([]byte(line))
		if err != nil {
			return
		}
		cmd := strings.TrimRight(line, "\r\n")
		verb := strings.ToUpper(strings.SplitN(cmd, " ", 2)[0])
		if rep, raw := s.reply(cmd); rep != "" || raw {
			if rep != "" {
				say(rep)
			}
			if raw {
				// Whatever comes now (a TLS ClientHello) is recorded and answered in plaintext
				// until the client gives up.
				buf := make([]byte, 4096)
				for {
					n, err := r.Read(buf)
					s.record(buf[:n])
					if err != nil {
						return
					}
					say("250 AUTH PLAIN LOGIN")
				}
			}
			continue
		}
		switch verb {
		case "EHLO", "HELO":
			for _, e := range s.ehlo {
				say("250-" + e)
			}
			say("250 8BITMIME")
		case "QUIT":
			say("221 2.0.0 bye")
			return
		case "AUTH":
			// The test has already failed if this is reached; answer so the client goes on.
			say("235 2.7.0 accepted")
		default:
			say("250 2.0.0 ok")
		}
	}
}

// received returns every byte the server got.
func (s *plainServer) received() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return string(s.got)
}

// wait waits until the server has seen n connections end.
func (s *plainServer) wait(t *testing.T, n int) {
	t.Helper()
	for range n {
		select {
		case <-s.done:
		case <-time.After(15 * time.Second):
			t.Fatalf("the client did not close its connection")
		}
	}
}

// credentialForms are the ways AUTH PLAIN and LOGIN put the credentials on the wire.
func credentialForms() []string {
	b64 := base64.StdEncoding.EncodeToString
	return []string{
		"AUTH", secPass, b64([]byte(secPass)), b64([]byte(secUser)),
		b64([]byte("\x00" + secUser + "\x00" + secPass)),
	}
}

// TestNoAuthBeforeTLS runs the mailer, with credentials, against a server that speaks
// plaintext SMTP and offers AUTH: whatever the TLS mode and whatever the server does about
// STARTTLS, no AUTH command and no credential ever reaches it, and the error is a TLS or
// STARTTLS operator error.
func TestNoAuthBeforeTLS(t *testing.T) {
	tests := []struct {
		name     string
		startTLS bool
		ehlo     []string
		reply    func(string) (string, bool)
		wantStep Step
		wantHint string
		wantEHLO bool // the client got as far as EHLO
	}{
		{
			name: "is_starttls, server offers AUTH but no STARTTLS", startTLS: true,
			ehlo:     []string{"localhost", "AUTH PLAIN LOGIN", "PIPELINING"},
			reply:    func(string) (string, bool) { return "", false },
			wantStep: StepSTARTTLS, wantHint: "TLS is mandatory", wantEHLO: true,
		},
		{
			name: "is_starttls, STARTTLS refused with 454", startTLS: true,
			ehlo: []string{"localhost", "STARTTLS", "AUTH PLAIN LOGIN"},
			reply: func(l string) (string, bool) {
				if strings.EqualFold(l, "STARTTLS") {
					return "454 4.7.0 TLS not available due to temporary reason", false
				}
				return "", false
			},
			wantStep: StepSTARTTLS, wantEHLO: true,
		},
		{
			name: "is_starttls, STARTTLS accepted but no TLS follows", startTLS: true,
			ehlo: []string{"localhost", "STARTTLS", "AUTH PLAIN LOGIN"},
			reply: func(l string) (string, bool) {
				if strings.EqualFold(l, "STARTTLS") {
					return "220 2.0.0 go ahead", true // then plaintext, not a handshake
				}
				return "", false
			},
			wantStep: StepTLS, wantEHLO: true,
		},
		{
			name: "implicit TLS against a plaintext server", startTLS: false,
			ehlo:     []string{"localhost", "AUTH PLAIN LOGIN"},
			reply:    func(string) (string, bool) { return "", false },
			wantStep: StepTLS, wantHint: "set is_starttls true",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := startPlain(t, tc.ehlo, tc.reply)
			cfg := testConfig(t, srv.addr, nil, tc.startTLS)
			cfg.Username, cfg.Password = secUser, secPass
			m := newMailer(t, cfg)

			rs := m.Send(context.Background(), []Message{msg("m1")})

			var se *StepError
			if !errors.As(rs[0].Err, &se) || rs[0].Outcome != Retry || se.Step != tc.wantStep {
				t.Fatalf("Send: %v, %v; want Retry with a %s error", rs[0].Outcome, rs[0].Err, tc.wantStep)
			}
			t.Logf("error: %s", se)
			if tc.wantHint != "" && (!se.Operator() || !strings.Contains(se.Error(), tc.wantHint)) {
				t.Errorf("error %q: want an operator error with hint %q", se, tc.wantHint)
			}
			m.Close()
			srv.wait(t, 1)
			got := srv.received()
			if tc.wantEHLO != strings.Contains(got, "EHLO client.example.com") {
				t.Errorf("server received %q: EHLO expected %v", got, tc.wantEHLO)
			}
			for _, f := range credentialForms() {
				if strings.Contains(got, f) {
					t.Errorf("server received %q before TLS:\n%q", f, got)
				}
			}
			for _, bad := range []string{"MAIL FROM", "RCPT TO", "DATA", "BDAT"} {
				if strings.Contains(got, bad) {
					t.Errorf("server received %s in plaintext:\n%q", bad, got)
				}
			}
		})
	}
}

// startTLSServer starts a go-smtp server whose TLS (implicit, or STARTTLS when startTLS) uses
// cfg.
func startTLSServer(t *testing.T, be *fakeBackend, startTLS bool, cfg *tls.Config) string {
	t.Helper()
	be.logouts = make(chan struct{}, 1000)
	be.inData = make(chan struct{}, 1)
	srv := smtp.NewServer(be)
	srv.Domain = "localhost"
	srv.ReadTimeout, srv.WriteTimeout = time.Minute, time.Minute
	srv.ErrorLog = log.New(io.Discard, "", 0)
	srv.TLSConfig = cfg
	var l net.Listener
	var err error
	if startTLS {
		l, err = net.Listen("tcp", "127.0.0.1:0")
	} else {
		l, err = tls.Listen("tcp", "127.0.0.1:0", cfg)
	}
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// TestTLSBelow12Refused runs the mailer against servers that speak at most TLS 1.1: the
// handshake fails at the TLS step and nothing is sent; the same server allowed TLS 1.2
// delivers.
func TestTLSBelow12Refused(t *testing.T) {
	cert := testcert.New(t)
	for _, startTLS := range []bool{false, true} {
		name := "implicit"
		if startTLS {
			name = "starttls"
		}
		t.Run(name, func(t *testing.T) {
			old := cert.ServerTLS()
			old.MinVersion, old.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
			be := &fakeBackend{users: map[string]string{secUser: secPass}}
			addr := startTLSServer(t, be, startTLS, old)
			if !startTLS {
				// The server really speaks TLS 1.1 to a client that allows it.
				c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: cert.Pool, ServerName: "localhost", MinVersion: tls.VersionTLS10})
				if err != nil {
					t.Fatalf("TLS 1.1 client: %v", err)
				}
				if v := c.ConnectionState().Version; v != tls.VersionTLS11 {
					t.Fatalf("server negotiated %x, want TLS 1.1", v)
				}
				c.Close()
			}
			cfg := testConfig(t, addr, cert, startTLS)
			cfg.Username, cfg.Password = secUser, secPass
			m := newMailer(t, cfg)
			rs := m.Send(context.Background(), []Message{msg("m1")})
			var se *StepError
			if !errors.As(rs[0].Err, &se) || rs[0].Outcome != Retry || se.Step != StepTLS {
				t.Fatalf("Send to a TLS 1.1 server: %v, %v; want Retry with a TLS error", rs[0].Outcome, rs[0].Err)
			}
			t.Logf("error: %s", se)
			if !strings.Contains(strings.ToLower(se.Error()), "version") {
				t.Errorf("error %q does not say the protocol version is the problem", se)
			}
			if !se.Operator() || !strings.Contains(se.Hint, "TLS 1.2") {
				t.Errorf("error %q: Operator()=%v, hint %q; want an operator error whose hint names TLS 1.2", se, se.Operator(), se.Hint)
			}
			if n := len(be.Msgs()); n != 0 {
				t.Errorf("server stored %d messages over TLS 1.1", n)
			}

			modern := cert.ServerTLS()
			modern.MinVersion, modern.MaxVersion = tls.VersionTLS10, tls.VersionTLS12
			be2 := &fakeBackend{users: map[string]string{secUser: secPass}}
			cfg2 := testConfig(t, startTLSServer(t, be2, startTLS, modern), cert, startTLS)
			cfg2.Username, cfg2.Password = secUser, secPass
			mustDeliver(t, newMailer(t, cfg2).Send(context.Background(), []Message{msg("m2")}))
			if n := len(be2.Msgs()); n != 1 {
				t.Errorf("TLS 1.2 server stored %d messages, want 1", n)
			}
		})
	}
}

// TestUnverifiableCertificateRefused runs the mailer against a server whose certificate it
// cannot verify (unknown authority; a name it is not valid for): refused at the TLS step with
// a hint, nothing sent, unless tls_verify is false.
func TestUnverifiableCertificateRefused(t *testing.T) {
	for _, startTLS := range []bool{false, true} {
		for _, tc := range []struct {
			name       string
			trustCA    bool
			serverName string
			hint       string
		}{
			{"unknown authority", false, "localhost", "set tls_ca_file"},
			{"wrong name", true, "mail.wrong.example", "set tls_server_name"},
		} {
			mode := "implicit"
			if startTLS {
				mode = "starttls"
			}
			t.Run(mode+"/"+tc.name, func(t *testing.T) {
				be := &fakeBackend{users: map[string]string{secUser: secPass}}
				cert := testcert.New(t)
				addr := startTLSServer(t, be, startTLS, cert.ServerTLS())
				cfg := testConfig(t, addr, nil, startTLS)
				if tc.trustCA {
					cfg.TLSCAPEM = cert.CAPEM
				}
				cfg.TLSServerName = tc.serverName
				cfg.Username, cfg.Password = secUser, secPass

				rs := newMailer(t, cfg).Send(context.Background(), []Message{msg("m1")})
				var se *StepError
				if !errors.As(rs[0].Err, &se) || rs[0].Outcome != Retry || se.Step != StepTLS || !se.Operator() {
					t.Fatalf("Send: %v, %v; want Retry with a TLS operator error", rs[0].Outcome, rs[0].Err)
				}
				t.Logf("error: %s", se)
				if !strings.Contains(se.Error(), tc.hint) {
					t.Errorf("error %q lacks the hint %q", se, tc.hint)
				}
				if n := len(be.Msgs()); n != 0 {
					t.Errorf("server stored %d messages from an unverified connection", n)
				}

				cfg.TLSVerify = false
				mustDeliver(t, newMailer(t, cfg).Send(context.Background(), []Message{msg("m2")}))
				if n := len(be.Msgs()); n != 1 {
					t.Errorf("with tls_verify false the server stored %d messages, want 1", n)
				}
			})
		}
	}
}
