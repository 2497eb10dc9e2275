package pipeline

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/smtpout/smtpout/config"
	"github.com/smtpout/smtpout/internal/spool"
	"github.com/smtpout/smtpout/mailer"
)

// crash ends an instance as a SIGKILL would: its loop stops and its files are closed
// without anything more being sent or written. Close does nothing afterwards.
func crash(in *Instance) {
	in.mu.Lock()
	in.closed = true
	in.mu.Unlock()
	in.cancel()
	close(in.dig.quit)
	<-in.dig.done
	_ = in.dig.store.Close()
	_, _ = in.disk.close()
}

// openDigestDurable is an instance with digests and its ledger and spool in dir.
func openDigestDurable(t *testing.T, dir string, clk *fakeClock, s *sender, r *renderer, log *recorder) *Instance {
	t.Helper()
	cfg := durableConfig(dir)
	opt := digestOptions(t, clk, testWindow, 1000, "$host")
	cfg.Digests = opt.Digests
	opt.LedgerSize = cfg.LedgerMaxEntries
	in := NewInstance(r, s, log, opt)
	if !in.openDurable(cfg, clk.now) {
		t.Fatalf("ledger did not open:\n%s", log.all())
	}
	return in
}

// TestDigestRestartWithLedgerDir: records taken into custody are in ledger_dir's spool; after
// a crash mid-window the next start sends every one of them in its group's thread, on the
// loop's first turn, and the replayed chunk sends nothing again.
func TestDigestRestartWithLedgerDir(t *testing.T) {
	dir := t.TempDir()
	clk := testClock()
	ds1 := &digestSetup{clk: clk, s: newSender(), r: newRenderer(t), log: &recorder{Max: LevelInfo}}
	ds1.in = openDigestDurable(t, dir, clk, ds1.s, ds1.r, ds1.log)
	data := hostRecords(0, "a", "b", "a", "b", "a")
	if code, st := ds1.in.Flush("app", data); code != FLBOK || st.Delivered != 2 || st.Digested != 3 {
		t.Fatalf("flush: code %d stats %+v, want 2 delivered and 3 digested", code, st)
	}
	singles := ds1.mails()
	var want []string
	ds1.in.dig.mu.Lock()
	for _, g := range ds1.in.dig.groups {
		for _, r := range g.waiting {
			want = append(want, r.MessageID)
		}
	}
	ds1.in.dig.mu.Unlock()
	crash(ds1.in)

	ds2 := &digestSetup{clk: clk, s: newSender(), r: newRenderer(t), log: &recorder{Max: LevelInfo}}
	ds2.in = openDigestDurable(t, dir, clk, ds2.s, ds2.r, ds2.log)
	t.Cleanup(func() { _ = ds2.in.Close() })
	if info := strings.Join(ds2.log.at(LevelInfo), "\n"); !strings.Contains(info, "3 record(s) waiting for their digests loaded") {
		t.Errorf("no start-up line with the waiting records:\n%s", info)
	}
	waitFor(t, func() bool { return len(ds2.mails()) == 2 }) // no window: the loop's first turn
	rootOf := map[string]string{}
	for _, s := range singles {
		rootOf[hostOf(t, s.data)] = s.id
	}
	var got []string
	for _, m := range ds2.mails() {
		if !m.digest {
			t.Fatalf("after the restart %s is not a digest", m.id)
		}
		if host := digestHost(t, ds2, m.id); m.root != rootOf[host] {
			t.Errorf("digest of %s threads under %q, want %q (the root kept in the spool)", host, m.root, rootOf[host])
		}
		got = append(got, m.members...)
	}
	slices.Sort(got)
	slices.Sort(want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("records delivered after the restart (-want +got):\n%s", diff)
	}
	if code, st := ds2.in.Flush("app", data); code != FLBOK || st.Skipped != 5 {
		t.Errorf("replayed chunk: code %d stats %+v, want all 5 skipped", code, st)
	}
	if err := ds2.in.Close(); err != nil {
		t.Fatal(err)
	}
	sp, st, err := spool.Open(dir, ds2.in.disk.name, spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	if len(st.Waiting) != 0 {
		t.Errorf("%d records still waiting in the spool after their digests were delivered", len(st.Waiting))
	}
}

// TestStaleDigestSpoolIsKeptAndWarned: retention removes an unused ledger, but never a
// digest spool that holds waiting records: it warns about it instead.
func TestStaleDigestSpoolIsKeptAndWarned(t *testing.T) {
	dir := t.TempDir()
	sp, _, err := spool.Open(dir, "smtp-0123456789abcdef", spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sp.Add(spool.Record{Group: "", MessageID: "x@example.com", Tag: "app", Time: t0, Payload: []byte(`{"a":1}`)}); err != nil {
		t.Fatal(err)
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	log := &recorder{Max: LevelInfo}
	in := newTestInstance(t, newSender(), log, Options{})
	retainLater(dir, time.Nanosecond)
	in.removeStale(time.Now().Add(time.Hour))
	if _, err := os.Stat(spool.Path(dir, "smtp-0123456789abcdef")); err != nil {
		t.Errorf("the spool with a waiting record is gone: %v", err)
	}
	if w := strings.Join(log.at(LevelWarn), "\n"); !strings.Contains(w, "holds 1 record(s) waiting for a digest of an output that no longer runs") {
		t.Errorf("no warning about the spool:\n%s", log.all())
	}
}

// TestDigestCloseWithLedgerDirKeepsTheRest: what Close cannot deliver stays in the spool
// (one [ warn] line with the count, no dead letter, no [error]) and the next start sends it.
func TestDigestCloseWithLedgerDirKeepsTheRest(t *testing.T) {
	dir := t.TempDir()
	clk := testClock()
	ds1 := &digestSetup{clk: clk, s: newSender(), r: newRenderer(t), log: &recorder{Max: LevelInfo}}
	ds1.in = openDigestDurable(t, dir, clk, ds1.s, ds1.r, ds1.log)
	ds1.in.flushTimeout = 200 * time.Millisecond
	ds1.answerDigests(func(mailer.Message, int) mailer.Result {
		return mailer.Result{Outcome: mailer.Retry, Err: fmt.Errorf("dial tcp: connection refused")}
	})
	ds1.in.Flush("app", hostRecords(0, "a", "a", "a", "b"))
	if err := ds1.in.Close(); err != nil {
		t.Fatal(err)
	}
	if w := strings.Join(ds1.log.at(LevelWarn), "\n"); !strings.Contains(w, "digest: 2 record(s) could not be sent before the stop; they wait in ") {
		t.Errorf("no [ warn] line with the count:\n%s", ds1.log.all())
	}
	if e := ds1.log.at(LevelError); len(e) != 0 {
		t.Errorf("[error] lines: %q", e)
	}
	ds2 := &digestSetup{clk: clk, s: newSender(), r: newRenderer(t), log: &recorder{Max: LevelInfo}}
	ds2.in = openDigestDurable(t, dir, clk, ds2.s, ds2.r, ds2.log)
	t.Cleanup(func() { _ = ds2.in.Close() })
	waitFor(t, func() bool { return len(ds2.mails()) == 1 })
	if diff := cmp.Diff([]string{"digest(2)"}, kinds(ds2.mails())); diff != "" {
		t.Errorf("emails after the restart (-want +got):\n%s", diff)
	}
}

// TestDigestSpoolLockedStopsStartUp: a digest spool held by another process stops start-up
// like a held ledger, and the failed Open leaves no goroutine behind.
func TestDigestSpoolLockedStopsStartUp(t *testing.T) {
	dir := t.TempDir()
	cfg := durableConfig(dir)
	held, _, err := spool.Open(dir, ledgerName(cfg), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	keys := config.MapGetter{"dest_host": "127.0.0.1:465", "dest_email": "soc@example.com", "from_email": "fb@example.com",
		"secret_key": "a-long-enough-test-secret-key", "digest_window": "10s", "ledger_dir": dir}
	before := runtime.NumGoroutine()
	log := &recorder{Max: LevelInfo}
	if in := Open(keys, log, Options{}); in != nil {
		_ = in.Close()
		t.Fatalf("Open succeeded with the spool held:\n%s", log.all())
	}
	if errs := strings.Join(log.at(LevelError), "\n"); !strings.Contains(errs, "is in use by another Fluent Bit process") || !strings.Contains(errs, "not started: the digest spool in ledger_dir cannot be used") {
		t.Errorf("[error] lines:\n%s", errs)
	}
	waitFor(t, func() bool { return runtime.NumGoroutine() <= before })
}
