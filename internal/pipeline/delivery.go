package pipeline

import (
	"github.com/smtpout/smtpout/internal/journal"
	"github.com/smtpout/smtpout/mailer"
)

// deliveryLedger is everything an instance remembers about its deliveries: the settled
// Message-IDs and the claims of flushes in progress (ledger), the recipients still owed an
// email others have received (owed), and with ledger_dir the journal on disk (disk). resolve
// is the one place that decides what a delivery Result means for them.
type deliveryLedger struct {
	ledger *Ledger
	owed   *deferrals
	disk   *durable // nil without ledger_dir (durable.go)
}

// Verdicts of resolve: what a Result means for the ledger.
type verdict int

const (
	// verdictRetry: nothing settled; the claim is released and the email sent again later.
	verdictRetry verdict = iota
	// verdictSettled: done for good (delivered to every recipient it was sent to, rejected
	// with 5xx, or owed recipients that could not be remembered: see resolution.dropped).
	verdictSettled
	// verdictDeferred: delivered to some recipients; the others (resolution.owed) refused it
	// for now (4xx, or a provider's quota reply: mailer.RecipientError.Quota) and get it,
	// alone, on a retry.
	verdictDeferred
)

// resolution is what resolve decided for one email.
type resolution struct {
	verdict verdict
	// owed are the recipients refused for now (4xx, or a provider's quota reply) on a
	// delivered email.
	owed []string
	// dropped: owed is not empty but the table of deferred recipients is full, so they are
	// not sent the email again (verdictSettled).
	dropped bool
}

// resolve turns the Result of the email of ledger key k (keyOf its Message-ID) into settled,
// deferred or retry, and records it: in the journal first (as soon as the server has
// answered, before the flush returns), then in memory, ending the claim on it. It is called
// once per email sent, from the mailer's Done callback, or by sendBatch for an email the
// mailer never tried.
func (b *deliveryLedger) resolve(k ledgerKey, res mailer.Result) resolution {
	var r resolution
	switch res.Outcome {
	case mailer.Delivered:
		for _, rc := range res.Rejected {
			if rc.Owed() {
				r.owed = append(r.owed, rc.Address)
			}
		}
		if len(r.owed) > 0 && b.owed.set(k, r.owed) {
			r.verdict = verdictDeferred
			if b.disk != nil {
				b.disk.owe(k, r.owed)
			}
			b.ledger.releaseKey(k)
			return r
		}
		r.dropped = len(r.owed) > 0
		r.verdict = verdictSettled
	case mailer.Rejected:
		r.verdict = verdictSettled // never resent: 5xx is permanent (a quota reply is Retry)
	default: // mailer.Retry and anything unknown
		b.ledger.releaseKey(k)
		return r
	}
	if b.disk != nil {
		b.disk.settle(k)
	}
	b.owed.done(k)
	b.ledger.settleKey(k)
	return r
}

// load hands one record of the journal to the in-memory ledger and deferrals, at start-up.
// It reports what the record was (settled, deferred, or neither: an obsolete deferral).
func (b *deliveryLedger) load(e journal.Entry) verdict {
	k := ledgerKey(e.Key)
	switch e.Kind {
	case journal.Settled:
		b.ledger.settleKey(k)
		b.owed.done(k)
		return verdictSettled
	case journal.Deferred:
		if to := b.disk.addresses(e.Mask); len(to) > 0 && !b.ledger.settled(k) {
			b.owed.loadKey(k, to) // never refused: the file is bounded by ledger_max_age
			return verdictDeferred
		}
		b.owed.done(k)
	}
	return verdictRetry
}
