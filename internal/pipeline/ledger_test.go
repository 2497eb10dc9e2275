package pipeline

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestLedgerClaims(t *testing.T) {
	l := NewLedger(10)
	var got []Claim
	got = append(got, l.Claim("a@x")) // claimed
	got = append(got, l.Claim("a@x")) // busy: claimed by "another flush"
	l.Release("a@x")
	got = append(got, l.Claim("a@x")) // claimed again after release
	l.Settle("a@x")
	got = append(got, l.Claim("a@x")) // settled
	got = append(got, l.Claim("b@x")) // claimed
	want := []Claim{Claimed, Busy, Claimed, Settled, Claimed}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("claims (-want +got):\n%s", diff)
	}
	if l.Len() != 1 || l.InFlight() != 1 {
		t.Errorf("Len() = %d, InFlight() = %d; want 1, 1", l.Len(), l.InFlight())
	}
}

func TestLedgerForgetsOldestFirst(t *testing.T) {
	const size = 3
	l := NewLedger(size)
	for i := range 5 {
		id := fmt.Sprintf("%d@x", i)
		if c := l.Claim(id); c != Claimed {
			t.Fatalf("Claim(%s) = %v", id, c)
		}
		l.Settle(id)
	}
	if l.Len() != size {
		t.Errorf("Len() = %d, want %d", l.Len(), size)
	}
	var got []Claim
	for i := range 5 {
		c := l.Claim(fmt.Sprintf("%d@x", i))
		got = append(got, c)
	}
	// 0 and 1 were forgotten (claimable again); 2, 3, 4 are remembered.
	want := []Claim{Claimed, Claimed, Settled, Settled, Settled}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("claims after eviction (-want +got):\n%s", diff)
	}
}

func TestLedgerConcurrentClaimsAreExclusive(t *testing.T) {
	l := NewLedger(1000)
	const goroutines, ids = 8, 200
	var mu sync.Mutex
	owners := make(map[string]int)
	var wg sync.WaitGroup
	for range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range ids {
				id := fmt.Sprintf("%d@x", i)
				if l.Claim(id) == Claimed {
					mu.Lock()
					owners[id]++
					mu.Unlock()
					l.Settle(id)
				}
			}
		}()
	}
	wg.Wait()
	for i := range ids {
		if n := owners[fmt.Sprintf("%d@x", i)]; n != 1 {
			t.Errorf("id %d claimed %d times, want exactly 1", i, n)
		}
	}
}

func TestRepeats(t *testing.T) {
	clock := &fakeClock{t: t0}
	r := newRepeats(time.Minute, clock.now)
	type admit struct {
		OK         bool
		Suppressed int
	}
	var got []admit
	try := func(s string) {
		ok, n := r.admit(s)
		got = append(got, admit{ok, n})
	}
	try("a")                        // first time: written
	try("a")                        // held back
	try("b")                        // another line: written
	clock.advance(30 * time.Second) //
	try("a")                        // still within the window: held back
	clock.advance(31 * time.Second) //
	try("a")                        // window over: written, 2 held back
	try("a")                        // held back again
	want := []admit{{true, 0}, {false, 0}, {true, 0}, {false, 0}, {true, 2}, {false, 0}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("admits (-want +got):\n%s", diff)
	}
}

func TestRepeatsBounded(t *testing.T) {
	r := newRepeats(time.Hour, (&fakeClock{t: t0}).now)
	for i := range maxRepeatKeys * 3 {
		r.admit(fmt.Sprint(i))
	}
	if n := len(r.seen); n > maxRepeatKeys {
		t.Errorf("repeats remembers %d lines, bound is %d", n, maxRepeatKeys)
	}
}

func BenchmarkLedgerClaimSettle(b *testing.B) {
	l := NewLedger(DefaultLedgerSize)
	ids := make([]string, 1<<18) // more than the ledger holds: eviction is measured too
	for i := range ids {
		ids[i] = fmt.Sprintf("%032x@example.com", i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		id := ids[i%len(ids)]
		if l.Claim(id) == Claimed {
			l.Settle(id)
		}
	}
}

// TestLedgerMatchesModel drives a small ledger (so the index collides and wraps often) with a
// long random sequence and compares every answer with a plain map-and-queue model.
func TestLedgerMatchesModel(t *testing.T) {
	for _, capacity := range []int{1, 2, 7, 64} {
		l := NewLedger(capacity)
		settled := map[string]bool{}
		var order []string
		inflight := map[string]bool{}
		rng := rand.New(rand.NewPCG(1, uint64(capacity)))
		for step := 0; step < 20000; step++ {
			id := fmt.Sprintf("id-%d@example.com", rng.IntN(3*capacity+3))
			want := Claimed
			switch {
			case settled[id]:
				want = Settled
			case inflight[id]:
				want = Busy
			}
			if got := l.Claim(id); got != want {
				t.Fatalf("capacity %d step %d: Claim(%s) = %v, want %v", capacity, step, id, got, want)
			}
			if want != Claimed {
				continue
			}
			inflight[id] = true
			if rng.IntN(4) == 0 {
				l.Release(id)
				delete(inflight, id)
				continue
			}
			l.Settle(id)
			delete(inflight, id)
			settled[id] = true
			order = append(order, id)
			if len(order) > capacity {
				delete(settled, order[0])
				order = order[1:]
			}
			if l.Len() != len(order) {
				t.Fatalf("capacity %d step %d: Len() = %d, want %d", capacity, step, l.Len(), len(order))
			}
		}
	}
}
