package main

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Sink is a local SMTP server that accepts every message after AUTH PLAIN and discards it,
// counting messages and keeping the first one for a signature check. It advertises
// PIPELINING and CHUNKING (emersion/go-smtp does), over implicit TLS or STARTTLS. A sink
// started with a store directory (StartStoringSink) writes and syncs each message to its own
// file there before it replies, as a real MTA stores a queue file.
type Sink struct {
	srv      *smtp.Server
	ln       net.Listener
	user     string
	pass     string
	messages atomic.Int64
	bytes    atomic.Int64
	sessions atomic.Int64
	authFail atomic.Int64
	store    string       // "": discard
	first    atomic.Int64 // unix ns of the first message accepted
	last     atomic.Int64 // unix ns of the last message accepted

	mu     sync.Mutex
	sample []byte
	done   chan struct{}
}

// StartSink listens on 127.0.0.1:0 with implicit TLS (starttls false) or STARTTLS, and
// accepts user/pass with AUTH PLAIN.
func StartSink(cfg *tls.Config, starttls bool, user, pass string) (*Sink, error) {
	return startSink(cfg, starttls, user, pass, "")
}

// StartStoringSink is StartSink with implicit TLS that stores every message in dir (one file
// each, written and synced before the reply).
func StartStoringSink(cfg *tls.Config, user, pass, dir string) (*Sink, error) {
	return startSink(cfg, false, user, pass, dir)
}

func startSink(cfg *tls.Config, starttls bool, user, pass, store string) (*Sink, error) {
	s := &Sink{user: user, pass: pass, store: store, done: make(chan struct{})}
	s.srv = smtp.NewServer(s)
	s.srv.Domain = "localhost"
	s.srv.ReadTimeout = 2 * time.Minute
	s.srv.WriteTimeout = 2 * time.Minute
	s.srv.MaxMessageBytes = 32 << 20
	s.srv.MaxRecipients = 100
	s.srv.ErrorLog = log.New(io.Discard, "", 0)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	if starttls {
		s.srv.TLSConfig = cfg
		s.ln = ln
	} else {
		s.ln = tls.NewListener(ln, cfg)
	}
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(s.ln)
	}()
	return s, nil
}

// Addr is the sink's host:port.
func (s *Sink) Addr() string { return s.ln.Addr().String() }

// Messages returns how many messages were accepted so far.
func (s *Sink) Messages() int64 { return s.messages.Load() }

// Sessions returns how many connections were opened so far.
func (s *Sink) Sessions() int64 { return s.sessions.Load() }

// Span returns when the first and the last message were accepted (unix ns; 0 before any).
func (s *Sink) Span() (first, last int64) { return s.first.Load(), s.last.Load() }

// ResetSpan forgets the first and last message times (Span), for a new run.
func (s *Sink) ResetSpan() { s.first.Store(0); s.last.Store(0) }

// Sample returns the first message accepted (nil before any).
func (s *Sink) Sample() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sample
}

// Close stops the sink and closes every connection.
func (s *Sink) Close() error {
	err := s.srv.Close()
	<-s.done
	return err
}

// NewSession implements smtp.Backend.
func (s *Sink) NewSession(*smtp.Conn) (smtp.Session, error) {
	s.sessions.Add(1)
	return &sinkSession{sink: s}, nil
}

type sinkSession struct {
	sink   *Sink
	authed bool
}

var errAuthRequired = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}

func (ss *sinkSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (ss *sinkSession) Auth(mech string) (sasl.Server, error) {
	if mech != sasl.Plain {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if user != ss.sink.user || pass != ss.sink.pass {
			ss.sink.authFail.Add(1)
			return errors.New("invalid credentials")
		}
		ss.authed = true
		return nil
	}), nil
}

func (ss *sinkSession) Mail(string, *smtp.MailOptions) error {
	if !ss.authed {
		return errAuthRequired
	}
	return nil
}

func (ss *sinkSession) Rcpt(string, *smtp.RcptOptions) error { return nil }

func (ss *sinkSession) Data(r io.Reader) error {
	s := ss.sink
	s.mu.Lock()
	first := s.sample == nil
	s.mu.Unlock()
	var n int64
	var err error
	if first {
		var b bytes.Buffer
		n, err = b.ReadFrom(r)
		s.mu.Lock()
		if s.sample == nil {
			s.sample = b.Bytes()
		}
		s.mu.Unlock()
		if err == nil && s.store != "" {
			_, err = storeMessage(s.store, &b)
		}
	} else if s.store != "" {
		n, err = storeMessage(s.store, r)
	} else {
		n, err = io.Copy(io.Discard, r)
	}
	if err != nil {
		return err
	}
	s.bytes.Add(n)
	now := time.Now().UnixNano()
	s.first.CompareAndSwap(0, now)
	s.last.Store(now)
	s.messages.Add(1)
	return nil
}

func (ss *sinkSession) Reset() {}

func (ss *sinkSession) Logout() error { return nil }

// storeMessage writes r to a new file in dir and syncs it.
func storeMessage(dir string, r io.Reader) (int64, error) {
	f, err := os.CreateTemp(dir, "msg-*.eml")
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(f, r)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return n, fmt.Errorf("store %s: %w", f.Name(), err)
	}
	return n, nil
}
