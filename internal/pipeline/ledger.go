package pipeline

import (
	"crypto/sha256"
	"encoding/binary"
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

// keyOf returns the ledger key of the Message-ID id. A flush computes it once per email and
// carries it (pending.key): Claim, the deferred recipients, the journal and Settle all use it.
// An ID of up to 288 bytes (every one Render makes: 32 hex, "@", a domain of at most 253
// bytes) is hashed from a copy on the stack, so keyOf allocates nothing.
func keyOf(id string) ledgerKey {
	var buf [288]byte
	var sum [sha256.Size]byte
	if len(id) <= len(buf) {
		sum = sha256.Sum256(append(buf[:0], id...))
	} else {
		sum = sha256.Sum256([]byte(id))
	}
	var k ledgerKey
	copy(k[:], sum[:16])
	return k
}

// Ledger remembers the Message-IDs an instance has settled (delivered, or rejected for good),
// so that a chunk Fluent Bit hands back after FLB_RETRY does not email anybody twice. It is
// bounded: past its capacity the oldest IDs are forgotten first. Its memory is allocated once,
// at its full size, and holds no pointers: a ring of keys in settling order and an
// open-addressing index into the ring (linear probing, backward-shift deletion), so it costs
// the same at 10,000 emails as at 10 million and gives the garbage collector nothing to scan.
// It also tracks the IDs that a flush is sending right now, so two concurrent flushes never
// send the same record. Safe for concurrent use.
type Ledger struct {
	mu       sync.Mutex
	ring     []ledgerKey // settled keys; once full, ring[next] is the oldest
	count    int         // settled keys held (== len(ring) once full)
	next     int
	index    []int32 // ring position + 1 for each slot; 0 is empty
	mask     uint64
	inflight map[ledgerKey]struct{}
}

// NewLedger returns a ledger remembering up to capacity settled IDs (at least 1).
func NewLedger(capacity int) *Ledger {
	capacity = max(capacity, 1)
	slots := 2
	for slots < 2*capacity { // load factor at most 1/2
		slots <<= 1
	}
	return &Ledger{
		ring:     make([]ledgerKey, capacity),
		index:    make([]int32, slots),
		mask:     uint64(slots - 1),
		inflight: make(map[ledgerKey]struct{}),
	}
}

func (l *Ledger) home(k ledgerKey) uint64 { return binary.LittleEndian.Uint64(k[:8]) & l.mask }

// find returns the index slot holding k, or the empty slot where k would go.
func (l *Ledger) find(k ledgerKey) (slot uint64, ok bool) {
	for i := l.home(k); ; i = (i + 1) & l.mask {
		p := l.index[i]
		if p == 0 {
			return i, false
		}
		if l.ring[p-1] == k {
			return i, true
		}
	}
}

// remove empties slot i and shifts back the entries after it that probed past it.
func (l *Ledger) remove(i uint64) {
	l.index[i] = 0
	for j := (i + 1) & l.mask; l.index[j] != 0; j = (j + 1) & l.mask {
		h := l.home(l.ring[l.index[j]-1])
		if (j-h)&l.mask >= (j-i)&l.mask { // slot i lies between the entry's home and j
			l.index[i], l.index[j] = l.index[j], 0
			i = j
		}
	}
}

// Claim reserves id for sending unless it is settled or owned by another flush.
func (l *Ledger) Claim(id string) Claim { return l.claimKey(keyOf(id)) }

// claimKey is Claim by key.
func (l *Ledger) claimKey(k ledgerKey) Claim {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.find(k); ok {
		return Settled
	}
	if _, ok := l.inflight[k]; ok {
		return Busy
	}
	l.inflight[k] = struct{}{}
	return Claimed
}

// Settle records id as done for good and ends the caller's claim on it.
func (l *Ledger) Settle(id string) { l.settleKey(keyOf(id)) }

// settled reports whether k is settled.
func (l *Ledger) settled(k ledgerKey) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.find(k)
	return ok
}

// settleKey is Settle by key.
func (l *Ledger) settleKey(k ledgerKey) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.inflight, k)
	if _, ok := l.find(k); ok {
		return
	}
	pos := l.count
	if l.count == len(l.ring) { // full: forget the oldest
		pos = l.next
		old, _ := l.find(l.ring[pos])
		l.remove(old)
		l.next = (l.next + 1) % len(l.ring)
	} else {
		l.count++
	}
	l.ring[pos] = k
	slot, _ := l.find(k)
	l.index[slot] = int32(pos + 1)
}

// Release ends the caller's claim on id without settling it: a later flush may send it again.
func (l *Ledger) Release(id string) { l.releaseKey(keyOf(id)) }

// releaseKey is Release by key.
func (l *Ledger) releaseKey(k ledgerKey) {
	l.mu.Lock()
	delete(l.inflight, k)
	l.mu.Unlock()
}

// Len returns how many settled IDs the ledger remembers.
func (l *Ledger) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.count
}

// InFlight returns how many IDs are claimed right now.
func (l *Ledger) InFlight() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.inflight)
}
