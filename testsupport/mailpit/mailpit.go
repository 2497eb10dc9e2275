// Package mailpit starts a real mailpit SMTP server for a test and reads what it received
// through mailpit's HTTP API.
//
// The binary is found through the MAILPIT environment variable, then PATH, then
// $(go env GOPATH)/bin/mailpit. When it is missing the test is skipped, or fails when
// SMTPOUT_REQUIRE_MAILPIT=1 (as `make test` and CI set it).
package mailpit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TLSMode selects how mailpit's SMTP port uses TLS.
type TLSMode int

// The TLS modes.
const (
	// Plain: no TLS at all.
	Plain TLSMode = iota
	// STARTTLS: the port speaks plaintext first and offers STARTTLS (--smtp-require-starttls
	// makes it mandatory).
	STARTTLS
	// ImplicitTLS: the port expects a TLS handshake first (--smtp-require-tls).
	ImplicitTLS
)

// Options configures a mailpit server. The zero value is a plaintext server without auth.
type Options struct {
	// TLS selects the SMTP TLS mode; STARTTLS and ImplicitTLS need CertFile and KeyFile.
	TLS TLSMode
	// CertFile and KeyFile are PEM files for the SMTP server (see testsupport/testcert).
	CertFile, KeyFile string
	// Auth maps user names to passwords; when non-empty mailpit requires AUTH.
	Auth map[string]string
	// AuthAcceptAny accepts any user name and password.
	AuthAcceptAny bool
	// MaxRecipients makes mailpit answer 452 4.5.3 beyond this many RCPTs (0: mailpit's default).
	MaxRecipients int
	// AllowedRecipients is a regular expression; other recipients get 550 5.1.0.
	AllowedRecipients string
	// Args are extra command-line arguments.
	Args []string
	// StartTimeout bounds the wait for /readyz (default 30s).
	StartTimeout time.Duration
}

// Server is a running mailpit process.
type Server struct {
	t       testing.TB
	cmd     *exec.Cmd
	smtp    string
	api     string
	client  *http.Client
	logMu   sync.Mutex
	log     bytes.Buffer
	exited  chan struct{}
	exitErr error
}

// Binary returns the path of the mailpit binary, or "" when it cannot be found.
func Binary() string {
	if p := os.Getenv("MAILPIT"); p != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
		return ""
	}
	if p, err := exec.LookPath("mailpit"); err == nil {
		return p
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
			gopath = strings.TrimSpace(string(out))
		}
	}
	if gopath == "" {
		if home, err := os.UserHomeDir(); err == nil {
			gopath = filepath.Join(home, "go")
		}
	}
	for _, dir := range filepath.SplitList(gopath) {
		p := filepath.Join(dir, "bin", "mailpit")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// Start starts mailpit on free 127.0.0.1 ports, waits until it is ready and stops it when the
// test ends. It skips the test when no binary is found, unless SMTPOUT_REQUIRE_MAILPIT=1.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	bin := Binary()
	if bin == "" {
		msg := "mailpit not found (set MAILPIT, put it on PATH, or run `make mailpit`)"
		if os.Getenv("SMTPOUT_REQUIRE_MAILPIT") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	smtpAddr, apiAddr := freePort(t), freePort(t)
	args := []string{
		"--smtp", smtpAddr, "--listen", apiAddr,
		"--disable-version-check", "--smtp-disable-rdns", "--quiet",
		"--database", filepath.Join(t.TempDir(), "mailpit.db"),
	}
	switch opts.TLS {
	case STARTTLS:
		args = append(args, "--smtp-tls-cert", opts.CertFile, "--smtp-tls-key", opts.KeyFile, "--smtp-require-starttls")
	case ImplicitTLS:
		args = append(args, "--smtp-tls-cert", opts.CertFile, "--smtp-tls-key", opts.KeyFile, "--smtp-require-tls")
	}
	if len(opts.Auth) > 0 {
		var b strings.Builder
		for u, p := range opts.Auth {
			fmt.Fprintf(&b, "%s:%s\n", u, p)
		}
		f := filepath.Join(t.TempDir(), "smtp-auth")
		if err := os.WriteFile(f, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--smtp-auth-file", f)
	}
	if opts.AuthAcceptAny {
		args = append(args, "--smtp-auth-accept-any")
	}
	if opts.MaxRecipients > 0 {
		args = append(args, "--smtp-max-recipients", strconv.Itoa(opts.MaxRecipients))
	}
	if opts.AllowedRecipients != "" {
		args = append(args, "--smtp-allowed-recipients", opts.AllowedRecipients)
	}
	args = append(args, opts.Args...)

	s := &Server{
		t:      t,
		smtp:   smtpAddr,
		api:    "http://" + apiAddr,
		client: &http.Client{Timeout: 10 * time.Second},
		exited: make(chan struct{}),
	}
	s.cmd = exec.Command(bin, args...)
	s.cmd.Stdout = (*lockedWriter)(s)
	s.cmd.Stderr = (*lockedWriter)(s)
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("mailpit: start %s: %v", bin, err)
	}
	go func() { s.exitErr = s.cmd.Wait(); close(s.exited) }()
	t.Cleanup(s.stop)

	timeout := opts.StartTimeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	deadline := time.Now().Add(timeout)
	for {
		if s.ready() {
			// /readyz reports the HTTP side; make sure the SMTP listener accepts too.
			if c, err := net.DialTimeout("tcp", smtpAddr, time.Second); err == nil {
				c.Close()
				return s
			}
		}
		select {
		case <-s.exited:
			t.Fatalf("mailpit exited before it was ready: %v\n%s", s.exitErr, s.Log())
		case <-time.After(20 * time.Millisecond): // poll interval, not a wait for an event
		}
		if time.Now().After(deadline) {
			t.Fatalf("mailpit not ready after %v\n%s", timeout, s.Log())
		}
	}
}

type lockedWriter Server

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.logMu.Lock()
	defer w.logMu.Unlock()
	return w.log.Write(p)
}

// Log returns what mailpit has written to stdout and stderr so far.
func (s *Server) Log() string {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	return s.log.String()
}

func (s *Server) ready() bool {
	resp, err := s.client.Get(s.api + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func (s *Server) stop() {
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
}

func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// SMTPAddr returns the SMTP listener's "127.0.0.1:port".
func (s *Server) SMTPAddr() string { return s.smtp }

// SMTPHost returns the SMTP listener's host, "127.0.0.1".
func (s *Server) SMTPHost() string {
	h, _, _ := net.SplitHostPort(s.smtp)
	return h
}

// SMTPPort returns the SMTP listener's port.
func (s *Server) SMTPPort() int {
	_, p, _ := net.SplitHostPort(s.smtp)
	n, _ := strconv.Atoi(p)
	return n
}

// APIURL returns the base URL of the HTTP API ("http://127.0.0.1:port").
func (s *Server) APIURL() string { return s.api }

// Summary is one message in the list Messages returns.
type Summary struct {
	ID        string
	MessageID string
	From      *mail.Address
	To        []*mail.Address
	Cc        []*mail.Address
	Bcc       []*mail.Address
	Subject   string
	Created   time.Time
	Size      int
}

// Message is one stored message in full.
type Message struct {
	ID        string
	MessageID string
	From      *mail.Address
	To        []*mail.Address
	Cc        []*mail.Address
	Bcc       []*mail.Address
	ReplyTo   []*mail.Address
	Subject   string
	Date      time.Time
	Text      string
	HTML      string
	Size      int
}

// mailpit's JSON address is {"Name": ..., "Address": ...}, the same field names as mail.Address.

// Messages lists every stored message, newest first, as mailpit orders them.
func (s *Server) Messages() ([]Summary, error) {
	var out struct {
		Total    int
		Messages []Summary `json:"messages"`
	}
	if err := s.getJSON("/api/v1/messages?limit=10000", &out); err != nil {
		return nil, err
	}
	return out.Messages, nil
}

// Message returns one message by its mailpit ID (Summary.ID, not the Message-ID).
func (s *Server) Message(id string) (*Message, error) {
	var m Message
	if err := s.getJSON("/api/v1/message/"+id, &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// Raw returns the message source as mailpit stored it. mailpit adds a Bcc: header for envelope
// recipients absent from To and Cc; capture with your own server to check headers exactly.
func (s *Server) Raw(id string) ([]byte, error) {
	return s.get("/api/v1/message/" + id + "/raw")
}

// Headers returns the message headers, each name mapped to its values.
func (s *Server) Headers(id string) (map[string][]string, error) {
	h := map[string][]string{}
	if err := s.getJSON("/api/v1/message/"+id+"/headers", &h); err != nil {
		return nil, err
	}
	return h, nil
}

// DeleteAll deletes every stored message.
func (s *Server) DeleteAll() error {
	req, err := http.NewRequest(http.MethodDelete, s.api+"/api/v1/messages", nil)
	if err != nil {
		return err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("mailpit: DELETE /api/v1/messages: %s: %s", resp.Status, b)
	}
	return nil
}

// Count returns how many messages are stored.
func (s *Server) Count() (int, error) {
	var out struct {
		Total int `json:"total"`
	}
	if err := s.getJSON("/api/v1/messages?limit=1", &out); err != nil {
		return 0, err
	}
	return out.Total, nil
}

// WaitForCount polls until at least n messages are stored and returns them, or fails after
// timeout with the count it saw. mailpit stores a message before answering the final ".", so
// after a successful send the wait normally ends at the first poll.
func (s *Server) WaitForCount(n int, timeout time.Duration) ([]Summary, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		msgs, err := s.Messages()
		if err == nil && len(msgs) >= n {
			return msgs, nil
		}
		select {
		case <-ctx.Done():
			if err != nil {
				return nil, fmt.Errorf("mailpit: waiting for %d messages: %w", n, err)
			}
			return msgs, fmt.Errorf("mailpit: %d messages after %v, want %d", len(msgs), timeout, n)
		case <-tick.C:
		}
	}
}

func (s *Server) get(path string) ([]byte, error) {
	resp, err := s.client.Get(s.api + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("mailpit: GET %s: %s: %s", path, resp.Status, bytes.TrimSpace(b))
	}
	return b, nil
}

func (s *Server) getJSON(path string, v any) error {
	b, err := s.get(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return errors.Join(fmt.Errorf("mailpit: GET %s: decoding JSON", path), err)
	}
	return nil
}
