package oauthtest

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Message is one message the SMTP server stored.
type Message struct {
	From string
	To   []string
	Data []byte
	// User is the mailbox the session authenticated as.
	User string
}

// SMTP is an implicit-TLS SMTP server offering only AUTH XOAUTH2 and OAUTHBEARER, accepting
// tokens the Endpoint issued that are live at AUTH time. Revoking tokens also ends the
// sessions that authenticated with them (421 at their next command), so a client must open
// a new connection and authenticate again.
type SMTP struct {
	// Addr is "127.0.0.1:port".
	Addr string

	// RefuseAll makes AUTH refuse every token, live or not (an app without permission).
	RefuseAll atomic.Bool

	ep  *Endpoint
	srv *smtp.Server

	mu       sync.Mutex
	msgs     []Message
	authOK   map[string]int // by mechanism
	authFail map[string]int
	reasons  []string
	sessions []*session
	notify   chan struct{}
}

// NewSMTP starts the server (certificate from ep.CA); it stops when the test ends. Options
// change the go-smtp server before it serves (ReadTimeout: how long a connection may idle).
func NewSMTP(t testing.TB, ep *Endpoint, opts ...func(*smtp.Server)) *SMTP {
	t.Helper()
	s := &SMTP{ep: ep, authOK: map[string]int{}, authFail: map[string]int{}, notify: make(chan struct{}, 1)}
	s.srv = smtp.NewServer(s)
	s.srv.Domain = "localhost"
	s.srv.ReadTimeout = 30 * time.Second
	s.srv.WriteTimeout = 30 * time.Second
	s.srv.ErrorLog = quietLog{}
	for _, o := range opts {
		o(s.srv)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", ep.CA.ServerTLS())
	if err != nil {
		t.Fatal(err)
	}
	s.Addr = ln.Addr().String()
	go func() { _ = s.srv.Serve(ln) }()
	t.Cleanup(func() { _ = s.srv.Close() })
	return s
}

type quietLog struct{}

func (quietLog) Printf(string, ...any) {}
func (quietLog) Println(...any)        {}

// Messages returns the stored messages.
func (s *SMTP) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// AuthCounts returns successful and failed AUTHs by mechanism, and why each failure failed.
func (s *SMTP) AuthCounts() (ok, failed map[string]int, reasons []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ok, failed = map[string]int{}, map[string]int{}
	for k, v := range s.authOK {
		ok[k] = v
	}
	for k, v := range s.authFail {
		failed[k] = v
	}
	return ok, failed, append([]string(nil), s.reasons...)
}

// WaitMessages waits until at least n messages are stored or within passes; it returns the
// count.
func (s *SMTP) WaitMessages(n int, within time.Duration) int {
	deadline := time.After(within)
	for {
		s.mu.Lock()
		got := len(s.msgs)
		s.mu.Unlock()
		if got >= n {
			return got
		}
		select {
		case <-s.notify:
		case <-deadline:
			return got
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Revoke revokes every token the endpoint issued so far and ends the sessions that used
// them at their next command.
func (s *SMTP) Revoke() {
	s.ep.RevokeAll()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ss := range s.sessions {
		ss.mu.Lock()
		ss.revoked = true
		ss.mu.Unlock()
	}
}

// NewSession implements smtp.Backend.
func (s *SMTP) NewSession(c *smtp.Conn) (smtp.Session, error) {
	ss := &session{srv: s}
	s.mu.Lock()
	s.sessions = append(s.sessions, ss)
	s.mu.Unlock()
	return ss, nil
}

type session struct {
	srv *SMTP

	mu      sync.Mutex
	user    string
	token   string
	revoked bool
	from    string
	to      []string
}

var (
	errAuthRequired = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 57}, Message: "Client not authenticated to send mail"}
	errRevoked      = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Token revoked, closing connection"}
	errAuthFailed   = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 3}, Message: "Authentication unsuccessful"}
)

func (ss *session) authed() error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.user == "" {
		return errAuthRequired
	}
	if ss.revoked {
		return errRevoked
	}
	return nil
}

// AuthMechanisms implements smtp.AuthSession.
func (ss *session) AuthMechanisms() []string { return []string{"XOAUTH2", "OAUTHBEARER"} }

// Auth implements smtp.AuthSession.
func (ss *session) Auth(mech string) (sasl.Server, error) {
	switch mech {
	case "XOAUTH2":
		return &xoauth2Server{ss: ss}, nil
	case "OAUTHBEARER":
		inner := sasl.NewOAuthBearerServer(func(o sasl.OAuthBearerOptions) *sasl.OAuthBearerError {
			if err := ss.login("OAUTHBEARER", o.Username, o.Token); err != nil {
				return &sasl.OAuthBearerError{Status: "invalid_token", Schemes: "bearer", Scope: ss.srv.ep.Scope}
			}
			return nil
		})
		return oauthBearerServer{inner}, nil
	}
	return nil, errors.New("unsupported mechanism")
}

// login checks a token for user and records the result.
func (ss *session) login(mech, user, token string) error {
	err := ss.srv.ep.Check(token, user)
	if err == nil && ss.srv.RefuseAll.Load() {
		err = errors.New("no permission for the mailbox")
	}
	s := ss.srv
	s.mu.Lock()
	if err != nil {
		s.authFail[mech]++
		s.reasons = append(s.reasons, mech+": "+err.Error())
	} else {
		s.authOK[mech]++
	}
	s.mu.Unlock()
	if err == nil {
		ss.mu.Lock()
		ss.user, ss.token = user, token
		ss.mu.Unlock()
	}
	return err
}

// oauthBearerServer turns go-sasl's failure after the client's %x01 into 535 5.7.3, as
// servers answer it.
type oauthBearerServer struct{ sasl.Server }

func (o oauthBearerServer) Next(resp []byte) ([]byte, bool, error) {
	ch, done, err := o.Server.Next(resp)
	var be *sasl.OAuthBearerError
	if errors.As(err, &be) {
		return nil, true, errAuthFailed
	}
	return ch, done, err
}

// xoauth2Server is the server side of XOAUTH2 as Gmail and Exchange Online run it: a refused
// token gets a 334 challenge with a JSON error, the client answers with an empty line, then
// 535 5.7.3.
type xoauth2Server struct {
	ss     *session
	failed bool
}

func (x *xoauth2Server) Next(resp []byte) ([]byte, bool, error) {
	if x.failed {
		return nil, true, errAuthFailed
	}
	if resp == nil {
		return []byte{}, false, nil
	}
	var user, token string
	for _, f := range bytes.Split(resp, []byte{1}) {
		switch {
		case bytes.HasPrefix(f, []byte("user=")):
			user = string(f[5:])
		case bytes.HasPrefix(bytes.ToLower(f), []byte("auth=bearer ")):
			token = string(f[12:])
		}
	}
	if err := x.ss.login("XOAUTH2", user, token); err != nil {
		x.failed = true
		ch, _ := json.Marshal(map[string]string{"status": "401", "schemes": "bearer", "scope": x.ss.srv.ep.Scope})
		return ch, false, nil
	}
	return nil, true, nil
}

// Mail implements smtp.Session.
func (ss *session) Mail(from string, _ *smtp.MailOptions) error {
	if err := ss.authed(); err != nil {
		return err
	}
	ss.from = from
	return nil
}

// Rcpt implements smtp.Session.
func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if err := ss.authed(); err != nil {
		return err
	}
	ss.to = append(ss.to, to)
	return nil
}

// Data implements smtp.Session.
func (ss *session) Data(r io.Reader) error {
	if err := ss.authed(); err != nil {
		return err
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s := ss.srv
	s.mu.Lock()
	s.msgs = append(s.msgs, Message{From: ss.from, To: append([]string(nil), ss.to...), Data: b, User: ss.user})
	s.mu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default:
	}
	return nil
}

// Reset implements smtp.Session.
func (ss *session) Reset() { ss.from, ss.to = "", nil }

// Logout implements smtp.Session.
func (ss *session) Logout() error { return nil }

// Header returns the value of header name in a stored message ("" when absent).
func (m Message) Header(name string) string {
	head, _, _ := strings.Cut(string(m.Data), "\r\n\r\n")
	for _, l := range strings.Split(head, "\r\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(k, name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
