package mailer

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/mail"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/smtpout/smtpout/config"
	"github.com/smtpout/smtpout/testsupport/testcert"
)

// gotMsg is a message an in-process server stored.
type gotMsg struct {
	From string
	To   []string
	Data string
}

// fakeBackend is an emersion/go-smtp backend whose replies the test chooses.
type fakeBackend struct {
	mu       sync.Mutex
	sessions int
	ended    int // sessions that logged out
	msgs     []gotMsg
	// logouts receives once per ended session.
	logouts chan struct{}
	// inData receives when Data starts (for cancellation tests).
	inData chan struct{}

	mailErr func(from string) error
	rcptErr func(to string) error
	// data is called with the message; it may return an error reply, or drop the connection.
	data func(c *smtp.Conn, body []byte) error

	// discard: count messages but do not keep them (benchmarks).
	discard bool
	stored  int

	// off turns mailErr, rcptErr and data off (the server then accepts everything).
	off atomic.Bool

	users map[string]string // AUTH credentials; nil: no AUTH
	mechs []string          // AUTH mechanisms offered (default PLAIN and LOGIN)
}

func (be *fakeBackend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	be.mu.Lock()
	be.sessions++
	be.mu.Unlock()
	s := &fakeSession{be: be, c: c}
	if be.users != nil {
		return &authSession{s}, nil
	}
	return s, nil
}

// live returns how many sessions have started and not yet ended.
func (be *fakeBackend) live() int {
	be.mu.Lock()
	defer be.mu.Unlock()
	return be.sessions - be.ended
}

func (be *fakeBackend) Sessions() int {
	be.mu.Lock()
	defer be.mu.Unlock()
	return be.sessions
}

func (be *fakeBackend) Msgs() []gotMsg {
	be.mu.Lock()
	defer be.mu.Unlock()
	return append([]gotMsg(nil), be.msgs...)
}

type fakeSession struct {
	be     *fakeBackend
	c      *smtp.Conn
	authed bool
	from   string
	to     []string
}

func (s *fakeSession) Reset() { s.from, s.to = "", nil }

func (s *fakeSession) Logout() error {
	s.be.mu.Lock()
	s.be.ended++
	s.be.mu.Unlock()
	select {
	case s.be.logouts <- struct{}{}:
	default:
	}
	return nil
}

func (s *fakeSession) Mail(from string, _ *smtp.MailOptions) error {
	if s.be.users != nil && !s.authed {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	}
	if s.be.mailErr != nil && !s.be.off.Load() {
		if err := s.be.mailErr(from); err != nil {
			return err
		}
	}
	s.from = from
	return nil
}

func (s *fakeSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if s.be.rcptErr != nil && !s.be.off.Load() {
		if err := s.be.rcptErr(to); err != nil {
			return err
		}
	}
	s.to = append(s.to, to)
	return nil
}

func (s *fakeSession) Data(r io.Reader) error {
	select {
	case s.be.inData <- struct{}{}:
	default:
	}
	body, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if s.be.data != nil && !s.be.off.Load() {
		if err := s.be.data(s.c, body); err != nil {
			return err
		}
	}
	s.be.mu.Lock()
	s.be.stored++
	if s.be.discard {
		s.be.mu.Unlock()
		return nil
	}
	s.be.msgs = append(s.be.msgs, gotMsg{From: s.from, To: append([]string(nil), s.to...), Data: string(body)})
	s.be.mu.Unlock()
	return nil
}

type authSession struct{ *fakeSession }

func (s *authSession) AuthMechanisms() []string {
	if s.be.mechs != nil {
		return s.be.mechs
	}
	return []string{sasl.Plain, sasl.Login}
}

func (s *authSession) Auth(mech string) (sasl.Server, error) {
	check := func(user, pass string) error {
		if want, ok := s.be.users[user]; !ok || want != pass {
			return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}
		}
		s.authed = true
		return nil
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(_, user, pass string) error { return check(user, pass) }), nil
	case sasl.Login:
		return &loginServer{check: check}, nil
	}
	return nil, errors.New("unsupported mechanism")
}

// loginServer is the server side of AUTH LOGIN, which go-sasl lacks.
type loginServer struct {
	step  int
	user  string
	check func(user, pass string) error
}

func (l *loginServer) Next(resp []byte) (challenge []byte, done bool, err error) {
	switch l.step {
	case 0:
		l.step++
		if resp != nil { // initial response: the user name
			l.user = string(resp)
			l.step++
			return []byte("Password:"), false, nil
		}
		return []byte("Username:"), false, nil
	case 1:
		l.step++
		l.user = string(resp)
		return []byte("Password:"), false, nil
	default:
		return nil, true, l.check(l.user, string(resp))
	}
}

// goSMTP is a running in-process go-smtp server on 127.0.0.1:0.
type goSMTP struct {
	*fakeBackend
	srv  *smtp.Server
	addr string
	cert *testcert.Cert
}

// startGoSMTP starts an implicit-TLS go-smtp server (STARTTLS when startTLS).
func startGoSMTP(t testing.TB, be *fakeBackend, startTLS bool, tune func(*smtp.Server)) *goSMTP {
	t.Helper()
	if be == nil {
		be = &fakeBackend{}
	}
	be.logouts = make(chan struct{}, 1000)
	be.inData = make(chan struct{}, 1)
	cert := testcert.New(t)
	srv := smtp.NewServer(be)
	srv.Domain = "localhost"
	srv.ReadTimeout = time.Minute
	srv.WriteTimeout = time.Minute
	srv.MaxRecipients = 50
	srv.ErrorLog = log.New(io.Discard, "", 0)
	srv.TLSConfig = cert.ServerTLS()
	if tune != nil {
		tune(srv)
	}
	var l net.Listener
	var err error
	if startTLS {
		l, err = net.Listen("tcp", "127.0.0.1:0")
	} else {
		l, err = tls.Listen("tcp", "127.0.0.1:0", cert.ServerTLS())
	}
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	return &goSMTP{fakeBackend: be, srv: srv, addr: l.Addr().String(), cert: cert}
}

// testConfig is a Config for a server on addr that trusts cert's CA, as Parse would build it.
func testConfig(t testing.TB, addr string, cert *testcert.Cert, startTLS bool) config.Config {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	var p int
	fmt.Sscan(port, &p)
	c := config.Config{
		Host:           host,
		Port:           p,
		From:           mail.Address{Address: "from@example.com"},
		To:             []mail.Address{{Address: "to@example.com"}},
		StartTLS:       startTLS,
		TLSVerify:      true,
		TLSServerName:  "localhost",
		Timeout:        10 * time.Second,
		HeloName:       "client.example.com",
		MaxConnections: 1, // tests that count connections rely on it; pool tests raise it
	}
	if cert != nil {
		c.TLSCAPEM = cert.CAPEM
	}
	return c
}

// newMailer builds a Mailer and closes it when the test ends.
func newMailer(t *testing.T, cfg config.Config, opts ...Option) *Mailer {
	t.Helper()
	m, err := New(cfg, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// msg builds a small message to the given recipients.
func msg(id string, to ...string) Message {
	if len(to) == 0 {
		to = []string{"to@example.com"}
	}
	data := "From: from@example.com\r\nTo: " + strings.Join(to, ", ") + "\r\nSubject: " + id +
		"\r\nMessage-ID: <" + id + "@example.com>\r\n\r\n{\"id\":\"" + id + "\"}\r\n.leading dot\r\n"
	return Message{ID: id + "@example.com", From: "from@example.com", To: to, Data: []byte(data)}
}

// modes are the ways a transaction can be written, each test runs in all that apply.
var modes = []struct {
	name string
	opts []Option
}{
	{"pipelining+chunking", nil},
	{"pipelining", []Option{WithoutChunking()}},
	{"lockstep", []Option{WithoutPipelining()}},
}

// scripted is a tiny implicit-TLS SMTP server that answers from a script; it can do what
// go-smtp cannot, such as rejecting the DATA command itself.
type scripted struct {
	addr string
	cert *testcert.Cert
	mu   sync.Mutex
	cmds []string // every command line received, in order, across connections
	msgs []string
	// conns counts accepted connections.
	conns int
	// reply returns the reply to a command line ("" for the default, "DROP" to close the
	// connection without one), or with line "." to the end of a DATA body (see endData); n
	// counts the messages this connection took so far.
	reply func(line string, n int) string
	ehlo  string
	done  chan struct{}
	// replyGap, when set, sends every reply line on its own, this long after the one before
	// (a server that answers slowly, one reply at a time, even to pipelined commands).
	replyGap time.Duration
}

func startScripted(t *testing.T, ehlo string, reply func(line string, n int) string) *scripted {
	t.Helper()
	cert := testcert.New(t)
	l, err := tls.Listen("tcp", "127.0.0.1:0", cert.ServerTLS())
	if err != nil {
		t.Fatal(err)
	}
	s := &scripted{addr: l.Addr().String(), cert: cert, reply: reply, ehlo: ehlo, done: make(chan struct{}, 100)}
	acceptLoop(t, l, &s.mu, &s.conns, func(c net.Conn) {
		s.serve(c)
		s.done <- struct{}{}
	})
	return s
}

// acceptLoop serves every connection l accepts with serve (closing it afterwards), counting
// them in *conns under mu; when the test ends it closes l and waits for the handlers.
func acceptLoop(t *testing.T, l net.Listener, mu *sync.Mutex, conns *int, serve func(net.Conn)) {
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			*conns++
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				serve(c)
			}()
		}
	}()
}

func (s *scripted) Cmds() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.cmds...)
}

func (s *scripted) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

func (s *scripted) serve(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(c)
	w := bufio.NewWriter(c)
	say := func(l string) {
		if s.replyGap == 0 {
			w.WriteString(l + "\r\n")
			return
		}
		for _, line := range strings.Split(l, "\r\n") { // each line of a multi-line reply
			w.Flush()
			time.Sleep(s.replyGap)
			w.WriteString(line + "\r\n")
			w.Flush()
		}
	}
	say("220 localhost scripted ESMTP")
	w.Flush()
	inMail := false
	rcpts := 0 // recipients accepted in the open transaction
	n := 0
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		s.mu.Lock()
		s.cmds = append(s.cmds, line)
		s.mu.Unlock()
		verb := strings.ToUpper(strings.SplitN(line, " ", 2)[0])
		var chunk string // BDAT: the chunk that follows the command, read whatever the reply
		if verb == "BDAT" {
			var size int
			fmt.Sscanf(line, "BDAT %d", &size)
			b := make([]byte, size)
			if _, err := io.ReadFull(r, b); err != nil {
				return
			}
			chunk = string(b)
		}
		if rep := s.reply(line, n); rep != "" {
			if rep == "DROP" {
				w.Flush() // what was answered before goes out; this command gets no reply
				return
			}
			say(rep)
			if verb == "MAIL" && rep[0] == '2' {
				inMail = true
			}
			if verb == "RCPT" && rep[0] == '2' {
				rcpts++
			}
			if verb == "DATA" && rep[:3] == "354" {
				w.Flush()
				if !s.endData(r, n, say) {
					w.Flush()
					return
				}
				n++
			}
			if rep[:3] == "421" {
				w.Flush()
				return
			}
		} else {
			switch verb {
			case "EHLO":
				say("250-localhost")
				s.mu.Lock()
				ehlo := s.ehlo // a test may change it between connections
				s.mu.Unlock()
				for _, e := range strings.Fields(ehlo) {
					say("250-" + e)
				}
				say("250 8BITMIME")
			case "MAIL":
				if inMail {
					say("503 5.5.1 nested MAIL command")
				} else {
					inMail, rcpts = true, 0
					say("250 2.1.0 ok")
				}
			case "RCPT":
				rcpts++
				say("250 2.1.5 ok")
			case "BDAT":
				// Like a strict server, a refused BDAT leaves the transaction open: only RSET
				// (or a stored message) ends it.
				if !inMail || rcpts == 0 {
					say("503 5.5.1 no valid recipients")
					break
				}
				s.mu.Lock()
				s.msgs = append(s.msgs, chunk)
				s.mu.Unlock()
				inMail = false
				n++
				say("250 2.0.0 queued")
			case "DATA":
				say("354 go ahead")
				w.Flush()
				if !s.endData(r, n, say) {
					return
				}
				inMail = false
				n++
			case "RSET":
				inMail, rcpts = false, 0
				say("250 2.0.0 reset")
			case "NOOP":
				say("250 2.0.0 ok")
			case "QUIT":
				say("221 2.0.0 bye")
				w.Flush()
				return
			default:
				say("502 5.5.2 not implemented")
			}
		}
		if r.Buffered() == 0 {
			w.Flush()
		}
	}
}

// endData reads a message after 354 and answers its final "." with s.reply(".", n): ""
// stores it with 250; "DROP" stores it and closes the connection without a reply (endData
// returns false); "HOLD" (alone or in front of another reply, "HOLD 554 ...") first waits
// until the client sends something more, so a client that waits for this reply before it
// writes the next command hangs there.
func (s *scripted) endData(r *bufio.Reader, n int, say func(string)) bool {
	s.readData(r)
	rep := s.reply(".", n)
	if rest, ok := strings.CutPrefix(rep, "HOLD"); ok {
		if _, err := r.Peek(1); err != nil {
			return false
		}
		rep = strings.TrimSpace(rest)
	}
	switch rep {
	case "DROP":
		return false
	case "":
		rep = "250 2.0.0 queued"
	}
	say(rep)
	return true
}

func (s *scripted) readData(r *bufio.Reader) {
	var b strings.Builder
	for {
		line, err := r.ReadString('\n')
		if err != nil || line == ".\r\n" {
			break
		}
		b.WriteString(line)
	}
	s.mu.Lock()
	s.msgs = append(s.msgs, b.String())
	s.mu.Unlock()
}
