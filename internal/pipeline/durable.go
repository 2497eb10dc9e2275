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
	"github.com/smtpout/smtpout/mailer"
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
	base := ledgerName(cfg)
	opt := journal.Options{
		MaxEntries: cfg.LedgerMaxEntries,
		MaxAge:     cfg.LedgerMaxAge,
		Now:        now,
		OnCompact: func(c journal.Compaction) {
			if c.Err != nil {
				in.logQuiet(LevelWarn, "ledger: "+c.Err.Error()+"; the ledger file keeps growing until a compaction succeeds")
				return
			}
			if in.log.Enabled(LevelDebug) {
				in.log.Log(LevelDebug, fmt.Sprintf("ledger: compacted %s from %d to %d bytes", d.name, c.Before, c.After))
			}
		},
	}
	var (
		settled, deferred int
		rep               journal.Report
		err               error
	)
	load := func(e journal.Entry) {
		k := ledgerKey(e.Key)
		switch e.Kind {
		case journal.Settled:
			in.ledger.settleKey(k)
			in.owed.doneKey(k)
			settled++
		case journal.Deferred:
			if to := d.addresses(e.Mask); len(to) > 0 && !in.ledger.settled(k) {
				in.owed.setKey(k, to)
				deferred++
			} else {
				in.owed.doneKey(k)
			}
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
		in.log.Log(LevelError, msg)
		in.log.Log(LevelError, "not started: the ledger in ledger_dir cannot be used")
		return false
	}
	if rep.Cut > 0 {
		in.log.Log(LevelWarn, fmt.Sprintf(
			"ledger: %s: removed a damaged tail of %d bytes (%s), kept the %d good records before it; emails settled in the damaged part may be sent again",
			rep.Path, rep.Cut, rep.Reason, rep.Loaded+rep.Expired))
	}
	in.log.Log(LevelInfo, fmt.Sprintf(
		"ledger: %s: %d settled Message-ID(s) and %d email(s) with deferred recipients loaded, %d expired record(s) dropped; %d bytes on disk (keeps %d entries for %v)",
		rep.Path, settled, deferred, rep.Expired, rep.Size, cfg.LedgerMaxEntries, cfg.LedgerMaxAge))
	// Ledgers of configurations that no longer run: every record in them has expired.
	removed, err := journal.RemoveStale(cfg.LedgerDir, cfg.LedgerMaxAge, now())
	if len(removed) > 0 {
		in.log.Log(LevelInfo, fmt.Sprintf("ledger: removed %d ledger file(s) unused for more than %v: %s",
			len(removed), cfg.LedgerMaxAge, strings.Join(removed, ", ")))
	}
	if err != nil {
		in.log.Log(LevelWarn, "ledger: removing unused ledger files: "+err.Error())
	}
	d.failed = func(err error) {
		in.ledgerErrs.Add(1)
		in.logQuiet(LevelError, fmt.Sprintf(
			"ledger: cannot write to ledger_dir %s: %v; delivery goes on, but after a restart the emails whose settlement was not written may be sent again (at-least-once)",
			cfg.LedgerDir, err))
	}
	in.disk = d
	return true
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

func (d *durable) append(kind journal.Kind, id string, mask uint64) {
	e := journal.Entry{Kind: kind, Time: d.now().UnixNano(), Key: journal.Key(keyOf(id)), Mask: mask}
	if err := d.j.Append(e); err != nil {
		d.failed(err)
	}
}

// settle records id as settled for good.
func (d *durable) settle(id string) { d.append(journal.Settled, id, 0) }

// recordResult writes what res means for the ledger as soon as the server has answered: a
// settlement (delivered to all, or rejected for good), or the recipients still owed (a
// delivery with some recipients refused for now). A retry writes nothing.
func (d *durable) recordResult(id string, res mailer.Result) {
	switch res.Outcome {
	case mailer.Delivered:
		var owed []string
		for _, r := range res.Rejected {
			if r.Code >= 400 && r.Code < 500 {
				owed = append(owed, r.Address)
			}
		}
		if len(owed) == 0 {
			d.settle(id)
			return
		}
		if m, ok := d.mask(owed); ok {
			d.append(journal.Deferred, id, m)
		}
		// else: not expressible on disk; after a restart the email goes to every recipient
		// again (at-least-once), while this process still sends to the owed ones only.
	case mailer.Rejected:
		d.settle(id)
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
