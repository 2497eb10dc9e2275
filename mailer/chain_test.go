package mailer

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestChainedBodyAndNextEnvelope: on a connection with PIPELINING but no CHUNKING, each
// message's body goes out in one write with the next message's RSET, MAIL, RCPT and DATA
// (RFC 2920 3.1), so a Send of several messages costs one round trip per message. The server
// here holds back its reply to a body ("HOLD") until the client has sent more: a client that
// waits for that reply before writing the next envelope hangs until its timeout. Every
// message keeps its own outcome: the next message's refused MAIL or RCPT, a body refused
// with the next envelope already sent, and a connection lost in between (the body then may
// have been stored: Ambiguous; the next message's body never went out, so it is sent again
// on a new connection without the Resent mark).
func TestChainedBodyAndNextEnvelope(t *testing.T) {
	refusedFrom := msg("m2")
	refusedFrom.From = "refused@example.com"
	chain := []string{"RSET", "MAIL", "RCPT", "DATA"}
	first := []string{"EHLO", "MAIL", "RCPT", "DATA"}
	cat := func(parts ...[]string) []string {
		var out []string
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	type want struct {
		outcome   Outcome
		step      Step // of the result's *StepError, "" for none
		ambiguous bool
		resent    bool
		rejected  int
	}
	delivered := want{outcome: Delivered}
	for _, tc := range []struct {
		name   string
		msgs   []Message
		reply  map[string]string // "line n" or "line" -> reply; "." is the end of a body
		want   []want
		stored []string
		verbs  []string // the verbs the server saw, connection after connection
	}{
		{
			name:   "all accepted",
			msgs:   []Message{msg("m1"), msg("m2"), msg("m3")},
			reply:  map[string]string{". 0": "HOLD", ". 1": "HOLD"},
			want:   []want{delivered, delivered, delivered},
			stored: []string{"m1", "m2", "m3"},
			verbs:  cat(first, chain, chain),
		},
		{
			name:  "MAIL of the next refused",
			msgs:  []Message{msg("m1"), refusedFrom, msg("m3")},
			reply: map[string]string{". 0": "HOLD", "MAIL FROM:<refused@example.com>": "550 5.7.1 sender refused"},
			want:  []want{delivered, {outcome: Rejected, step: StepMAIL}, delivered},
			// The scripted server answers DATA after a refused MAIL with 354: the lone "."
			// the client then sends is stored as an empty message (no subject).
			stored: []string{"m1", "m3"},
			verbs:  cat(first, chain, []string{"RSET", "MAIL", "RCPT", "DATA"}),
		},
		{
			name:   "RCPT of the next refused",
			msgs:   []Message{msg("m1"), msg("m2", "bad@example.com"), msg("m3")},
			reply:  map[string]string{". 0": "HOLD", "RCPT TO:<bad@example.com>": "550 5.1.1 no such user"},
			want:   []want{delivered, {outcome: Rejected, step: StepRCPT, rejected: 1}, delivered},
			stored: []string{"m1", "m3"},
			verbs:  cat(first, chain, []string{"RSET", "MAIL", "RCPT", "DATA"}),
		},
		{
			name:  "one RCPT of the next refused, the other accepted",
			msgs:  []Message{msg("m1"), msg("m2", "ok@example.com", "bad@example.com"), msg("m3")},
			reply: map[string]string{". 0": "HOLD", ". 1": "HOLD", "RCPT TO:<bad@example.com>": "550 5.1.1 no such user"},
			// Delivered to the accepted one: the refused one is reported, not retried.
			want:   []want{delivered, {outcome: Delivered, rejected: 1}, delivered},
			stored: []string{"m1", "m2", "m3"},
			verbs:  cat(first, chain[:3], chain[2:], chain),
		},
		{
			name:   "body refused with the next envelope already sent",
			msgs:   []Message{msg("m1"), msg("m2"), msg("m3")},
			reply:  map[string]string{". 0": "HOLD 554 5.6.0 content rejected", ". 1": "HOLD"},
			want:   []want{{outcome: Rejected, step: StepDATA}, delivered, delivered},
			stored: []string{"m1", "m2", "m3"}, // the server read m1 before refusing it
			verbs:  cat(first, chain, chain),
		},
		{
			// A quota reply will answer every message: the next one, whose envelope the
			// server took and whose body it awaits, is dropped with the connection (never
			// sent, so not ambiguous), and no more are sent.
			name:   "quota reply to a body with the next envelope already sent",
			msgs:   []Message{msg("m1"), msg("m2"), msg("m3")},
			reply:  map[string]string{". 0": "HOLD 554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to process message"},
			want:   []want{{outcome: Retry, step: StepDATA}, {outcome: Retry, step: StepDATA}, {outcome: Retry, step: StepDATA}},
			stored: []string{"m1"}, // the server read m1 before refusing it
			verbs:  cat(first, chain),
		},
		{
			name:  "connection lost after a body, the next envelope sent",
			msgs:  []Message{msg("m1"), msg("m2"), msg("m3")},
			reply: map[string]string{". 0": "HOLD", ". 1": "HOLD DROP"},
			want: []want{delivered, {outcome: Retry, step: StepDATA, ambiguous: true},
				delivered},
			stored: []string{"m1", "m2", "m3"},
			// m3's envelope went out behind m2's body, but the server closed before reading it.
			verbs: cat(first, chain, first),
		},
		{
			name:   "connection lost at the next MAIL",
			msgs:   []Message{msg("m1"), msg("m2"), msg("m3")},
			reply:  map[string]string{". 0": "HOLD", "MAIL FROM:<from@example.com> 1": "DROP", ". 0 again": "HOLD"},
			want:   []want{delivered, delivered, delivered},
			stored: []string{"m1", "m2", "m3"},
			verbs:  cat(first, chain[:2], first, chain),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conns := 0
			s := startScripted(t, "PIPELINING", func(line string, n int) string {
				if line == "EHLO client.example.com" {
					conns++ // one goroutine per connection, one connection at a time
				}
				if conns > 1 {
					if rep, ok := tc.reply[line+" 0 again"]; ok && n == 0 {
						return rep
					}
					return ""
				}
				if rep, ok := tc.reply[line+" "+string(rune('0'+n))]; ok {
					return rep
				}
				return tc.reply[line]
			})
			cfg := testConfig(t, s.addr, s.cert, false)
			// Ample for a reply on loopback; a client that does not chain waits it out.
			cfg.Timeout = 5 * time.Second
			m := newMailer(t, cfg, WithNoopAfter(0))
			rs := m.Send(context.Background(), tc.msgs)
			var got []want
			for _, r := range rs {
				w := want{outcome: r.Outcome, ambiguous: r.Ambiguous, resent: r.Resent, rejected: len(r.Rejected)}
				var se *StepError
				if errors.As(r.Err, &se) {
					w.step = se.Step
				}
				got = append(got, w)
			}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(want{})); diff != "" {
				t.Errorf("results (-want +got):\n%s\nerrors: %v", diff, rs)
			}
			s.mu.Lock()
			stored := subjects(s.msgs)
			s.mu.Unlock()
			if diff := cmp.Diff(tc.stored, stored); diff != "" {
				t.Errorf("messages stored (-want +got):\n%s", diff)
			}
			var verbs []string
			for _, v := range verbsAfter(s.Cmds(), 0) {
				verbs = append(verbs, strings.ToUpper(v))
			}
			if diff := cmp.Diff(tc.verbs, verbs); diff != "" {
				t.Errorf("commands (-want +got):\n%s\ngot: %q", diff, verbs)
			}
			if n, seen := m.Dials(), s.Conns(); n != int64(seen) {
				t.Errorf("Dials() = %d, the server saw %d connections", n, seen)
			}
		})
	}
}
