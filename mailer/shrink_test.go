package mailer

import (
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/google/go-cmp/cmp"
)

// connLimitBackend allows limit sessions at once and answers the next EHLO as Exchange Online
// does: 432 4.3.2 Concurrent connections limit exceeded.
type connLimitBackend struct {
	*fakeBackend
	limit   int
	refused map[*smtp.Conn]bool // connections refused (EHLO, then HELO); under fakeBackend.mu
}

func (b *connLimitBackend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	b.mu.Lock()
	if b.sessions-b.ended >= b.limit {
		b.refused[c] = true
		b.mu.Unlock()
		return nil, &smtp.SMTPError{Code: 432, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "Concurrent connections limit exceeded. Visit https://aka.ms/concurrent_sending for more information. [Hostname=EXAMPLE]"}
	}
	b.mu.Unlock()
	return b.fakeBackend.NewSession(c)
}

// TestConcurrentConnectionsLimitShrinksPool: a server that allows 3 connections refuses a
// mailer of 4 once; the message on the refused connection is retried, the others delivered,
// and the next sends keep to 3 connections instead of being refused again and again.
func TestConcurrentConnectionsLimitShrinksPool(t *testing.T) {
	fb := &fakeBackend{}
	be := &connLimitBackend{fakeBackend: fb, limit: 3, refused: map[*smtp.Conn]bool{}}
	srv := startGoSMTP(t, fb, false, func(s *smtp.Server) { s.Backend = be })
	cfg := testConfig(t, srv.addr, srv.cert, false)
	cfg.MaxConnections = 4
	m := newMailer(t, cfg, WithShrinkFor(time.Hour))
	batch := func(prefix string) []Message {
		msgs := make([]Message, 40)
		for i := range msgs {
			msgs[i] = msg(prefix + string(rune('a'+i%26)) + string(rune('a'+i/26)))
		}
		return msgs
	}
	type counts struct{ Delivered, Retry, Rejected, Refused, Limit int }
	tally := func(rs []Result) counts {
		var c counts
		for _, r := range rs {
			switch r.Outcome {
			case Delivered:
				c.Delivered++
			case Retry:
				c.Retry++
				if l, ok := QuotaOf(r.Err); !ok || !l.Connections {
					t.Errorf("retried for %v, not the connection limit", r.Err)
				}
			default:
				c.Rejected++
			}
		}
		fb.mu.Lock()
		c.Refused = len(be.refused)
		fb.mu.Unlock()
		c.Limit = m.ConnectionLimit()
		return c
	}
	first := tally(m.Send(t.Context(), batch("one")))
	if first.Refused == 0 {
		t.Skip("the four connections never overlapped (a loaded machine): nothing to shrink")
	}
	if diff := cmp.Diff(counts{Delivered: 40 - first.Retry, Retry: first.Retry, Refused: first.Refused, Limit: 3}, first); diff != "" {
		t.Errorf("first send (-want +got):\n%s", diff)
	}
	for round := range 3 {
		got := tally(m.Send(t.Context(), batch("again")))
		if diff := cmp.Diff(counts{Delivered: 40, Refused: first.Refused, Limit: 3}, got); diff != "" {
			t.Errorf("send %d after the refusal (-want +got):\n%s", round+2, diff)
		}
	}
	if got := m.Shrinks(); got != int64(first.Refused) {
		t.Errorf("Shrinks() = %d, want %d (one per refusal)", got, first.Refused)
	}
}

// TestShrinkStopsAtOneAndEnds: the limit never goes below one connection, comes back after
// the shrink period, and Close ends the goroutines holding slots.
func TestShrinkStopsAtOneAndEnds(t *testing.T) {
	cfg := testConfig(t, "127.0.0.1:25", nil, false)
	cfg.MaxConnections = 3
	m, err := New(cfg, WithShrinkFor(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		m.shrink()
	}
	if got := m.ConnectionLimit(); got != 1 {
		t.Errorf("after 5 refusals with max_connections 3: limit %d, want 1", got)
	}
	deadline := time.Now().Add(30 * time.Second)
	for m.ConnectionLimit() != 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := m.ConnectionLimit(); got != 3 {
		t.Errorf("limit %d after the shrink period, want 3 again", got)
	}
	m.shrink()
	m.Close()
	for m.ConnectionLimit() != 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := m.ConnectionLimit(); got != 3 {
		t.Errorf("limit %d after Close, want 3 (the holding goroutine ended)", got)
	}
}
