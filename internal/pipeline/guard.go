package pipeline

import (
	"fmt"
	"sync"
	"time"
)

// stormWindow is the storm guard's window: max_emails_per_minute counts the emails of the
// last minute, in one-second slots.
const (
	stormWindow = time.Minute
	stormSlots  = int(stormWindow / time.Second)
)

// stormKey is the key under which the storm guard's warning is rate-limited (repeats): the
// line itself changes with the counts, the limit must not.
const stormKey = "\x00storm guard"

// guard is the storm guard of one instance (max_emails_per_minute): a sliding one-minute
// window counted in one-second slots. Flushes take what the budget allows before sending
// and give back what the server did not take (emails to retry), so the budget counts the
// emails the server accepted or rejected. It is safe for concurrent use.
type guard struct {
	max  int
	now  func() time.Time
	base time.Time // seconds are counted from here (monotonic when now is time.Now)

	mu    sync.Mutex
	count [stormSlots]int
	sec   [stormSlots]int64 // the second each slot currently counts
}

// newGuard returns a guard allowing max emails per minute, or nil when max <= 0 (off).
func newGuard(max int, now func() time.Time) *guard {
	if max <= 0 {
		return nil
	}
	if now == nil {
		now = time.Now
	}
	g := &guard{max: max, now: now, base: now()}
	for i := range g.sec {
		g.sec[i] = -1 << 62
	}
	return g
}

// second is the current second, counted from base.
func (g *guard) second() int64 {
	d := g.now().Sub(g.base)
	if d < 0 {
		// The clock went back: count from the earliest second, which keeps the budget.
		return 0
	}
	return int64(d / time.Second)
}

// usedLocked counts the emails of the last minute, ending at second s. Slots up to a minute
// ahead of s (a clock set back) still count, so a clock change never frees the budget.
func (g *guard) usedLocked(s int64) int {
	n := 0
	for i := range g.count {
		if age := s - g.sec[i]; age > -int64(stormSlots) && age < int64(stormSlots) {
			n += g.count[i]
		}
	}
	return n
}

// take grants up to n emails now. It returns how many were granted, how many emails the last
// minute held before this call, and the second the grant is booked under (for refund).
func (g *guard) take(n int) (granted, used int, at int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	at = g.second()
	used = g.usedLocked(at)
	granted = min(n, max(g.max-used, 0))
	if granted > 0 {
		i := int(at % int64(stormSlots))
		if g.sec[i] != at {
			g.sec[i], g.count[i] = at, 0
		}
		g.count[i] += granted
	}
	return granted, used, at
}

// refund gives back n emails granted at second at that were not sent after all. Once that
// second has left the window there is nothing to give back.
func (g *guard) refund(at int64, n int) {
	if n <= 0 {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	i := int(at % int64(stormSlots))
	if g.sec[i] == at {
		g.count[i] = max(g.count[i]-n, 0)
	}
}

// used returns how many emails the last minute holds.
func (g *guard) used() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.usedLocked(g.second())
}

// guardNotice is the start-up line of an instance with the storm guard on: held records wait
// in Fluent Bit's retry queue, which gives up after Retry_Limit tries (1 by default).
func guardNotice(max int) string {
	return fmt.Sprintf("storm guard on: at most %d emails per minute; records over the budget are "+
		"handed back to Fluent Bit (retry): set Retry_Limit no_limits in this [OUTPUT] so none is "+
		"dropped, and storage.type filesystem on the input to keep them across restarts", max)
}

// hold applies the storm guard to a batch about to be sent: it returns the emails the budget
// allows now (a prefix of batch, in chunk order) and the second they are booked under. The
// rest is released from the ledger, counted in st.Held and announced by a rate-limited
// [ warn] line; Flush then returns FLBRetry so Fluent Bit keeps those records in its buffer
// and hands the chunk back later (the emails sent now are skipped then).
func (in *Instance) hold(tag string, batch []pending, st *Stats) (send []pending, at int64) {
	granted, used, at := in.guard.take(len(batch))
	if granted == len(batch) {
		return batch, at
	}
	held := batch[granted:]
	for _, p := range held {
		in.ledger.releaseKey(p.key)
	}
	st.Held += len(held)
	if in.log.Enabled(LevelWarn) {
		if ok, n := in.quiet.admit(stormKey); ok {
			msg := fmt.Sprintf(
				"storm guard active: %d emails in the last minute (max_emails_per_minute=%d); holding the rest in Fluent Bit's buffer: %d record(s) of tag %q held, %d sent now",
				used+granted, in.guard.max, len(held), tag, granted)
			if n > 0 {
				msg += fmt.Sprintf(" (the guard held chunks %d more time(s) since last logged)", n)
			}
			in.log.Log(LevelWarn, msg)
		}
	}
	return batch[:granted], at
}
