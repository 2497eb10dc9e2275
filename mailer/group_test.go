package mailer

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/google/go-cmp/cmp"

	"github.com/smtpout/smtpout/config"
	"github.com/smtpout/smtpout/testsupport/testcert"
)

// verbs returns each command's verb (the part before the first ':' or ' '), dropping the
// greeting of each connection and what came before the last "MAIL" of the warm-up.
func verbsAfter(cmds []string, skip int) []string {
	var out []string
	for _, c := range cmds[skip:] {
		v := strings.SplitN(c, ":", 2)[0]
		v = strings.SplitN(v, " ", 2)[0]
		out = append(out, v)
	}
	return out
}

// subjects returns the Subject of each stored message.
func subjects(msgs []string) []string {
	var out []string
	for _, m := range msgs {
		for _, l := range strings.Split(m, "\r\n") {
			if s, ok := strings.CutPrefix(l, "Subject: "); ok {
				out = append(out, s)
				break
			}
		}
	}
	return out
}

// groupConfig is testConfig (implicit TLS) with pipeline_depth 16, so a Send of several
// messages makes a group whatever the default is.
func groupConfig(t testing.TB, addr string, cert *testcert.Cert) config.Config {
	t.Helper()
	cfg := testConfig(t, addr, cert, false)
	cfg.PipelineDepth = 16
	return cfg
}

// TestPipelinedGroup: on a connection that pipelines BDAT, a Send of several messages goes
// out as one group; each message keeps its own outcome, a failed transaction cannot spoil the
// next one (every transaction after the first starts with RSET, and the server here keeps a
// refused transaction open as strict servers do), and a failed last one is followed by RSET.
func TestPipelinedGroup(t *testing.T) {
	big := msg("m2")
	big.Data = append(big.Data, strings.Repeat("x", 100)+"\r\n"...)
	bigBDAT := "BDAT " + strconv.Itoa(len(big.Data)) + " LAST"
	refusedFrom := msg("m2")
	refusedFrom.From = "refused@example.com"
	invalid := msg("bad")
	invalid.From = "bad\r\nRCPT TO:<x@example.com>"
	large := func(id string) Message {
		m := msg(id)
		m.Data = append(m.Data, strings.Repeat(strings.Repeat("y", 78)+"\r\n", 500)...) // 40 KB
		return m
	}
	group := []string{"RSET", "MAIL", "RCPT", "BDAT"}
	tx := []string{"MAIL", "RCPT", "BDAT"}
	cat := func(parts ...[]string) []string {
		var out []string
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	for _, tc := range []struct {
		name      string
		msgs      []Message
		reply     map[string]string // command line -> reply
		want      []Outcome
		wantSteps []Step // of each result's *StepError, "" for none
		stored    []string
		verbs     []string
	}{
		{
			name:      "all accepted",
			msgs:      []Message{msg("m1"), msg("m2"), msg("m3"), msg("m4")},
			want:      []Outcome{Delivered, Delivered, Delivered, Delivered},
			wantSteps: []Step{"", "", "", ""},
			stored:    []string{"warm", "m1", "m2", "m3", "m4"},
			verbs:     cat(tx, group, group, group),
		},
		{
			name:      "every recipient of one refused",
			msgs:      []Message{msg("m1"), msg("m2", "bad@example.com"), msg("m3"), msg("m4")},
			reply:     map[string]string{"RCPT TO:<bad@example.com>": "550 5.1.1 no such user"},
			want:      []Outcome{Delivered, Rejected, Delivered, Delivered},
			wantSteps: []Step{"", StepRCPT, "", ""},
			stored:    []string{"warm", "m1", "m3", "m4"},
			verbs:     cat(tx, group, group, group),
		},
		{
			name:      "MAIL of one refused for now",
			msgs:      []Message{msg("m1"), refusedFrom, msg("m3")},
			reply:     map[string]string{"MAIL FROM:<refused@example.com>": "451 4.3.0 try later"},
			want:      []Outcome{Delivered, Retry, Delivered},
			wantSteps: []Step{"", StepMAIL, ""},
			stored:    []string{"warm", "m1", "m3"},
			verbs:     cat(tx, group, group),
		},
		{
			name:      "one message refused at BDAT",
			msgs:      []Message{msg("m1"), big, msg("m3")},
			reply:     map[string]string{bigBDAT: "554 5.6.0 content rejected"},
			want:      []Outcome{Delivered, Rejected, Delivered},
			wantSteps: []Step{"", StepDATA, ""},
			stored:    []string{"warm", "m1", "m3"},
			verbs:     cat(tx, group, group),
		},
		{
			name:      "an envelope that cannot be written is left out",
			msgs:      []Message{msg("m1"), invalid, msg("m3")},
			want:      []Outcome{Delivered, Rejected, Delivered},
			wantSteps: []Step{"", StepMAIL, ""},
			stored:    []string{"warm", "m1", "m3"},
			verbs:     cat(tx, group),
		},
		{
			// 80 KB stop the group after the second; its writes overflow the group buffer.
			name:      "messages bigger than a group",
			msgs:      []Message{large("b1"), large("b2"), large("b3")},
			want:      []Outcome{Delivered, Delivered, Delivered},
			wantSteps: []Step{"", "", ""},
			stored:    []string{"warm", "b1", "b2", "b3"},
			verbs:     cat(tx, group, tx),
		},
		{
			name:      "last one refused: RSET follows",
			msgs:      []Message{msg("m1"), msg("m2"), msg("m3", "bad@example.com")},
			reply:     map[string]string{"RCPT TO:<bad@example.com>": "550 5.1.1 no such user"},
			want:      []Outcome{Delivered, Delivered, Rejected},
			wantSteps: []Step{"", "", StepRCPT},
			stored:    []string{"warm", "m1", "m2"},
			verbs:     cat(tx, group, group, []string{"RSET"}),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startScripted(t, "PIPELINING CHUNKING", func(line string, _ int) string { return tc.reply[line] })
			m := newMailer(t, groupConfig(t, s.addr, s.cert))
			mustDeliver(t, m.Send(context.Background(), []Message{msg("warm")}))
			skip := len(s.Cmds())
			rs := m.Send(context.Background(), tc.msgs)
			if diff := cmp.Diff(tc.want, outcomes(rs)); diff != "" {
				t.Errorf("outcomes (-want +got):\n%s", diff)
			}
			var steps []Step
			for _, r := range rs {
				var se *StepError
				if errors.As(r.Err, &se) {
					steps = append(steps, se.Step)
				} else {
					steps = append(steps, "")
				}
			}
			if diff := cmp.Diff(tc.wantSteps, steps); diff != "" {
				t.Errorf("steps of the errors (-want +got):\n%s", diff)
			}
			s.mu.Lock()
			stored := subjects(s.msgs)
			s.mu.Unlock()
			if diff := cmp.Diff(tc.stored, stored); diff != "" {
				t.Errorf("messages stored (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.verbs, verbsAfter(s.Cmds(), skip)); diff != "" {
				t.Errorf("commands of the group (-want +got):\n%s", diff)
			}
			// The connection is still in a clean state for the next message.
			mustDeliver(t, m.Send(context.Background(), []Message{msg("after")}))
			if n := s.Conns(); n != 1 {
				t.Errorf("server saw %d connections, want 1", n)
			}
		})
	}
}

// TestPipelinedGroupConnectionLost: the connection drops while the server handles the second
// message of a group, after its MAIL and RCPT were answered. The first stays delivered; the
// second (its end was sent, its last reply lost) is retried and flagged ambiguous; the third
// and fourth, which got no reply at all, are sent once more on a new connection, as a lone
// message that found its connection dead would be.
func TestPipelinedGroupConnectionLost(t *testing.T) {
	var once sync.Once
	srv := startGoSMTP(t, &fakeBackend{data: func(c *smtp.Conn, body []byte) error {
		if strings.Contains(string(body), "Subject: m2\r\n") {
			dropped := false
			once.Do(func() { c.Conn().Close(); dropped = true })
			if dropped {
				return errors.New("dropped")
			}
		}
		return nil
	}}, false, nil)
	m := newMailer(t, groupConfig(t, srv.addr, srv.cert))
	mustDeliver(t, m.Send(context.Background(), []Message{msg("warm")}))
	rs := m.Send(context.Background(), []Message{msg("m1"), msg("m2"), msg("m3"), msg("m4")})
	if diff := cmp.Diff([]Outcome{Delivered, Retry, Delivered, Delivered}, outcomes(rs)); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
	if !rs[1].Ambiguous || rs[1].Err == nil {
		t.Errorf("m2: ambiguous %v, err %v; want ambiguous with an error", rs[1].Ambiguous, rs[1].Err)
	}
	var resent []bool
	for _, r := range rs {
		resent = append(resent, r.Resent)
	}
	if diff := cmp.Diff([]bool{false, false, true, true}, resent); diff != "" {
		t.Errorf("Resent (-want +got):\n%s", diff)
	}
	var got []string
	for _, g := range srv.Msgs() {
		got = append(got, subjects([]string{g.Data})...)
	}
	if diff := cmp.Diff([]string{"warm", "m1", "m3", "m4"}, got); diff != "" {
		t.Errorf("messages stored (-want +got):\n%s", diff)
	}
	if n := srv.Sessions(); n != 2 {
		t.Errorf("server saw %d connections, want 2", n)
	}
	if n, seen := m.Dials(), srv.Sessions(); n != int64(seen) {
		t.Errorf("Dials() = %d, the server saw %d connections: each must count once", n, seen)
	}
}

// TestPipelinedGroupResentWithoutChunking: the server closes the connection in the middle of
// a group (421 to the second message's MAIL), and the new connection offers no CHUNKING. The
// messages behind the 421 went out whole before it; sent again one by one on the new
// connection, they still carry the "may be repeated" flag (Resent). The one refused with 421
// at MAIL cannot have been stored: not flagged. Every connection is counted once.
func TestPipelinedGroupResentWithoutChunking(t *testing.T) {
	var once sync.Once
	var s *scripted
	s = startScripted(t, "PIPELINING CHUNKING", func(line string, n int) string {
		if !strings.HasPrefix(line, "MAIL") || n != 2 {
			return ""
		}
		reply := ""
		once.Do(func() {
			s.mu.Lock()
			s.ehlo = "PIPELINING" // the next connection has no CHUNKING
			s.mu.Unlock()
			reply = "421 4.3.2 shutting down"
		})
		return reply
	})
	m := newMailer(t, groupConfig(t, s.addr, s.cert))
	mustDeliver(t, m.Send(context.Background(), []Message{msg("warm")}))
	rs := m.Send(context.Background(), []Message{msg("m1"), msg("m2"), msg("m3"), msg("m4")})
	if diff := cmp.Diff([]Outcome{Delivered, Delivered, Delivered, Delivered}, outcomes(rs)); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
	var resent []bool
	for _, r := range rs {
		resent = append(resent, r.Resent)
	}
	if diff := cmp.Diff([]bool{false, false, true, true}, resent); diff != "" {
		t.Errorf("Resent (-want +got):\n%s", diff)
	}
	s.mu.Lock()
	stored := subjects(s.msgs)
	s.mu.Unlock()
	if diff := cmp.Diff([]string{"warm", "m1", "m2", "m3", "m4"}, stored); diff != "" {
		t.Errorf("messages stored (-want +got):\n%s", diff)
	}
	if verbs := verbsAfter(s.Cmds(), 0); !contains(verbs, "DATA") {
		t.Errorf("no DATA on the second connection: it did not go without CHUNKING: %v", verbs)
	}
	if n, seen := m.Dials(), s.Conns(); n != 2 || int64(seen) != n {
		t.Errorf("Dials() = %d, the server saw %d connections; want 2 each", n, seen)
	}
}

// TestStaleConnectionResentFlagged: a pooled connection the server closed without a word
// carries the next message; it is sent again on a new connection, and flagged Resent when its
// body had gone out with the commands (BDAT): the server may have stored it before closing.
// In DATA and lock-step modes nothing of the body went out: not flagged.
func TestStaleConnectionResentFlagged(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			var mu sync.Mutex
			var conns []*smtp.Conn
			srv := startGoSMTP(t, &fakeBackend{data: func(c *smtp.Conn, _ []byte) error {
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
				return nil
			}}, false, nil)
			m := newMailer(t, testConfig(t, srv.addr, srv.cert, false), append([]Option{WithNoopAfter(0)}, mode.opts...)...)
			mustDeliver(t, m.Send(context.Background(), []Message{msg("warm")}))
			mu.Lock()
			_ = conns[0].Conn().Close()
			mu.Unlock()
			<-srv.logouts
			rs := m.Send(context.Background(), []Message{msg("m1")})
			mustDeliver(t, rs)
			want := mode.name == "pipelining+chunking"
			if rs[0].Resent != want {
				t.Errorf("Resent = %v, want %v", rs[0].Resent, want)
			}
			if n := srv.Sessions(); n != 2 {
				t.Errorf("server saw %d connections, want 2", n)
			}
		})
	}
}

// TestPipelinedGroupStalledServer: the server stops answering in the middle of a group. The
// messages behind the stalled one are handed back (Retry) with it after one timeout, not
// resent on a new connection to wait for another.
func TestPipelinedGroupStalledServer(t *testing.T) {
	block := make(chan struct{})
	srv := startGoSMTP(t, &fakeBackend{data: func(_ *smtp.Conn, body []byte) error {
		if strings.Contains(string(body), "Subject: m2\r\n") {
			<-block
		}
		return nil
	}}, false, nil)
	t.Cleanup(func() { releaseStalled(t, block, srv) }) // runs before the server's Close
	cfg := groupConfig(t, srv.addr, srv.cert)
	cfg.Timeout = 300 * time.Millisecond
	m := newMailer(t, cfg)
	mustDeliver(t, m.Send(context.Background(), []Message{msg("warm")}))
	rs := m.Send(context.Background(), []Message{msg("m1"), msg("m2"), msg("m3"), msg("m4")})
	if diff := cmp.Diff([]Outcome{Delivered, Retry, Retry, Retry}, outcomes(rs)); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
	if !timeout(rs[1].Err) || !rs[1].Ambiguous {
		t.Errorf("m2: Err=%v Ambiguous=%v; want the timeout, ambiguous", rs[1].Err, rs[1].Ambiguous)
	}
	if n := srv.Sessions(); n != 1 {
		t.Errorf("server saw %d connections, want 1: no redial after a stall", n)
	}
}

// TestPipelinedGroupLostThenServerGone: the connection drops in the middle of a group and the
// server is gone before a new connection can be opened. The messages whose body went out on
// the lost connection cannot be sent again: they come back as Retry flagged Ambiguous (the
// server may hold them), not as a plain failure to connect.
func TestPipelinedGroupLostThenServerGone(t *testing.T) {
	var srv *goSMTP
	var once sync.Once
	srv = startGoSMTP(t, &fakeBackend{data: func(c *smtp.Conn, body []byte) error {
		if strings.Contains(string(body), "Subject: m2\r\n") {
			gone := false
			once.Do(func() { _ = srv.srv.Close(); gone = true })
			if gone {
				return errors.New("gone")
			}
		}
		return nil
	}}, false, nil)
	m := newMailer(t, groupConfig(t, srv.addr, srv.cert))
	mustDeliver(t, m.Send(context.Background(), []Message{msg("warm")}))
	rs := m.Send(context.Background(), []Message{msg("m1"), msg("m2"), msg("m3"), msg("m4")})
	for i, r := range rs[1:] {
		if r.Outcome != Retry || !r.Ambiguous || r.Resent {
			t.Errorf("m%d: outcome %v, ambiguous %v, resent %v (%v); want Retry, ambiguous, not resent",
				i+2, r.Outcome, r.Ambiguous, r.Resent, r.Err)
		}
	}
}
