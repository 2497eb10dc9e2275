package main

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// result is what one in-process run of the command produced.
type result struct {
	code           int
	stdout, stderr string
}

// runCmd runs the command line in-process with the given environment and standard input.
func runCmd(t *testing.T, envVars map[string]string, stdin string, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	e := &env{
		stdin:  strings.NewReader(stdin),
		stdout: &out,
		stderr: &errOut,
		lookupEnv: func(k string) (string, bool) {
			v, ok := envVars[k]
			return v, ok
		},
	}
	code := run(args, e)
	return result{code: code, stdout: out.String(), stderr: errOut.String()}
}

// writeFile writes content to name under dir and returns the path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// assertNoSecrets fails when any secret appears in the output.
func assertNoSecrets(t *testing.T, r result, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s == "" {
			continue
		}
		if strings.Contains(r.stdout, s) || strings.Contains(r.stderr, s) {
			t.Errorf("a secret (%d bytes) appears in the output:\nstdout:\n%s\nstderr:\n%s", len(s), r.stdout, r.stderr)
		}
	}
}

// testServer is an in-process SMTP server (emersion/go-smtp) with AUTH PLAIN and LOGIN.
type testServer struct {
	Addr string
	mu   sync.Mutex
	msgs [][]byte
	rcpt []string
}

type serverOptions struct {
	tls      *tls.Config // serves TLS: implicit with implicit=true, else STARTTLS
	implicit bool
	user     string // AUTH accepts only user/pass when set
	pass     string
	reject   map[string]string // recipient -> "550" style rejection (permanent)
}

// startServer starts a server on 127.0.0.1:0; it stops when the test ends.
func startServer(t *testing.T, opt serverOptions) *testServer {
	t.Helper()
	ts := &testServer{}
	be := smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &testSession{srv: ts, opt: opt}, nil
	})
	s := smtp.NewServer(be)
	s.Domain = "localhost"
	s.ErrorLog = log.New(io.Discard, "", 0)
	s.MaxMessageBytes = 10 << 20
	s.TLSConfig = opt.tls
	var l net.Listener
	var err error
	if opt.implicit {
		l, err = tls.Listen("tcp", "127.0.0.1:0", opt.tls)
	} else {
		l, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	ts.Addr = l.Addr().String()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(l)
	}()
	t.Cleanup(func() {
		s.Close()
		<-done
	})
	return ts
}

func (ts *testServer) messages() [][]byte {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([][]byte(nil), ts.msgs...)
}

type testSession struct {
	srv   *testServer
	opt   serverOptions
	authd bool
	rcpts []string
}

func (s *testSession) AuthMechanisms() []string {
	if s.opt.user == "" {
		return nil
	}
	return []string{sasl.Plain, sasl.Login}
}

func (s *testSession) Auth(mech string) (sasl.Server, error) {
	check := func(user, pass string) error {
		if user != s.opt.user || pass != s.opt.pass {
			return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}
		}
		s.authd = true
		return nil
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, user, pass string) error { return check(user, pass) }), nil
	case sasl.Login:
		return &loginServer{check: check}, nil
	}
	return nil, errors.New("unsupported mechanism")
}

func (s *testSession) Mail(from string, _ *smtp.MailOptions) error {
	if s.opt.user != "" && !s.authd {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	}
	return nil
}

func (s *testSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if msg, bad := s.opt.reject[to]; bad {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: msg}
	}
	s.rcpts = append(s.rcpts, to)
	return nil
}

func (s *testSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.srv.mu.Lock()
	s.srv.msgs = append(s.srv.msgs, b)
	s.srv.rcpt = append(s.srv.rcpt, s.rcpts...)
	s.srv.mu.Unlock()
	return nil
}

func (s *testSession) Reset()        { s.rcpts = nil }
func (s *testSession) Logout() error { return nil }

// loginServer is the server side of AUTH LOGIN, which go-sasl lacks.
type loginServer struct {
	check func(user, pass string) error
	user  string
	step  int
}

func (l *loginServer) Next(resp []byte) (challenge []byte, done bool, err error) {
	switch l.step {
	case 0:
		l.step++
		if len(resp) > 0 { // initial response carries the user name
			l.user = string(resp)
			l.step++
			return []byte("Password:"), false, nil
		}
		return []byte("Username:"), false, nil
	case 1:
		l.user = string(resp)
		l.step++
		return []byte("Password:"), false, nil
	default:
		return nil, true, l.check(l.user, string(resp))
	}
}
