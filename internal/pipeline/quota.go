package pipeline

import (
	"fmt"
	"sync"
	"time"

	"github.com/smtpout/smtpout/config"
	"github.com/smtpout/smtpout/mailer"
)

// DefaultQuotaPauseMax is the longest pause after quota replies: the first pause
// (quota_pause) doubles with every quota reply up to this, and a delivery resets it.
const DefaultQuotaPauseMax = time.Hour

// quotaKey and pauseKey are the keys under which the quota lines are rate-limited (repeats):
// the lines themselves change with the counts and times, the limit they report does not.
const (
	quotaKey = "\x00quota reply "
	pauseKey = "\x00quota pause"
)

// quotaPause is one instance's pause after a mail provider's quota or throttling reply
// (mailer.QuotaOf): while it lasts, flushes send nothing and hand their records back to
// Fluent Bit. Each quota reply starts a pause twice as long as the last, from base up to
// max; a delivery resets it to base. Safe for concurrent use.
type quotaPause struct {
	base, max time.Duration
	now       func() time.Time

	mu    sync.Mutex
	next  time.Duration // the length of the next pause
	until time.Time     // the end of the current pause (zero: none yet)
}

// defaultQuotaPause is quota_pause's default.
const defaultQuotaPause = config.DefaultQuotaPause

// newQuotaPause returns a pause starting at base (config.DefaultQuotaPause when <= 0) and
// doubling up to max(DefaultQuotaPauseMax, base).
func newQuotaPause(base time.Duration, now func() time.Time) *quotaPause {
	if base <= 0 {
		base = defaultQuotaPause
	}
	if now == nil {
		now = time.Now
	}
	return &quotaPause{base: base, max: max(DefaultQuotaPauseMax, base), now: now, next: base}
}

// pausedUntil returns the end of the pause in force, or false when sending may go on.
func (q *quotaPause) pausedUntil() (time.Time, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.until.IsZero() || !q.now().Before(q.until) {
		return time.Time{}, false
	}
	return q.until, true
}

// hit starts a pause after a quota reply and returns its length. A reply to an email sent
// before the pause began (another flush's, in flight) does not lengthen a pause in force.
func (q *quotaPause) hit() time.Duration {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := q.now()
	if now.Before(q.until) {
		return q.until.Sub(now)
	}
	d := q.next
	q.until = now.Add(d)
	q.next = min(2*d, q.max)
	return d
}

// delivered resets the next pause to base: the provider took an email.
func (q *quotaPause) delivered() {
	q.mu.Lock()
	q.next = q.base
	q.mu.Unlock()
}

// quotaAdvice is what the operator can change for each provider's limit.
func quotaAdvice(l mailer.Limit) string {
	switch l.Provider {
	case "Exchange Online":
		return "set max_emails_per_minute (Exchange Online takes 30 per minute and 10,000 recipients per rolling 24 h per mailbox), send from a second mailbox, or wait for the rolling window"
	default:
		return "set max_emails_per_minute (Gmail takes about 2,000 recipients per user per rolling day), send from a second mailbox, or wait for the rolling window"
	}
}

// noteQuota handles the quota replies of one flush's sending: the first pause-type limit
// (not the connection limit, which the mailer handles by opening fewer connections) starts a
// pause and is reported by one rate-limited [error] line; a flush that delivered and met no
// quota resets the pause.
func (in *Instance) noteQuota(tag string, limit *mailer.Limit, kept int, delivered bool) {
	if limit == nil {
		if delivered {
			in.quota.delivered()
		}
		return
	}
	d := in.quota.hit()
	if !in.log.Enabled(LevelError) {
		return
	}
	ok, n := in.quiet.admit(fmt.Sprintf("%s%s %d %s", quotaKey, limit.Provider, limit.Code, limit.EnhancedCode))
	if !ok {
		return
	}
	msg := fmt.Sprintf(
		"quota reply from the mail provider: %s limit hit: %s (code=%d enhanced_code=%s: %s); %d email(s) of tag %q kept for a retry, not rejected; sending paused for %s: %s",
		limit.Provider, limit.What, limit.Code, orNone(limit.EnhancedCode), limit.Message, kept, tag, d, quotaAdvice(*limit))
	if n > 0 {
		msg += fmt.Sprintf(" (repeated %d more time(s) since last logged)", n)
	}
	in.log.Log(LevelError, msg)
}

// pauseBatch hands a batch back to Fluent Bit while a quota pause lasts: the claims are
// released, the records counted in st.Held, and a rate-limited [ warn] line says until when.
// It reports whether it did.
func (in *Instance) pauseBatch(tag string, batch []pending, st *Stats) bool {
	until, paused := in.quota.pausedUntil()
	if !paused {
		return false
	}
	for _, p := range batch {
		in.ledger.releaseKey(p.key)
	}
	st.Held += len(batch)
	if in.log.Enabled(LevelWarn) {
		if ok, n := in.quiet.admit(pauseKey); ok {
			msg := fmt.Sprintf("sending paused after a quota reply until %s: %d record(s) of tag %q handed back to Fluent Bit (retry), none dialled",
				until.UTC().Format(time.RFC3339), len(batch), tag)
			if n > 0 {
				msg += fmt.Sprintf(" (paused chunks %d more time(s) since last logged)", n)
			}
			in.log.Log(LevelWarn, msg)
		}
	}
	return true
}
