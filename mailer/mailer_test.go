package mailer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/google/go-cmp/cmp"
	"github.com/smtpout/smtpout/config"
)

// outcomes returns each result's Outcome.
func outcomes(rs []Result) []Outcome {
	out := make([]Outcome, len(rs))
	for i, r := range rs {
		out[i] = r.Outcome
	}
	return out
}

func mustDeliver(t *testing.T, rs []Result) {
	t.Helper()
	for i, r := range rs {
		if r.Outcome != Delivered || r.Err != nil {
			t.Fatalf("result %d = %v, %v; want delivered", i, r.Outcome, r.Err)
		}
	}
}

func TestPartialRecipients(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			srv := startGoSMTP(t, &fakeBackend{rcptErr: func(to string) error {
				if to == "bad@example.com" {
					return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
				}
				return nil
			}}, false, nil)
			m := newMailer(t, testConfig(t, srv.addr, srv.cert, false), mode.opts...)
			rs := m.Send(context.Background(), []Message{msg("m1", "a@example.com", "bad@example.com", "c@example.com")})
			wantRej := []RecipientError{{Address: "bad@example.com", Code: 550, EnhancedCode: "5.1.1", Message: "no such user"}}
			if diff := cmp.Diff(wantRej, rs[0].Rejected); diff != "" {
				t.Errorf("Rejected (-want +got):\n%s", diff)
			}
			if rs[0].Outcome != Delivered || rs[0].Ambiguous {
				t.Errorf("Outcome = %v (ambiguous %v), want delivered", rs[0].Outcome, rs[0].Ambiguous)
			}
			if rs[0].Err == nil || !strings.Contains(rs[0].Err.Error(), "RCPT bad@example.com: 550 5.1.1") {
				t.Errorf("Err = %v, want it to name RCPT, the address and 550 5.1.1", rs[0].Err)
			}
			got := srv.Msgs()
			if len(got) != 1 {
				t.Fatalf("server stored %d messages, want 1", len(got))
			}
			if diff := cmp.Diff([]string{"a@example.com", "c@example.com"}, got[0].To); diff != "" {
				t.Errorf("envelope recipients (-want +got):\n%s", diff)
			}
			if !strings.Contains(got[0].Data, "\r\n.leading dot\r\n") || !strings.HasPrefix(got[0].Data, "From: from@example.com\r\n") {
				t.Errorf("stored message differs from the one sent:\n%q", got[0].Data)
			}
		})
	}
}

func TestTemporaryFailures(t *testing.T) {
	temp := func(code int, enh smtp.EnhancedCode) error {
		return &smtp.SMTPError{Code: code, EnhancedCode: enh, Message: "try later"}
	}
	perm := &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no"}
	for _, tc := range []struct {
		name     string
		mailErr  func(string) error
		rcptErr  func(string) error
		data     func(*smtp.Conn, []byte) error
		to       []string
		want     Outcome
		wantCode int
		wantStep Step
	}{
		{name: "MAIL 451", mailErr: func(string) error { return temp(451, smtp.EnhancedCode{4, 3, 0}) },
			want: Retry, wantCode: 451, wantStep: StepMAIL},
		{name: "every RCPT 452", rcptErr: func(string) error { return temp(452, smtp.EnhancedCode{4, 5, 3}) },
			to: []string{"a@example.com", "b@example.com"}, want: Retry, wantCode: 452, wantStep: StepRCPT},
		{name: "RCPT 550 and 451", rcptErr: func(to string) error {
			if to == "a@example.com" {
				return perm
			}
			return temp(451, smtp.EnhancedCode{4, 7, 1})
		}, to: []string{"a@example.com", "b@example.com"}, want: Retry, wantCode: 451, wantStep: StepRCPT},
		{name: "every RCPT 550", rcptErr: func(string) error { return perm },
			to: []string{"a@example.com", "b@example.com"}, want: Rejected, wantCode: 550, wantStep: StepRCPT},
		{name: "message 451 after the dot", data: func(*smtp.Conn, []byte) error { return temp(451, smtp.EnhancedCode{4, 3, 0}) },
			want: Retry, wantCode: 451, wantStep: StepDATA},
		{name: "message 554 after the dot", data: func(*smtp.Conn, []byte) error {
			return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "content rejected"}
		}, want: Rejected, wantCode: 554, wantStep: StepDATA},
	} {
		for _, mode := range modes {
			t.Run(tc.name+"/"+mode.name, func(t *testing.T) {
				srv := startGoSMTP(t, &fakeBackend{mailErr: tc.mailErr, rcptErr: tc.rcptErr, data: tc.data}, false, nil)
				m := newMailer(t, testConfig(t, srv.addr, srv.cert, false), mode.opts...)
				rs := m.Send(context.Background(), []Message{msg("m1", tc.to...), msg("m2", tc.to...)})
				for i, r := range rs {
					var se *StepError
					if !errors.As(r.Err, &se) {
						t.Fatalf("result %d: Err = %v, want a *StepError", i, r.Err)
					}
					if r.Outcome != tc.want || se.Code != tc.wantCode || se.Step != tc.wantStep {
						t.Errorf("result %d = %v, %s %d; want %v, %s %d (%v)", i, r.Outcome, se.Step, se.Code, tc.want, tc.wantStep, tc.wantCode, r.Err)
					}
				}
				if n := len(srv.Msgs()); n != 0 {
					t.Errorf("server stored %d messages, want 0", n)
				}
				// The failed transactions were reset: the connection still carries a message.
				srv.off.Store(true)
				mustDeliver(t, m.Send(context.Background(), []Message{msg("m3")}))
				if n := srv.Sessions(); n != 1 {
					t.Errorf("server saw %d connections, want 1", n)
				}
			})
		}
	}
}

func TestDropDuringData(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			var once sync.Once
			srv := startGoSMTP(t, &fakeBackend{data: func(c *smtp.Conn, _ []byte) error {
				dropped := false
				once.Do(func() { c.Conn().Close(); dropped = true })
				if dropped {
					return errors.New("dropped")
				}
				return nil
			}}, false, nil)
			m := newMailer(t, testConfig(t, srv.addr, srv.cert, false), mode.opts...)
			rs := m.Send(context.Background(), []Message{msg("m1")})
			if rs[0].Outcome != Retry || !rs[0].Ambiguous {
				t.Fatalf("result = %v ambiguous=%v (%v), want retry, ambiguous", rs[0].Outcome, rs[0].Ambiguous, rs[0].Err)
			}
			var se *StepError
			if !errors.As(rs[0].Err, &se) || se.Step != StepDATA && se.Step != StepMAIL {
				t.Errorf("Err = %v, want a DATA step error", rs[0].Err)
			}
			// The broken connection was replaced.
			mustDeliver(t, m.Send(context.Background(), []Message{msg("m2")}))
			if n := srv.Sessions(); n != 2 {
				t.Errorf("server saw %d connections, want 2", n)
			}
		})
	}
}

func TestIdleTimeoutReconnects(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []Option
	}{
		{"stale MAIL retried", []Option{WithNoopAfter(0)}},
		{"stale MAIL retried, lockstep", []Option{WithNoopAfter(0), WithoutPipelining()}},
		{"NOOP check", []Option{WithNoopAfter(1)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var readTimeoutSet sync.WaitGroup
			srv := startGoSMTP(t, nil, false, func(s *smtp.Server) {
				s.ReadTimeout = 200 * 1e6 // 200ms: the server's idle timeout
			})
			readTimeoutSet.Wait()
			m := newMailer(t, testConfig(t, srv.addr, srv.cert, false), tc.opts...)
			mustDeliver(t, m.Send(context.Background(), []Message{msg("m1")}))
			// Wait until the server has given up on the idle connection (421 4.4.2 and close).
			<-srv.logouts
			mustDeliver(t, m.Send(context.Background(), []Message{msg("m2"), msg("m3")}))
			if n := srv.Sessions(); n != 2 {
				t.Errorf("server saw %d connections, want 2", n)
			}
			if n := len(srv.Msgs()); n != 3 {
				t.Errorf("server stored %d messages, want 3", n)
			}
		})
	}
}

func TestLoginOnlyServer(t *testing.T) {
	be := &fakeBackend{users: map[string]string{"user": "pa55word"}, mechs: []string{"LOGIN"}}
	srv := startGoSMTP(t, be, false, nil)
	cfg := testConfig(t, srv.addr, srv.cert, false)
	cfg.Username, cfg.Password = "user", "pa55word"

	m := newMailer(t, cfg)
	rs := m.Send(context.Background(), []Message{msg("m1")})
	var se *StepError
	if !errors.As(rs[0].Err, &se) || se.Step != StepAUTH || !se.Operator() || rs[0].Outcome != Retry {
		t.Fatalf("PLAIN against a LOGIN-only server: %v, %v; want an AUTH operator error, retry", rs[0].Outcome, rs[0].Err)
	}
	if !strings.Contains(se.Error(), "the server offers LOGIN: set is_authlogin true") {
		t.Errorf("error %q lacks the is_authlogin hint", se)
	}
	if strings.Contains(se.Error(), "pa55word") {
		t.Errorf("error %q contains the password", se)
	}

	cfg.AuthLogin = true
	m = newMailer(t, cfg)
	mustDeliver(t, m.Send(context.Background(), []Message{msg("m2")}))
	if n := len(srv.Msgs()); n != 1 {
		t.Errorf("server stored %d messages, want 1", n)
	}
}

func TestAuthRequiredButNotOffered(t *testing.T) {
	srv := startGoSMTP(t, nil, false, nil) // no AuthSession: no AUTH advertised
	cfg := testConfig(t, srv.addr, srv.cert, false)
	cfg.Username, cfg.Password = "user", "secret"
	m := newMailer(t, cfg)
	rs := m.Send(context.Background(), []Message{msg("m1")})
	var se *StepError
	if !errors.As(rs[0].Err, &se) || se.Step != StepAUTH || !se.Operator() || rs[0].Outcome != Retry {
		t.Fatalf("got %v, %v; want an AUTH operator error, retry", rs[0].Outcome, rs[0].Err)
	}
	if n := len(srv.Msgs()); n != 0 {
		t.Errorf("message sent without AUTH: server stored %d", n)
	}
}

func TestSTARTTLSWithGoSMTP(t *testing.T) {
	be := &fakeBackend{users: map[string]string{"user": "pa55word"}}
	srv := startGoSMTP(t, be, true, nil)
	cfg := testConfig(t, srv.addr, srv.cert, true)
	cfg.Username, cfg.Password = "user", "pa55word"
	m := newMailer(t, cfg)
	mustDeliver(t, m.Send(context.Background(), []Message{msg("m1"), msg("m2")}))

	// A wrong password: 535, retry, an operator error that never shows the password.
	cfg.Password = "wrong-pa55"
	m = newMailer(t, cfg)
	rs := m.Send(context.Background(), []Message{msg("m3")})
	var se *StepError
	if !errors.As(rs[0].Err, &se) || se.Step != StepAUTH || se.Code != 535 || se.EnhancedCode != "5.7.8" || !se.Operator() {
		t.Fatalf("wrong password: %v; want AUTH 535 5.7.8, operator", rs[0].Err)
	}
	if rs[0].Outcome != Retry || strings.Contains(se.Error(), "wrong-pa55") ||
		!strings.Contains(se.Error(), "authentication failed: check username/password") {
		t.Errorf("wrong password: %v %q", rs[0].Outcome, se)
	}
}

func TestManyMessagesOneConnection(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			srv := startGoSMTP(t, nil, false, nil)
			cfg := testConfig(t, srv.addr, srv.cert, false)
			cfg.MaxConnections = 1
			m := newMailer(t, cfg, mode.opts...)
			var msgs []Message
			for i := range 100 {
				msgs = append(msgs, msg(fmt.Sprintf("m%03d", i)))
			}
			// 60 in one Send, then 40 more in separate Sends: one connection throughout.
			mustDeliver(t, m.Send(context.Background(), msgs[:60]))
			for i := 60; i < 100; i += 10 {
				mustDeliver(t, m.Send(context.Background(), msgs[i:i+10]))
			}
			got := srv.Msgs()
			if len(got) != 100 {
				t.Fatalf("server stored %d messages, want 100", len(got))
			}
			for i, g := range got {
				if want := fmt.Sprintf("Subject: m%03d\r\n", i); !strings.Contains(g.Data, want) {
					t.Fatalf("message %d lacks %q: out of order or mangled", i, want)
				}
			}
			if n := srv.Sessions(); n != 1 {
				t.Errorf("server saw %d connections, want 1", n)
			}
			if n := m.Dials(); n != 1 {
				t.Errorf("Dials() = %d, want 1", n)
			}
		})
	}
}

func TestParallelSendsUseThePool(t *testing.T) {
	srv := startGoSMTP(t, nil, false, nil)
	cfg := testConfig(t, srv.addr, srv.cert, false)
	cfg.MaxConnections = 3
	m := newMailer(t, cfg)
	var wg sync.WaitGroup
	results := make([][]Result, 8)
	for g := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var msgs []Message
			for i := range 10 {
				msgs = append(msgs, msg(fmt.Sprintf("g%d-%d", g, i)))
			}
			results[g] = m.Send(context.Background(), msgs)
		}()
	}
	wg.Wait()
	for _, rs := range results {
		mustDeliver(t, rs)
	}
	if n := len(srv.Msgs()); n != 80 {
		t.Errorf("server stored %d messages, want 80", n)
	}
	if n := srv.Sessions(); n > 3 || n < 1 {
		t.Errorf("server saw %d connections, want 1..3", n)
	}
}

func TestCancelAbortsPromptly(t *testing.T) {
	block := make(chan struct{})
	srv := startGoSMTP(t, &fakeBackend{data: func(*smtp.Conn, []byte) error { <-block; return nil }}, false, nil)
	t.Cleanup(func() { releaseStalled(t, block, srv) }) // runs before the server's Close
	cfg := testConfig(t, srv.addr, srv.cert, false)
	cfg.Timeout = 1 << 62 // effectively none: only the cancellation can end the wait
	m := newMailer(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-srv.inData; cancel() }()
	rs := m.Send(ctx, []Message{msg("m1"), msg("m2")})
	if diff := cmp.Diff([]Outcome{Retry, Retry}, outcomes(rs)); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
	if !errors.Is(rs[0].Err, context.Canceled) {
		t.Errorf("Err = %v, want it to wrap context.Canceled", rs[0].Err)
	}
	if !rs[0].Ambiguous {
		t.Errorf("cancelled while waiting for the reply to the message: want Ambiguous")
	}
}

// TestStalledServerCostsOneTimeout: a server that stops answering after the message must not
// hold a Send for one timeout per message; the rest are handed back as Retry after the first.
func TestStalledServerCostsOneTimeout(t *testing.T) {
	block := make(chan struct{})
	srv := startGoSMTP(t, &fakeBackend{data: func(*smtp.Conn, []byte) error { <-block; return nil }}, false, nil)
	t.Cleanup(func() { releaseStalled(t, block, srv) }) // runs before the server's Close
	cfg := testConfig(t, srv.addr, srv.cert, false)
	cfg.Timeout = 300 * time.Millisecond
	m := newMailer(t, cfg)
	msgs := []Message{msg("m1"), msg("m2"), msg("m3"), msg("m4"), msg("m5")}
	rs := m.Send(context.Background(), msgs)
	if diff := cmp.Diff([]Outcome{Retry, Retry, Retry, Retry, Retry}, outcomes(rs)); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
	if !rs[0].Ambiguous {
		t.Errorf("first message timed out after being sent: want Ambiguous")
	}
	for i, r := range rs[1:] {
		if r.Ambiguous || !timeout(r.Err) {
			t.Errorf("message %d: Ambiguous=%v Err=%v; want a not-sent Retry carrying the timeout", i+2, r.Ambiguous, r.Err)
		}
	}
	if n := srv.Sessions(); n != 1 {
		t.Errorf("server saw %d connections, want 1: no redial per stalled message", n)
	}
}

func TestCloseAndSendAfterClose(t *testing.T) {
	s := startScripted(t, "PIPELINING", func(string, int) string { return "" })
	m := newMailer(t, testConfig(t, s.addr, s.cert, false))
	mustDeliver(t, m.Send(context.Background(), []Message{msg("m1")}))
	if err := m.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	<-s.done // the server saw the connection end
	if err := m.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	cmds := s.Cmds()
	if cmds[len(cmds)-1] != "QUIT" {
		t.Errorf("last command = %q, want QUIT (all: %q)", cmds[len(cmds)-1], cmds)
	}
	rs := m.Send(context.Background(), []Message{msg("m2")})
	if rs[0].Outcome != Retry || !errors.Is(rs[0].Err, ErrClosed) {
		t.Errorf("Send after Close = %v, %v; want retry, ErrClosed", rs[0].Outcome, rs[0].Err)
	}
}

func TestDataCommandRejected(t *testing.T) {
	for _, ehlo := range []string{"", "PIPELINING"} {
		t.Run("ehlo="+ehlo, func(t *testing.T) {
			rejected := false
			s := startScripted(t, ehlo, func(line string, _ int) string {
				if line == "DATA" && !rejected {
					rejected = true
					return "554 5.5.1 no valid recipients"
				}
				return ""
			})
			m := newMailer(t, testConfig(t, s.addr, s.cert, false))
			rs := m.Send(context.Background(), []Message{msg("m1"), msg("m2")})
			var se *StepError
			if !errors.As(rs[0].Err, &se) || se.Step != StepDATA || se.Code != 554 || se.EnhancedCode != "5.5.1" || rs[0].Outcome != Rejected {
				t.Errorf("first message: %v, %v; want DATA 554 5.5.1, rejected", rs[0].Outcome, rs[0].Err)
			}
			if rs[1].Outcome != Delivered || rs[1].Err != nil {
				t.Errorf("second message on the same connection: %v, %v; want delivered", rs[1].Outcome, rs[1].Err)
			}
			if n := s.Conns(); n != 1 {
				t.Errorf("server saw %d connections, want 1", n)
			}
			var verbs []string
			for _, c := range s.Cmds() {
				verbs = append(verbs, strings.SplitN(c, ":", 2)[0])
			}
			want := []string{"EHLO client.example.com", "MAIL FROM", "RCPT TO", "DATA", "RSET", "MAIL FROM", "RCPT TO", "DATA"}
			if diff := cmp.Diff(want, verbs); diff != "" {
				t.Errorf("commands (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNoFDLeak(t *testing.T) {
	if _, err := os.ReadDir("/proc/self/fd"); err != nil {
		t.Skip("no /proc/self/fd")
	}
	fds := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	users := map[string]string{"user": "right"}
	srv := startGoSMTP(t, &fakeBackend{users: users, rcptErr: func(to string) error {
		if strings.HasPrefix(to, "bad") {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no"}
		}
		return nil
	}}, false, nil)
	good := testConfig(t, srv.addr, srv.cert, false)
	good.Username, good.Password = "user", "right"
	wrongPass := good
	wrongPass.Password = "wrong"
	untrusted := good
	untrusted.TLSCAPEM = nil
	starttlsMismatch := good
	starttlsMismatch.StartTLS = true
	starttlsMismatch.Timeout = 300 * 1e6
	refused := good
	refused.Port = closedPort(t)

	// Warm up: the runtime and the server open their own descriptors once.
	m := newMailer(t, good)
	mustDeliver(t, m.Send(context.Background(), []Message{msg("warm")}))
	m.Close()
	<-srv.logouts
	before := fds()

	cases := []struct {
		cfg  config.Config
		msgs []Message
	}{
		{wrongPass, []Message{msg("a")}},
		{untrusted, []Message{msg("a")}},
		{refused, []Message{msg("a")}},
		{good, []Message{msg("a", "bad@example.com")}},
		{starttlsMismatch, []Message{msg("a")}},
	}
	for i := 0; i < 50; i++ {
		c := cases[i%len(cases)]
		m, err := New(c.cfg)
		if err != nil {
			t.Fatal(err)
		}
		rs := m.Send(context.Background(), c.msgs)
		if rs[0].Outcome == Delivered {
			t.Fatalf("case %d delivered; want a failure", i%len(cases))
		}
		m.Close()
	}
	// No client socket to the server may remain: checked exactly, through /proc/net/tcp.
	if n := socketsTo(t, srv.addr); n != 0 {
		t.Errorf("%d client sockets to the server still open after 50 failed sends", n)
	}
	// The server runs in this process too: wait for it to close its ends, then compare totals.
	after := fds()
	for deadline := time.Now().Add(10 * time.Second); after > before && time.Now().Before(deadline); after = fds() {
		runtime.Gosched()
		time.Sleep(10 * time.Millisecond) // polling for the server's cleanup, not a timing assumption
	}
	if after > before {
		t.Errorf("open descriptors: %d before, %d after 50 failed sends", before, after)
	}
}

// closedPort returns a 127.0.0.1 port nothing listens on.
func closedPort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return p
}

// socketsTo counts this process's open TCP sockets whose remote end is addr.
func socketsTo(t *testing.T, addr string) int {
	t.Helper()
	_, port, _ := net.SplitHostPort(addr)
	var p int
	fmt.Sscan(port, &p)
	remote := fmt.Sprintf(":%04X", p)
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fields := strings.Fields(line)
			if len(fields) > 9 && strings.HasSuffix(fields[2], remote) {
				inodes[fields[9]] = true
			}
		}
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		link, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil {
			continue
		}
		if ino, ok := strings.CutPrefix(link, "socket:["); ok && inodes[strings.TrimSuffix(ino, "]")] {
			n++
		}
	}
	return n
}

// BenchmarkSend measures delivery over one reused implicit-TLS connection to an in-process
// go-smtp server (which costs CPU in the same process: the figures are an upper bound).
func BenchmarkSend(b *testing.B) {
	for _, mode := range modes {
		b.Run(mode.name, func(b *testing.B) {
			srv := startGoSMTP(b, &fakeBackend{discard: true}, false, nil)
			m := benchMailer(b, srv.addr, srv.cert, mode.opts...)
			sendBatches(b, m, benchMessage(), 32)
		})
	}
}

func mustDeliverB(b *testing.B, rs []Result) {
	for i, r := range rs {
		if r.Outcome != Delivered {
			b.Fatalf("result %d = %v, %v", i, r.Outcome, r.Err)
		}
	}
}

// releaseStalled unblocks a server stalled in its data handler and waits until its sessions
// have ended, so that closing the server does not race go-smtp's own BDAT handling (a data
// race inside go-smtp v0.25.1 between Server.Close and handleBdat).
func releaseStalled(t *testing.T, block chan struct{}, srv *goSMTP) {
	t.Helper()
	close(block)
	deadline := time.After(10 * time.Second)
	for srv.live() > 0 {
		select {
		case <-srv.logouts:
		case <-time.After(10 * time.Millisecond): // logouts may have been read elsewhere
		case <-deadline:
			t.Errorf("stalled sessions did not end within 10 s")
			return
		}
	}
}
