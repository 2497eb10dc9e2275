// Package pipeline is everything one smtp output instance does, without cgo: start-up from a
// configuration Getter (parse, log problems, log the effective configuration) and the flush
// path (decode a chunk, render each record, skip records already delivered, send the rest,
// classify and log the outcomes, choose the Fluent Bit return code). The cgo layer in the
// module's root only converts C types and calls it, so all of this is unit-tested with fakes.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/smtpout/smtpout/chunk"
	"github.com/smtpout/smtpout/config"
	"github.com/smtpout/smtpout/internal/deadletter"
	"github.com/smtpout/smtpout/mailer"
	"github.com/smtpout/smtpout/output"
)

// Fluent Bit return codes (fluent-bit-go output.FLB_*), as Flush returns them.
const (
	FLBError = 0
	FLBOK    = 1
	FLBRetry = 2
)

// DefaultRepeatWindow is how long an identical warning or error line is held back after it
// was written.
const DefaultRepeatWindow = 30 * time.Second

// Renderer turns a record into a signed email (*output.Renderer).
type Renderer interface {
	Render(output.Record) (*output.Email, error)
}

// Sender delivers emails (*mailer.Mailer).
type Sender interface {
	Send(ctx context.Context, msgs []mailer.Message) []mailer.Result
	Close() error
}

// Options tune an Instance; the zero value gives the defaults.
type Options struct {
	// LedgerSize is how many delivered Message-IDs are remembered (DefaultLedgerSize).
	LedgerSize int
	// RepeatWindow holds back identical warning and error lines (DefaultRepeatWindow).
	RepeatWindow time.Duration
	// Now is the clock for RepeatWindow and the storm guard (time.Now).
	Now func() time.Time
	// MaxEmailsPerMinute turns on the storm guard (guard.go): at most this many emails per
	// minute; 0 is off. Open sets it from max_emails_per_minute.
	MaxEmailsPerMinute int
	// DeadLetters keeps permanently rejected and unrenderable records (deadletter.go); nil is
	// off. Open sets it from dead_letter_dir.
	DeadLetters *deadletter.Writer
	// FlushTimeout is how long flushes may go on once the process was told to stop
	// (config.DefaultFlushTimeout): flush_timeout after the signal no new email is started
	// and the rest go back to Fluent Bit as RETRY; an email already on the wire gets
	// config.FlushFinishSlack more. Until a stop signal, a flush is not cut short: Fluent
	// Bit's Retry_Limit counts every RETRY, and cutting long flushes would let it drop a
	// chunk that one long flush delivers. Open sets it from flush_timeout.
	FlushTimeout time.Duration
	// StopSignalled, when set, returns when the process was told to stop (SIGTERM, SIGINT or SIGQUIT), or the
	// zero time; Stopping, when set, is closed at that moment, so that a flush already
	// sending learns of it at once. Together they end every flush within flush_timeout
	// (plus the slack for an email on the wire) of the signal, before Fluent Bit's Grace
	// runs out. Without them flush_timeout has no effect.
	StopSignalled func() time.Time
	Stopping      <-chan struct{}
	// QuotaPause is the first pause after a mail provider's quota reply
	// (config.DefaultQuotaPause); the pause doubles with each further one up to
	// DefaultQuotaPauseMax. Open sets it from quota_pause.
	QuotaPause time.Duration
	// SkipLedgerFile: Open checks ledger_dir but neither opens nor locks the ledger in it
	// (smtpout check, while Fluent Bit may hold it).
	SkipLedgerFile bool
	// Digests turns digests on (digest.go) when its DigestWindow is set and the Renderer is a
	// DigestRenderer. Open sets it from digest_window, digest_by and digest_max_records.
	Digests config.Digests
	// OnDigests, when set, is called after digests were delivered, from the goroutine that
	// sends them (between flushes), so that metrics need not wait for the next flush.
	OnDigests func()
}

// Stats counts what flushes did. Every record handed to Flush ends in exactly one of
// Delivered, Rejected, Retried, Held, Skipped, Duplicates, Dropped or Digested; Malformed
// counts chunk entries that were not records.
type Stats struct {
	Records    int // records decoded from the chunk
	Delivered  int // emails accepted by the server for at least one recipient
	Rejected   int // emails rejected for good (5xx for the message or every recipient)
	Retried    int // emails that need a retry (4xx, network, TLS, AUTH, shutdown)
	Skipped    int // records already delivered by an earlier flush (ledger)
	Duplicates int // records identical to an earlier record of the same chunk
	Dropped    int // records that could not be rendered
	Malformed  int // chunk entries that could not be decoded
	// RecipientsRejected counts single recipients refused with 5xx on delivered emails.
	RecipientsRejected int
	// Bytes is the size of the emails the server accepted (Delivered), as sent.
	Bytes int
	// Held counts records the storm guard (max_emails_per_minute) or a pause after a quota
	// reply kept back for a later retry, without sending them.
	Held int
	// QuotaReplies counts emails that got a mail provider's quota or throttling reply
	// (mailer.QuotaOf), the connection limit's included: all are retried, none rejected.
	// They are among Retried (or Delivered, for a recipient refused so).
	QuotaReplies int
	// Digested counts records taken into the plugin's custody for their group's digest
	// (digest_window): settled in the ledger, sent later in a digest email (DigestsSent).
	Digested int
	// DigestsSent and DigestRecords count the digest emails delivered and the records they
	// carried. Digests go out between flushes: only Total has them.
	DigestsSent, DigestRecords int
	// Latencies are the delivery times of this flush's delivered emails, as the Sender timed
	// them (mailer.Result.Elapsed; untimed results are left out). Per flush only: Total
	// leaves it empty.
	Latencies []time.Duration
}

func (s *Stats) add(o Stats) {
	s.Records += o.Records
	s.Delivered += o.Delivered
	s.Rejected += o.Rejected
	s.Retried += o.Retried
	s.Skipped += o.Skipped
	s.Duplicates += o.Duplicates
	s.Dropped += o.Dropped
	s.Malformed += o.Malformed
	s.RecipientsRejected += o.RecipientsRejected
	s.Bytes += o.Bytes
	s.Held += o.Held
	s.QuotaReplies += o.QuotaReplies
	s.Digested += o.Digested
}

// Instance is one running smtp output. Flush is safe for concurrent use (Fluent Bit's
// Workers); Close ends it.
type Instance struct {
	render          Renderer
	send            Sender
	log             Logger
	*deliveryLedger // settled IDs, claims, deferred recipients, ledger_dir (delivery.go)
	quiet           *repeats
	guard           *guard             // nil when the storm guard is off
	quota           *quotaPause        // the pause after quota replies (quota.go)
	dead            *deadletter.Writer // nil without dead_letter_dir
	dig             *digests           // nil when digests are off (digest.go)

	flushTimeout time.Duration
	stopped      func() time.Time // Options.StopSignalled; nil: never
	stopping     <-chan struct{}  // Options.Stopping; nil: never
	ledgerErrs   atomic.Int64     // failed writes and syncs of the ledger file

	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	idle   *sync.Cond // signalled when active drops to 0
	closed bool
	active int // flushes in progress
	total  Stats
}

// NewInstance assembles an Instance from its parts; Open is the usual way in.
func NewInstance(r Renderer, s Sender, log Logger, opt Options) *Instance {
	if opt.LedgerSize <= 0 {
		opt.LedgerSize = DefaultLedgerSize
	}
	if opt.RepeatWindow <= 0 {
		opt.RepeatWindow = DefaultRepeatWindow
	}
	if opt.FlushTimeout <= 0 {
		opt.FlushTimeout = config.DefaultFlushTimeout
	}
	ctx, cancel := context.WithCancel(context.Background())
	in := &Instance{
		render: r,
		send:   s,
		log:    log,
		deliveryLedger: &deliveryLedger{
			ledger: NewLedger(opt.LedgerSize),
			owed:   newDeferrals(DefaultDeferredLimit),
		},
		quiet: newRepeats(opt.RepeatWindow, opt.Now),
		guard: newGuard(opt.MaxEmailsPerMinute, opt.Now),
		quota: newQuotaPause(opt.QuotaPause, opt.Now),
		dead:  opt.DeadLetters,

		flushTimeout: opt.FlushTimeout,
		stopped:      opt.StopSignalled,
		stopping:     opt.Stopping,

		ctx:    ctx,
		cancel: cancel,
	}
	in.idle = sync.NewCond(&in.mu)
	if in.dig = newDigests(opt.Digests, r, opt.Now); in.dig != nil {
		in.dig.delivered = opt.OnDigests
		go in.digestLoop()
	}
	return in
}

// Open starts an instance from its configuration keys, as FLBPluginInit does: every
// configuration problem is logged as its own [error] line naming the key; on success one
// [ info] line gives the effective configuration (secrets redacted) and each warning of the
// configuration is logged as [ warn]. It reads every key before it returns and never dials.
// It returns nil when the instance cannot start: FLBPluginInit must then return FLB_ERROR.
func Open(g config.Getter, log Logger, opt Options) *Instance {
	cfg, err := config.Parse(g)
	if err != nil {
		problems := splitErrors(err)
		for _, p := range problems {
			log.Log(LevelError, "configuration: "+p.Error())
		}
		log.Log(LevelError, fmt.Sprintf("not started: %d configuration problem(s); fix the [OUTPUT] section and restart", len(problems)))
		return nil
	}
	if !opt.Digests.DigestOn() {
		opt.Digests = cfg.Digests
	}
	var ropts []output.Option
	if !opt.Digests.DigestOn() {
		// Only a digest reads an email's Payload (takeDigested): without digests the
		// renderer need not keep a copy of it in every email.
		ropts = append(ropts, output.WithoutPayload())
	}
	r, err := output.New(cfg, ropts...)
	if err != nil {
		log.Log(LevelError, "not started: "+err.Error())
		return nil
	}
	m, err := mailer.New(cfg)
	if err != nil {
		log.Log(LevelError, "not started: "+err.Error())
		return nil
	}
	if opt.MaxEmailsPerMinute == 0 {
		opt.MaxEmailsPerMinute = cfg.MaxEmailsPerMinute
	}
	if opt.DeadLetters == nil {
		var ok bool
		if opt.DeadLetters, ok = openDeadLetters(cfg, log); !ok {
			return nil
		}
	}
	if opt.FlushTimeout == 0 {
		opt.FlushTimeout = cfg.FlushTimeout
	}
	if opt.QuotaPause == 0 {
		opt.QuotaPause = cfg.QuotaPause
	}
	useDisk := cfg.LedgerDir != "" && !opt.SkipLedgerFile
	if useDisk {
		opt.LedgerSize = max(opt.LedgerSize, cfg.LedgerMaxEntries)
	}
	in := NewInstance(r, m, log, opt)
	if useDisk && !in.openDurable(cfg, opt.Now) {
		in.cancel()
		if in.dig != nil { // the loop has nothing to send: end it
			close(in.dig.quit)
			<-in.dig.done
		}
		return nil
	}
	log.Log(LevelInfo, "started: "+cfg.Effective())
	for _, w := range cfg.Warnings {
		log.Log(LevelWarn, w)
	}
	if opt.MaxEmailsPerMinute > 0 {
		log.Log(LevelInfo, guardNotice(opt.MaxEmailsPerMinute))
	}
	if in.dig != nil {
		log.Log(LevelInfo, digestNotice(in.dig.window, cfg.LedgerDir != "")) // smtpout check opens no file
	}
	return in
}

// splitErrors undoes errors.Join (one level, recursively for nested joins).
func splitErrors(err error) []error {
	var out []error
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
			return
		}
		out = append(out, e)
	}
	walk(err)
	return out
}

// Total returns the counts of every flush so far, and of the digests delivered.
func (in *Instance) Total() Stats {
	in.mu.Lock()
	t := in.total
	in.mu.Unlock()
	sent, recs := in.DigestStats()
	t.DigestsSent, t.DigestRecords = int(sent), int(recs)
	return t
}

// Dials returns how many SMTP connections the Sender has opened so far (0 when it does not
// count them), for the connections_opened_total metric.
func (in *Instance) Dials() int64 {
	if d, ok := in.send.(interface{ Dials() int64 }); ok {
		return d.Dials()
	}
	return 0
}

// AuthStats returns the Sender's token request and AUTH failure counts so far (zero when it
// does not count them), for the token_requests_* and auth_failures_total metrics.
func (in *Instance) AuthStats() mailer.AuthStats {
	if a, ok := in.send.(interface{ AuthStats() mailer.AuthStats }); ok {
		return a.AuthStats()
	}
	return mailer.AuthStats{}
}

// LedgerErrors returns how many writes or syncs of the ledger file (ledger_dir) have failed
// so far, for the ledger_write_errors_total metric.
func (in *Instance) LedgerErrors() int64 { return in.ledgerErrs.Load() }

// pending is one record of a chunk on its way to the server.
type pending struct {
	email *output.Email
	key   ledgerKey // keyOf(email.MessageID), computed once
	entry int       // index of the record in the chunk, counting records only
	at    time.Time // the record's timestamp
	// group and values are the record's digest group (groupKey, digest_by), when digests
	// are on.
	group  string
	values []output.GroupValue
}

// Flush delivers every record of one chunk and returns the Fluent Bit code: FLBRetry when
// any record needs another try (Fluent Bit then hands back the whole chunk; records already
// delivered are skipped), else FLBOK. Records that can never be delivered (unrenderable,
// rejected with 5xx, malformed entries) are logged as [error] lines and do not cause a retry.
// With digests on, the records of a group that had an email within digest_window are taken
// for the group's digest (Stats.Digested, digest.go): settled, kept, and sent later.
// data must not be modified until Flush returns, and may be freed once it has returned:
// decoded strings alias it, so nothing Flush keeps afterwards may refer to them (Message-IDs,
// emails, log lines, dead letters and the ledger are all built anew). The plugin passes
// Fluent Bit's own buffer without copying it.
func (in *Instance) Flush(tag string, data []byte) (code int, st Stats) {
	in.mu.Lock()
	if in.closed {
		in.mu.Unlock()
		in.logQuiet(LevelError, fmt.Sprintf("flush of tag %q after shutdown began: chunk handed back to Fluent Bit (retry)", tag))
		return FLBRetry, st
	}
	in.active++
	in.mu.Unlock()
	if in.disk != nil {
		in.removeStale(in.disk.now()) // once after start-up, when every instance has its ledger
	}
	ctx, cancel := in.budget()
	defer cancel()
	defer func() {
		in.syncDigests() // the records taken for digests, before the ledger settling them
		if in.disk != nil {
			in.disk.sync() // before Fluent Bit hears the result, even after a panic
		}
		in.mu.Lock()
		in.total.add(st)
		in.active--
		if in.active == 0 {
			in.idle.Broadcast()
		}
		in.mu.Unlock()
	}()

	batch, retry := in.collect(tag, data, &st)
	if in.dig != nil && len(batch) > 0 && !in.budgetSpent() {
		// The records of busy groups wait for a digest; once the stop budget is spent nothing
		// could send them, so they go back to Fluent Bit below.
		batch = in.takeDigested(tag, batch, &st)
	}
	sending := false
	defer func() {
		// A panic before sendBatch owns the claims must not leave them behind: the records
		// would read as "being sent by another flush" until Fluent Bit gave up on them.
		if p := recover(); p != nil {
			if !sending {
				for _, b := range batch {
					in.ledger.releaseKey(b.key)
				}
			}
			panic(p)
		}
	}()
	if len(batch) > 0 && in.pauseBatch(tag, batch, &st) {
		batch, retry = nil, true // a quota reply paused sending: nothing is dialled
	}
	var booked int64 // the storm guard's second for this batch
	if len(batch) > 0 && in.guard != nil {
		n := len(batch)
		if batch, booked = in.hold(tag, batch, &st); len(batch) < n {
			retry = true
		}
	}
	sending = true
	if len(batch) > 0 && in.budgetSpent() {
		// The budget is spent before anything was sent (a flush that starts long after a
		// a stop signal): hand the whole batch back.
		for _, b := range batch {
			in.ledger.releaseKey(b.key)
		}
		st.Retried += len(batch)
		retry = true
		if in.guard != nil {
			in.guard.refund(booked, len(batch)) // not sent: not counted
		}
		in.logQuiet(LevelWarn, fmt.Sprintf("tag %q: %d email(s) will be retried: %v", tag, len(batch), mailer.ErrDeadline))
		batch = nil
	}
	if len(batch) > 0 {
		retried := st.Retried
		if in.sendBatch(ctx, tag, batch, &st) {
			retry = true
		}
		if in.guard != nil {
			in.guard.refund(booked, st.Retried-retried) // not taken by the server: not counted
		}
	}
	if in.log.Enabled(LevelDebug) {
		in.log.Log(LevelDebug, fmt.Sprintf(
			"flush tag=%q bytes=%d records=%d delivered=%d rejected=%d retry=%d skipped=%d duplicates=%d dropped=%d malformed=%d held=%d digested=%d",
			tag, len(data), st.Records, st.Delivered, st.Rejected, st.Retried, st.Skipped,
			st.Duplicates, st.Dropped, st.Malformed, st.Held, st.Digested))
	}
	if retry {
		return FLBRetry, st
	}
	return FLBOK, st
}

// budget returns the context of one flush's sending. Once the process was told to stop, no
// email is started later than flush_timeout after the signal (mailer.WithSoftDeadlineFunc),
// and the context ends config.FlushFinishSlack after that, for an email still on the wire.
// The signal may come while the flush sends: a goroutine waits for it (nothing polls).
func (in *Instance) budget() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(in.ctx)
	if in.stopped == nil {
		return ctx, cancel
	}
	if in.stopping != nil {
		go func() {
			select {
			case <-ctx.Done():
				return
			case <-in.stopping:
			}
			at := in.stopped()
			if at.IsZero() {
				at = time.Now()
			}
			end := time.NewTimer(time.Until(at.Add(in.flushTimeout + config.FlushFinishSlack)))
			defer end.Stop()
			select {
			case <-ctx.Done():
			case <-end.C:
				cancel()
			}
		}()
	}
	return mailer.WithSoftDeadlineFunc(ctx, in.softDeadline), cancel
}

// softDeadline is flush_timeout after the stop signal, or the zero time before one.
func (in *Instance) softDeadline() time.Time {
	t := in.stopped()
	if t.IsZero() {
		return t
	}
	return t.Add(in.flushTimeout)
}

// budgetSpent reports whether flush_timeout has passed since the stop signal.
func (in *Instance) budgetSpent() bool {
	if in.stopped == nil {
		return false
	}
	d := in.softDeadline()
	return !d.IsZero() && !time.Now().Before(d)
}

// collect decodes and renders the chunk, and claims in the ledger the emails to send. It
// reports whether a retry is needed already (a record another flush is sending).
func (in *Instance) collect(tag string, data []byte, st *Stats) (batch []pending, retry bool) {
	defer func() {
		if p := recover(); p != nil { // release what was claimed before the panic
			for _, b := range batch {
				in.ledger.releaseKey(b.key)
			}
			panic(p)
		}
	}()
	dec := chunk.NewDecoder(data)
	seen := make(map[ledgerKey]struct{})
	busy := 0
	for {
		e, err := dec.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			st.Malformed++
			var ee *chunk.EntryError
			if errors.As(err, &ee) && ee.Fatal() {
				in.log.Log(LevelError, fmt.Sprintf(
					"tag %q: dropping the rest of the chunk (%d of %d bytes) after %d record(s): %v",
					tag, len(data)-ee.Offset, len(data), st.Records, err))
				break
			}
			in.log.Log(LevelError, fmt.Sprintf("tag %q: skipping a malformed entry: %v", tag, err))
			if !errors.As(err, &ee) {
				break // an unknown error: the decoder's position cannot be trusted
			}
			continue
		}
		idx := st.Records
		st.Records++
		rec := output.Record{Tag: tag, Time: e.Time, Fields: e.Record}
		email, err := in.render.Render(rec)
		if err != nil {
			st.Dropped++
			in.log.Log(LevelError, fmt.Sprintf(
				"dropping record %d of tag %q (time %s, %d fields): it cannot be rendered: %v",
				idx, tag, e.Time.UTC().Format(time.RFC3339Nano), len(e.Record), err))
			in.deadLetterRecord(tag, idx, e.Time, e.Record, err)
			continue
		}
		key := keyOf(email.MessageID)
		if _, dup := seen[key]; dup {
			// Same tag, time and payload: the same Message-ID, so the same email.
			st.Duplicates++
			if in.log.Enabled(LevelDebug) {
				in.log.Log(LevelDebug, fmt.Sprintf("record %d of tag %q repeats an earlier record of the chunk (Message-ID <%s>): sent once",
					idx, tag, email.MessageID))
			}
			continue
		}
		seen[key] = struct{}{}
		switch in.ledger.claimKey(key) {
		case Settled:
			st.Skipped++
			if in.log.Enabled(LevelDebug) {
				in.log.Log(LevelDebug, fmt.Sprintf("Message-ID <%s> already delivered: skipped", email.MessageID))
			}
		case Busy:
			st.Retried++
			busy++
			retry = true
		case Claimed:
			if to := in.owed.get(key); to != nil {
				email.Recipients = to // the others have it already
			}
			p := pending{email: email, key: key, entry: idx, at: e.Time}
			if in.dig != nil {
				p.values = in.dig.render.GroupValues(rec, in.dig.by)
				p.group = groupKey(p.values)
			}
			batch = append(batch, p)
		}
	}
	if busy > 0 {
		in.logQuiet(LevelWarn, fmt.Sprintf("tag %q: %d record(s) are being sent by another flush right now: chunk will be retried", tag, busy))
	}
	return batch, retry
}

// sendBatch sends the claimed emails and reports whether any needs a retry. Each email's
// Result is resolved (deliveryLedger.resolve: settled, deferred or retry, on disk and in
// memory) by the mailer's Done callback as soon as the server has answered; what is left here
// is counting and logging what was decided, and resolving the emails the mailer never tried.
func (in *Instance) sendBatch(ctx context.Context, tag string, batch []pending, st *Stats) (retry bool) {
	msgs := make([]mailer.Message, len(batch))
	// outs[i] is written by the Done of email i only (before Send returns), then read here.
	outs := make([]sendOutcome, len(batch))
	for i := range batch {
		p, o := &batch[i], &outs[i]
		msgs[i] = mailer.Message{ID: p.email.MessageID, From: p.email.From, To: p.email.Recipients, Data: p.email.Data}
		k := p.key
		msgs[i].Done = func(res mailer.Result) {
			o.decided = in.resolve(k, res)
			o.resolved = true
		}
	}
	defer func() {
		// A panic in Send must not leave claims behind: release what was not resolved.
		for i := range outs {
			if !outs[i].resolved {
				in.ledger.releaseKey(batch[i].key)
			}
		}
	}()
	results := in.send.Send(ctx, msgs)

	retryErrs := make(map[string]int) // error text -> count
	var retryOrder []string
	operator := make(map[string]bool)
	var quota *mailer.Limit // the first limit that pauses sending
	var firstLimit mailer.Limit
	kept, delivered := 0, false
	defer func() { in.noteQuota(tag, quota, kept, delivered) }()
	for i, p := range batch {
		var res mailer.Result
		if i < len(results) {
			res = results[i]
		} else {
			res = mailer.Result{Outcome: mailer.Retry, Err: errors.New("no result from the mailer")}
		}
		id := p.email.MessageID
		o := &outs[i]
		tried := o.resolved
		if !o.resolved { // never tried: the mailer did not call Done
			o.decided = in.resolve(p.key, res)
			o.resolved = true
		}
		if res.Resent {
			in.log.Log(LevelWarn, fmt.Sprintf(
				"delivery of Message-ID <%s> may be repeated: it was sent again on a new connection, because the first one closed before the server answered it (tag %q)",
				id, tag))
		}
		d := o.decided
		pausing := false // a quota reply noteQuota reports: not repeated in the retry summary
		if l, ok := mailer.QuotaOf(res.Err); ok {
			pausing = !l.Connections
			if tried { // the others carry the reply that stopped the sending
				st.QuotaReplies++
			}
			if d.verdict != verdictSettled {
				kept++
			}
			if quota == nil && !l.Connections {
				firstLimit = l // not &l: that would move every email's l to the heap
				quota = &firstLimit
			}
		} else if res.Outcome == mailer.Delivered {
			delivered = true
		}
		switch {
		case d.verdict == verdictRetry:
			if !pausing {
				in.countRetry(id, res, &retryOrder, retryErrs, operator)
			}
			st.Retried++
			retry = true
		case res.Outcome == mailer.Delivered: // settled, or deferred for some recipients
			st.Delivered++
			st.Bytes += len(p.email.Data)
			if res.Elapsed > 0 {
				if st.Latencies == nil { // once per flush, not log2(len(batch)) times
					st.Latencies = make([]time.Duration, 0, len(batch)-i)
				}
				st.Latencies = append(st.Latencies, res.Elapsed)
			}
			in.logRecipients(tag, id, res, st)
			if d.verdict == verdictDeferred {
				retry = true
			}
			if d.dropped {
				in.log.Log(LevelError, fmt.Sprintf(
					"message_id=<%s>: %d deferred recipient(s) dropped: more than %d emails are waiting for deferred recipients",
					id, len(d.owed), in.owed.limit))
			}
		default: // rejected for good
			st.Rejected++
			in.logRejected(tag, p, res)
			in.deadLetterRejected(tag, p, res)
		}
	}
	for _, text := range retryOrder {
		level, what := LevelWarn, "will be retried"
		if operator[text] {
			level, what = LevelError, "cannot be delivered until this is fixed; will be retried"
		}
		in.logQuiet(level, fmt.Sprintf("tag %q: %d email(s) %s: %s", tag, retryErrs[text], what, text))
	}
	return retry
}

// sendOutcome is what resolve decided for one email of a batch sent by sendBatch.
type sendOutcome struct {
	decided  resolution
	resolved bool // resolve was called (by the mailer's Done, or by sendBatch)
}

// countRetry adds an email to be retried to the flush's summary of retry errors (one line per
// distinct error, [error] when it needs the operator) and warns at once when its delivery is
// uncertain.
func (in *Instance) countRetry(id string, res mailer.Result, order *[]string, count map[string]int, operator map[string]bool) {
	text := "unknown error"
	if res.Err != nil {
		text = res.Err.Error()
	}
	if res.Ambiguous {
		in.log.Log(LevelWarn, fmt.Sprintf(
			"delivery of Message-ID <%s> is uncertain (connection lost after the message was sent); it will be sent again with the same Message-ID: %s",
			id, text))
	}
	if count[text] == 0 {
		*order = append(*order, text)
	}
	count[text]++
	if needsOperator(res.Err) {
		operator[text] = true
	}
}

// logRecipients writes a line for each recipient refused on a delivered email: [ warn] for
// one refused for now (deferred), [error] for one refused for good, which it counts.
func (in *Instance) logRecipients(tag, id string, res mailer.Result, st *Stats) {
	for _, r := range res.Rejected {
		if r.Owed() {
			in.log.Log(LevelWarn, fmt.Sprintf(
				"recipient deferred: address=%s message_id=<%s> code=%d enhanced_code=%s tag=%q: %s; the email will be sent to the deferred recipient(s) only, on retry",
				r.Address, id, r.Code, orNone(r.EnhancedCode), tag, r.Message))
			continue
		}
		st.RecipientsRejected++
		in.log.Log(LevelError, fmt.Sprintf(
			"recipient rejected: address=%s message_id=<%s> code=%d enhanced_code=%s tag=%q: %s",
			r.Address, id, r.Code, orNone(r.EnhancedCode), tag, r.Message))
	}
}

// logRejected writes the [error] line(s) of a permanently rejected email: one per refused
// recipient, and one for the message unless the refused recipients are the whole reason (a
// message refused at MAIL or DATA after some recipients were refused gets both).
func (in *Instance) logRejected(tag string, p pending, res mailer.Result) {
	id := p.email.MessageID
	for _, r := range res.Rejected {
		in.log.Log(LevelError, fmt.Sprintf(
			"email rejected: address=%s message_id=<%s> code=%d enhanced_code=%s payload_size=%d tag=%q: %s",
			r.Address, id, r.Code, orNone(r.EnhancedCode), p.email.PayloadSize, tag, r.Message))
	}
	var se *mailer.StepError
	if len(res.Rejected) > 0 && !(errors.As(res.Err, &se) && se.Step != mailer.StepRCPT) {
		return
	}
	code, enhanced, text := 0, "", "rejected"
	if res.Err != nil {
		text = res.Err.Error()
	}
	if c, e, ok := replyCode(res.Err); ok {
		code, enhanced = c, e
	}
	in.log.Log(LevelError, fmt.Sprintf(
		"email rejected: message_id=<%s> code=%d enhanced_code=%s payload_size=%d tag=%q recipients=%d: %s",
		id, code, orNone(enhanced), p.email.PayloadSize, tag, len(p.email.Recipients), text))
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// logQuiet writes msg unless the same line was written within the repeat window; when lines
// were held back it says how many.
func (in *Instance) logQuiet(level Level, msg string) {
	if !in.log.Enabled(level) {
		return
	}
	ok, n := in.quiet.admit(msg)
	if !ok {
		return
	}
	if n > 0 {
		msg += fmt.Sprintf(" (repeated %d more time(s) since last logged)", n)
	}
	in.log.Log(level, msg)
}

// Close ends the instance: new flushes are refused (FLBRetry), sends in progress are
// abandoned (their records are retried by Fluent Bit), and the mailer's connections are
// closed with QUIT. It logs one [ info] line with the totals. Safe to call twice.
func (in *Instance) Close() error {
	in.mu.Lock()
	if in.closed {
		in.mu.Unlock()
		return nil
	}
	in.closed = true
	in.mu.Unlock()
	in.cancel()
	in.mu.Lock()
	for in.active > 0 {
		in.idle.Wait()
	}
	in.mu.Unlock()
	if in.dig != nil {
		in.closeDigests() // what waits goes out within flush_timeout
	}
	err := in.send.Close()
	t := in.Total()
	msg := fmt.Sprintf(
		"stopped: records=%d delivered=%d rejected=%d retried=%d skipped=%d dropped=%d malformed=%d recipients_rejected=%d",
		t.Records, t.Delivered, t.Rejected, t.Retried, t.Skipped, t.Dropped, t.Malformed, t.RecipientsRejected)
	if in.dig != nil {
		msg += fmt.Sprintf(" digested=%d digests=%d digest_records=%d", t.Digested, t.DigestsSent, t.DigestRecords)
	}
	in.log.Log(LevelInfo, msg)
	if err != nil {
		in.log.Log(LevelWarn, "closing SMTP connections: "+err.Error())
	}
	if in.disk != nil {
		size, derr := in.disk.close()
		if derr != nil {
			in.log.Log(LevelError, "ledger: closing "+derr.Error())
			err = errors.Join(err, derr)
		} else {
			in.log.Log(LevelInfo, fmt.Sprintf("ledger: closed %s, %d bytes on disk", in.disk.j.Path(), size))
		}
	}
	return err
}

// needsOperator reports whether a retryable error will persist until somebody changes the
// configuration or the server (AUTH refused, certificate not trusted, TLS mode mismatch):
// such errors are logged as [error] rather than [ warn]. *mailer.StepError says so.
func needsOperator(err error) bool {
	var op interface{ Operator() bool }
	return errors.As(err, &op) && op.Operator()
}

// replyCode extracts the SMTP reply code and enhanced status code from err, when it carries
// them (*mailer.StepError).
func replyCode(err error) (code int, enhanced string, ok bool) {
	var se *mailer.StepError
	if errors.As(err, &se) && se.Code != 0 {
		return se.Code, se.EnhancedCode, true
	}
	return 0, "", false
}
