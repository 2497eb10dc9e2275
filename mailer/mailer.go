// Package mailer delivers messages over SMTP: implicit TLS or mandatory STARTTLS, AUTH PLAIN or
// LOGIN, a small pool of reused connections, PIPELINING and CHUNKING when the server offers
// them, and one outcome per message with every recipient's reply.
//
// It opens connections with github.com/wneessen/go-mail/smtp (greeting, EHLO, STARTTLS, AUTH)
// and writes the mail transactions itself on the same connection, so that each RCPT reply is
// kept, a failed transaction is always followed by RSET, and commands can be pipelined; it
// reads their replies itself too (replyReader: what net/textproto reads, without allocating
// for the replies a step expects). On a connection that pipelines BDAT, the transactions of
// several messages go out in one write (each after the first led by RSET) and their replies
// are read in order (sendGroup); on one that pipelines without CHUNKING, a message's body
// goes out in one write with the next message's envelope (bodyThen), so each message costs
// one round trip instead of two.
// It never logs: every failure comes back as a *StepError naming the step, the server's reply
// codes and, for configuration mistakes, a hint.
package mailer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/smtpout/smtpout/config"
	"github.com/smtpout/smtpout/oauth"
)

// Message is one email to deliver.
type Message struct {
	// ID is the Message-ID without angle brackets; the mailer does not use it (it is for logs).
	ID string
	// From is the envelope sender, a bare address.
	From string
	// To are the envelope recipients, bare addresses.
	To []string
	// Data is the RFC 5322 message with CRLF line ends, not dot-stuffed.
	Data []byte
	// Done, when set, is called with the message's Result as soon as the server's final
	// reply (or the failure) is known, on the goroutine that sent it and before Send returns.
	// It is not called for messages Send never tried (those come back as Retry).
	Done func(Result)
}

// ErrDeadline is the error of messages left unsent because the soft deadline set with
// WithSoftDeadline passed.
var ErrDeadline = errors.New("flush_timeout reached before this email was started: handed back to Fluent Bit for a retry")

type softDeadlineKey struct{}

// WithSoftDeadline returns a context that tells Send to start no new message after t.
// Messages already on the wire at t are finished (bounded by ctx's own deadline, which
// should be a little later); the others come back as Retry with ErrDeadline.
func WithSoftDeadline(ctx context.Context, t time.Time) context.Context {
	return WithSoftDeadlineFunc(ctx, func() time.Time { return t })
}

// WithSoftDeadlineFunc is WithSoftDeadline with a deadline that may appear or move while Send
// runs (a shutdown signal): deadline is asked before each message is started, and its zero
// value means none yet.
func WithSoftDeadlineFunc(ctx context.Context, deadline func() time.Time) context.Context {
	return context.WithValue(ctx, softDeadlineKey{}, deadline)
}

// softDeadlinePassed reports whether ctx's soft deadline (if any) has passed.
func softDeadlinePassed(ctx context.Context) bool {
	f, ok := ctx.Value(softDeadlineKey{}).(func() time.Time)
	if !ok {
		return false
	}
	t := f()
	return !t.IsZero() && !time.Now().Before(t)
}

// RecipientError is a recipient the server refused.
type RecipientError struct {
	Address      string
	Code         int    // 550
	EnhancedCode string // "5.1.1", or "" when the server gave none
	Message      string // the server's text, without the codes
}

// Error returns "smtp RCPT <address>: <code> <enhanced> <text>".
func (r RecipientError) Error() string {
	s := fmt.Sprintf("smtp RCPT %s: %d", r.Address, r.Code)
	if r.EnhancedCode != "" {
		s += " " + r.EnhancedCode
	}
	if r.Message != "" {
		s += " " + r.Message
	}
	return s
}

// Temporary reports whether the refusal was a 4xx.
func (r RecipientError) Temporary() bool { return r.Code < 500 }

// Result is what became of one Message.
//
// When some recipients were accepted and others refused, the message was delivered to the
// accepted ones: Outcome is Delivered, the refused ones are in Rejected and Err joins their
// errors. This holds for 4xx refusals too: retrying would email the accepted recipients again,
// so a recipient refused with 4xx while others accepted is reported, not retried.
type Result struct {
	Outcome Outcome
	// Err is nil when every recipient got the message; otherwise it names the step and the
	// reply code (a *StepError, or RecipientErrors joined for a partial delivery).
	Err error
	// Rejected lists the recipients the server refused, in the order sent.
	Rejected []RecipientError
	// Ambiguous: the connection was lost after the whole message was sent and before the
	// server's reply, so it may have been stored. Outcome is Retry.
	Ambiguous bool
	// Resent: the message was sent a second time on a new connection, because the first
	// connection closed before the server answered it (a pipelined group cut short). The
	// server may have stored the first copy too: its recipients may get it twice.
	Resent bool
	// Elapsed is how long the message took on the wire: from taking its connection (dialling
	// one when needed) to the server's final reply.
	Elapsed time.Duration
}

// Option changes how a Mailer works.
type Option func(*Mailer)

// WithoutPipelining turns off PIPELINING (RFC 2920), and with it CHUNKING: every command then
// waits for its reply.
func WithoutPipelining() Option { return func(m *Mailer) { m.pipelining = false } }

// WithoutChunking turns off BDAT (RFC 3030): the message goes in DATA, dot-stuffed.
func WithoutChunking() Option { return func(m *Mailer) { m.chunking = false } }

// WithNoopAfter sets how long a pooled connection may sit idle before it is checked with NOOP
// when taken again (default 5s; 0 checks never). A connection that fails anyway on MAIL is
// replaced and the message retried once.
func WithNoopAfter(d time.Duration) Option { return func(m *Mailer) { m.noopAfter = d } }

// DefaultNoopAfter is the idle time after which a pooled connection is checked before reuse.
const DefaultNoopAfter = 5 * time.Second

// Mailer delivers messages to one SMTP server through a pool of connections. It is safe for
// concurrent use; each concurrent Send uses its own connections.
type Mailer struct {
	addr      string
	startTLS  bool
	tlsConfig *tls.Config
	username  string
	password  config.Secret
	authLogin bool
	// mech is the AUTH mechanism: PLAIN, LOGIN, XOAUTH2 or OAUTHBEARER; tokens the token
	// source of the last two (nil otherwise).
	mech       string
	tokens     *oauth.Provider
	helo       string
	timeout    time.Duration
	pipelining bool
	chunking   bool
	noopAfter  time.Duration
	// groupMax is pipeline_depth: the most messages a group (sendGroup) holds.
	groupMax int

	// slots holds one token per connection that may be open at once.
	slots chan struct{}

	mu     sync.Mutex
	idle   []*session // most recently used last
	closed bool
	// held is how many slots shrink holds (lowering the connection limit); done is closed
	// by Close, ending shrink's goroutines; shrinkFor is how long each holds its slot.
	held      int
	done      chan struct{}
	shrinkFor time.Duration
	shrinks   atomic.Int64

	dials        atomic.Int64
	authFailures atomic.Int64
}

// New builds a Mailer for cfg: the TLS configuration, the EHLO name and the pool. It never
// dials; the first Send does.
func New(cfg config.Config, opts ...Option) (*Mailer, error) {
	if cfg.Host == "" {
		return nil, errors.New("mailer: dest_host is empty")
	}
	if cfg.Port == 0 {
		cfg.Port = config.DefaultPortTLS
		if cfg.StartTLS {
			cfg.Port = config.DefaultPortSTARTTLS
		}
	}
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if len(cfg.TLSCAPEM) > 0 && !roots.AppendCertsFromPEM(cfg.TLSCAPEM) {
		return nil, fmt.Errorf("mailer: tls_ca_file %q: no PEM certificate found", cfg.TLSCAFile)
	}
	serverName := cfg.TLSServerName
	if serverName == "" {
		serverName = cfg.Host
	}
	helo := cfg.HeloName
	if helo == "" {
		if h, err := os.Hostname(); err == nil && h != "" && !strings.ContainsAny(h, " \r\n") {
			helo = h
		} else {
			helo = "localhost"
		}
	}
	m := &Mailer{
		addr:     cfg.Address(),
		startTLS: cfg.StartTLS,
		tlsConfig: &tls.Config{
			RootCAs:            roots,
			ServerName:         serverName,
			MinVersion:         tls.VersionTLS12,
			InsecureSkipVerify: !cfg.TLSVerify, //nolint:gosec // only when tls_verify is false
		},
		username:   cfg.Username,
		password:   cfg.Password,
		authLogin:  cfg.AuthLogin,
		helo:       helo,
		timeout:    cfg.Timeout,
		pipelining: !cfg.DisablePipelining,
		chunking:   !cfg.DisableChunking,
		noopAfter:  DefaultNoopAfter,
		groupMax:   cfg.PipelineDepth,
		done:       make(chan struct{}),
		shrinkFor:  DefaultShrinkFor,
	}
	if m.groupMax <= 0 {
		m.groupMax = config.DefaultPipelineDepth
	}
	if m.timeout <= 0 {
		m.timeout = config.DefaultTimeout
	}
	m.mech = "PLAIN"
	switch {
	case cfg.AuthMechanism == config.MechXOAuth2:
		m.mech = "XOAUTH2"
	case cfg.AuthMechanism == config.MechOAuthBearer:
		m.mech = "OAUTHBEARER"
	case cfg.AuthLogin || cfg.AuthMechanism == config.MechLogin:
		m.mech = "LOGIN"
	}
	if cfg.OAuth() {
		if m.tokens, err = oauth.New(cfg); err != nil {
			return nil, fmt.Errorf("mailer: %w", err)
		}
		if m.username == "" {
			m.username = cfg.From.Address
		}
	}
	n := cfg.MaxConnections
	if n <= 0 {
		n = config.DefaultMaxConnections
	}
	m.slots = make(chan struct{}, n)
	for _, o := range opts {
		o(m)
	}
	return m, nil
}

// Dials returns how many connections the Mailer has opened so far (successfully or not).
func (m *Mailer) Dials() int64 { return m.dials.Load() }

// Close sends QUIT on every idle connection and closes it; connections in use are closed when
// their Send ends. Later Sends fail with ErrClosed (Outcome Retry). Close is idempotent.
func (m *Mailer) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	close(m.done)
	idle := m.idle
	m.idle = nil
	m.mu.Unlock()
	var errs []error
	for _, s := range idle {
		if err := s.quit(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// acquire takes a connection slot, waiting while all are in use, and returns the most recently
// used idle connection or nil (the caller then dials). It gives up, returning ok false, when
// ctx is done or stop is closed.
func (m *Mailer) acquire(ctx context.Context, stop <-chan struct{}) (s *session, ok bool, err error) {
	select {
	case m.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, false, ctx.Err()
	case <-stop:
		return nil, false, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		<-m.slots
		return nil, false, ErrClosed
	}
	if n := len(m.idle); n > 0 {
		s = m.idle[n-1]
		m.idle = m.idle[:n-1]
	}
	return s, true, nil
}

// release returns a slot and keeps s (when not nil and healthy) for the next Send.
func (m *Mailer) release(s *session) {
	defer func() { <-m.slots }()
	if s == nil {
		return
	}
	if s.broken || s.open != nil {
		s.close()
		return
	}
	m.mu.Lock()
	if !m.closed {
		m.idle = append(m.idle, s)
		m.mu.Unlock()
		return
	}
	m.mu.Unlock()
	_ = s.quit()
}

// Send delivers msgs and returns one Result per message, in order. Messages are spread over up
// to MaxConnections pooled connections (each Send call takes what the pool has free, waiting
// for one when all are busy; fewer for a while after the server refused one for having too
// many: shrink). A provider's quota reply stops the sending: the rest come back as Retry
// with that reply. A connection that cannot be opened fails the messages no other
// connection of this call can take, with the same error. Cancelling ctx aborts the I/O at once;
// the messages not yet accepted come back as Retry.
func (m *Mailer) Send(ctx context.Context, msgs []Message) []Result {
	results := make([]Result, len(msgs))
	if len(msgs) == 0 {
		return results
	}
	done := make([]bool, len(msgs))
	workers := min(len(msgs), cap(m.slots))

	var (
		next      atomic.Int64
		exhausted = make(chan struct{})
		closeOnce sync.Once
		errMu     sync.Mutex
		firstErr  error
		wg        sync.WaitGroup
	)
	fail := func(err error) {
		errMu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		errMu.Unlock()
	}
	claim := func() (int, bool) {
		if softDeadlinePassed(ctx) {
			fail(ErrDeadline)
			closeOnce.Do(func() { close(exhausted) })
			return 0, false
		}
		i := next.Add(1) - 1
		if i >= int64(len(msgs)) {
			closeOnce.Do(func() { close(exhausted) })
			return 0, false
		}
		return int(i), true
	}
	finish := func(j int, r Result) {
		results[j], done[j] = r, true
		if msgs[j].Done != nil {
			msgs[j].Done(r)
		}
	}
	// stopWorker ends a worker on err: the messages no worker takes come back with it. Too
	// many connections for the server (Exchange's 432 4.3.2) also opens one fewer for a while.
	stopWorker := func(err error) {
		if l, ok := QuotaOf(err); ok && l.Connections {
			m.shrink()
		}
		fail(err)
	}
	work := func(first bool) {
		defer wg.Done()
		// The first worker always waits for a slot; the others only while work is left.
		stop := exhausted
		if first {
			stop = nil
		}
		s, ok, err := m.acquire(ctx, stop)
		if err != nil {
			fail(err)
		}
		if !ok {
			return
		}
		c := m.newConn(ctx, s)
		defer c.release()
		for {
			i, ok := claim()
			if !ok {
				return
			}
			group := []int{i}
			if c.pipelinesGroups() {
				// A connection that pipelines BDAT takes a group of messages at once
				// (sendGroup); the first message of a new connection goes alone.
				size := len(msgs[i].Data)
				for len(group) < m.groupMax && size < maxGroupBytes {
					j, ok := claim()
					if !ok {
						break
					}
					group = append(group, j)
					size += len(msgs[j].Data)
				}
			}
			if len(group) == 1 {
				if err := c.deliverChain(msgs, i, claim, finish); err != nil {
					stopWorker(err)
					return
				}
				continue
			}
			rs, setupErr := c.deliverGroup(msgs, group)
			for k, j := range group {
				finish(j, rs[k])
			}
			if setupErr != nil {
				stopWorker(setupErr)
				return
			}
			for _, j := range group {
				if err := stopErr(results[j]); err != nil {
					stopWorker(err)
					return
				}
			}
		}
	}
	wg.Add(workers)
	for w := 0; w < workers; w++ {
		go work(w == 0)
	}
	wg.Wait()

	for i := range results {
		if done[i] {
			continue
		}
		err := firstErr
		if err == nil {
			err = ctx.Err()
		}
		if err == nil {
			err = errors.New("mailer: message not sent") // unreachable: kept for safety
		}
		results[i] = Result{Outcome: Retry, Err: err}
	}
	return results
}

// deliver sends one message on c, opening a connection first when there is none and
// replacing a broken one. A reused connection that turns out stale (closed by the server, 421)
// before the server accepted anything is replaced and the message sent once more. resent: the
// message already went out whole on a connection lost before the server answered it (its
// BDAT body, or a group's), so the server may hold it; such a message comes back with Resent
// when it is sent again, or Ambiguous when it cannot be. setupErr is set when no connection
// could be opened: the worker then stops.
func (c *conn) deliver(msg *Message, resent bool) (res Result, setupErr error) {
	res, _, setupErr = c.start(msg, resent, false)
	return res, setupErr
}

// start is deliver that, with keepOpen on a session that pipelines without CHUNKING, stops at
// the server's 354: open is then true, res is empty and the session holds the transaction
// for its body (session.bodyThen).
func (c *conn) start(msg *Message, resent, keepOpen bool) (res Result, open bool, setupErr error) {
	start := time.Now()
	defer func() { res.Elapsed = time.Since(start) }()
	for attempt := 0; ; attempt++ {
		if err := c.ctx.Err(); err != nil {
			return Result{Outcome: Retry, Err: err, Ambiguous: resent}, false, nil
		}
		reused, err := c.ensure()
		if err != nil {
			return Result{Outcome: Retry, Err: err, Ambiguous: resent}, false, err
		}
		t := c.s.send(c.ctx, msg, keepOpen)
		c.dropBroken()
		if t.open {
			return Result{}, true, nil
		}
		if t.stale && reused && attempt == 0 && c.ctx.Err() == nil {
			resent = resent || t.ambiguous
			continue
		}
		res = resultOf(t)
		res.Resent = resent
		return res, false, nil
	}
}

// deliverChain delivers msgs[i], and after it the messages claim hands out while it does,
// on c: on a session that pipelines without CHUNKING each body goes out in one write with
// the next message's envelope (session.bodyThen), so every message costs one round trip
// instead of two; elsewhere one by one, as deliver sends them. finish receives each
// message's Result as soon as it is known. A next message whose envelope got no usable
// reply (its body never went out) is started again as deliver would start it, unflagged. It
// returns the error that must stop the worker: no connection could be opened, or the server
// stopped answering (a timeout).
func (c *conn) deliverChain(msgs []Message, i int, claim func() (int, bool), finish func(int, Result)) error {
	for {
		res, open, setupErr := c.start(&msgs[i], false, true)
		if !open {
			finish(i, res)
			if setupErr != nil {
				return setupErr
			}
			return stopErr(res)
		}
		began := time.Now().Add(-res.Elapsed)
		for {
			j, more := claim()
			var next *Message
			if more {
				next = &msgs[j]
			}
			sent := time.Now()
			cur, nt := c.s.bodyThen(c.ctx, next)
			c.dropBroken()
			r := resultOf(cur)
			r.Elapsed = time.Since(began)
			finish(i, r)
			if !more {
				return stopErr(r)
			}
			if nt.open {
				if err := stopErr(r); err != nil {
					// The server took j's envelope and waits for its body, but the worker
					// must stop: drop the connection, so the server discards j unsent.
					c.drop()
					finish(j, Result{Outcome: Retry, Err: err, Elapsed: time.Since(sent)})
					return err
				}
				i, began = j, sent
				continue
			}
			if err := stopErr(r); err != nil || !nt.stale {
				// j's own refusal, or a server that stopped answering: j's body never
				// went out, so it is not ambiguous either way.
				rj := resultOf(nt)
				rj.Elapsed = time.Since(sent)
				finish(j, rj)
				if err == nil {
					err = stopErr(rj)
				}
				return err
			}
			i = j
			break
		}
	}
}

// stopErr returns r's error when it must stop the worker: a server that stops answering
// costs a full timeout per message, so the rest goes back to Fluent Bit at once rather than
// redial and wait for each; and a provider's quota reply (Exchange's 554 5.2.0, Gmail's 550
// 5.4.5) will be the answer to every other message too, so no more are sent into it.
func stopErr(r Result) error {
	if r.Outcome == Retry && (timeout(r.Err) || pauses(r.Err)) {
		return r.Err
	}
	return nil
}

// A group (sendGroup) holds at most pipeline_depth messages (Mailer.groupMax), and stops
// growing once it holds maxGroupBytes of them.
const maxGroupBytes = 64 << 10

// deliverGroup sends the messages msgs[idx...] as one pipelined group on c, as deliver sends
// one: a connection idle too long is checked first, a broken one is replaced, and messages
// that went out on a connection lost before the server answered anything about them (stale:
// on a reused connection that failed at once, or after an earlier message of the group was
// answered) are sent once more on a new connection, flagged Resent as deliver flags them. A
// new connection that does not pipeline BDAT gets the messages one by one (deliver). setupErr
// is set when no connection could be opened.
func (c *conn) deliverGroup(msgs []Message, idx []int) (res []Result, setupErr error) {
	start := time.Now()
	res = make([]Result, len(idx))
	pend := make([]int, len(idx)) // positions in idx still to send
	for k := range pend {
		pend[k] = k
	}
	resent := make([]bool, len(idx)) // by position: went out whole on a connection lost since
	failPending := func(err error) {
		for _, k := range pend {
			res[k] = Result{Outcome: Retry, Err: err, Ambiguous: resent[k], Elapsed: time.Since(start)}
		}
	}
	for attempt := 0; ; attempt++ {
		if err := c.ctx.Err(); err != nil {
			failPending(err)
			return res, nil
		}
		reused, err := c.ensure()
		if err != nil {
			failPending(err)
			return res, err
		}
		if !c.s.chunking {
			for n, k := range pend {
				if res[k], setupErr = c.deliver(&msgs[idx[k]], resent[k]); setupErr != nil {
					pend = pend[n+1:]
					failPending(setupErr)
					return res, setupErr
				}
			}
			return res, nil
		}
		group := make([]*Message, len(pend))
		for n, k := range pend {
			group[n] = &msgs[idx[k]]
		}
		txs, end := c.s.sendGroup(c.ctx, group)
		c.dropBroken()
		var stale []int
		answered, timedOut := false, false
		for n, t := range txs {
			switch {
			case t.stale:
				stale = append(stale, pend[n])
			case !t.unsent:
				answered = true
			}
			timedOut = timedOut || timeout(t.err)
		}
		// A server that stopped answering is not tried again here: Send hands the rest back.
		retry := len(stale) > 0 && attempt == 0 && c.ctx.Err() == nil && (reused || answered) && !timedOut
		for n, t := range txs {
			k := pend[n]
			if retry && t.stale {
				resent[k] = resent[k] || t.ambiguous
				continue
			}
			res[k] = resultOf(t)
			res[k].Elapsed = end[n].Sub(start)
			res[k].Resent = resent[k]
		}
		if !retry {
			return res, nil
		}
		pend = stale
	}
}

// resultOf turns a finished transaction into a Result.
func resultOf(t tx) Result {
	r := Result{
		Outcome:   Classify(t.accepted, t.rejected, t.err),
		Err:       t.err,
		Rejected:  t.rejected,
		Ambiguous: t.ambiguous,
	}
	if r.Err == nil && len(t.rejected) > 0 {
		errs := make([]error, len(t.rejected))
		for i, rj := range t.rejected {
			errs[i] = rj
		}
		r.Err = errors.Join(errs...)
	}
	if r.Ambiguous {
		r.Outcome = Retry
	}
	return r
}
