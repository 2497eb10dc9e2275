package mailer

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/wneessen/go-mail/smtp"

	"github.com/smtpout/smtpout/oauth"
)

// session is one SMTP connection: opened (TLS, EHLO, AUTH) with go-mail's smtp.Client, which
// then carries the transactions this package writes itself on the same textproto.Conn.
type session struct {
	m      *Mailer
	raw    net.Conn // the TCP connection: deadlines and the final close go here
	client *smtp.Client

	pipelining bool
	chunking   bool
	size       bool
	utf8       bool

	lastUsed time.Time
	// txs counts the transactions this connection has carried (successful or not).
	txs int
	// broken is set when the connection can no longer be trusted; it is then closed.
	broken bool
	// group buffers a group of pipelined transactions (sendGroup) in front of the
	// textproto writer; nil until the first group.
	group *bufio.Writer
	// open is the transaction whose DATA the server answered with 354 and whose body has not
	// been written yet (send with keepOpen; bodyThen writes it). A session is never pooled
	// while it holds one.
	open *openTx
	// opened holds what open points to, so that keeping a transaction open allocates nothing.
	opened openTx
	// replies reads the server's replies (readReply).
	replies replyReader
}

// openTx is a transaction waiting for its body: the message and what its envelope got.
type openTx struct {
	msg *Message
	t   tx
}

// groupBuffer is the size of a session's group buffer: a group of up to maxGroupBytes of
// messages and their commands leaves in one write.
const groupBuffer = maxGroupBytes + 4096

// deadline arms the connection's deadline for one step and reports a cancelled context. The
// check comes after SetDeadline so a cancellation racing with it still wins (see watch).
func (s *session) deadline(ctx context.Context) error {
	if err := s.raw.SetDeadline(time.Now().Add(s.m.timeout)); err != nil {
		return err
	}
	return ctx.Err()
}

// watch makes ctx's cancellation abort any blocked I/O on s at once. Call the returned stop
// when the session is no longer used under ctx.
func (s *session) watch(ctx context.Context) (stop func() bool) {
	return context.AfterFunc(ctx, func() { _ = s.raw.SetDeadline(time.Unix(1, 0)) })
}

// text returns the current textproto.Conn (STARTTLS replaces it).
func (s *session) text() *textproto.Conn { return s.client.Text }

// dial opens, secures and authenticates a new connection. On error nothing stays open. With a
// token source the token comes first: while the source fails or backs off (a refused token
// included), no connection is opened at all.
func (m *Mailer) dial(ctx context.Context) (_ *session, err error) {
	if m.tokens != nil {
		if _, err := m.tokens.Token(ctx); err != nil {
			return nil, tokenStepError(err)
		}
	}
	return m.openAuthenticated(ctx, nil)
}

// openAuthenticated is open, and when the server refuses the OAuth token: tell the token
// source, and when it allows (the first refusal in a row) fetch a new token and try once more
// on a new connection. A refusal that ends it comes back with a hint, and the token source
// keeps that error for its back-off. Every TCP connection opened is counted here, once.
func (m *Mailer) openAuthenticated(ctx context.Context, pr *ProbeResult) (*session, error) {
	for attempt := 0; ; attempt++ {
		m.dials.Add(1)
		s, err := m.open(ctx, pr)
		var se *StepError
		if err == nil || m.tokens == nil || !errors.As(err, &se) || !se.refused {
			return s, err
		}
		// What the token source keeps and the caller gets: no token in it.
		kept := *se
		kept.refused, kept.token = false, oauth.Token{}
		kept.Hint = refusalHint(m.tlsConfig.ServerName, se.token.Value, se.challenge)
		if again := m.tokens.Refused(se.token, &kept); !again || attempt > 0 {
			return nil, &kept
		}
		pr.retried()
	}
}

// open is dial, noting in pr (when not nil) what each step learnt as it completes: Probe
// uses it, so a probe runs exactly the code that sending runs.
func (m *Mailer) open(ctx context.Context, pr *ProbeResult) (_ *session, err error) {
	addr := m.addr
	d := net.Dialer{Timeout: m.timeout}
	start := time.Now()
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, &StepError{Step: StepDial, Addr: addr, Err: ctxError(ctx, err)}
	}
	pr.connected(raw, time.Since(start))
	s := &session{m: m, raw: raw}
	stop := s.watch(ctx)
	defer stop()
	defer func() {
		if err != nil {
			s.close()
		}
	}()

	conn := newRawConn(raw)
	if !m.startTLS {
		tc := tls.Client(conn, m.tlsConfig)
		if err := s.deadline(ctx); err != nil {
			return nil, &StepError{Step: StepTLS, Addr: addr, Err: err}
		}
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, tlsError(StepTLS, addr, m.tlsConfig.ServerName, false, ctxError(ctx, err))
		}
		conn = tc
		pr.secured(StepTLS, tc.ConnectionState())
	}

	if err := s.deadline(ctx); err != nil {
		return nil, &StepError{Step: StepGreeting, Addr: addr, Err: err}
	}
	// NewClient reads the greeting; the name is the one PLAIN/LOGIN compare with their own.
	c, err := smtp.NewClient(conn, m.tlsConfig.ServerName)
	if err != nil {
		return nil, greetingError(addr, m.startTLS, ctxError(ctx, err))
	}
	s.client = c
	pr.step(StepGreeting)

	if err := s.deadline(ctx); err != nil {
		return nil, &StepError{Step: StepEHLO, Addr: addr, Err: err}
	}
	if err := c.Hello(m.helo); err != nil {
		return nil, replyError(StepEHLO, addr, ctxError(ctx, err))
	}
	pr.greeted(c)

	if m.startTLS {
		if ok, _ := c.Extension("STARTTLS"); !ok {
			return nil, &StepError{Step: StepSTARTTLS, Addr: addr, operator: true,
				Err:  errors.New("server does not offer STARTTLS"),
				Hint: "is_starttls is true and TLS is mandatory: if the port expects implicit TLS, set is_starttls false"}
		}
		if err := s.deadline(ctx); err != nil {
			return nil, &StepError{Step: StepSTARTTLS, Addr: addr, Err: err}
		}
		if err := c.StartTLS(m.tlsConfig); err != nil {
			err = ctxError(ctx, err)
			if _, isTLS := c.TLSConnectionState(); isTLS {
				// STARTTLS was accepted: the handshake or the EHLO after it failed.
				return nil, tlsError(StepTLS, addr, m.tlsConfig.ServerName, true, err)
			}
			return nil, replyError(StepSTARTTLS, addr, err)
		}
		if st, ok := c.TLSConnectionState(); ok {
			pr.secured(StepSTARTTLS, st)
		}
		pr.greeted(c) // the EHLO after STARTTLS
	}

	if m.username != "" {
		pr.authenticating(m.mech)
		if err := s.auth(ctx, pr); err != nil {
			return nil, err
		}
		pr.step(StepAUTH)
	}

	s.pipelining, _ = c.Extension("PIPELINING")
	s.pipelining = s.pipelining && m.pipelining
	s.chunking, _ = c.Extension("CHUNKING")
	s.chunking = s.chunking && m.chunking && s.pipelining
	s.size, _ = c.Extension("SIZE")
	s.utf8, _ = c.Extension("SMTPUTF8")
	s.lastUsed = time.Now()
	return s, nil
}

// auth runs AUTH with the configured mechanism, refusing to go on without it.
func (s *session) auth(ctx context.Context, pr *ProbeResult) error {
	m, addr := s.m, s.m.addr
	want := m.mech
	ok, offered := s.client.Extension("AUTH")
	if !ok {
		return &StepError{Step: StepAUTH, Addr: addr, operator: true,
			Err:  errors.New("server offers no AUTH"),
			Hint: "username is set but the server does not offer authentication: remove username/password or check the server"}
	}
	mechs := strings.Fields(strings.ToUpper(offered))
	if !contains(mechs, want) {
		se := &StepError{Step: StepAUTH, Addr: addr, operator: true,
			Err: fmt.Errorf("server does not offer AUTH %s (offers %s)", want, strings.Join(mechs, " "))}
		switch {
		case m.tokens != nil && want == "XOAUTH2" && contains(mechs, "OAUTHBEARER"):
			se.Hint = "the server offers OAUTHBEARER: set auth_mechanism oauthbearer"
		case m.tokens != nil && want == "OAUTHBEARER" && contains(mechs, "XOAUTH2"):
			se.Hint = "the server offers XOAUTH2: set auth_mechanism xoauth2"
		case m.tokens != nil:
			se.Hint = "the server does not take OAuth tokens here: check dest_host, or use auth_mechanism plain/login"
		case want == "PLAIN" && contains(mechs, "LOGIN"):
			se.Hint = "the server offers LOGIN: set is_authlogin true"
		case want == "LOGIN" && contains(mechs, "PLAIN"):
			se.Hint = "the server offers PLAIN: set is_authlogin false"
		default:
			se.Hint = "only PLAIN, LOGIN, XOAUTH2 and OAUTHBEARER are supported"
		}
		return se
	}
	if m.tokens != nil {
		return s.tokenAuthenticate(ctx, want, pr)
	}
	var a smtp.Auth
	if m.authLogin {
		a = smtp.LoginAuth(m.username, m.password.Reveal(), m.tlsConfig.ServerName, false)
	} else {
		a = smtp.PlainAuth("", m.username, m.password.Reveal(), m.tlsConfig.ServerName, false)
	}
	if err := s.deadline(ctx); err != nil {
		return &StepError{Step: StepAUTH, Addr: addr, Err: err}
	}
	if err := s.client.Auth(a); err != nil {
		se := replyError(StepAUTH, addr, ctxError(ctx, err))
		if se.Code >= 500 || se.Code == 0 && !timeout(err) && !errors.Is(err, context.Canceled) {
			se.operator = true
		}
		if se.Code >= 500 {
			m.authFailures.Add(1)
		}
		switch {
		case se.Code == 535:
			se.Hint = "authentication failed: check username/password"
		case se.Code >= 500:
			se.Hint = "the server refused authentication"
		}
		// go-mail already sent QUIT; the deferred close releases the socket.
		return se
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// close closes the connection without QUIT.
func (s *session) close() {
	if s.client != nil {
		_ = s.client.Close()
	}
	_ = s.raw.Close()
}

// quit sends QUIT (bounded by a short deadline) and closes the connection.
func (s *session) quit() error {
	defer s.close()
	if s.client == nil || s.broken {
		return nil
	}
	t := s.m.timeout
	if t > 5*time.Second {
		t = 5 * time.Second
	}
	_ = s.raw.SetDeadline(time.Now().Add(t))
	if err := s.client.Quit(); err != nil {
		return replyError(StepQUIT, s.m.addr, err)
	}
	return nil
}

// noop checks an idle connection.
func (s *session) noop(ctx context.Context) error {
	if err := s.deadline(ctx); err != nil {
		return err
	}
	return s.client.Noop()
}

// reset sends RSET after a failed transaction; a failure marks the session broken.
func (s *session) reset(ctx context.Context) {
	if s.broken {
		return
	}
	if err := s.deadline(ctx); err != nil {
		s.broken = true
		return
	}
	if err := s.client.Reset(); err != nil {
		s.broken = true
	}
}

// tx is the outcome of one transaction on a session.
type tx struct {
	accepted int
	rejected []RecipientError
	err      error // the error that ended the transaction, nil when the message was accepted
	// stale: the connection failed before the server accepted anything (network error or 421 in
	// reply to MAIL), so a retry on a new connection cannot duplicate the message.
	stale     bool
	ambiguous bool
	// unsent: the envelope could not be written (checkEnvelope); nothing went out.
	unsent bool
	// open: the server answered DATA with 354 and waits for the body (send with keepOpen,
	// bodyThen); the session holds the transaction in s.open.
	open bool
}

// reply is one server reply.
type reply struct {
	code int
	msg  string
	err  error // network or protocol error: no reply
}

func (r reply) ok() bool { return r.err == nil && r.code >= 200 && r.code < 300 }

// asError turns a reply that is not the expected one into an error.
func (r reply) asError() error {
	if r.err != nil {
		return r.err
	}
	return &textproto.Error{Code: r.code, Msg: r.msg}
}

// replyOK is readReply's want for a step that expects any 2xx reply.
const replyOK = 2

// readReply reads the server's next reply (as textproto's ReadResponse(0) reads it, see
// replyReader). want is the reply the step expects: replyOK for any 2xx, or a code such as
// 354. The text of the expected reply is not kept (no step reads it, and keeping it would cost
// an allocation per reply); the text of any other is, for the errors, the classifier and the
// quota replies.
func (s *session) readReply(want int) reply {
	code, text, err := s.replies.read(s.text().R)
	if err != nil {
		s.broken = true
		return reply{err: err}
	}
	if code == 421 {
		// RFC 5321 4.2.2: the server is closing the connection.
		s.broken = true
	}
	r := reply{code: code}
	if !(want == replyOK && code/100 == 2 || code == want) {
		r.msg = string(text)
	}
	return r
}

// ErrInvalidAddress is returned for an envelope address that cannot be written into a command
// (CR, LF, angle brackets, empty). Classify reports it as Rejected: retrying cannot help.
var ErrInvalidAddress = errors.New("invalid envelope address")

func validAddr(a string) bool {
	return a != "" && !strings.ContainsAny(a, "\r\n<> ")
}

func nonASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return true
		}
	}
	return false
}

// send runs one mail transaction: MAIL, RCPT for each recipient, then DATA (or BDAT). With
// PIPELINING the commands go out in one write and the replies are read in order. keepOpen,
// on a session that pipelines without CHUNKING (chains), stops at the server's 354: the
// transaction comes back open, held in s.open for bodyThen, which writes its body together
// with the next message's envelope.
func (s *session) send(ctx context.Context, msg *Message, keepOpen bool) (t tx) {
	addr := s.m.addr
	started := false
	defer func() {
		if !started {
			return
		}
		s.txs++
		s.settle(ctx, &t)
	}()
	if err := s.checkEnvelope(msg); err != nil {
		return tx{err: err}
	}
	started = true
	if err := s.deadline(ctx); err != nil {
		s.broken = true
		return tx{err: &StepError{Step: StepMAIL, Addr: addr, Err: err}}
	}

	crlf := !bytes.HasSuffix(msg.Data, []byte("\r\n"))
	w := s.text().W
	s.writeMail(w, msg, crlf)
	if !s.pipelining {
		if err := w.Flush(); err != nil {
			s.broken = true
			return tx{stale: true, err: &StepError{Step: StepMAIL, Addr: addr, Err: err}}
		}
		if r := s.readReply(replyOK); !r.ok() {
			return tx{stale: r.err != nil || r.code == 421, err: replyError(StepMAIL, addr, r.asError())}
		}
		for _, rcpt := range msg.To {
			if err := s.deadline(ctx); err != nil {
				s.broken = true
				return tx{err: &StepError{Step: StepRCPT, Addr: rcpt, Err: err}}
			}
			writeRcpt(w, rcpt)
			if err := w.Flush(); err != nil {
				s.broken = true
				return tx{err: &StepError{Step: StepRCPT, Addr: rcpt, Err: err}}
			}
			var stop bool
			if t, stop = t.rcpt(rcpt, s.readReply(replyOK)); stop {
				return t
			}
		}
		if t.accepted == 0 {
			return t.allRefused()
		}
		if err := s.deadline(ctx); err != nil {
			s.broken = true
			return tx{err: &StepError{Step: StepDATA, Addr: addr, Err: err}}
		}
		w.WriteString("DATA\r\n")
		if err := w.Flush(); err != nil {
			s.broken = true
			t.err = &StepError{Step: StepDATA, Addr: addr, Err: err}
			return t
		}
		if r := s.readReply(354); r.err != nil || r.code != 354 {
			t.err = replyError(StepDATA, addr, r.asError())
			return t
		}
		return s.body(ctx, msg, crlf, t)
	}

	// Pipelined: MAIL, every RCPT and DATA (or BDAT LAST with the message) in one write.
	if s.chunking {
		// writeMail above wrote MAIL already: only the rest of the transaction follows.
		writeChunkedRest(w, msg, crlf)
		if err := w.Flush(); err != nil {
			s.broken = true
			return tx{stale: true, err: &StepError{Step: StepMAIL, Addr: addr, Err: err}}
		}
		return s.readChunked(msg, false)
	}
	writeEnvelopeRest(w, msg)
	if err := w.Flush(); err != nil {
		s.broken = true
		return tx{stale: true, err: &StepError{Step: StepMAIL, Addr: addr, Err: err}}
	}
	if t = s.readEnvelope(ctx, msg, false); !t.open {
		return t
	}
	if keepOpen && s.chains() {
		s.opened = openTx{msg: msg, t: t}
		s.open = &s.opened
		return t
	}
	t.open = false
	return s.body(ctx, msg, crlf, t)
}

// chains reports whether the session pipelines without CHUNKING, so that a message's body
// and the next message's envelope can share a write (send with keepOpen, bodyThen).
func (s *session) chains() bool { return s.pipelining && !s.chunking }

// settle ends a transaction of the session: it was used now, an error of a cancelled
// context says so, and a failed transaction is followed by RSET.
func (s *session) settle(ctx context.Context, t *tx) {
	s.lastUsed = time.Now()
	if cerr := ctx.Err(); cerr != nil {
		var se *StepError
		if errors.As(t.err, &se) && se.Code == 0 && !errors.Is(se.Err, cerr) {
			se.Err = ctxError(ctx, se.Err)
		}
	}
	if t.err != nil {
		s.reset(ctx)
	}
}

// writeEnvelopeRest writes what follows MAIL in a pipelined DATA transaction: every RCPT,
// then DATA, which ends the group (RFC 2920 3.1).
func writeEnvelopeRest(w *bufio.Writer, msg *Message) {
	for _, rcpt := range msg.To {
		writeRcpt(w, rcpt)
	}
	w.WriteString("DATA\r\n")
}

// readEnvelope reads the replies to a pipelined DATA transaction's envelope: the RSET before
// it when rset is true, MAIL, each RCPT and DATA. The body never went out (it follows the
// 354), so nothing is ambiguous: a connection lost before the MAIL reply leaves the message
// stale. t.open is set when the server waits for the body; a 354 the transaction cannot use
// is answered with a lone ".".
func (s *session) readEnvelope(ctx context.Context, msg *Message, rset bool) (t tx) {
	addr := s.m.addr
	var rsetReply reply
	if rset {
		if rsetReply = s.readReply(replyOK); rsetReply.err != nil {
			return tx{stale: true, err: &StepError{Step: StepRSET, Addr: addr, Err: rsetReply.err}}
		}
		defer func() {
			if t.err != nil && !rsetReply.ok() {
				// The server refused to reset: what failed next may be a leftover of the
				// transaction before, not this message's fault. Retry it.
				t.err = &StepError{Step: StepRSET, Addr: addr, Code: rsetReply.code, Message: rsetReply.msg, Err: t.err}
			}
		}()
	}
	mailReply := s.readReply(replyOK)
	if mailReply.err != nil {
		// Usually a connection the server closed while idle.
		return tx{stale: true, err: replyError(StepMAIL, addr, mailReply.err)}
	}
	t = s.readRcpts(t, mailReply, msg.To, false)
	if s.broken && !mailReply.ok() {
		return tx{stale: mailReply.code == 421, err: replyError(StepMAIL, addr, mailReply.asError())}
	}
	if s.broken && t.err != nil {
		return t
	}
	dataReply := s.readReply(354)
	if !mailReply.ok() {
		if dataReply.code == 354 {
			// The server took DATA despite everything: send an empty body so it rejects it.
			s.abortData(ctx)
		}
		return tx{err: replyError(StepMAIL, addr, mailReply.asError())}
	}
	if t.accepted == 0 {
		if dataReply.code == 354 {
			s.abortData(ctx)
		}
		return t.allRefused()
	}
	if dataReply.err != nil || dataReply.code != 354 {
		t.err = replyError(StepDATA, addr, dataReply.asError())
		return t
	}
	t.open = true
	return t
}

// bodyThen writes the body of the session's open transaction (s.open) and, when next is not
// nil, next's envelope behind it in the same write: RSET, MAIL, RCPT..., DATA (RFC 2920 3.1:
// message content may lead a group, DATA ends one). Then it reads the replies in order: the
// body's final reply (cur), then next's envelope (nt, open when the server waits for next's
// body, which bodyThen never writes before that 354: no body of next is ever in flight).
// A connection lost before the body's reply leaves cur ambiguous and nt stale (next was
// never stored: send it again without the may-be-repeated mark). Both are settled as send
// settles a transaction; next's envelope counts as a transaction of the session.
func (s *session) bodyThen(ctx context.Context, next *Message) (cur, nt tx) {
	addr := s.m.addr
	o := *s.open // a copy: s.opened is reused for next below
	s.open = nil
	cur = o.t
	cur.open = false
	defer func() {
		s.lastUsed = time.Now()
		if next == nil || nt.unsent {
			s.settle(ctx, &cur)
			return
		}
		// After the body's reply the server's state was reset by the RSET in the write:
		// only a failed next needs one more.
		s.txs++
		s.settle(ctx, &nt)
		if cerr := ctx.Err(); cerr != nil {
			var se *StepError
			if errors.As(cur.err, &se) && se.Code == 0 && !errors.Is(se.Err, cerr) {
				se.Err = ctxError(ctx, se.Err)
			}
		}
	}()
	if next != nil {
		if err := s.checkEnvelope(next); err != nil {
			nt = tx{err: err, unsent: true}
			next = nil
		}
	}
	lost := func(err error) tx {
		return tx{stale: true, err: &StepError{Step: StepMAIL, Addr: addr, Err: err}}
	}
	if err := s.deadline(ctx); err != nil {
		s.broken = true
		cur.err = &StepError{Step: StepDATA, Addr: addr, Err: err}
		return cur, lost(err)
	}
	// One buffer for the body and the next envelope, so they leave in one write.
	if s.group == nil {
		s.group = bufio.NewWriterSize(s.text().W, groupBuffer)
	}
	w := s.group
	writeDotStuffed(w, o.msg.Data)
	if !bytes.HasSuffix(o.msg.Data, []byte("\r\n")) {
		w.WriteString("\r\n")
	}
	w.WriteString(".\r\n")
	if next != nil {
		w.WriteString("RSET\r\n")
		s.writeMail(w, next, !bytes.HasSuffix(next.Data, []byte("\r\n")))
		writeEnvelopeRest(w, next)
	}
	err := w.Flush()
	if err == nil {
		err = s.text().W.Flush()
	}
	if err != nil {
		s.broken = true
		cur.err = &StepError{Step: StepDATA, Addr: addr, Err: err}
		if next != nil {
			// The end of the body may be out ahead of what failed: it may have been stored.
			cur.ambiguous = true
		}
		return cur, lost(err)
	}
	r := s.readReply(replyOK)
	if r.err != nil {
		cur.ambiguous = true
		cur.err = &StepError{Step: StepDATA, Addr: addr, Err: r.err,
			Hint: "connection lost after the message was sent: it may have been stored"}
		return cur, lost(r.err)
	}
	if !r.ok() {
		cur.err = replyError(StepDATA, addr, r.asError())
	}
	if next == nil {
		return cur, nt
	}
	if s.broken { // 421 to the body: the server is closing the connection
		return cur, lost(replyError(StepDATA, addr, r.asError()))
	}
	// next's replies get the full timeout, as they do one by one.
	if err := s.deadline(ctx); err != nil {
		s.broken = true
		return cur, lost(err)
	}
	nt = s.readEnvelope(ctx, next, true)
	if nt.open {
		s.opened = openTx{msg: next, t: nt}
		s.open = &s.opened
	}
	return cur, nt
}

// writeChunkedRest writes what follows MAIL in a pipelined BDAT transaction: every RCPT, then
// BDAT LAST with the whole message.
func writeChunkedRest(w *bufio.Writer, msg *Message, crlf bool) {
	for _, rcpt := range msg.To {
		writeRcpt(w, rcpt)
	}
	n := len(msg.Data)
	if crlf {
		n += 2
	}
	w.WriteString("BDAT ")
	writeInt(w, n)
	w.WriteString(" LAST\r\n")
	w.Write(msg.Data)
	if crlf {
		w.WriteString("\r\n")
	}
}

// readRcpts reads the pipelined RCPT replies of one transaction into t (only counted when MAIL
// was accepted), stopping at a reply that broke the connection. bodySent: the message went
// out with its commands (BDAT), so a connection lost before an RCPT reply may have left it
// stored: the transaction is then ambiguous.
func (s *session) readRcpts(t tx, mailReply reply, to []string, bodySent bool) tx {
	for _, rcpt := range to {
		if !mailReply.ok() {
			_ = s.readReply(replyOK)
		} else {
			r := s.readReply(replyOK)
			t, _ = t.rcpt(rcpt, r)
			if r.err != nil && bodySent {
				t.ambiguous = true
			}
		}
		if s.broken && t.err != nil {
			break
		}
	}
	return t
}

// readChunked reads the replies to one pipelined BDAT transaction: the RSET before it when
// rset is true, MAIL, each RCPT and BDAT LAST. The message went out with the commands, so a
// connection lost before the last reply leaves its fate unknown (ambiguous).
func (s *session) readChunked(msg *Message, rset bool) (t tx) {
	addr := s.m.addr
	var rsetReply reply
	if rset {
		if rsetReply = s.readReply(replyOK); rsetReply.err != nil {
			return tx{stale: true, ambiguous: true, err: &StepError{Step: StepRSET, Addr: addr, Err: rsetReply.err}}
		}
		defer func() {
			if t.err != nil && !rsetReply.ok() {
				// The server refused to reset: what failed next may be a leftover of the
				// transaction before, not this message's fault. Retry it.
				t.err = &StepError{Step: StepRSET, Addr: addr, Code: rsetReply.code, Message: rsetReply.msg, Err: t.err}
			}
		}()
	}
	mailReply := s.readReply(replyOK)
	if mailReply.err != nil {
		// Usually a connection the server closed while idle. The message went out with MAIL, so
		// a server that stored it and then lost the connection cannot be ruled out.
		return tx{stale: true, ambiguous: true, err: replyError(StepMAIL, addr, mailReply.err)}
	}
	t = s.readRcpts(t, mailReply, msg.To, true)
	if s.broken && !mailReply.ok() {
		return tx{stale: mailReply.code == 421, err: replyError(StepMAIL, addr, mailReply.asError())}
	}
	if s.broken && t.err != nil {
		return t
	}
	dataReply := s.readReply(replyOK)
	if !mailReply.ok() {
		return tx{err: replyError(StepMAIL, addr, mailReply.asError())}
	}
	if t.accepted == 0 {
		return t.allRefused()
	}
	if dataReply.err != nil {
		t.ambiguous = true
		t.err = &StepError{Step: StepDATA, Addr: addr, Err: dataReply.err}
		return t
	}
	if !dataReply.ok() {
		t.err = replyError(StepDATA, addr, dataReply.asError())
	}
	return t
}

// checkEnvelope returns the error of a message whose envelope cannot be sent, before anything
// is written.
func (s *session) checkEnvelope(msg *Message) error {
	if !validAddr(msg.From) {
		return &StepError{Step: StepMAIL, Addr: msg.From, Err: ErrInvalidAddress}
	}
	for _, r := range msg.To {
		if !validAddr(r) {
			return &StepError{Step: StepRCPT, Addr: r, Err: ErrInvalidAddress}
		}
	}
	if len(msg.To) == 0 {
		return &StepError{Step: StepRCPT, Addr: s.m.addr, Err: errors.New("no recipients")}
	}
	return nil
}

// sendGroup runs the transactions of msgs back to back in one write (RFC 2920 with RFC 3030:
// BDAT may be pipelined, so one transaction can follow another without waiting), then reads
// every reply in order: one write and one wait for a whole group instead of one per message.
// Every transaction after the first starts with RSET, so none can inherit the state of a
// failed one before it (a server that keeps the sender after refusing every recipient would
// otherwise answer the next MAIL with 503). Each message gets its own outcome from its own
// replies, as send gives it; RSET follows a failed last transaction as it follows any failed
// one. The session must offer pipelining and chunking. end[i] is when msgs[i]'s last reply
// was read (or the group ended).
func (s *session) sendGroup(ctx context.Context, msgs []*Message) (txs []tx, end []time.Time) {
	addr := s.m.addr
	txs = make([]tx, len(msgs))
	end = make([]time.Time, len(msgs))
	live := make([]int, 0, len(msgs))
	for i, msg := range msgs {
		if err := s.checkEnvelope(msg); err != nil {
			txs[i] = tx{err: err, unsent: true}
			end[i] = time.Now()
			continue
		}
		live = append(live, i)
	}
	if len(live) == 0 {
		return txs, end
	}
	s.txs += len(live)
	defer func() {
		now := time.Now()
		s.lastUsed = now
		for _, i := range live {
			if end[i].IsZero() {
				end[i] = now
			}
			if cerr := ctx.Err(); cerr != nil {
				var se *StepError
				if errors.As(txs[i].err, &se) && se.Code == 0 && !errors.Is(se.Err, cerr) {
					se.Err = ctxError(ctx, se.Err)
				}
			}
		}
		if txs[live[len(live)-1]].err != nil {
			s.reset(ctx)
		}
	}()
	if err := s.deadline(ctx); err != nil {
		s.broken = true
		for _, i := range live {
			txs[i] = tx{err: &StepError{Step: StepMAIL, Addr: addr, Err: err}}
		}
		return txs, end
	}
	// One buffer for the whole group, so it leaves in one write (TLS cuts it into records of
	// up to 16 KiB) rather than in a write per 4 KiB of textproto's own buffer.
	if s.group == nil {
		s.group = bufio.NewWriterSize(s.text().W, groupBuffer)
	}
	w := s.group
	for k, i := range live {
		if k > 0 {
			w.WriteString("RSET\r\n")
		}
		crlf := !bytes.HasSuffix(msgs[i].Data, []byte("\r\n"))
		s.writeMail(w, msgs[i], crlf)
		writeChunkedRest(w, msgs[i], crlf)
	}
	writeErr := w.Flush()
	if writeErr == nil {
		writeErr = s.text().W.Flush()
	}
	// Read the replies even when the write failed: a server that hung up in the middle of
	// the group (a fault, a shutdown) answered the transactions before that, and their
	// replies are waiting to be read. Only those after the last reply have no outcome.
	lost := writeErr
	if lost == nil {
		lost = errors.New("connection lost before the server's reply")
	}
	for k, i := range live {
		if k > 0 && !s.broken {
			// Each transaction's replies get the full timeout, as they do one by one.
			if err := s.deadline(ctx); err != nil {
				s.broken = true
			}
		}
		if s.broken {
			txs[i] = tx{stale: true, ambiguous: true, err: &StepError{Step: StepMAIL, Addr: addr, Err: lost}}
			continue
		}
		txs[i] = s.readChunked(msgs[i], k > 0)
		end[i] = time.Now()
	}
	if writeErr != nil {
		s.broken = true
	}
	return txs, end
}

// abortData ends a DATA the server accepted although no recipient was: a lone "." (RFC 2920
// 3.1), which the server rejects for lack of recipients.
func (s *session) abortData(ctx context.Context) {
	if s.deadline(ctx) != nil {
		s.broken = true
		return
	}
	w := s.text().W
	w.WriteString(".\r\n")
	if w.Flush() != nil {
		s.broken = true
		return
	}
	_ = s.readReply(replyOK)
}

// body writes the message after a 354 and reads the final reply.
func (s *session) body(ctx context.Context, msg *Message, crlf bool, t tx) tx {
	addr := s.m.addr
	if err := s.deadline(ctx); err != nil {
		s.broken = true
		t.err = &StepError{Step: StepDATA, Addr: addr, Err: err}
		return t
	}
	w := s.text().W
	writeDotStuffed(w, msg.Data)
	if crlf {
		w.WriteString("\r\n")
	}
	w.WriteString(".\r\n")
	if err := w.Flush(); err != nil {
		// Part of the message may be out, but not all of its end: not stored.
		s.broken = true
		t.err = &StepError{Step: StepDATA, Addr: addr, Err: err}
		return t
	}
	r := s.readReply(replyOK)
	if r.err != nil {
		t.ambiguous = true
		t.err = &StepError{Step: StepDATA, Addr: addr, Err: r.err,
			Hint: "connection lost after the message was sent: it may have been stored"}
		return t
	}
	if !r.ok() {
		t.err = replyError(StepDATA, addr, r.asError())
	}
	return t
}

// rcpt records one RCPT reply; stop is true when the connection is gone.
func (t tx) rcpt(addr string, r reply) (_ tx, stop bool) {
	if r.ok() {
		t.accepted++
		return t, false
	}
	if r.err != nil {
		t.err = &StepError{Step: StepRCPT, Addr: addr, Err: r.err}
		return t, true
	}
	enh, text := splitEnhanced(r.code, r.msg)
	t.rejected = append(t.rejected, RecipientError{Address: addr, Code: r.code, EnhancedCode: enh, Message: text})
	if r.code == 421 {
		t.err = replyError(StepRCPT, addr, r.asError())
		return t, true
	}
	return t, false
}

// allRefused ends a transaction in which no recipient was accepted.
func (t tx) allRefused() tx {
	if len(t.rejected) == 0 { // unreachable: a recipient is either accepted or refused
		t.err = &StepError{Step: StepRCPT, Err: errors.New("no recipient accepted")}
		return t
	}
	// Name the first temporary refusal if there is one: it decides the outcome (Retry).
	first := t.rejected[0]
	for _, r := range t.rejected {
		if r.Code < 500 {
			first = r
			break
		}
	}
	t.err = &StepError{Step: StepRCPT, Addr: first.Address, Code: first.Code, EnhancedCode: first.EnhancedCode,
		Message: first.Message}
	return t
}

func (s *session) writeMail(w *bufio.Writer, msg *Message, crlf bool) {
	w.WriteString("MAIL FROM:<")
	w.WriteString(msg.From)
	w.WriteString(">")
	if s.size {
		n := len(msg.Data)
		if crlf {
			n += 2
		}
		w.WriteString(" SIZE=")
		writeInt(w, n)
	}
	if s.utf8 && needsUTF8(msg) {
		w.WriteString(" SMTPUTF8")
	}
	w.WriteString("\r\n")
}

func needsUTF8(msg *Message) bool {
	if nonASCII(msg.From) {
		return true
	}
	for _, r := range msg.To {
		if nonASCII(r) {
			return true
		}
	}
	return false
}

// writeInt writes n in decimal, formatted in w's own free space (strconv.Itoa allocated a
// string for every SIZE and BDAT size).
func writeInt(w *bufio.Writer, n int) {
	w.Write(strconv.AppendInt(w.AvailableBuffer(), int64(n), 10))
}

func writeRcpt(w *bufio.Writer, rcpt string) {
	w.WriteString("RCPT TO:<")
	w.WriteString(rcpt)
	w.WriteString(">\r\n")
}

// writeDotStuffed writes data with a "." doubled at the start of every line (RFC 5321 4.5.2).
func writeDotStuffed(w *bufio.Writer, data []byte) {
	if len(data) > 0 && data[0] == '.' {
		w.WriteByte('.')
	}
	for {
		i := bytes.Index(data, []byte("\n."))
		if i < 0 {
			break
		}
		w.Write(data[:i+1])
		w.WriteByte('.')
		data = data[i+1:]
	}
	w.Write(data)
}
