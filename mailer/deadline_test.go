package mailer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// TestSoftDeadlineFinishesTheMessageOnTheWire: the server takes 40 ms per message; at the
// soft deadline the message being sent is finished (delivered, not cut off and ambiguous),
// no new one is started, and Done reports each finished message before Send returns.
func TestSoftDeadlineFinishesTheMessageOnTheWire(t *testing.T) {
	srv := startGoSMTP(t, &fakeBackend{data: func(*smtp.Conn, []byte) error {
		time.Sleep(40 * time.Millisecond)
		return nil
	}}, false, nil)
	cfg := testConfig(t, srv.addr, srv.cert, false)
	cfg.MaxConnections = 1
	m := newMailer(t, cfg)

	var mu sync.Mutex
	var reported []string
	msgs := make([]Message, 50)
	for i := range msgs {
		msgs[i] = msg(fmt.Sprintf("m%02d", i))
		msgs[i].Done = func(r Result) {
			mu.Lock()
			reported = append(reported, fmt.Sprintf("%s %v", msgs[i].ID, r.Outcome))
			mu.Unlock()
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	rs := m.Send(WithSoftDeadline(ctx, start.Add(300*time.Millisecond)), msgs)
	took := time.Since(start)

	delivered := 0
	for i, r := range rs {
		switch {
		case r.Outcome == Delivered && i == delivered:
			delivered++
		case r.Outcome == Retry && errors.Is(r.Err, ErrDeadline) && !r.Ambiguous:
		default:
			t.Errorf("message %d: %v %v (ambiguous %v), want delivered in order or retry with ErrDeadline", i, r.Outcome, r.Err, r.Ambiguous)
		}
	}
	if delivered == 0 || delivered == len(msgs) {
		t.Errorf("%d of %d delivered, want some but not all by the deadline", delivered, len(msgs))
	}
	if n := len(srv.Msgs()); n != delivered {
		t.Errorf("server stored %d, Send reported %d delivered", n, delivered)
	}
	if took > 2*time.Second {
		t.Errorf("Send took %v past a 300 ms soft deadline", took)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reported) != delivered {
		t.Errorf("Done called %d times, want once per message tried (%d): %v", len(reported), delivered, reported)
	}
	for i, s := range reported {
		if want := fmt.Sprintf("m%02d@example.com delivered", i); s != want {
			t.Errorf("Done call %d = %q, want %q", i, s, want)
		}
	}
}
