package pipeline

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/smtpout/smtpout/config"
	"github.com/smtpout/smtpout/mailer"
)

func TestGuardSlidingWindow(t *testing.T) {
	clock := &fakeClock{t: t0}
	g := newGuard(10, clock.now)
	type step struct {
		advance time.Duration
		take    int
		refund  int // given back right after the take
		granted int
		used    int // emails in the last minute before the take
	}
	steps := []step{
		{0, 4, 0, 4, 0},
		{10 * time.Second, 10, 0, 6, 4},  // the rest of the budget
		{20 * time.Second, 1, 0, 0, 10},  // spent: nothing
		{29 * time.Second, 3, 0, 0, 10},  // 59 s after the first take: still spent
		{time.Second, 5, 0, 4, 6},        // 60 s: the first 4 left the window
		{9 * time.Second, 2, 2, 0, 10},   // 69 s: spent
		{time.Second, 8, 3, 6, 4},        // 70 s: the 6 left; 3 of the 6 given back
		{0, 5, 0, 3, 7},                  // the refund is usable at once
		{2 * time.Minute, 100, 0, 10, 0}, // long idle: a full budget, never more
		{-30 * time.Second, 1, 0, 0, 10}, // the clock went back: the budget is kept
		{time.Hour, 0, 0, 0, 0},          // taking nothing books nothing
		{0, 1, 0, 1, 0},
	}
	for i, s := range steps {
		clock.advance(s.advance)
		granted, used, at := g.take(s.take)
		g.refund(at, s.refund)
		if granted != s.granted || used != s.used {
			t.Errorf("step %d: take(%d) = granted %d used %d, want granted %d used %d", i, s.take, granted, used, s.granted, s.used)
		}
	}
	if got := g.used(); got != 1 {
		t.Errorf("used() = %d, want 1", got)
	}
	if newGuard(0, clock.now) != nil || newGuard(-1, nil) != nil {
		t.Error("newGuard(<=0) is not nil: the guard must be off by default")
	}
}

// sendLog records when each Message-ID was handed to the fake mailer, by the fake clock.
type sendLog struct {
	mu    sync.Mutex
	times []time.Time
}

func (l *sendLog) add(at time.Time) {
	l.mu.Lock()
	l.times = append(l.times, at)
	l.mu.Unlock()
}

// maxInWindow returns the largest number of sends within any window of length w (sends at
// exactly t-w are outside the window ending at t).
func (l *sendLog) maxInWindow(w time.Duration) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	best := 0
	for _, end := range l.times {
		n := 0
		for _, at := range l.times {
			if !at.After(end) && end.Sub(at) < w {
				n++
			}
		}
		best = max(best, n)
	}
	return best
}

// TestStormGuardHoldsBurst plays Fluent Bit with one burst of 1,000 records and
// max_emails_per_minute=100: the chunk is handed back after every FLB_RETRY, 7 s later
// (Fluent Bit's retry back-off), until it is done. The mailer never sees more than 100 emails
// in any minute, every record is delivered exactly once, and the warning is rate-limited.
func TestStormGuardHoldsBurst(t *testing.T) {
	const burst, perMinute = 1000, 100
	clock := &fakeClock{t: t0}
	var sent sendLog
	s := newSender()
	s.decide = func(m mailer.Message, attempt int) mailer.Result {
		sent.add(clock.now())
		return mailer.Result{Outcome: mailer.Delivered, Elapsed: time.Millisecond}
	}
	log := &recorder{Max: LevelInfo}
	in := newTestInstance(t, s, log, Options{Now: clock.now, MaxEmailsPerMinute: perMinute})
	data := records(burst, nil)

	var flushes, retries int
	var total Stats
	for {
		code, st := in.Flush("storm", data)
		flushes++
		total.add(st)
		if st.Delivered > perMinute {
			t.Fatalf("flush %d delivered %d emails, more than the budget of %d", flushes, st.Delivered, perMinute)
		}
		if st.Delivered+st.Held+st.Skipped != burst {
			t.Fatalf("flush %d: delivered %d + held %d + skipped %d != %d records", flushes, st.Delivered, st.Held, st.Skipped, burst)
		}
		if len(st.Latencies) != st.Delivered {
			t.Fatalf("flush %d: %d latencies for %d delivered emails", flushes, len(st.Latencies), st.Delivered)
		}
		if code == FLBOK {
			break
		}
		if code != FLBRetry {
			t.Fatalf("flush %d = %d, want FLBRetry or FLBOK", flushes, code)
		}
		retries++
		if flushes > 200 {
			t.Fatal("the burst was not delivered after 200 flushes")
		}
		clock.advance(7 * time.Second)
	}

	if got := sent.maxInWindow(time.Minute); got > perMinute {
		t.Errorf("the mailer got %d emails within one minute, want at most %d", got, perMinute)
	}
	elapsed := clock.now().Sub(t0)
	// 1,000 emails at 100 a minute: the last ones go out in the tenth minute.
	if elapsed < 9*time.Minute || elapsed > 11*time.Minute {
		t.Errorf("the burst took %v of (fake) time, want about 9-10 minutes at %d a minute", elapsed, perMinute)
	}
	sends := s.sends()
	if len(sends) != burst {
		t.Errorf("%d distinct emails sent, want %d (none lost)", len(sends), burst)
	}
	for id, n := range sends {
		if n != 1 {
			t.Errorf("Message-ID %s sent %d times, want once", id, n)
		}
	}
	if total.Delivered != burst {
		t.Errorf("delivered %d in total, want %d", total.Delivered, burst)
	}
	if total.Retried != 0 || total.Dropped != 0 || total.Rejected != 0 {
		t.Errorf("totals %+v: nothing should be retried, dropped or rejected", total)
	}
	if in.Total().Held != total.Held || total.Held == 0 {
		t.Errorf("Total().Held = %d, sum of flushes %d (want equal and > 0)", in.Total().Held, total.Held)
	}

	warns := log.at(LevelWarn)
	if len(warns) == 0 {
		t.Fatalf("no storm guard warning; log:\n%s", log.all())
	}
	first := "storm guard active: 100 emails in the last minute (max_emails_per_minute=100); holding the rest in Fluent Bit's buffer: 900 record(s) of tag \"storm\" held, 100 sent now"
	if warns[0] != first {
		t.Errorf("first warning:\n got %q\nwant %q", warns[0], first)
	}
	// One line per 30 s repeat window at most, over ~10 minutes of 7-s retries.
	if len(warns) > 21 || len(warns) >= retries {
		t.Errorf("%d warnings for %d held flushes: not rate-limited\n%s", len(warns), retries, strings.Join(warns, "\n"))
	}
	if !strings.Contains(warns[1], "more time(s) since last logged") {
		t.Errorf("second warning %q does not say how many were held back", warns[1])
	}
	for _, w := range warns {
		if !strings.HasPrefix(w, "storm guard active: ") {
			t.Errorf("unexpected warning %q", w)
		}
	}
}

// TestStormGuardRefundsRetries: emails the server did not take (4xx, network) do not use up
// the budget, so a server outage does not hold back the records after it.
func TestStormGuardRefundsRetries(t *testing.T) {
	clock := &fakeClock{t: t0}
	s := newSender()
	down := true
	s.decide = func(m mailer.Message, attempt int) mailer.Result {
		if down {
			return mailer.Result{Outcome: mailer.Retry, Err: context.DeadlineExceeded}
		}
		return mailer.Result{Outcome: mailer.Delivered}
	}
	in := newTestInstance(t, s, &recorder{Max: LevelInfo}, Options{Now: clock.now, MaxEmailsPerMinute: 5})
	data := records(8, nil)
	var got [][2]int // delivered, held per flush
	var codes []int
	for i := range 4 {
		if i == 2 {
			down = false
		}
		code, st := in.Flush("refund", data)
		codes = append(codes, code)
		got = append(got, [2]int{st.Delivered, st.Held})
	}
	// Down twice (5 tried, 3 held each time), then 5 delivered, then the budget is spent.
	if diff := cmp.Diff([][2]int{{0, 3}, {0, 3}, {5, 3}, {0, 3}}, got); diff != "" {
		t.Errorf("delivered, held per flush (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]int{FLBRetry, FLBRetry, FLBRetry, FLBRetry}, codes); diff != "" {
		t.Errorf("codes (-want +got):\n%s", diff)
	}
	clock.advance(time.Minute)
	if code, st := in.Flush("refund", data); code != FLBOK || st.Delivered != 3 || st.Skipped != 5 {
		t.Errorf("after a minute: code %d stats %+v, want FLBOK with the last 3 delivered", code, st)
	}
}

// TestStormGuardConcurrentFlushes: Workers flushing at once share one budget.
func TestStormGuardConcurrentFlushes(t *testing.T) {
	clock := &fakeClock{t: t0}
	s := newSender()
	in := newTestInstance(t, s, &recorder{Max: LevelError}, Options{Now: clock.now, MaxEmailsPerMinute: 30})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var delivered, held int
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			extra := make(map[int]map[string]any) // distinct records per worker
			for i := range 20 {
				extra[i] = map[string]any{"worker": w}
			}
			_, st := in.Flush("w", records(20, extra))
			mu.Lock()
			delivered += st.Delivered
			held += st.Held
			mu.Unlock()
		}()
	}
	wg.Wait()
	if delivered != 30 || held != 50 {
		t.Errorf("4 concurrent flushes of 20: delivered %d held %d, want 30 and 50", delivered, held)
	}
	if n := len(s.sends()); n != 30 {
		t.Errorf("mailer got %d emails, want 30", n)
	}
}

func TestOpenStormGuard(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  int // 0: off
	}{
		{"", 0},
		{"0", 0},
		{"120", 120},
	} {
		keys := config.MapGetter{
			"dest_host":  "127.0.0.1:2525",
			"dest_email": "soc@example.com",
			"from_email": "fb@example.com",
			"secret_key": secretKey,
		}
		if tc.value != "" {
			keys["max_emails_per_minute"] = tc.value
		}
		log := &recorder{Max: LevelInfo}
		in := Open(keys, log, Options{})
		if in == nil {
			t.Fatalf("Open(max_emails_per_minute=%q) failed:\n%s", tc.value, log.all())
		}
		got := 0
		if in.guard != nil {
			got = in.guard.max
		}
		if got != tc.want {
			t.Errorf("max_emails_per_minute=%q: guard max %d, want %d", tc.value, got, tc.want)
		}
		if !strings.Contains(log.all(), "max_emails_per_minute=") {
			t.Errorf("the started line does not show max_emails_per_minute:\n%s", log.all())
		}
		notice := "storm guard on: at most 120 emails per minute; records over the budget are handed back to Fluent Bit (retry): set Retry_Limit no_limits"
		if got := strings.Contains(log.all(), notice); got != (tc.want > 0) {
			t.Errorf("max_emails_per_minute=%q: storm guard notice logged = %v, want %v\n%s", tc.value, got, tc.want > 0, log.all())
		}
		_ = in.Close()
	}
}

func BenchmarkGuardTake(b *testing.B) {
	g := newGuard(1_000_000, nil)
	b.ReportAllocs()
	for b.Loop() {
		if n, _, at := g.take(1); n == 1 {
			g.refund(at, 1)
		}
	}
}
