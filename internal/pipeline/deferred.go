package pipeline

import "sync"

// DefaultDeferredLimit bounds how many emails an instance remembers as delivered to some
// recipients and still owed to others.
const DefaultDeferredLimit = 10_000

// deferrals remembers, per Message-ID, the recipients a server refused with a 4xx while it
// accepted the email for others. The record goes back to Fluent Bit (FLB_RETRY) and the next
// attempt is sent to those recipients only, so nobody who has the email gets it twice and
// nobody refused for now is silently dropped (RFC 5321 4.5.3.1.10, 452 "too many recipients",
// greylisting). Safe for concurrent use.
type deferrals struct {
	mu    sync.Mutex
	m     map[ledgerKey][]string
	limit int
}

func newDeferrals(limit int) *deferrals {
	return &deferrals{m: make(map[ledgerKey][]string), limit: limit}
}

// get returns the recipients still owed the email of key k, or nil.
func (d *deferrals) get(k ledgerKey) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.m[k]
}

// set records the recipients still owed the email of key k; false when the table is full.
func (d *deferrals) set(k ledgerKey, to []string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.m[k]; !ok && len(d.m) >= d.limit {
		return false
	}
	d.m[k] = to
	return true
}

// loadKey records recipients read back from the ledger file at start-up. The limit does not
// apply: dropping them would send those emails to every recipient again. The caller warns
// when more than the limit were loaded.
func (d *deferrals) loadKey(k ledgerKey, to []string) {
	d.mu.Lock()
	d.m[k] = to
	d.mu.Unlock()
}

// len returns how many emails have recipients owed.
func (d *deferrals) len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.m)
}

// done forgets the email of key k: every recipient has been served, for good or ill.
func (d *deferrals) done(k ledgerKey) {
	d.mu.Lock()
	delete(d.m, k)
	d.mu.Unlock()
}
