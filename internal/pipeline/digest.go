package pipeline

// Digests (digest_window, digest_by, digest_max_records; issue 19): in a storm, a group's
// first record goes out at once as its own email and the group's further records wait in the
// plugin, in its custody, until digest_window has passed since the group's last email; then
// they go out together as one signed digest email. One goroutine per instance (digestLoop)
// with one timer sends the digests that are due; Flush only takes records into custody.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/smtpout/smtpout/config"
	"github.com/smtpout/smtpout/internal/deadletter"
	"github.com/smtpout/smtpout/internal/spool"
	"github.com/smtpout/smtpout/mailer"
	"github.com/smtpout/smtpout/output"
)

// DigestRenderer is what a Renderer needs for digests (*output.Renderer): a record's group
// under digest_by, and the digest email of a group's waiting records. NewInstance turns
// digests off when the Renderer is not one.
type DigestRenderer interface {
	GroupValues(rec output.Record, by []config.Template) []output.GroupValue
	RenderDigest(d output.Digest) (*output.Email, error)
}

// Bounds of the digest machinery.
const (
	// maxWaitingBytes bounds the payload bytes an instance keeps waiting in memory; past it a
	// record of a busy group is sent on its own, as without digests.
	maxWaitingBytes = 256 << 20
	// digestRetryMin and digestRetryMax bound the back-off of a digest that got a retryable
	// failure: the first retry waits digestRetryMin, each further one twice as long.
	digestRetryMin = 5 * time.Second
	digestRetryMax = 5 * time.Minute
	// digestGuardWait is how long digests the storm guard held back wait before trying again.
	digestGuardWait = 5 * time.Second
)

// digestKey is the key under which the digest retry warning is rate-limited (repeats).
const digestKey = "\x00digest retry "

// spoolRecord is one record waiting for its group's digest (Seq 0 without a store; Group is
// groupKey's).
type spoolRecord = spool.Record

// spoolRoot is a group's thread root: the Message-ID of its first email of a UTC day.
type spoolRoot = spool.Root

// digestStore keeps waiting records and thread roots on disk, in ledger_dir
// (*spool.Spool; tests use a fake).
type digestStore interface {
	Add(r spoolRecord) (uint64, error)
	Done(seqs ...uint64) error
	SetRoot(r spoolRoot) error
	Sync() error
	Close() error
}

// digests is one instance's digest state: its groups, and the loop that sends them.
type digests struct {
	window     time.Duration
	by         []config.Template
	maxRecords int
	now        func() time.Time
	render     DigestRenderer
	store      digestStore // nil without ledger_dir
	storePath  string      // for log lines
	delivered  func()      // Options.OnDigests, or nil

	pass  sync.Mutex  // one sending pass at a time (the loop's, or Close's)
	dirty atomic.Bool // the store was written since its last Sync

	mu      sync.Mutex
	groups  map[string]*digestGroup
	owed    []*owedDigest // delivered digests owed to recipients that refused them for now
	bytes   int64         // payload bytes waiting
	sent    int64         // digests delivered
	records int64         // records in delivered digests

	kick chan struct{} // wakes the loop (buffered 1)
	quit chan struct{} // closed by Close
	done chan struct{} // closed when the loop has returned
}

// digestGroup is one group's state.
type digestGroup struct {
	values  []output.GroupValue
	last    time.Time // the group's last email (single or digest); zero: none yet
	root    string    // Message-ID of the group's first email of rootDay
	rootDay string    // "2006-01-02", UTC
	waiting []spoolRecord
	busy    bool      // a pass is sending the group's digest(s)
	retryAt time.Time // back-off after a retryable failure
	backoff time.Duration
}

// newDigests returns the digest state of an instance, or nil when digests are off.
func newDigests(c config.Digests, r Renderer, now func() time.Time) *digests {
	dr, ok := r.(DigestRenderer)
	if !c.DigestOn() || !ok {
		return nil
	}
	if now == nil {
		now = time.Now
	}
	return &digests{
		window:     c.DigestWindow,
		by:         c.DigestBy,
		maxRecords: max(c.DigestMaxRecords, 1),
		now:        now,
		render:     dr,
		groups:     make(map[string]*digestGroup),
		kick:       make(chan struct{}, 1),
		quit:       make(chan struct{}),
		done:       make(chan struct{}),
	}
}

// groupKey is the opaque, self-describing key of a group: each digest_by key and its value,
// quoted, so that a restart can rebuild the values from the key alone.
func groupKey(values []output.GroupValue) string {
	var b strings.Builder
	for i, v := range values {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Quote(v.Key))
		b.WriteByte('=')
		b.WriteString(strconv.Quote(v.Value))
	}
	return b.String()
}

// groupValues undoes groupKey; a key it cannot read gives no values (one unnamed group).
func groupValues(key string) []output.GroupValue {
	var out []output.GroupValue
	for rest := key; rest != ""; {
		k, err := strconv.QuotedPrefix(rest)
		if err != nil || !strings.HasPrefix(rest[len(k):], "=") {
			return nil
		}
		rest = rest[len(k)+1:]
		v, err := strconv.QuotedPrefix(rest)
		if err != nil {
			return nil
		}
		rest = strings.TrimPrefix(rest[len(v):], ",")
		ku, _ := strconv.Unquote(k)
		vu, _ := strconv.Unquote(v)
		out = append(out, output.GroupValue{Key: ku, Value: vu})
	}
	return out
}

// groupText describes a group for log lines: ` group host="web-1" cat="scan"`, or "" for the
// one group of an instance without digest_by.
func groupText(values []output.GroupValue) string {
	var b strings.Builder
	for i, v := range values {
		if i == 0 {
			b.WriteString(" group")
		}
		fmt.Fprintf(&b, " %s=%q", v.Key, v.Value)
	}
	return b.String()
}

// utcDay is the UTC day of t, as thread roots are kept.
func utcDay(t time.Time) string { return t.UTC().Format("2006-01-02") }

// groupLocked returns the group of key, creating it. d.mu is held.
func (d *digests) groupLocked(key string, values []output.GroupValue) *digestGroup {
	g := d.groups[key]
	if g == nil {
		g = &digestGroup{values: values}
		d.groups[key] = g
	}
	return g
}

// quiet reports whether g had no email in the last window and nothing waits or is on its way:
// its next record goes out at once, alone.
func (g *digestGroup) quiet(now time.Time, window time.Duration) bool {
	return len(g.waiting) == 0 && !g.busy && (g.last.IsZero() || now.Sub(g.last) >= window)
}

// setRootLocked makes id the group's thread root for day and keeps it in the store. d.mu is
// held.
func (in *Instance) setRootLocked(key string, g *digestGroup, id, day string) {
	g.root, g.rootDay = id, day
	if in.dig.store != nil {
		if err := in.dig.store.SetRoot(spoolRoot{Group: key, Day: day, MessageID: id}); err != nil {
			in.digestStoreFailed(err)
		}
		in.dig.dirty.Store(true)
	}
}

// digestStoreFailed reports a failed write to the digest store in ledger_dir.
func (in *Instance) digestStoreFailed(err error) { in.digestStoreFailedAt(in.dig.storePath, err) }

// digestStoreFailedAt reports a failed write to the digest store at path: counted with the
// ledger's (ledger_write_errors_total) and logged at most once per repeat window.
func (in *Instance) digestStoreFailedAt(path string, err error) {
	in.ledgerErrs.Add(1)
	in.logQuiet(LevelError, fmt.Sprintf("digest: cannot write to %s: %v; records that cannot be kept there are sent on their own, and after a restart a delivered digest may be sent again", path, err))
}

// takeDigested splits a flush's claimed emails: an email of a quiet group goes out now (the
// result), threaded under its group's first email of the day; an email of a busy group is
// taken into custody for the group's digest: kept in the digest store (ledger_dir) and in
// memory, its Message-ID settled in the ledger so that a retry of the chunk skips it, and
// counted in st.Digested.
func (in *Instance) takeDigested(tag string, batch []pending, st *Stats) []pending {
	d := in.dig
	now := d.now()
	day := utcDay(now)
	singles := batch[:0:0]
	var taken []ledgerKey
	d.mu.Lock()
	for _, p := range batch {
		g := d.groupLocked(p.group, p.values)
		id := p.email.MessageID
		if !g.quiet(now, d.window) {
			if r, ok := in.keepLocked(tag, p); ok {
				g.waiting = append(g.waiting, r)
				taken = append(taken, p.key)
				continue
			}
		}
		g.last = now
		switch {
		case g.rootDay != day:
			in.setRootLocked(p.group, g, id, day)
		case g.root != id:
			p.email.Data = output.Thread(p.email.Data, g.root)
		}
		singles = append(singles, p)
	}
	d.mu.Unlock()
	for _, k := range taken {
		in.resolve(k, mailer.Result{Outcome: mailer.Rejected}) // settled: in the plugin's custody
	}
	st.Digested += len(taken)
	if len(taken) > 0 {
		d.wake()
	}
	return singles
}

// keepLocked keeps one record for its group's digest: in the store first (ledger_dir), then
// in memory. ok is false when it cannot be kept (the store failed, or too much waits): it is
// then sent on its own. d.mu is held.
func (in *Instance) keepLocked(tag string, p pending) (spoolRecord, bool) {
	d := in.dig
	r := spoolRecord{Group: p.group, MessageID: p.email.MessageID, Tag: tag, Time: p.at,
		Payload: bytes.Clone(p.email.Payload)}
	if d.bytes+int64(len(r.Payload)) > maxWaitingBytes {
		in.logQuiet(LevelWarn, fmt.Sprintf("digest: %d bytes of records already wait for their digests: further records of busy groups are sent on their own", d.bytes))
		return r, false
	}
	if d.store != nil {
		seq, err := d.store.Add(r)
		if errors.Is(err, spool.ErrFull) {
			in.logQuiet(LevelWarn, fmt.Sprintf("digest: %v: further records of busy groups are sent on their own", err))
			return r, false
		}
		if err != nil {
			in.digestStoreFailed(err)
			return r, false
		}
		r.Seq = seq
		d.dirty.Store(true)
	}
	d.bytes += int64(len(r.Payload))
	return r, true
}

// syncDigests makes what was written to the digest store durable (fdatasync), when anything
// was. Flush calls it before the ledger's own sync, so that a settled Message-ID on disk
// never stands for a record the store lost.
func (in *Instance) syncDigests() {
	d := in.dig
	if d == nil || d.store == nil || !d.dirty.Swap(false) {
		return
	}
	if err := d.store.Sync(); err != nil {
		in.digestStoreFailed(err)
	}
}

// digestNotice is the start-up line of an instance with digests on: where the waiting
// records are kept, and what a crash does to them.
func digestNotice(window time.Duration, onDisk bool) string {
	where := "in memory only (no ledger_dir): a crash or kill -9 loses the records waiting for a digest; a graceful stop sends them"
	if onDisk {
		where = "in ledger_dir, synced before each flush returns: a crash loses none"
	}
	return fmt.Sprintf("digests on: a group's first record goes out at once, the rest wait until %v after the group's last email and go out as one digest; waiting records are kept %s", window, where)
}

// wake makes the loop look at the groups again.
func (d *digests) wake() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// digestLoop sends the digests that are due, with one timer for the whole instance, until
// Close. A stop signal (Options.Stopping) makes every waiting digest due at once.
func (in *Instance) digestLoop() {
	d := in.dig
	defer close(d.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	stopping := in.stopping
	force := false
	for {
		var next time.Time
		if force {
			ctx, cancel := in.budget()
			if !in.budgetSpent() {
				next = in.sendDigests(ctx, true)
			}
			cancel()
		} else {
			next = in.sendDigests(in.ctx, false)
		}
		wait := time.Hour
		if !next.IsZero() {
			wait = max(next.Sub(d.now()), time.Millisecond)
		}
		timer.Reset(wait)
		select {
		case <-d.quit:
			return
		case <-stopping:
			stopping, force = nil, true
			d.mu.Lock()
			for _, g := range d.groups {
				g.retryAt = time.Time{} // one fresh try for everything
			}
			d.mu.Unlock()
		case <-d.kick:
		case <-timer.C:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// digestJob is one group's digests of one pass.
type digestJob struct {
	key   string
	g     *digestGroup
	parts [][]spoolRecord
}

// digestMail is one rendered digest on its way to the server: a group's new digest (job and
// members), or a delivered one sent again to the recipients that refused it for now (resend).
type digestMail struct {
	job     *digestJob
	members []spoolRecord
	email   *output.Email
	resend  *owedDigest
}

// owedDigest is a delivered digest that some recipients refused for now (4xx, or a provider's
// quota reply): it is sent again, the same email, to those recipients only. Kept in memory:
// a restart forgets it (its records were delivered to the others).
type owedDigest struct {
	email   *output.Email
	at      time.Time // the last record's time (the digest's Date)
	to      []string
	records int
	retryAt time.Time
	backoff time.Duration
}

// maxOwedDigests bounds the digests kept for recipients that refused them for now.
const maxOwedDigests = 1000

// to returns the envelope recipients of m.
func (m digestMail) to() []string {
	if m.resend != nil {
		return m.resend.to
	}
	return m.email.Recipients
}

// records is how many records m carries.
func (m digestMail) records() int {
	if m.resend != nil {
		return m.resend.records
	}
	return len(m.members)
}

// oweLocked keeps o to be sent again at or after at. d.mu is held.
func (d *digests) oweLocked(o *owedDigest, at time.Time) {
	o.retryAt = at
	d.owed = append(d.owed, o)
}

// sendDigests sends every group's digest that is due (force: every waiting one whose back-off
// is over, whatever its window) and the digests owed to recipients that refused them for now,
// through the same Sender as single emails, with the quota pause and the storm guard applied.
// It returns when the next one falls due (zero: none waits).
func (in *Instance) sendDigests(ctx context.Context, force bool) (next time.Time) {
	d := in.dig
	d.pass.Lock()
	defer d.pass.Unlock()
	now := d.now()
	day := utcDay(now)
	var jobs []*digestJob
	d.mu.Lock()
	for key, g := range d.groups {
		if len(g.waiting) == 0 && !g.busy && g.rootDay != day && now.Sub(g.last) >= d.window {
			delete(d.groups, key) // quiet since before today: nothing to keep
			continue
		}
		if len(g.waiting) == 0 || g.busy {
			continue
		}
		due := g.last.Add(d.window)
		if force {
			due = time.Time{}
		}
		if g.retryAt.After(due) {
			due = g.retryAt
		}
		if now.Before(due) {
			if next.IsZero() || due.Before(next) {
				next = due
			}
			continue
		}
		g.busy = true
		jobs = append(jobs, &digestJob{key: key, g: g, parts: splitDigest(g.waiting, d.maxRecords)})
		g.waiting = nil
	}
	var resends []*owedDigest
	owed := d.owed[:0]
	for _, o := range d.owed {
		if !now.Before(o.retryAt) { // Close clears retryAt for its last try
			resends = append(resends, o)
			continue
		}
		owed = append(owed, o)
		if next.IsZero() || o.retryAt.Before(next) {
			next = o.retryAt
		}
	}
	d.owed = owed
	d.mu.Unlock()
	if len(jobs) == 0 && len(resends) == 0 {
		return next
	}
	defer func() {
		d.mu.Lock()
		for _, o := range d.owed {
			if next.IsZero() || o.retryAt.Before(next) {
				next = o.retryAt
			}
		}
		for _, j := range jobs {
			j.g.busy = false
			if len(j.g.waiting) > 0 {
				at := j.g.last.Add(d.window)
				if force || j.g.retryAt.After(at) {
					at = j.g.retryAt
				}
				if next.IsZero() || at.Before(next) {
					next = at
				}
			}
		}
		d.mu.Unlock()
		in.syncDigests()
	}()
	if until, paused := in.quota.pausedUntil(); paused {
		for _, j := range jobs {
			in.putBack(j, j.parts, until, false)
		}
		d.mu.Lock()
		for _, o := range resends {
			d.oweLocked(o, until)
		}
		d.mu.Unlock()
		return next
	}
	mails := in.renderDigests(jobs, now)
	for _, o := range resends {
		mails = append(mails, digestMail{email: o.email, resend: o})
	}
	if len(mails) == 0 {
		return next
	}
	var booked int64
	if in.guard != nil {
		granted, _, at := in.guard.take(len(mails))
		booked = at
		if granted < len(mails) {
			for _, m := range mails[granted:] {
				if m.resend != nil {
					d.mu.Lock()
					d.oweLocked(m.resend, now.Add(digestGuardWait))
					d.mu.Unlock()
					continue
				}
				in.putBack(m.job, [][]spoolRecord{m.members}, now.Add(digestGuardWait), false)
			}
			in.logQuiet(LevelWarn, fmt.Sprintf("storm guard active (max_emails_per_minute=%d): %d digest(s) wait %v", in.guard.max, len(mails)-granted, digestGuardWait))
			mails = mails[:granted]
		}
	}
	retried := in.deliverDigests(ctx, mails)
	if in.guard != nil {
		in.guard.refund(booked, retried)
	}
	if d.delivered != nil && retried < len(mails) {
		d.delivered()
	}
	return next
}

// splitDigest splits a group's waiting records, in order, as output.SplitDigest splits
// their members: at most maxRecords records and output.MaxDigestPayload bytes of NDJSON per
// digest, none truncated.
func splitDigest(recs []spoolRecord, maxRecords int) [][]spoolRecord {
	var out [][]spoolRecord
	i := 0
	for _, part := range output.SplitDigest(members(recs), maxRecords) {
		out = append(out, recs[i:i+len(part):i+len(part)])
		i += len(part)
	}
	return out
}

// members are the digest members of waiting records.
func members(recs []spoolRecord) []output.DigestMember {
	out := make([]output.DigestMember, len(recs))
	for i, r := range recs {
		out[i] = output.DigestMember{MessageID: r.MessageID, Tag: r.Tag, Time: r.Time, Payload: r.Payload}
	}
	return out
}

// renderDigests renders every part of the jobs. A part that cannot be rendered is logged and
// dead-lettered record by record, and leaves the store: rendering again would fail again.
func (in *Instance) renderDigests(jobs []*digestJob, now time.Time) []digestMail {
	d := in.dig
	day := utcDay(now)
	var out []digestMail
	for _, j := range jobs {
		for _, part := range j.parts {
			d.mu.Lock()
			root := ""
			if j.g.rootDay == day {
				root = j.g.root
			}
			d.mu.Unlock()
			email, err := d.render.RenderDigest(output.Digest{Group: j.g.values, Members: members(part), ThreadRoot: root})
			if err != nil {
				in.log.Log(LevelError, fmt.Sprintf("digest of %d record(s)%s cannot be rendered: %v; the records are written to dead_letter_dir when it is set",
					len(part), groupText(j.g.values), err))
				in.deadLetterMembers(part, "digest cannot be rendered: "+err.Error())
				in.finish(j, part, false)
				continue
			}
			if root == "" { // the digest opens the group's day
				d.mu.Lock()
				in.setRootLocked(j.key, j.g, email.MessageID, day)
				d.mu.Unlock()
			}
			out = append(out, digestMail{job: j, members: part, email: email})
		}
	}
	return out
}

// deliverDigests sends the rendered digests in one Send and settles each by its Result. It
// returns how many are to be retried.
func (in *Instance) deliverDigests(ctx context.Context, mails []digestMail) (retried int) {
	msgs := make([]mailer.Message, len(mails))
	for i, m := range mails {
		msgs[i] = mailer.Message{ID: m.email.MessageID, From: m.email.From, To: m.to(), Data: m.email.Data}
	}
	results := in.send.Send(ctx, msgs)
	var quota *mailer.Limit
	kept, delivered := 0, false
	for i, m := range mails {
		res := mailer.Result{Outcome: mailer.Retry, Err: errors.New("no result from the mailer")}
		if i < len(results) {
			res = results[i]
		}
		id := m.email.MessageID
		if l, ok := mailer.QuotaOf(res.Err); ok && res.Outcome != mailer.Delivered {
			kept++
			if quota == nil && !l.Connections {
				quota = &l
			}
		}
		switch res.Outcome {
		case mailer.Delivered:
			delivered = true
			in.owedAfter(m, res)
			if m.resend != nil {
				if in.log.Enabled(LevelInfo) {
					in.log.Log(LevelInfo, fmt.Sprintf("digest sent to deferred recipient(s): message_id=<%s> records=%d recipients=%d", id, m.records(), len(m.to())-len(res.Rejected)))
				}
				continue
			}
			if in.log.Enabled(LevelInfo) {
				in.log.Log(LevelInfo, fmt.Sprintf("digest sent: message_id=<%s> records=%d%s", id, len(m.members), groupText(m.job.g.values)))
			}
			in.finish(m.job, m.members, true)
		case mailer.Rejected:
			code, enhanced, text := 0, "", "rejected"
			if res.Err != nil {
				text = res.Err.Error()
			}
			if c, e, ok := replyCode(res.Err); ok {
				code, enhanced = c, e
			} else if len(res.Rejected) > 0 {
				code, enhanced, text = res.Rejected[0].Code, res.Rejected[0].EnhancedCode, res.Rejected[0].Message
			}
			if m.resend != nil {
				in.log.Log(LevelError, fmt.Sprintf("digest rejected by its deferred recipient(s): message_id=<%s> records=%d recipients=%d code=%d enhanced_code=%s: %s",
					id, m.records(), len(m.to()), code, orNone(enhanced), text))
				in.deadLetterRejected("digest", pending{email: m.email, at: m.resend.at}, res)
				continue
			}
			in.log.Log(LevelError, fmt.Sprintf("digest rejected: message_id=<%s> records=%d code=%d enhanced_code=%s%s: %s",
				id, len(m.members), code, orNone(enhanced), groupText(m.job.g.values), text))
			in.deadLetterRejected("digest", pending{email: m.email, at: m.members[len(m.members)-1].Time}, res)
			in.finish(m.job, m.members, false)
		default:
			retried++
			text := "unknown error"
			if res.Err != nil {
				text = res.Err.Error()
			}
			var wait time.Duration
			if m.resend != nil {
				wait = in.oweAgain(m.resend, m.resend.to)
			} else {
				wait = in.putBack(m.job, [][]spoolRecord{m.members}, time.Time{}, true)
			}
			if ctx.Err() == nil && in.log.Enabled(LevelWarn) { // cancelled: Close tries again
				if ok, n := in.quiet.admit(digestKey + text); ok {
					msg := fmt.Sprintf("digest message_id=<%s> of %d record(s) will be retried in %v: %s", id, m.records(), wait, text)
					if n > 0 {
						msg += fmt.Sprintf(" (repeated %d more time(s) since last logged)", n)
					}
					in.log.Log(LevelWarn, msg)
				}
			}
		}
	}
	in.noteQuota("digest", quota, kept, delivered)
	return retried
}

// owedAfter handles the recipients that refused a delivered digest: for good (5xx) an
// [error] line each; for now (4xx, or a provider's quota reply) a [ warn] line each, and the
// digest is kept to be sent to them again, alone.
func (in *Instance) owedAfter(m digestMail, res mailer.Result) {
	var owed []string
	for _, r := range res.Rejected {
		if r.Owed() {
			owed = append(owed, r.Address)
			in.log.Log(LevelWarn, fmt.Sprintf(
				"digest recipient deferred: address=%s message_id=<%s> records=%d code=%d enhanced_code=%s: %s; the digest will be sent to the deferred recipient(s) again",
				r.Address, m.email.MessageID, m.records(), r.Code, orNone(r.EnhancedCode), r.Message))
			continue
		}
		in.log.Log(LevelError, fmt.Sprintf(
			"digest recipient refused: address=%s message_id=<%s> records=%d code=%d enhanced_code=%s: %s",
			r.Address, m.email.MessageID, m.records(), r.Code, orNone(r.EnhancedCode), r.Message))
	}
	o := m.resend
	if o == nil {
		if len(owed) == 0 {
			return
		}
		o = &owedDigest{email: m.email, records: len(m.members), at: m.members[len(m.members)-1].Time}
	} else if len(owed) == 0 {
		return // every deferred recipient has it now
	}
	in.oweAgain(o, owed)
}

// oweAgain keeps o for the recipients to after a growing back-off, unless too many digests
// are owed already (then an [error] line). It returns the wait.
func (in *Instance) oweAgain(o *owedDigest, to []string) time.Duration {
	d := in.dig
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.owed) >= maxOwedDigests {
		in.log.Log(LevelError, fmt.Sprintf("digest message_id=<%s> of %d record(s) is not sent again to %s: %d digests already wait for deferred recipients",
			o.email.MessageID, o.records, strings.Join(to, ", "), len(d.owed)))
		return 0
	}
	o.to = to
	o.backoff = min(max(2*o.backoff, digestRetryMin), digestRetryMax)
	d.oweLocked(o, d.now().Add(o.backoff))
	return o.backoff
}

// finish ends the members of a digest that was delivered or given up for good: they leave
// the store and memory; a delivered digest is the group's last email.
func (in *Instance) finish(j *digestJob, members []spoolRecord, delivered bool) {
	d := in.dig
	var size int64
	for _, r := range members {
		size += int64(len(r.Payload))
	}
	if d.store != nil {
		seqs := make([]uint64, len(members))
		for i, r := range members {
			seqs[i] = r.Seq
		}
		if err := d.store.Done(seqs...); err != nil {
			in.digestStoreFailed(err)
		}
		d.dirty.Store(true)
	}
	d.mu.Lock()
	d.bytes -= size
	if delivered {
		j.g.last = d.now()
		j.g.backoff = 0
		d.sent++
		d.records += int64(len(members))
	}
	d.mu.Unlock()
	if delivered {
		in.quota.delivered()
	}
}

// putBack returns parts of a job to the front of its group's waiting records, to be sent at
// or after at; failed grows the group's back-off and retries after it. It returns the wait.
func (in *Instance) putBack(j *digestJob, parts [][]spoolRecord, at time.Time, failed bool) time.Duration {
	d := in.dig
	var recs []spoolRecord
	for _, p := range parts {
		recs = append(recs, p...)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	if failed {
		j.g.backoff = min(max(2*j.g.backoff, digestRetryMin), digestRetryMax)
		if t := now.Add(j.g.backoff); t.After(at) {
			at = t
		}
	}
	if at.After(j.g.retryAt) {
		j.g.retryAt = at
	}
	j.g.waiting = append(recs, j.g.waiting...)
	return at.Sub(now)
}

// deadLetterMembers writes each record's payload to dead_letter_dir, when it is set.
func (in *Instance) deadLetterMembers(recs []spoolRecord, reason string) int {
	if in.dead == nil {
		return 0
	}
	n := 0
	for _, r := range recs {
		l := deadletter.Letter{MessageID: r.MessageID, Tag: r.Tag, Time: r.Time, Kind: deadletter.Record, Body: r.Payload, Reason: reason}
		if _, err := in.dead.Write(l); err == nil || errors.Is(err, deadletter.ErrExists) {
			n++
		}
	}
	return n
}

// DigestStats returns how many digests were delivered and how many records they carried,
// for the digests_sent_total and digest_records_total metrics.
func (in *Instance) DigestStats() (sent, records int64) {
	if in.dig == nil {
		return 0, 0
	}
	in.dig.mu.Lock()
	defer in.dig.mu.Unlock()
	return in.dig.sent, in.dig.records
}

// closeDigests stops the loop and sends what waits, forced, within flush_timeout. What is
// left stays in the store (ledger_dir) for the next start, or without one is dead-lettered,
// and one [error] line gives the count.
func (in *Instance) closeDigests() {
	d := in.dig
	close(d.quit)
	<-d.done
	deadline := time.Now().Add(in.flushTimeout)
	ctx, cancel := context.WithDeadline(context.Background(), deadline.Add(config.FlushFinishSlack))
	d.mu.Lock()
	for _, g := range d.groups {
		g.retryAt = time.Time{}
	}
	for _, o := range d.owed {
		o.retryAt = time.Time{}
	}
	d.mu.Unlock()
	in.sendDigests(mailer.WithSoftDeadlineFunc(ctx, func() time.Time { return deadline }), true)
	cancel()
	var left []spoolRecord
	d.mu.Lock()
	for _, g := range d.groups {
		left = append(left, g.waiting...)
	}
	owed := d.owed
	d.owed = nil
	d.mu.Unlock()
	for _, o := range owed {
		in.log.Log(LevelError, fmt.Sprintf("digest message_id=<%s> of %d record(s) could not be sent again to %s (refused for now) before the stop; it is written to dead_letter_dir when set",
			o.email.MessageID, o.records, strings.Join(o.to, ", ")))
		if in.dead != nil {
			in.writeDeadLetter(deadletter.Letter{MessageID: o.email.MessageID, Tag: "digest", Time: o.at, Kind: deadletter.Message,
				Body: o.email.Data, Reason: "not delivered to " + strings.Join(o.to, ", ") + " before the plugin stopped"}, fmt.Sprintf("message_id=<%s>", o.email.MessageID))
		}
	}
	switch {
	case len(left) == 0:
	case d.store != nil:
		in.log.Log(LevelWarn, fmt.Sprintf("digest: %d record(s) could not be sent before the stop; they wait in %s and go out after the next start", len(left), d.storePath))
	default:
		kept := in.deadLetterMembers(left, "not delivered in a digest before the plugin stopped (no ledger_dir)")
		in.log.Log(LevelError, fmt.Sprintf("digest: %d record(s) waiting for their digest could not be delivered before the stop and are lost (no ledger_dir); %d of them written to dead_letter_dir",
			len(left), kept))
	}
	if d.store != nil {
		if err := d.store.Close(); err != nil {
			in.log.Log(LevelError, fmt.Sprintf("digest: closing %s: %v", d.storePath, err))
		} else {
			in.log.Log(LevelInfo, fmt.Sprintf("digest: closed %s, %d record(s) waiting", d.storePath, len(left)))
		}
	}
}

// restoreDigests gives the instance its digest store (ledger_dir) and what the store kept:
// the records waiting for their digests and the groups' thread roots. The waiting records
// are settled in the ledger (a replayed chunk skips them) and are due at once: the loop sends
// them on its first turn after start-up, never Open itself.
func (in *Instance) restoreDigests(store digestStore, path string, waiting []spoolRecord, roots []spoolRoot) {
	d := in.dig
	d.mu.Lock()
	d.store, d.storePath = store, path
	for _, r := range roots {
		g := d.groupLocked(r.Group, groupValues(r.Group))
		if r.Day >= g.rootDay {
			g.root, g.rootDay = r.MessageID, r.Day
		}
	}
	for _, r := range waiting {
		g := d.groupLocked(r.Group, groupValues(r.Group))
		g.waiting = append(g.waiting, r)
		d.bytes += int64(len(r.Payload))
	}
	d.mu.Unlock()
	for _, r := range waiting {
		in.ledger.Settle(r.MessageID)
	}
	if len(waiting) > 0 {
		d.wake()
	}
}
