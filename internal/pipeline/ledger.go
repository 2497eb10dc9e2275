package pipeline

import (
	"crypto/sha256"
	"sync"
)

// DefaultLedgerSize is how many settled Message-IDs an instance remembers.
const DefaultLedgerSize = 100_000

// Claim is what the Ledger says about a Message-ID a flush is about to send.
type Claim int

// The answers of Ledger.Claim.
const (
	// Claimed: the caller now owns the ID and must Settle or Release it.
	Claimed Claim = iota
	// Settled: the ID was already delivered (or permanently rejected): do not send it again.
	Settled
	// Busy: another flush owns the ID right now; the caller must not send it (ask for a retry).
	Busy
)

// String names the claim, for logs and test failures.
func (c Claim) String() string {
	switch c {
	case Claimed:
		return "claimed"
	case Settled:
		return "settled"
	case Busy:
		return "busy"
	}
	return "unknown"
}

// ledgerKey is the first 16 bytes of the SHA-256 of a Message-ID: a fixed-size map key, so a
// full ledger costs a few megabytes whatever the domain's length.
type ledgerKey [16]byte

func keyOf(id string) ledgerKey {
	sum := sha256.Sum256([]byte(id))
	var k ledgerKey
	copy(k[:], sum[:16])
	return k
}

// Ledger remembers the Message-IDs an instance has settled (delivered, or rejected for good),
// so that a chunk Fluent Bit hands back after FLB_RETRY does not email anybody twice. It is
// bounded: past its capacity the oldest IDs are forgotten first. It also tracks the IDs that
// a flush is sending right now, so two concurrent flushes never send the same record. Safe for
// concurrent use.
type Ledger struct {
	mu       sync.Mutex
	settled  map[ledgerKey]struct{}
	ring     []ledgerKey // settled keys in insertion order, oldest at next once full
	next     int
	limit    int
	inflight map[ledgerKey]struct{}
}

// NewLedger returns a ledger remembering up to capacity settled IDs (at least 1).
func NewLedger(capacity int) *Ledger {
	if capacity < 1 {
		capacity = 1
	}
	return &Ledger{
		settled:  make(map[ledgerKey]struct{}, min(capacity, 1024)),
		ring:     make([]ledgerKey, 0, min(capacity, 1024)),
		inflight: make(map[ledgerKey]struct{}),
		limit:    capacity,
	}
}

// Claim reserves id for sending unless it is settled or owned by another flush.
func (l *Ledger) Claim(id string) Claim {
	k := keyOf(id)
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.settled[k]; ok {
		return Settled
	}
	if _, ok := l.inflight[k]; ok {
		return Busy
	}
	l.inflight[k] = struct{}{}
	return Claimed
}

// Settle records id as done for good and ends the caller's claim on it.
func (l *Ledger) Settle(id string) {
	k := keyOf(id)
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.inflight, k)
	if _, ok := l.settled[k]; ok {
		return
	}
	l.settled[k] = struct{}{}
	if len(l.ring) < l.limit {
		l.ring = append(l.ring, k)
		return
	}
	delete(l.settled, l.ring[l.next])
	l.ring[l.next] = k
	l.next = (l.next + 1) % len(l.ring)
}

// Release ends the caller's claim on id without settling it: a later flush may send it again.
func (l *Ledger) Release(id string) {
	k := keyOf(id)
	l.mu.Lock()
	delete(l.inflight, k)
	l.mu.Unlock()
}

// Len returns how many settled IDs the ledger remembers.
func (l *Ledger) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.settled)
}

// InFlight returns how many IDs are claimed right now.
func (l *Ledger) InFlight() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.inflight)
}
