package e2e

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/textproto"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/smtpout/smtpout/output"
	"github.com/smtpout/smtpout/testsupport/testcert"
)

// fault is what the fault server does to one mail transaction.
type fault int

// The faults of issue 6.
const (
	faultNone fault = iota
	// fault451: MAIL FROM is answered "451 4.3.0": try again later.
	fault451
	// fault421: MAIL FROM is answered "421 4.3.2" and the server closes the connection at once.
	fault421
	// faultDropBeforeStore: the whole message is read, then the connection is closed without a
	// reply and without storing it.
	faultDropBeforeStore
	// faultDropAfterStore: the message is stored, then the connection is closed before the
	// reply: the ambiguous case, where the client must resend and the server gets it twice.
	faultDropAfterStore
	// faultStall: the message is read, then nothing is answered until the client goes away.
	faultStall
)

// String names the fault for reports.
func (f fault) String() string {
	switch f {
	case faultNone:
		return "none"
	case fault451:
		return "451 at MAIL"
	case fault421:
		return "421 at MAIL + close"
	case faultDropBeforeStore:
		return "drop in DATA, not stored"
	case faultDropAfterStore:
		return "drop in DATA, stored (ambiguous)"
	case faultStall:
		return "stall in DATA"
	}
	return fmt.Sprintf("fault(%d)", int(f))
}

// errDropped is what Data returns after it closed the connection (nobody reads the reply).
var errDropped = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "connection dropped by the fault server"}

// faultOptions configure a fault server. The zero value accepts everything.
type faultOptions struct {
	// addr is the address to listen on; "" picks 127.0.0.1:0.
	addr string
	// cert is the server's certificate; nil generates one.
	cert *testcert.Cert
	// plan chooses the fault of each transaction, numbered from 1 in the order MAIL FROM
	// commands arrive (across connections). nil: no faults.
	plan func(tx int) fault
	// rejectRcpt maps a recipient to the reply that refuses it.
	rejectRcpt map[string]*smtp.SMTPError
	// users enables AUTH PLAIN with these credentials (then required before MAIL).
	users map[string]string
	// authRefused starts the server refusing every AUTH with 535 until acceptAuth is called.
	authRefused bool
	// delay holds each reply to a stored message back this long after storing it, as a
	// slow server does (a client killed meanwhile never hears that the message was taken).
	delay time.Duration
	// maxSessions, when set, is Exchange Online's concurrent connection limit: a session
	// beyond it is answered 432 4.3.2 Concurrent connections limit exceeded at EHLO.
	maxSessions int
	// recipientBudget, when set, is Exchange Online's recipients per rolling day: once the
	// stored messages used it up, every message is answered 554 5.2.0
	// SubmissionQuotaExceededException until rollWindow.
	recipientBudget int
	// budgetWindow, with recipientBudget, makes the budget roll by itself as Exchange's
	// rolling 24 h do, shortened: the recipients of a stored message count against the
	// budget for budgetWindow after it was stored, then they are free again. 0: the budget
	// only comes back with rollWindow.
	budgetWindow time.Duration
}

// The replies of Exchange Online's limits (../shared/FACTS.md).
var (
	errConcurrentConnections = &smtp.SMTPError{Code: 432, EnhancedCode: smtp.EnhancedCode{4, 3, 2},
		Message: "Concurrent connections limit exceeded. Visit https://aka.ms/concurrent_sending for more information. [Hostname=FAULTSERVER]"}
	errSubmissionQuota = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 2, 0},
		Message: "STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to process message due to a permanent exception with message [BeginDiagnosticData]Cannot submit message. 0.35250:0A003C85[EndDiagnosticData]"}
)

// stored is one message the fault server accepted, as the test checks it.
type stored struct {
	MessageID string   // without angle brackets
	N         int      // the record's "n" field, -1 when the payload has none (or a digest)
	Tag       string   // X-Fluent-Tag
	EnvTo     []string // envelope recipients
	VerifyErr string   // "" when the signature verifies
	Ambiguous bool     // stored and then dropped before the reply
	Helo      string   // the name the client gave in EHLO (which process sent it)
	// Digest: the email is a digest (its NDJSON part was found), carrying Records: the "n"
	// of every line, in order (a single email: its own n); Hosts the "host" field of each.
	Digest  bool
	Records []int
	Hosts   []string
	// RecordsHeader is X-Smtpout-Records (-1 when absent).
	RecordsHeader int
	// Subject, InReplyTo and References are the headers (Message-IDs without brackets).
	Subject    string
	InReplyTo  string
	References []string
	Arrived    time.Time // when the server stored it
}

// ndjsonType is the media type of a digest's records part.
const ndjsonType = "application/x-ndjson"

// parseStored reads the Message-ID, tag, threading headers and records of a machine-format
// email or a digest (its NDJSON part, one record per line, wherever it sits in the MIME
// tree) and checks its signature with output.Verify.
func parseStored(body []byte) stored {
	m := stored{N: -1, RecordsHeader: -1, Arrived: time.Now()}
	if err := output.Verify(bytes.NewReader(body), []byte(testSecretKey)); err != nil {
		m.VerifyErr = err.Error()
	}
	msg, err := mail.ReadMessage(bytes.NewReader(body))
	if err != nil {
		m.VerifyErr += "; parse: " + err.Error()
		return m
	}
	m.MessageID = strings.Trim(msg.Header.Get("Message-Id"), "<> ")
	m.Tag = msg.Header.Get("X-Fluent-Tag")
	m.Subject, _ = new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject"))
	m.InReplyTo = strings.Trim(msg.Header.Get("In-Reply-To"), "<> ")
	for _, f := range strings.Fields(msg.Header.Get("References")) {
		m.References = append(m.References, strings.Trim(f, "<>"))
	}
	if v := msg.Header.Get(output.RecordsHeader); v != "" {
		if _, err := fmt.Sscan(v, &m.RecordsHeader); err != nil {
			m.VerifyErr += fmt.Sprintf("; %s: %q", output.RecordsHeader, v)
		}
	}
	payload, digest, err := recordsPart(textproto.MIMEHeader(msg.Header), msg.Body, 0)
	if err != nil {
		m.VerifyErr += "; " + err.Error()
		return m
	}
	m.Digest = digest
	lines := [][]byte{payload}
	if digest {
		if !bytes.HasSuffix(payload, []byte("\n")) {
			m.VerifyErr += "; the NDJSON part does not end with a newline"
		}
		lines = bytes.Split(bytes.TrimSuffix(payload, []byte("\n")), []byte("\n"))
	}
	for i, line := range lines {
		var p struct {
			N    *int   `json:"n"`
			Host string `json:"host"`
		}
		if err := json.Unmarshal(line, &p); err != nil {
			m.VerifyErr += fmt.Sprintf("; payload line %d: %v", i+1, err)
			continue
		}
		if p.N != nil {
			m.Records = append(m.Records, *p.N)
			m.Hosts = append(m.Hosts, p.Host)
		}
	}
	if !digest && len(m.Records) == 1 {
		m.N = m.Records[0]
	}
	if digest && m.RecordsHeader != len(lines) {
		m.VerifyErr += fmt.Sprintf("; %s: %d for %d NDJSON lines", output.RecordsHeader, m.RecordsHeader, len(lines))
	}
	return m
}

// recordsPart returns the decoded records of an entity: the content of its NDJSON part
// (digest true) when it has one, else of a top-level text/plain body (a machine-format single
// email).
func recordsPart(h textproto.MIMEHeader, body io.Reader, depth int) (payload []byte, digest bool, err error) {
	mt, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil {
		return nil, false, fmt.Errorf("Content-Type %q: %v", h.Get("Content-Type"), err)
	}
	decoded := func() ([]byte, error) {
		var r io.Reader = body
		if strings.EqualFold(h.Get("Content-Transfer-Encoding"), "quoted-printable") {
			r = quotedprintable.NewReader(r)
		}
		return io.ReadAll(r)
	}
	switch {
	case mt == ndjsonType:
		b, err := decoded()
		if err != nil {
			err = fmt.Errorf("%s part: %v", ndjsonType, err)
		}
		return b, true, err
	case mt == "text/plain" && depth == 0:
		b, err := decoded()
		return b, false, err
	case strings.HasPrefix(mt, "multipart/") && depth < 4:
		mr := multipart.NewReader(body, params["boundary"])
		for {
			p, err := mr.NextRawPart()
			if err == io.EOF {
				return nil, false, fmt.Errorf("%s without an %s part", mt, ndjsonType)
			}
			if err != nil {
				return nil, false, fmt.Errorf("%s: %v", mt, err)
			}
			if b, ok, err := recordsPart(p.Header, p, depth+1); ok {
				return b, ok, err // other parts (the summary, the HTML) are not the records
			}
		}
	}
	return nil, false, fmt.Errorf("Content-Type %q is neither the machine format nor a digest", h.Get("Content-Type"))
}

// faultServer is an in-process emersion/go-smtp server behind implicit TLS (a certificate
// from a throw-away CA) on 127.0.0.1 that injects faults into chosen transactions and records
// what it stored, how connections ended and which commands it read.
type faultServer struct {
	t    testing.TB
	addr string
	cert *testcert.Cert
	srv  *smtp.Server
	opt  faultOptions

	authOK atomic.Bool

	mu        sync.Mutex
	changed   chan struct{} // closed and replaced on every change (see waitUntil)
	txs       int
	injected  map[fault]int
	msgs      []stored
	ambiguous map[string]int // Message-ID -> times stored then dropped
	opened    int            // sessions started
	ended     int            // sessions ended
	quits     int            // QUIT commands read
	authFails int
	stalls    int      // transactions stalled so far
	stallEnds []string // how each stall ended: "client closed", "server stopped"
	live      map[*smtp.Conn]bool
	open      int // transactions begun (MAIL accepted) and not yet answered and reset
	// With maxSessions and recipientBudget (Exchange Online): the most sessions live at once,
	// the connections refused with 432 4.3.2, the recipients left in the window and the
	// messages answered with the quota reply.
	peak         int
	refused      map[*smtp.Conn]bool
	budget       int
	quotaReplies int
	spent        []spent // with budgetWindow: the recipients counted in the window, oldest first
}

// spent is a stored message's recipients, counted against a rolling budget until at.
type spent struct {
	at         time.Time // when they stop counting
	recipients int
}

// rollWindow starts a new rolling window of the recipient budget: recipients more messages
// are accepted again.
func (fs *faultServer) rollWindow(recipients int) {
	fs.mu.Lock()
	fs.budget = recipients
	fs.notify()
	fs.mu.Unlock()
}

// takeBudget spends recipients of the recipient budget, or counts a quota reply and returns
// false when they are more than what is left. With budgetWindow, recipients spent longer ago
// than the window are given back first.
func (fs *faultServer) takeBudget(recipients int) bool {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if w := fs.opt.budgetWindow; w > 0 {
		now := time.Now()
		for len(fs.spent) > 0 && !now.Before(fs.spent[0].at) {
			fs.budget += fs.spent[0].recipients
			fs.spent = fs.spent[1:]
		}
		if fs.budget >= recipients {
			fs.spent = append(fs.spent, spent{at: now.Add(w), recipients: recipients})
		}
	}
	if fs.budget < recipients {
		fs.quotaReplies++
		fs.notify()
		return false
	}
	fs.budget -= recipients
	return true
}

// startFaultServer starts a fault server that stops when the test ends.
func startFaultServer(t testing.TB, opt faultOptions) *faultServer {
	t.Helper()
	fs := &faultServer{
		t:         t,
		cert:      opt.cert,
		opt:       opt,
		changed:   make(chan struct{}),
		injected:  make(map[fault]int),
		ambiguous: make(map[string]int),
		live:      make(map[*smtp.Conn]bool),
		refused:   make(map[*smtp.Conn]bool),
		budget:    opt.recipientBudget,
	}
	if fs.cert == nil {
		fs.cert = testcert.New(t)
	}
	fs.authOK.Store(!opt.authRefused)
	addr := opt.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	l, err := tls.Listen("tcp", addr, fs.cert.ServerTLS())
	if err != nil {
		t.Fatalf("fault server: listen on %s: %v", addr, err)
	}
	fs.addr = l.Addr().String()
	srv := smtp.NewServer(fs)
	srv.Domain = "localhost"
	srv.ReadTimeout = 2 * time.Minute
	srv.WriteTimeout = time.Minute
	srv.MaxRecipients = 50
	srv.MaxMessageBytes = 10 << 20
	// The listener hands go-smtp a wrapped connection (to see the commands), so it cannot tell
	// the connection is TLS: allow AUTH anyway, it is (implicit TLS).
	srv.AllowInsecureAuth = true
	srv.ErrorLog = log.New(io.Discard, "", 0)
	fs.srv = srv
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(tapListener{Listener: l, fs: fs})
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return fs
}

// reservePort returns a 127.0.0.1 address that nothing listens on (a port the kernel just
// handed out and that was closed again): a mail server that is down.
func reservePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// faultKeys is a valid configuration for fs delivering to "to" (the secret and timeouts of the
// other scenarios).
func faultKeys(fs *faultServer, to string) map[string]string {
	return faultKeysAt(fs.addr, fs.cert, to)
}

// faultKeysAt is faultKeys for a server that is not started yet: its address and certificate.
func faultKeysAt(addr string, cert *testcert.Cert, to string) map[string]string {
	return map[string]string{
		"dest_host":       addr,
		"tls_ca_file":     cert.CAFile,
		"tls_server_name": "localhost",
		"dest_email":      to,
		"from_email":      "Fluent Bit <fluent-bit@example.com>",
		"secret_key":      testSecretKey,
		"subject":         "Alert $TAG: $msg",
		"timeout":         "15s",
	}
}

// acceptAuth makes the server accept the configured credentials from now on.
func (fs *faultServer) acceptAuth() { fs.authOK.Store(true) }

// acceptRcpt stops refusing the recipient addr (rejectRcpt), as a greylisting server does
// after a while.
func (fs *faultServer) acceptRcpt(addr string) {
	fs.mu.Lock()
	delete(fs.opt.rejectRcpt, addr)
	fs.mu.Unlock()
}

// notify wakes waitUntil; fs.mu must be held.
func (fs *faultServer) notify() {
	close(fs.changed)
	fs.changed = make(chan struct{})
}

// waitUntil waits (at most within) until cond, called with fs.mu held, is true.
func (fs *faultServer) waitUntil(what string, within time.Duration, cond func() bool) {
	fs.t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		fs.mu.Lock()
		ok, ch := cond(), fs.changed
		fs.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			fs.t.Fatalf("fault server: not %s within %v (%s)", what, within, fs.summary())
		}
	}
}

// summary describes the server's counters on one line.
func (fs *faultServer) summary() string {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fmt.Sprintf("transactions=%d stored=%d sessions opened=%d ended=%d quits=%d auth_failures=%d stalls=%d injected=%v",
		fs.txs, len(fs.msgs), fs.opened, fs.ended, fs.quits, fs.authFails, fs.stalls, fs.injected)
}

// Stored returns what the server stored so far.
func (fs *faultServer) Stored() []stored {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return append([]stored(nil), fs.msgs...)
}

// counters is a snapshot of the server's counters.
type counters struct {
	Txs, Stored, Opened, Ended, Quits, AuthFails, Stalls int
	Injected                                             map[fault]int
	StallEnds                                            []string
	Live                                                 int
}

func (fs *faultServer) Counters() counters {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	c := counters{Txs: fs.txs, Stored: len(fs.msgs), Opened: fs.opened, Ended: fs.ended, Quits: fs.quits,
		AuthFails: fs.authFails, Stalls: fs.stalls, Injected: make(map[fault]int), Live: len(fs.live),
		StallEnds: append([]string(nil), fs.stallEnds...)}
	for k, v := range fs.injected {
		c.Injected[k] = v
	}
	return c
}

// expireIdle makes every open session time out at once, as an idle timeout does: the server
// writes "421 4.4.2 Idle timeout" and closes the connection. (Setting a read deadline instead
// races with go-smtp, which sets its own ReadTimeout before each read.) Call it only while the
// client is idle; it first waits until every transaction was answered (go-smtp resets the
// session after writing the final reply), so the 421 cannot overtake a reply the client is
// still waiting for. It returns how many sessions it expired.
func (fs *faultServer) expireIdle() int {
	fs.waitUntil("every transaction answered", 30*time.Second, func() bool { return fs.open == 0 })
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for c := range fs.live {
		_, _ = c.Conn().Write([]byte("421 4.4.2 Idle timeout, bye bye\r\n"))
		_ = c.Conn().Close()
	}
	return len(fs.live)
}

// NewSession implements smtp.Backend.
func (fs *faultServer) NewSession(c *smtp.Conn) (smtp.Session, error) {
	fs.mu.Lock()
	if fs.opt.maxSessions > 0 && len(fs.live) >= fs.opt.maxSessions {
		fs.refused[c] = true // go-mail says HELO after a refused EHLO: one connection
		fs.notify()
		fs.mu.Unlock()
		return nil, errConcurrentConnections
	}
	fs.opened++
	fs.live[c] = true
	fs.peak = max(fs.peak, len(fs.live))
	fs.notify()
	fs.mu.Unlock()
	return &faultSession{fs: fs, c: c}, nil
}

// store parses and keeps one message, sent by the client that said EHLO helo.
func (fs *faultServer) store(body []byte, to []string, helo string, ambiguous bool) {
	m := parseStored(body)
	m.EnvTo = append([]string(nil), to...)
	m.Helo = helo
	m.Ambiguous = ambiguous
	fs.mu.Lock()
	fs.msgs = append(fs.msgs, m)
	if ambiguous {
		fs.ambiguous[m.MessageID]++
	}
	fs.notify()
	fs.mu.Unlock()
}

// stall holds a transaction until the client closes the connection or the server stops.
func (fs *faultServer) stall(conn net.Conn) {
	fs.mu.Lock()
	fs.stalls++
	fs.notify()
	fs.mu.Unlock()
	// Nobody else reads the connection while the transaction waits for its reply, and the
	// client sends nothing before it: a read returns only when the connection ends.
	var buf [64]byte
	_, err := conn.Read(buf[:])
	how := "client closed"
	if errors.Is(err, net.ErrClosed) {
		how = "server stopped"
	} else if err == nil {
		how = "client sent data"
	}
	fs.mu.Lock()
	fs.stallEnds = append(fs.stallEnds, how)
	fs.notify()
	fs.mu.Unlock()
	_ = conn.Close()
}

// faultSession is one SMTP session of the fault server.
type faultSession struct {
	fs     *faultServer
	c      *smtp.Conn
	authed bool
	fault  fault
	to     []string
	inTx   bool // MAIL accepted, the transaction not yet reset (counted in fs.open)
	// dead: a fault closed the connection. go-smtp ignores the failed reply and goes on with
	// the commands it had read ahead (a pipelined client's next transactions); a real server
	// that hung up does not, so neither does this one.
	dead bool
}

// AuthMechanisms implements smtp.AuthSession: PLAIN when the server has users.
func (s *faultSession) AuthMechanisms() []string {
	if s.fs.opt.users == nil {
		return nil
	}
	return []string{sasl.Plain}
}

// Auth implements smtp.AuthSession.
func (s *faultSession) Auth(mech string) (sasl.Server, error) {
	if mech != sasl.Plain || s.fs.opt.users == nil {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(func(_, user, pass string) error {
		want, ok := s.fs.opt.users[user]
		if !s.fs.authOK.Load() || !ok || want != pass {
			s.fs.mu.Lock()
			s.fs.authFails++
			s.fs.notify()
			s.fs.mu.Unlock()
			return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}
		}
		s.authed = true
		return nil
	}), nil
}

// Mail implements smtp.Session: it numbers the transaction and applies the plan's fault.
func (s *faultSession) Mail(from string, _ *smtp.MailOptions) error {
	fs := s.fs
	if s.dead {
		return errDropped
	}
	if fs.opt.users != nil && !s.authed {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	}
	fs.mu.Lock()
	fs.txs++
	f := faultNone
	if fs.opt.plan != nil {
		f = fs.opt.plan(fs.txs)
	}
	if f != faultNone {
		fs.injected[f]++
	}
	fs.notify()
	fs.mu.Unlock()
	switch f {
	case fault451:
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Injected fault, try again later"}
	case fault421:
		// Answer and hang up at once, as a server going down does; go-smtp's own reply to
		// the error below then fails on the closed connection.
		_, _ = io.WriteString(s.c.Conn(), "421 4.3.2 Injected fault, closing connection\r\n")
		_ = s.c.Conn().Close()
		s.dead = true
		return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "Injected fault, closing connection"}
	}
	s.fault = f
	fs.mu.Lock()
	if !s.inTx {
		s.inTx = true
		fs.open++
	}
	fs.mu.Unlock()
	return nil
}

// Rcpt implements smtp.Session.
func (s *faultSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if s.dead {
		return errDropped
	}
	s.fs.mu.Lock()
	e, ok := s.fs.opt.rejectRcpt[to]
	s.fs.mu.Unlock()
	if ok {
		return e
	}
	s.to = append(s.to, to)
	return nil
}

// Data implements smtp.Session: store, or apply the transaction's fault.
func (s *faultSession) Data(r io.Reader) error {
	body, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if s.dead {
		return errDropped
	}
	switch s.fault {
	case faultDropBeforeStore:
		_ = s.c.Conn().Close()
		s.dead = true
		return errDropped
	case faultStall:
		s.fs.stall(s.c.Conn())
		s.dead = true
		return errDropped
	case faultDropAfterStore:
		s.fs.store(body, s.to, s.c.Hostname(), true)
		_ = s.c.Conn().Close()
		s.dead = true
		return errDropped
	}
	if s.fs.opt.recipientBudget > 0 && !s.fs.takeBudget(len(s.to)) {
		return errSubmissionQuota
	}
	s.fs.store(body, s.to, s.c.Hostname(), false)
	if s.fs.opt.delay > 0 {
		time.Sleep(s.fs.opt.delay)
	}
	return nil
}

// Reset implements smtp.Session.
func (s *faultSession) Reset() {
	s.fault = faultNone
	s.to = nil
	s.endTx()
}

// endTx uncounts the session's open transaction, if any.
func (s *faultSession) endTx() {
	s.fs.mu.Lock()
	defer s.fs.mu.Unlock()
	if s.inTx {
		s.inTx = false
		s.fs.open--
		s.fs.notify()
	}
}

// Logout implements smtp.Session: the session ended (QUIT or a closed connection).
func (s *faultSession) Logout() error {
	s.endTx()
	s.fs.mu.Lock()
	s.fs.ended++
	delete(s.fs.live, s.c)
	s.fs.notify()
	s.fs.mu.Unlock()
	return nil
}

// tapListener wraps the TLS listener so that the server sees each connection's plain-text
// commands (to count QUIT, which go-smtp does not report to the backend).
type tapListener struct {
	net.Listener
	fs *faultServer
}

// Accept implements net.Listener.
func (l tapListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &tapConn{Conn: c, fs: l.fs}, nil
}

// tapConn counts the QUIT lines read from a connection. Only one goroutine reads a connection
// at a time (go-smtp's, or a stall's while go-smtp waits for it).
type tapConn struct {
	net.Conn
	fs   *faultServer
	line []byte // the start of the current line (at most 8 bytes)
	long bool   // the current line is longer than that
}

// Read implements net.Conn.
func (c *tapConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	for _, b := range p[:n] {
		if b == '\n' {
			if !c.long && strings.EqualFold(strings.TrimRight(string(c.line), "\r"), "QUIT") {
				c.fs.mu.Lock()
				c.fs.quits++
				c.fs.notify()
				c.fs.mu.Unlock()
			}
			c.line, c.long = c.line[:0], false
			continue
		}
		if len(c.line) < 8 {
			c.line = append(c.line, b)
		} else {
			c.long = true
		}
	}
	return n, err
}

// delivery is what checkDelivery found at the server.
type delivery struct {
	Messages   int // messages stored
	Distinct   int // distinct Message-IDs
	Duplicates int // messages beyond the first per Message-ID (all after ambiguous drops)
	Ambiguous  int // messages stored and then dropped before the reply
	Resent     int // times the plugin said it sent an email again after an unanswered hang-up
}

// checkDelivery counts by Message-ID at the server and fails the test unless every record
// numbered in want was delivered under exactly one Message-ID, no other record arrived, every
// signature verifies, and every Message-ID arrived once, except the ones the server stored and
// then dropped before replying (ambiguous), which may arrive once more per drop.
func checkDelivery(t testing.TB, fs *faultServer, want []int) delivery {
	t.Helper()
	return checkDeliveryExplained(t, fs, want, nil)
}

// checkDeliveryExplained is checkDelivery where resent counts, per Message-ID, the times the
// plugin said it sent an email again after its connection closed unanswered: each explains
// one more copy. delivery.Resent is their total.
func checkDeliveryExplained(t testing.TB, fs *faultServer, want []int, resent map[string]int) delivery {
	t.Helper()
	msgs := fs.Stored()
	fs.mu.Lock()
	ambiguous := make(map[string]int, len(fs.ambiguous))
	for k, v := range fs.ambiguous {
		ambiguous[k] = v
	}
	fs.mu.Unlock()

	byID := make(map[string]int)
	idsOfN := make(map[int]map[string]bool)
	var d delivery
	for _, m := range msgs {
		d.Messages++
		if m.Ambiguous {
			d.Ambiguous++
		}
		if m.VerifyErr != "" {
			t.Errorf("message <%s> (n=%d): %s", m.MessageID, m.N, m.VerifyErr)
		}
		byID[m.MessageID]++
		if idsOfN[m.N] == nil {
			idsOfN[m.N] = make(map[string]bool)
		}
		idsOfN[m.N][m.MessageID] = true
	}
	d.Distinct = len(byID)
	checkCarriers(t, idsOfN, want)
	for id, c := range byID {
		if c == 1 {
			continue
		}
		d.Duplicates += c - 1
		if c > 1+ambiguous[id]+resent[id] {
			t.Errorf("Message-ID <%s> arrived %d times, but the server dropped it after storing only %d time(s) and the plugin sent it again after an unanswered hang-up %d time(s): a duplicate that nothing explains",
				id, c, ambiguous[id], resent[id])
		}
	}
	for _, n := range resent {
		d.Resent += n
	}
	return d
}

// recordTally is what checkRecords found at the server: records delivered in single emails
// and digests.
type recordTally struct {
	Emails   int // messages stored
	Singles  int // distinct Message-IDs of single emails
	Digests  int // distinct Message-IDs of digests
	Records  int // distinct records delivered
	Repeats  int // messages stored beyond the first per Message-ID (whole emails sent again)
	Largest  int // the most records in one digest
	Repeated int // of Repeats, copies of digests
}

// checkRecords fails the test unless every record numbered in want arrived in exactly one
// email (one Message-ID, single or digest, and only once inside it), no other record arrived,
// and every email's signature verifies. An email stored more than once under the same
// Message-ID is counted in Repeats, for the caller to judge.
func checkRecords(t testing.TB, fs *faultServer, want []int) recordTally {
	t.Helper()
	var c recordTally
	copies := make(map[string]int)
	carriers := make(map[int]map[string]bool) // record -> Message-IDs carrying it
	for _, m := range fs.Stored() {
		c.Emails++
		copies[m.MessageID]++
		if m.VerifyErr != "" {
			t.Errorf("message <%s> (records %v): %s", m.MessageID, head(m.Records, 5), m.VerifyErr)
		}
		if copies[m.MessageID] > 1 {
			c.Repeats++
			if m.Digest {
				c.Repeated++
			}
			continue
		}
		if m.Digest {
			c.Digests++
			c.Largest = max(c.Largest, len(m.Records))
		} else {
			c.Singles++
		}
		inThis := make(map[int]bool, len(m.Records))
		for _, n := range m.Records {
			if inThis[n] {
				t.Errorf("record %d is in message <%s> twice", n, m.MessageID)
			}
			inThis[n] = true
			if carriers[n] == nil {
				carriers[n] = make(map[string]bool)
			}
			carriers[n][m.MessageID] = true
		}
	}
	c.Records = len(want) - checkCarriers(t, carriers, want)
	return c
}

// checkCarriers fails the test unless every record numbered in want arrived under exactly one
// Message-ID (carriers: record -> the Message-IDs carrying it) and no other record arrived;
// it returns how many of want never arrived.
func checkCarriers(t testing.TB, carriers map[int]map[string]bool, want []int) int {
	t.Helper()
	wanted := make(map[int]bool, len(want))
	var missing []int
	for _, n := range want {
		wanted[n] = true
		switch ids := carriers[n]; {
		case len(ids) == 0:
			missing = append(missing, n)
		case len(ids) > 1:
			t.Errorf("record %d arrived under %d Message-IDs, want 1: %v", n, len(ids), keys(ids))
		}
	}
	if len(missing) > 0 {
		t.Errorf("%d of %d records never arrived: %v", len(missing), len(want), head(missing, 20))
	}
	var extra []int
	for n := range carriers {
		if !wanted[n] {
			extra = append(extra, n)
		}
	}
	if len(extra) > 0 {
		sort.Ints(extra)
		t.Errorf("records that were never sent arrived: %v", head(extra, 20))
	}
	return len(missing)
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func head(s []int, n int) []int {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// span returns first, first+1, ..., first+count-1.
func span(first, count int) []int {
	out := make([]int, count)
	for i := range out {
		out[i] = first + i
	}
	return out
}

// errRecorder is a testing.TB that keeps the errors reported to it instead of failing.
type errRecorder struct {
	testing.TB
	errs []string
}

func (r *errRecorder) Helper() {}

func (r *errRecorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

// check fails t unless the recorded errors are as many as want and each contains its
// counterpart in want, in order.
func (r *errRecorder) check(t *testing.T, want []string) {
	t.Helper()
	if len(r.errs) != len(want) {
		t.Fatalf("errors %q, want %d matching %q", r.errs, len(want), want)
	}
	for i, w := range want {
		if !strings.Contains(r.errs[i], w) {
			t.Errorf("error %d = %q, want it to contain %q", i, r.errs[i], w)
		}
	}
}

// TestCheckRecordsCatchesLossAndRecordsInTwoEmails shows that checkRecords, on which the
// digest scenarios rely, fails on each kind of wrong delivery across single emails and
// digests, and counts whole emails sent again as repeats.
func TestCheckRecordsCatchesLossAndRecordsInTwoEmails(t *testing.T) {
	single := func(id string, n int) stored { return stored{MessageID: id, N: n, Records: []int{n}} }
	digest := func(id string, ns ...int) stored { return stored{MessageID: id, N: -1, Digest: true, Records: ns} }
	for _, tc := range []struct {
		name     string
		msgs     []stored
		wantErrs []string // a substring of each error, in order
		want     recordTally
	}{
		{"single then digest", []stored{single("a", 1), digest("d", 2, 3)}, nil,
			recordTally{Emails: 2, Singles: 1, Digests: 1, Records: 3, Largest: 2}},
		{"a digest sent twice", []stored{single("a", 1), digest("d", 2, 3), digest("d", 2, 3)}, nil,
			recordTally{Emails: 3, Singles: 1, Digests: 1, Records: 3, Largest: 2, Repeats: 1, Repeated: 1}},
		{"one lost", []stored{single("a", 1), digest("d", 2)}, []string{"1 of 3 records never arrived: [3]"},
			recordTally{Emails: 2, Singles: 1, Digests: 1, Records: 2, Largest: 1}},
		{"single and in a digest", []stored{single("a", 1), digest("d", 1, 2, 3)},
			[]string{"record 1 arrived under 2 Message-IDs"}, recordTally{Emails: 2, Singles: 1, Digests: 1, Records: 3, Largest: 3}},
		{"twice in one digest", []stored{digest("d", 1, 2, 2, 3)}, []string{"record 2 is in message <d> twice"},
			recordTally{Emails: 1, Digests: 1, Records: 3, Largest: 4}},
		{"a record never sent", []stored{digest("d", 1, 2, 3, 9)}, []string{"records that were never sent arrived: [9]"},
			recordTally{Emails: 1, Digests: 1, Records: 3, Largest: 4}},
		{"bad signature", []stored{single("a", 1), {MessageID: "d", Digest: true, Records: []int{2, 3}, VerifyErr: "signature does not match"}},
			[]string{"message <d> (records [2 3]): signature does not match"}, recordTally{Emails: 2, Singles: 1, Digests: 1, Records: 3, Largest: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := &faultServer{msgs: tc.msgs}
			rec := &errRecorder{TB: t}
			got := checkRecords(rec, fs, []int{1, 2, 3})
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("tally (-want +got):\n%s", diff)
			}
			rec.check(t, tc.wantErrs)
		})
	}
}

// TestCheckDeliveryCatchesLossAndUnexplainedDuplicates shows that checkDelivery, on which every
// fault scenario relies, fails on each kind of wrong delivery.
func TestCheckDeliveryCatchesLossAndUnexplainedDuplicates(t *testing.T) {
	ok := func(id string, n int) stored { return stored{MessageID: id, N: n} }
	for _, tc := range []struct {
		name      string
		msgs      []stored
		ambiguous map[string]int
		wantErrs  []string // a substring of each error, in order
		want      delivery
	}{
		{"all once", []stored{ok("a", 1), ok("b", 2)}, nil, nil, delivery{Messages: 2, Distinct: 2}},
		{"one lost", []stored{ok("a", 1)}, nil, []string{"1 of 2 records never arrived: [2]"}, delivery{Messages: 1, Distinct: 1}},
		{"unexplained duplicate", []stored{ok("a", 1), ok("b", 2), ok("b", 2)}, nil,
			[]string{"Message-ID <b> arrived 2 times"}, delivery{Messages: 3, Distinct: 2, Duplicates: 1}},
		{"duplicate after an ambiguous drop", []stored{ok("a", 1), {MessageID: "b", N: 2, Ambiguous: true}, ok("b", 2)},
			map[string]int{"b": 1}, nil, delivery{Messages: 3, Distinct: 2, Duplicates: 1, Ambiguous: 1}},
		{"three copies after one drop", []stored{ok("a", 1), {MessageID: "b", N: 2, Ambiguous: true}, ok("b", 2), ok("b", 2)},
			map[string]int{"b": 1}, []string{"Message-ID <b> arrived 3 times"}, delivery{Messages: 4, Distinct: 2, Duplicates: 2, Ambiguous: 1}},
		{"same record, two Message-IDs", []stored{ok("a", 1), ok("b", 2), ok("c", 2)}, nil,
			[]string{"record 2 arrived under 2 Message-IDs"}, delivery{Messages: 3, Distinct: 3}},
		{"a record never sent", []stored{ok("a", 1), ok("b", 2), ok("z", 9)}, nil,
			[]string{"records that were never sent arrived: [9]"}, delivery{Messages: 3, Distinct: 3}},
		{"bad signature", []stored{ok("a", 1), {MessageID: "b", N: 2, VerifyErr: "signature does not match"}}, nil,
			[]string{"message <b> (n=2): signature does not match"}, delivery{Messages: 2, Distinct: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := &faultServer{msgs: tc.msgs, ambiguous: tc.ambiguous}
			rec := &errRecorder{TB: t}
			got := checkDelivery(rec, fs, []int{1, 2})
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("delivery (-want +got):\n%s", diff)
			}
			rec.check(t, tc.wantErrs)
		})
	}
}

// TestParseStoredReadsDigests: parseStored finds a digest's NDJSON part inside multipart
// entities (machine and readable layouts) and reads every line's record, the record count
// header and the threading headers.
func TestParseStoredReadsDigests(t *testing.T) {
	ndjson := "{\"host\":\"web-1\",\"n\":7}\n{\"host\":\"web-1\",\"n\":8}\n"
	part := "Content-Type: application/x-ndjson; charset=UTF-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" +
		strings.ReplaceAll(ndjson, "\n", "\r\n") + "\r\n"
	head := "Message-ID: <d1@example.com>\r\nIn-Reply-To: <root@example.com>\r\nReferences: <root@example.com>\r\n" +
		"Subject: Alert app: first\r\nX-Smtpout-Records: 2\r\nMIME-Version: 1.0\r\n"
	machine := head + "Content-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n2 records\r\n--b1\r\n" +
		part + "--b1--\r\n"
	readable := head + "Content-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\nContent-Type: multipart/alternative; boundary=b2\r\n\r\n" +
		"--b2\r\nContent-Type: text/plain\r\n\r\n2 records\r\n--b2\r\nContent-Type: text/html\r\n\r\n<p>2 records</p>\r\n--b2--\r\n--b1\r\n" +
		part + "--b1--\r\n"
	want := stored{MessageID: "d1@example.com", N: -1, Digest: true, Records: []int{7, 8}, Hosts: []string{"web-1", "web-1"},
		RecordsHeader: 2, Subject: "Alert app: first", InReplyTo: "root@example.com", References: []string{"root@example.com"}}
	for name, raw := range map[string]string{"machine": machine, "readable": readable} {
		got := parseStored([]byte(raw))
		// The hand-made digests carry no signature: only that error is expected.
		if !strings.Contains(got.VerifyErr, "no X-Smtpout-Signature") || strings.Contains(got.VerifyErr, ";") {
			t.Errorf("%s: VerifyErr %q, want only the missing signature", name, got.VerifyErr)
		}
		if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(stored{}, "VerifyErr", "Arrived")); diff != "" {
			t.Errorf("%s: parseStored (-want +got):\n%s", name, diff)
		}
	}
}

// TestRecipientBudgetRolls: with budgetWindow, recipients spent come back once the window
// has passed since they were spent, never earlier.
func TestRecipientBudgetRolls(t *testing.T) {
	const window = 300 * time.Millisecond
	fs := &faultServer{opt: faultOptions{recipientBudget: 2, budgetWindow: window}, budget: 2, changed: make(chan struct{})}
	began := time.Now()
	if !fs.takeBudget(1) || !fs.takeBudget(1) {
		t.Fatal("the first two recipients were refused, want the budget of 2 taken")
	}
	if fs.takeBudget(1) {
		t.Fatal("a third recipient was taken, want the quota reply")
	}
	for !fs.takeBudget(1) {
		if time.Since(began) > time.Minute {
			t.Fatal("the budget never rolled")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if took := time.Since(began); took < window {
		t.Errorf("a recipient came back after %v, before the window of %v passed", took, window)
	}
	if fs.quotaReplies == 0 {
		t.Error("no quota reply counted")
	}
}
