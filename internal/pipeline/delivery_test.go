package pipeline

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/smtpout/smtpout/mailer"
)

// TestResultIsResolvedWhenTheReplyArrives: each email is settled, deferred or released in
// memory by the mailer's Done callback, as soon as its reply is known, not after the whole
// batch: while the third email is being sent, the first two are already decided.
func TestResultIsResolvedWhenTheReplyArrives(t *testing.T) {
	type seen struct{ Settled, Owed, InFlight int }
	var got []seen
	var in *Instance
	s := newSender()
	s.decide = func(m mailer.Message, _ int) mailer.Result {
		got = append(got, seen{in.ledger.Len(), in.owed.len(), in.ledger.InFlight()})
		switch len(got) {
		case 1:
			return mailer.Result{Outcome: mailer.Delivered}
		case 2:
			return mailer.Result{Outcome: mailer.Delivered, Rejected: []mailer.RecipientError{{Address: m.To[0], Code: 452}}}
		case 3:
			return mailer.Result{Outcome: mailer.Rejected}
		}
		return mailer.Result{Outcome: mailer.Retry}
	}
	in = NewInstance(newRenderer(t), s, &recorder{Max: LevelInfo}, Options{})
	defer in.Close()
	in.Flush("app", records(4, nil))
	want := []seen{
		{Settled: 0, Owed: 0, InFlight: 4},
		{Settled: 1, Owed: 0, InFlight: 3}, // the first settled
		{Settled: 1, Owed: 1, InFlight: 2}, // the second deferred, its claim released
		{Settled: 2, Owed: 1, InFlight: 1}, // the third rejected for good
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ledger as each email is sent (-want +got):\n%s", diff)
	}
	if n := in.ledger.InFlight(); n != 0 {
		t.Errorf("%d claims left after the flush", n)
	}
}
