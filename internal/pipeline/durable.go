package pipeline

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/mail"
	"strings"
	"sync"
	"time"

	"github.com/smtpout/smtpout/config"
	"github.com/smtpout/smtpout/internal/journal"
)

// durable is the on-disk side of an instance's ledger (ledger_dir): every settlement and
// every change of an email's deferred recipients is appended to a journal as soon as the
// server's reply is known, and the journal is synced before a flush returns. Deferred
// recipients are stored as a bit mask over the instance's envelope recipients, so the file
// belongs to one recipient list: ledgerName changes with it.
type durable struct {
	j      *journal.Journal
	name   string
	rcpts  []string       // envelope recipients, in config order: bit i is rcpts[i]
	index  map[string]int // lower-case address -> bit
	now    func() time.Time
	failed func(error) // called on a failed append or sync
}

// open instances' ledger names in this process: two [OUTPUT] sections with the same delivery
// configuration get name, name-1, ... in the order Fluent Bit starts them.
var (
	namesMu sync.Mutex
	names   = make(map[string]bool)
)

// ledgerName is the stable file name of an instance's ledger: a hash of what decides where
// its emails go (server, sender, every recipient list in order). Changing any of them starts
// a new ledger, so a Message-ID settled for the old recipients never holds back the email
// from new ones.
func ledgerName(cfg config.Config) string {
	h := sha256.New()
	fmt.Fprintf(h, "smtpout ledger v1\x00%s\x00%s\x00", strings.ToLower(cfg.Address()), strings.ToLower(cfg.From.Address))
	for _, l := range [][]string{addrs(cfg.To), addrs(cfg.Cc), addrs(cfg.Bcc)} {
		fmt.Fprintf(h, "%s\x01", strings.ToLower(strings.Join(l, "\x00")))
	}
	return "smtp-" + hex.EncodeToString(h.Sum(nil)[:8])
}

// openDurable opens the instance's ledger file in cfg.LedgerDir and loads it into in's
// ledger and deferrals. Problems are logged; ok is false when the instance must not start.
func (in *Instance) openDurable(cfg config.Config, now func() time.Time) (ok bool) {
	if now == nil {
		now = time.Now
	}
	d := &durable{rcpts: cfg.Recipients(), index: make(map[string]int), now: now}
	for i, r := range d.rcpts {
		d.index[strings.ToLower(r)] = i
	}
	d.failed = func(err error) {
		in.ledgerErrs.Add(1)
		in.logQuiet(LevelError, fmt.Sprintf(
			"ledger: cannot write to ledger_dir %s: %v; delivery goes on, but after a restart the emails whose settlement was not written may be sent again (at-least-once)",
			cfg.LedgerDir, err))
	}
	base := ledgerName(cfg)
	opt := journal.Options{
		MaxEntries: cfg.LedgerMaxEntries,
		MaxAge:     cfg.LedgerMaxAge,
		Now:        now,
		OnCompact: func(c journal.Compaction) {
			if c.Err != nil {
				in.log.Log(LevelWarn, compactionWarning(c)) // at most one per back-off
				return
			}
			if in.log.Enabled(LevelDebug) {
				in.log.Log(LevelDebug, fmt.Sprintf("ledger: compacted %s from %d to %d bytes", d.name, c.Before, c.After))
			}
		},
	}
	var (
		settled int
		rep     journal.Report
		err     error
	)
	in.disk = d // load reads the recipients of deferred records from it
	load := func(e journal.Entry) {
		if in.load(e) == verdictSettled {
			settled++
		}
	}
	namesMu.Lock()
	for n := 0; ; n++ {
		d.name = base
		if n > 0 {
			d.name = fmt.Sprintf("%s-%d", base, n)
		}
		if names[d.name] {
			continue // another instance of this process, same delivery configuration
		}
		d.j, rep, err = journal.Open(cfg.LedgerDir, d.name, opt, load)
		if err == nil {
			names[d.name] = true
		}
		break
	}
	namesMu.Unlock()
	if err != nil {
		msg := fmt.Sprintf("configuration: ledger_dir: %s: cannot open the ledger: %v", cfg.LedgerDir, err)
		if errors.Is(err, journal.ErrLocked) {
			msg = fmt.Sprintf("configuration: ledger_dir: %s is in use by another Fluent Bit process (%v): give each process its own ledger_dir", cfg.LedgerDir, err)
		}
		in.disk = nil
		in.log.Log(LevelError, msg)
		in.log.Log(LevelError, "not started: the ledger in ledger_dir cannot be used")
		return false
	}
	if rep.Damaged > 0 {
		in.log.Log(LevelWarn, fmt.Sprintf(
			"ledger: %s: skipped %d damaged record(s) (the first at offset %d) and kept the good records after them; emails settled in the damaged records may be sent again",
			rep.Path, rep.Damaged, rep.DamagedAt))
	}
	if rep.Cut > 0 {
		in.log.Log(LevelWarn, fmt.Sprintf(
			"ledger: %s: removed a damaged tail of %d bytes (%s), kept the %d good records before it; emails settled in the damaged part may be sent again",
			rep.Path, rep.Cut, rep.Reason, rep.Loaded+rep.Expired))
	}
	if in.dig != nil && !in.openDigestSpool(cfg, d.name, now) {
		_, _ = d.close()
		in.disk = nil
		return false
	}
	if rep.SyncErr != nil {
		d.failed(rep.SyncErr)
	}
	if c := rep.Compaction; c != nil && c.Err != nil {
		in.log.Log(LevelWarn, compactionWarning(*c))
	}
	deferred := in.owed.len()
	in.log.Log(LevelInfo, fmt.Sprintf(
		"ledger: %s: %d settled Message-ID(s) and %d email(s) with deferred recipients loaded, %d expired record(s) dropped; %d bytes on disk (keeps %d entries for %v)",
		rep.Path, settled, deferred, rep.Expired, rep.Size, cfg.LedgerMaxEntries, cfg.LedgerMaxAge))
	if deferred > in.owed.limit {
		in.log.Log(LevelWarn, fmt.Sprintf(
			"ledger: %s: %d emails with deferred recipients loaded, more than the %d kept for new deferrals: all %d are kept; until fewer than %d remain, recipients deferred anew are dropped (each with an [error] line)",
			rep.Path, deferred, in.owed.limit, deferred, in.owed.limit))
	}
	retainLater(cfg.LedgerDir, cfg.LedgerMaxAge)
	return true
}

// compactionWarning is the [ warn] line of a failed compaction: the file keeps its expired
// records until one succeeds, and the next attempt waits.
func compactionWarning(c journal.Compaction) string {
	return fmt.Sprintf("ledger: %v; delivery goes on and the ledger file keeps its expired records (%d bytes) until a compaction succeeds; %d failure(s) in a row, next attempt in %v",
		c.Err, c.Before, c.Failures, c.Retry)
}

// Retention of unused ledger files (journal.RemoveStale) waits until every instance of the
// running configuration has opened its ledger, so that it can never remove one of theirs: an
// open journal holds its flock, and RemoveStale leaves locked files alone. Fluent Bit calls
// every FLBPluginInit before the first flush (and again on a hot reload), and the plugin is
// loaded once per process, so the first flush after start-up runs it, for every ledger_dir.
var (
	retentionMu sync.Mutex
	retention   = make(map[string]time.Duration) // ledger_dir -> longest ledger_max_age there
)

// retainLater schedules the removal of unused ledger files in dir for the first flush.
func retainLater(dir string, maxAge time.Duration) {
	retentionMu.Lock()
	retention[dir] = max(retention[dir], maxAge)
	retentionMu.Unlock()
}

// removeStale removes, once after start-up, the ledger files no instance has used for longer
// than their own ledger_max_age (the configurations that no longer run), and logs it.
func (in *Instance) removeStale(now time.Time) {
	retentionMu.Lock()
	if len(retention) == 0 {
		retentionMu.Unlock()
		return
	}
	dirs := retention
	retention = make(map[string]time.Duration)
	retentionMu.Unlock()
	for dir, maxAge := range dirs {
		// maxAge judges only files whose lock file records no age of their own (written by
		// an older smtpout): the longest of this process, the safe side.
		removed, err := journal.RemoveStale(dir, maxAge, now)
		if len(removed) > 0 {
			parts := make([]string, len(removed))
			for i, r := range removed {
				parts[i] = fmt.Sprintf("%s (ledger_max_age %v)", r.Path, r.MaxAge)
			}
			in.log.Log(LevelInfo, fmt.Sprintf("ledger: removed %d ledger file(s) unused for longer than their ledger_max_age: %s",
				len(removed), strings.Join(parts, ", ")))
		}
		if err != nil {
			in.log.Log(LevelWarn, "ledger: removing unused ledger files: "+err.Error())
		}
		in.digestSpoolsLeft(dir) // never removed while they hold records: warned about
	}
}

func addrs(as []mail.Address) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.Address
	}
	return out
}

// addresses returns the recipients of mask, or nil when it names one this configuration
// does not have.
func (d *durable) addresses(mask uint64) []string {
	var to []string
	for i := 0; i < 64 && mask != 0; i++ {
		if mask&(1<<i) == 0 {
			continue
		}
		if i >= len(d.rcpts) {
			return nil
		}
		to = append(to, d.rcpts[i])
		mask &^= 1 << i
	}
	return to
}

// mask returns the bit mask of the addresses; ok is false when one of them is not among the
// first 64 envelope recipients.
func (d *durable) mask(to []string) (m uint64, ok bool) {
	for _, a := range to {
		i, found := d.index[strings.ToLower(a)]
		if !found || i >= 64 {
			return 0, false
		}
		m |= 1 << i
	}
	return m, true
}

func (d *durable) append(kind journal.Kind, k ledgerKey, mask uint64) {
	e := journal.Entry{Kind: kind, Time: d.now().UnixNano(), Key: journal.Key(k), Mask: mask}
	if err := d.j.Append(e); err != nil {
		d.failed(err)
	}
}

// settle records the email of key k as settled for good.
func (d *durable) settle(k ledgerKey) { d.append(journal.Settled, k, 0) }

// owe records the recipients still owed the email of key k. Recipients beyond the first 64 cannot be
// written: after a restart the email then goes to every recipient again (at-least-once),
// while this process still sends to the owed ones only.
func (d *durable) owe(k ledgerKey, owed []string) {
	if m, ok := d.mask(owed); ok {
		d.append(journal.Deferred, k, m)
	}
}

// sync makes the records of this flush durable.
func (d *durable) sync() {
	if err := d.j.Sync(); err != nil {
		d.failed(err)
	}
}

// close closes the journal (syncing it) and frees its name in this process.
func (d *durable) close() (size int64, err error) {
	size = d.j.Size()
	err = d.j.Close()
	namesMu.Lock()
	delete(names, d.name)
	namesMu.Unlock()
	return size, err
}
