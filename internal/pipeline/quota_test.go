package pipeline

import (
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/smtpout/smtpout/mailer"
)

// quotaServer is a fake mailer with a recipient budget, as Exchange Online has: once budget
// emails were delivered, every email gets 554 5.2.0 SubmissionQuotaExceeded, classified as
// the mailer classifies it, until roll.
type quotaServer struct {
	mu     sync.Mutex
	budget int
}

func (q *quotaServer) roll(budget int) {
	q.mu.Lock()
	q.budget = budget
	q.mu.Unlock()
}

func (q *quotaServer) decide(mailer.Message, int) mailer.Result {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.budget > 0 {
		q.budget--
		return mailer.Result{Outcome: mailer.Delivered}
	}
	err := &mailer.StepError{Step: mailer.StepDATA, Addr: "smtp.office365.com:587", Code: 554, EnhancedCode: "5.2.0",
		Message: "STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to process message",
		Err:     &textproto.Error{Code: 554, Msg: "5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to process message"}}
	return mailer.Result{Outcome: mailer.Classify(1, nil, err), Err: err}
}

// TestQuotaReplyKeepsRecordsAndPauses: records that get a quota reply are retried, never
// rejected or dead-lettered; the instance then sends nothing for quota_pause (doubling with
// each further reply), says once which limit was hit and what to change, counts the replies,
// and delivers everything once the provider's window rolls.
func TestQuotaReplyKeepsRecordsAndPauses(t *testing.T) {
	dir, w := deadDir(t, 1<<20)
	q := &quotaServer{budget: 2}
	s := newSender()
	s.decide = q.decide
	clock := &fakeClock{t: t0}
	log := &recorder{Max: LevelInfo}
	in := newTestInstance(t, s, log, Options{DeadLetters: w, Now: clock.now, QuotaPause: time.Minute})
	data := records(5, nil)

	type flush struct {
		Code                                      int
		Delivered, Retried, Rejected, Held, Quota int
		Skipped, SendCalls                        int
	}
	do := func() flush {
		code, st := in.Flush("alerts", data)
		s.mu.Lock()
		calls := s.calls
		s.mu.Unlock()
		return flush{code, st.Delivered, st.Retried, st.Rejected, st.Held, st.QuotaReplies, st.Skipped, calls}
	}
	steps := []struct {
		name    string
		advance time.Duration
		budget  int // rolls the window to this budget when > 0
		want    flush
	}{
		{"budget of 2 then quota replies", 0, 0, flush{FLBRetry, 2, 3, 0, 0, 3, 0, 1}},
		{"paused: nothing sent", 30 * time.Second, 0, flush{FLBRetry, 0, 0, 0, 3, 0, 2, 1}},
		{"pause over, still over quota: a 2 min pause", 31 * time.Second, 0, flush{FLBRetry, 0, 3, 0, 0, 3, 2, 2}},
		{"1 min later still paused", time.Minute + time.Second, 0, flush{FLBRetry, 0, 0, 0, 3, 0, 2, 2}},
		{"window rolled, pause over: all delivered", time.Minute, 100, flush{FLBOK, 3, 0, 0, 0, 0, 2, 3}},
	}
	for _, st := range steps {
		clock.advance(st.advance)
		if st.budget > 0 {
			q.roll(st.budget)
		}
		if diff := cmp.Diff(st.want, do()); diff != "" {
			t.Errorf("%s (-want +got):\n%s", st.name, diff)
		}
	}
	if files := dirFiles(t, dir); len(files) != 0 {
		t.Errorf("dead letters written for quota replies: %q", files)
	}
	for id, n := range s.sends() {
		if n > 3 {
			t.Errorf("%s sent %d times", id, n)
		}
	}
	var quotaLines []string
	for _, l := range log.at(LevelError) {
		if strings.Contains(l, "quota reply") {
			quotaLines = append(quotaLines, l)
		}
		if strings.Contains(l, "email rejected") {
			t.Errorf("a quota reply logged as a rejection: %s", l)
		}
	}
	for _, l := range log.at(LevelWarn) {
		if strings.Contains(l, "will be retried") {
			t.Errorf("a quota reply also logged as a generic retry: %s", l)
		}
	}
	if len(quotaLines) != 2 {
		t.Fatalf("quota [error] lines = %q, want two (one per quota reply, more than the repeat window apart)", quotaLines)
	}
	if !strings.Contains(quotaLines[1], "paused for 2m0s") {
		t.Errorf("second quota line does not say the pause doubled: %s", quotaLines[1])
	}
	for _, want := range []string{"Exchange Online", "code=554", "enhanced_code=5.2.0", "SubmissionQuotaExceeded", "max_emails_per_minute", "second mailbox", "paused for 1m0s", "3 email(s)"} {
		if !strings.Contains(quotaLines[0], want) {
			t.Errorf("quota line lacks %q: %s", want, quotaLines[0])
		}
	}
}

// TestQuotaPauseGrows: each quota reply doubles the next pause up to an hour, a reply while
// paused does not lengthen the pause, and a delivery resets it.
func TestQuotaPauseGrows(t *testing.T) {
	clock := &fakeClock{t: t0}
	q := newQuotaPause(time.Minute, clock.now)
	var got []time.Duration
	for range 9 {
		got = append(got, q.hit())
		clock.advance(10 * time.Second)
		got = append(got, q.hit()) // in flight when the pause began
		until, _ := q.pausedUntil()
		clock.t = until
	}
	q.delivered()
	got = append(got, q.hit())
	m := time.Minute
	want := []time.Duration{m, 50 * time.Second, 2 * m, 110 * time.Second, 4 * m, 230 * time.Second,
		8 * m, 470 * time.Second, 16 * m, 950 * time.Second, 32 * m, 1910 * time.Second,
		60 * m, 3590 * time.Second, 60 * m, 3590 * time.Second, 60 * m, 3590 * time.Second, m}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("pauses (-want +got):\n%s", diff)
	}
}
