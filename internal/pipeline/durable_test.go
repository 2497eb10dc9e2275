package pipeline

import (
	"encoding/binary"
	"fmt"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/smtpout/smtpout/config"
	"github.com/smtpout/smtpout/internal/journal"
	"github.com/smtpout/smtpout/mailer"
)

// durableConfig is testConfig with a ledger in dir.
func durableConfig(dir string, to ...string) config.Config {
	cfg := testConfig()
	cfg.LedgerDir = dir
	cfg.LedgerMaxEntries = config.DefaultLedgerMaxEntries
	cfg.LedgerMaxAge = config.DefaultLedgerMaxAge
	if len(to) > 0 {
		cfg.To = nil
		for _, a := range to {
			cfg.To = append(cfg.To, mail.Address{Address: a})
		}
	}
	return cfg
}

// openDurableInstance is one run of an instance with its ledger on disk: NewInstance and the
// ledger file, as Open does them. ok false means the ledger did not open.
func openDurableInstance(t *testing.T, cfg config.Config, s *sender, log *recorder) (*Instance, bool) {
	t.Helper()
	in := NewInstance(newRenderer(t), s, log, Options{LedgerSize: cfg.LedgerMaxEntries})
	if !in.openDurable(cfg, nil) {
		return nil, false
	}
	t.Cleanup(func() { _ = in.Close() })
	return in, true
}

func mustOpenDurable(t *testing.T, cfg config.Config, s *sender, log *recorder) *Instance {
	t.Helper()
	in, ok := openDurableInstance(t, cfg, s, log)
	if !ok {
		t.Fatalf("ledger did not open:\n%s", log.all())
	}
	return in
}

// TestRestartSendsOnlyWhatWasNotSettled: the first run delivers half a chunk, rejects one
// record for good and must retry the rest; after a restart (a new instance on the same
// directory) the replayed chunk sends only the records that were not settled.
func TestRestartSendsOnlyWhatWasNotSettled(t *testing.T) {
	dir := t.TempDir()
	cfg := durableConfig(dir)
	data := records(10, nil)
	s1 := newSender()
	s1.decide = func(m mailer.Message, _ int) mailer.Result {
		switch n := len(s1.order); {
		case n <= 4:
			return mailer.Result{Outcome: mailer.Delivered}
		case n == 5:
			return mailer.Result{Outcome: mailer.Rejected}
		}
		return mailer.Result{Outcome: mailer.Retry}
	}
	in := mustOpenDurable(t, cfg, s1, &recorder{Max: LevelInfo})
	if code, st := in.Flush("app", data); code != FLBRetry || st.Delivered != 4 || st.Rejected != 1 {
		t.Fatalf("first run: code %d stats %+v, want RETRY with 4 delivered and 1 rejected", code, st)
	}
	first := append([]string(nil), s1.order...)
	if err := in.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := newSender()
	log := &recorder{Max: LevelInfo}
	in2 := mustOpenDurable(t, cfg, s2, log)
	if code, st := in2.Flush("app", data); code != FLBOK || st.Skipped != 5 || st.Delivered != 5 {
		t.Fatalf("after the restart: code %d stats %+v, want OK with 5 skipped and 5 delivered", code, st)
	}
	if diff := cmp.Diff(first[5:], s2.order); diff != "" {
		t.Errorf("sent after the restart (-want the 5 unsettled +got):\n%s", diff)
	}
	if info := strings.Join(log.at(LevelInfo), "\n"); !strings.Contains(info, "5 settled Message-ID(s)") {
		t.Errorf("no start-up line with the count loaded:\n%s", info)
	}
}

// TestSettlementIsWrittenWhenTheReplyArrives: each settlement is in the file before the next
// email is sent, not at the end of the flush, so a SIGKILL loses only the emails in flight.
func TestSettlementIsWrittenWhenTheReplyArrives(t *testing.T) {
	dir := t.TempDir()
	cfg := durableConfig(dir)
	var sizes []int64
	s := newSender()
	s.decide = func(mailer.Message, int) mailer.Result {
		matches, _ := filepath.Glob(filepath.Join(dir, "*"+journal.FileSuffix))
		if len(matches) == 1 {
			fi, _ := os.Stat(matches[0])
			sizes = append(sizes, fi.Size())
		}
		return mailer.Result{Outcome: mailer.Delivered}
	}
	in := mustOpenDurable(t, cfg, s, &recorder{Max: LevelInfo})
	in.Flush("app", records(4, nil))
	want := []int64{0, journal.RecordSize, 2 * journal.RecordSize, 3 * journal.RecordSize}
	if diff := cmp.Diff(want, sizes); diff != "" {
		t.Errorf("ledger file size as each email is sent (-want +got):\n%s", diff)
	}
}

// TestDeferredRecipientsSurviveARestart: an email refused for now for one recipient and
// delivered to the other goes, after a restart, to the refused one only.
func TestDeferredRecipientsSurviveARestart(t *testing.T) {
	dir := t.TempDir()
	cfg := durableConfig(dir, "soc@example.com", "busy@example.com")
	s1 := newSender()
	s1.decide = func(mailer.Message, int) mailer.Result {
		return mailer.Result{Outcome: mailer.Delivered, Rejected: []mailer.RecipientError{{Address: "busy@example.com", Code: 452}}}
	}
	in := mustOpenDurable(t, cfg, s1, &recorder{Max: LevelInfo})
	if code, _ := in.Flush("app", records(2, nil)); code != FLBRetry {
		t.Fatalf("first run: code %d, want RETRY for the deferred recipient", code)
	}
	in.Close()

	s2 := newSender()
	var to [][]string
	s2.decide = func(m mailer.Message, _ int) mailer.Result {
		to = append(to, m.To)
		return mailer.Result{Outcome: mailer.Delivered}
	}
	in2 := mustOpenDurable(t, cfg, s2, &recorder{Max: LevelInfo})
	if code, _ := in2.Flush("app", records(2, nil)); code != FLBOK {
		t.Fatalf("after the restart: code %d, want OK", code)
	}
	if diff := cmp.Diff([][]string{{"busy@example.com"}, {"busy@example.com"}}, to); diff != "" {
		t.Errorf("recipients after the restart (-want +got):\n%s", diff)
	}
	in2.Close()
	s3 := newSender()
	in3 := mustOpenDurable(t, cfg, s3, &recorder{Max: LevelInfo})
	if _, st := in3.Flush("app", records(2, nil)); st.Skipped != 2 || len(s3.order) != 0 {
		t.Errorf("third run: stats %+v, %d sent; want both skipped", st, len(s3.order))
	}
}

// TestChangedRecipientsSendAgain: a Message-ID settled for the old recipients does not hold
// back the email from a new recipient list.
func TestChangedRecipientsSendAgain(t *testing.T) {
	dir := t.TempDir()
	in := mustOpenDurable(t, durableConfig(dir, "soc@example.com"), newSender(), &recorder{Max: LevelInfo})
	in.Flush("app", records(3, nil))
	in.Close()

	s := newSender()
	in2 := mustOpenDurable(t, durableConfig(dir, "soc@example.com", "cto@example.com"), s, &recorder{Max: LevelInfo})
	if _, st := in2.Flush("app", records(3, nil)); st.Delivered != 3 || st.Skipped != 0 {
		t.Errorf("new recipients: stats %+v, want all 3 sent", st)
	}
}

// TestIdenticalInstancesKeepTheirOwnLedger: two instances with the same delivery
// configuration in one process each get a file, and keep it across a restart of both.
func TestIdenticalInstancesKeepTheirOwnLedger(t *testing.T) {
	dir := t.TempDir()
	cfg := durableConfig(dir)
	a := mustOpenDurable(t, cfg, newSender(), &recorder{Max: LevelInfo})
	b := mustOpenDurable(t, cfg, newSender(), &recorder{Max: LevelInfo})
	a.Flush("a", records(2, nil))
	b.Flush("b", records(3, nil))
	if a.disk.name == b.disk.name {
		t.Fatalf("both instances use ledger %s", a.disk.name)
	}
	a.Close()
	b.Close()
	// Restarted in the same order: each finds what it settled.
	sa, sb := newSender(), newSender()
	a2 := mustOpenDurable(t, cfg, sa, &recorder{Max: LevelInfo})
	b2 := mustOpenDurable(t, cfg, sb, &recorder{Max: LevelInfo})
	if _, st := a2.Flush("a", records(2, nil)); st.Skipped != 2 {
		t.Errorf("first instance after restart: %+v, want 2 skipped", st)
	}
	if _, st := b2.Flush("b", records(3, nil)); st.Skipped != 3 {
		t.Errorf("second instance after restart: %+v, want 3 skipped", st)
	}
}

// TestLedgerHeldByAnotherProcessStopsStartUp: a ledger locked by someone else (here the
// journal opened directly, as another process would) is a start-up error naming ledger_dir.
func TestLedgerHeldByAnotherProcessStopsStartUp(t *testing.T) {
	dir := t.TempDir()
	cfg := durableConfig(dir)
	j, _, err := journal.Open(dir, ledgerName(cfg), journal.Options{}, func(journal.Entry) {})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	log := &recorder{Max: LevelInfo}
	if _, ok := openDurableInstance(t, cfg, newSender(), log); ok {
		t.Fatal("the instance started on a locked ledger")
	}
	errs := log.at(LevelError)
	if len(errs) != 2 || !strings.Contains(errs[0], "ledger_dir: "+dir+" is in use by another Fluent Bit process") {
		t.Errorf("error lines = %q, want one naming ledger_dir and the lock, then not started", errs)
	}
}

// TestDamagedLedgerWarnsAndStarts: a torn last record is cut with a [ warn] and the good
// records before it still hold back their emails.
func TestDamagedLedgerWarnsAndStarts(t *testing.T) {
	dir := t.TempDir()
	cfg := durableConfig(dir)
	in := mustOpenDurable(t, cfg, newSender(), &recorder{Max: LevelInfo})
	in.Flush("app", records(3, nil))
	in.Close()
	path := journal.Path(dir, ledgerName(cfg))
	if err := os.Truncate(path, 2*journal.RecordSize+30); err != nil {
		t.Fatal(err)
	}
	s := newSender()
	log := &recorder{Max: LevelInfo}
	in2 := mustOpenDurable(t, cfg, s, log)
	if w := log.at(LevelWarn); len(w) != 1 || !strings.Contains(w[0], "removed a damaged tail of 30 bytes") {
		t.Errorf("warn lines = %q, want one about the damaged tail", w)
	}
	if _, st := in2.Flush("app", records(3, nil)); st.Skipped != 2 || st.Delivered != 1 {
		t.Errorf("after recovery: %+v, want 2 skipped and the 1 whose record was torn sent again", st)
	}
}

// TestFullDiskFallsBackToAtLeastOnce: when the ledger cannot be written, delivery goes on,
// one [error] line says so, the error is counted, and in this process nothing is sent twice.
func TestFullDiskFallsBackToAtLeastOnce(t *testing.T) {
	dir := t.TempDir()
	// 8 KiB: one page for the lock file (it records ledger_max_age), 4 KiB for the ledger.
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=8k"); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v); internal/journal tests the full disk with an injected writer", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, 0) })
	cfg := durableConfig(dir)
	s := newSender()
	log := &recorder{Max: LevelInfo}
	in := mustOpenDurable(t, cfg, s, log)
	data := records(200, nil) // 200 records of 48 bytes: more than 4 KiB
	code, st := in.Flush("app", data)
	if code != FLBOK || st.Delivered != 200 {
		t.Fatalf("flush on a full disk: code %d stats %+v, want OK with all 200 delivered", code, st)
	}
	errs := log.at(LevelError)
	if len(errs) != 1 || !strings.Contains(errs[0], "no space left on device") || !strings.Contains(errs[0], "at-least-once") {
		t.Errorf("error lines = %q, want one about the full disk", errs)
	}
	if in.LedgerErrors() == 0 {
		t.Error("LedgerErrors() = 0 after failed writes")
	}
	if _, st := in.Flush("app", data); st.Skipped != 200 {
		t.Errorf("second flush in the same process: %+v, want all 200 skipped", st)
	}
	in.Close()
	// After a restart the records whose settlement fit on the disk are still skipped.
	s2 := newSender()
	in2 := mustOpenDurable(t, cfg, s2, &recorder{Max: LevelInfo})
	_, st = in2.Flush("app", data)
	if st.Skipped == 0 || st.Skipped+st.Delivered != 200 || st.Skipped != int(4096/journal.RecordSize) {
		t.Errorf("after restart: %+v, want the %d that fit skipped and the rest sent", st, 4096/journal.RecordSize)
	}
}

// TestFlushTimeoutHandsBackTheRest: a flush stuck on the server when the stop signal comes
// ends flush_timeout after it (plus the slack for a message on the wire) with RETRY and its
// claims released.
func TestFlushTimeoutHandsBackTheRest(t *testing.T) {
	s := newSender()
	s.block = make(chan struct{}) // never answers
	s.entered = make(chan struct{}, 1)
	var mu sync.Mutex
	var signalled time.Time
	stopping := make(chan struct{})
	in := newTestInstance(t, s, &recorder{Max: LevelInfo}, Options{
		FlushTimeout: 100 * time.Millisecond,
		StopSignalled: func() time.Time {
			mu.Lock()
			defer mu.Unlock()
			return signalled
		},
		Stopping: stopping,
	})
	type flushed struct {
		code int
		st   Stats
		at   time.Time
	}
	done := make(chan flushed, 1)
	go func() {
		code, st := in.Flush("app", records(5, nil))
		done <- flushed{code, st, time.Now()}
	}()
	<-s.entered // the flush is sending
	select {
	case f := <-done:
		t.Fatalf("flush returned before the stop signal: %+v", f)
	case <-time.After(300 * time.Millisecond): // longer than flush_timeout: no budget yet
	}
	mu.Lock()
	signalled = time.Now()
	mu.Unlock()
	close(stopping)
	f := <-done
	if f.code != FLBRetry || f.st.Retried != 5 {
		t.Errorf("code %d stats %+v, want RETRY with 5 retried", f.code, f.st)
	}
	if took, limit := f.at.Sub(signalled), 100*time.Millisecond+config.FlushFinishSlack+500*time.Millisecond; took > limit {
		t.Errorf("flush ended %v after the signal, want at most %v", took, limit)
	}
	if n := in.ledger.InFlight(); n != 0 {
		t.Errorf("%d claims left after the timeout", n)
	}
}

// TestFlushNotCutShortWithoutStopSignal: until the process is told to stop, a flush that
// takes longer than flush_timeout runs to the end (Fluent Bit's Retry_Limit counts every
// RETRY: cutting it would let Fluent Bit drop the chunk).
func TestFlushNotCutShortWithoutStopSignal(t *testing.T) {
	s := newSender()
	s.block = make(chan struct{})
	in := newTestInstance(t, s, &recorder{Max: LevelInfo}, Options{
		FlushTimeout:  50 * time.Millisecond,
		StopSignalled: func() time.Time { return time.Time{} },
		Stopping:      make(chan struct{}),
	})
	time.AfterFunc(300*time.Millisecond, func() { close(s.block) })
	if code, st := in.Flush("app", records(5, nil)); code != FLBOK || st.Delivered != 5 {
		t.Errorf("code %d stats %+v, want OK with all 5 delivered after 300 ms", code, st)
	}
}

// BenchmarkFlushLedger is the flush path (decode, render, ledger, a fake sender that accepts
// everything) without and with ledger_dir, 100 distinct records per flush: the difference is
// what the ledger on disk costs per email (one write each, one fdatasync per flush). It
// reports CPU µs per email (user + system, whole process) next to the wall time.
func BenchmarkFlushLedger(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "off"
		if on {
			name = "on"
		}
		b.Run(name, func(b *testing.B) {
			s := newSender()
			in := NewInstance(newRenderer(b), s, &recorder{Max: LevelInfo}, Options{})
			if on {
				cfg := durableConfig(b.TempDir())
				if !in.openDurable(cfg, nil) {
					b.Fatal("ledger did not open")
				}
			}
			defer in.Close()
			flushChunks(b, in)
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/1e3/float64(100*b.N), "µs/email")
		})
	}
}

// flushChunks flushes b.N chunks of 100 distinct records into in, each delivered whole, and
// reports the CPU µs per email (user + system, whole process).
func flushChunks(b *testing.B, in *Instance) {
	chunks := benchChunks(b.N)
	cpu := startCPU()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if code, st := in.Flush("bench", chunks[i]); code != FLBOK || st.Delivered != 100 {
			b.Fatalf("Flush() = %d, %+v", code, st)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(cpu())/1e3/float64(100*b.N), "cpu-µs/email")
}

// TestFlushAfterStopSignalUsesWhatIsLeftOfTheBudget: once the process got SIGTERM, a flush
// that starts flush_timeout after the signal sends nothing and hands the chunk back at once,
// and one that starts within it still sends.
func TestFlushAfterStopSignalUsesWhatIsLeftOfTheBudget(t *testing.T) {
	var signalled time.Time
	s := newSender()
	in := newTestInstance(t, s, &recorder{Max: LevelInfo}, Options{
		FlushTimeout:  time.Second,
		StopSignalled: func() time.Time { return signalled },
	})
	signalled = time.Now().Add(-200 * time.Millisecond) // within the budget: still sending
	if code, st := in.Flush("app", records(3, nil)); code != FLBOK || st.Delivered != 3 {
		t.Errorf("flush 200 ms after the signal: code %d stats %+v, want all 3 delivered", code, st)
	}
	signalled = time.Now().Add(-2 * time.Second) // budget spent
	start := time.Now()
	code, st := in.Flush("app", records(6, nil))
	if code != FLBRetry || st.Retried != 3 || st.Delivered != 0 {
		t.Errorf("flush 2 s after the signal: code %d stats %+v, want RETRY with the 3 new records retried", code, st)
	}
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Errorf("flush after the budget was spent took %v, want it handed back at once", took)
	}
	if n := len(s.order); n != 3 {
		t.Errorf("%d emails handed to the mailer, want only the first flush's 3", n)
	}
}

// TestUnusedLedgersAreRemoved: the ledger of a configuration that has not run for longer than
// ledger_max_age is deleted at the first flush after start-up; the current one stays.
func TestUnusedLedgersAreRemoved(t *testing.T) {
	dir := t.TempDir()
	oldCfg := durableConfig(dir, "old@example.com")
	in := mustOpenDurable(t, oldCfg, newSender(), &recorder{Max: LevelInfo})
	in.Flush("app", records(1, nil))
	in.Close()
	oldPath := journal.Path(dir, ledgerName(oldCfg))
	past := time.Now().Add(-25 * time.Hour)
	if err := os.Chtimes(oldPath, past, past); err != nil {
		t.Fatal(err)
	}
	log := &recorder{Max: LevelInfo}
	mustOpenDurable(t, durableConfig(dir, "new@example.com"), newSender(), log).Flush("app", records(1, nil))
	if _, err := os.Stat(oldPath); !os.IsNotExist(err) {
		t.Errorf("the unused ledger %s is still there: %v", oldPath, err)
	}
	if info := strings.Join(log.at(LevelInfo), "\n"); !strings.Contains(info, "removed 1 ledger file(s) unused for longer than their ledger_max_age: "+oldPath+" (ledger_max_age 24h0m0s)") {
		t.Errorf("no info line about the removed ledger:\n%s", info)
	}
}

// TestSharedLedgerDirKeepsEveryInstancesLedger: two outputs share ledger_dir with
// ledger_max_age 1h and 48h; after two hours of downtime the 1h output starts and flushes
// first. Neither ledger file is removed, and the 48h output skips everything it had settled.
func TestSharedLedgerDirKeepsEveryInstancesLedger(t *testing.T) {
	for _, order := range []string{"short flushes before long opens", "both open, then flush"} {
		t.Run(order, func(t *testing.T) {
			dir := t.TempDir()
			short := durableConfig(dir, "short@example.com")
			short.LedgerMaxAge = time.Hour
			long := durableConfig(dir, "long@example.com")
			long.LedgerMaxAge = 48 * time.Hour
			for _, cfg := range []config.Config{short, long} {
				in := mustOpenDurable(t, cfg, newSender(), &recorder{Max: LevelInfo})
				in.Flush("app", records(5, nil))
				in.Close()
				past := time.Now().Add(-2 * time.Hour)
				if err := os.Chtimes(journal.Path(dir, ledgerName(cfg)), past, past); err != nil {
					t.Fatal(err)
				}
			}
			logS, logL := &recorder{Max: LevelInfo}, &recorder{Max: LevelInfo}
			sL := newSender()
			var inL *Instance
			inS := mustOpenDurable(t, short, newSender(), logS)
			if order == "both open, then flush" {
				inL = mustOpenDurable(t, long, sL, logL)
			}
			inS.Flush("app", records(1, nil))
			if inL == nil {
				inL = mustOpenDurable(t, long, sL, logL)
			}
			if _, st := inL.Flush("app", records(5, nil)); st.Skipped != 5 || len(sL.order) != 0 {
				t.Errorf("48h output after the restart: %+v, %d sent; want all 5 skipped", st, len(sL.order))
			}
			for _, cfg := range []config.Config{short, long} {
				if _, err := os.Stat(journal.Path(dir, ledgerName(cfg))); err != nil {
					t.Errorf("ledger of the %v output: %v", cfg.LedgerMaxAge, err)
				}
			}
			if info := logS.all() + logL.all(); strings.Contains(info, "removed") {
				t.Errorf("a ledger file was removed:\n%s", info)
			}
		})
	}
}

// TestFailedCompactionAtStartWarnsAndStarts: the compaction at start-up fails (a leftover
// directory where its new file goes): the instance starts with one [ warn] line and its
// records still hold back their emails.
func TestFailedCompactionAtStartWarnsAndStarts(t *testing.T) {
	dir := t.TempDir()
	cfg := durableConfig(dir)
	name := ledgerName(cfg)
	j, _, err := journal.Open(dir, name, journal.Options{}, func(journal.Entry) {})
	if err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * cfg.LedgerMaxAge).UnixNano()
	for i := range 20 {
		if err := j.Append(journal.Entry{Kind: journal.Settled, Time: old, Key: journal.Key{byte(i), 1}}); err != nil {
			t.Fatal(err)
		}
	}
	j.Close()
	if err := os.MkdirAll(filepath.Join(journal.Path(dir, name)+".compact", "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	for run := 1; run <= 2; run++ {
		log := &recorder{Max: LevelInfo}
		in, ok := openDurableInstance(t, cfg, newSender(), log)
		if !ok {
			t.Fatalf("run %d: not started after a failed compaction:\n%s", run, log.all())
		}
		if w := log.at(LevelWarn); len(w) != 1 || !strings.Contains(w[0], "compact") || !strings.Contains(w[0], "next attempt in 1m0s") {
			t.Errorf("run %d: warn lines = %q, want one about the failed compaction and its back-off", run, w)
		}
		_, st := in.Flush("app", records(3, nil))
		if want := map[int]int{1: 0, 2: 3}[run]; st.Skipped != want {
			t.Errorf("run %d: %+v, want %d skipped", run, st, want)
		}
		in.Close()
	}
}

// TestDeferredRecipientsBeyondTheLimitAreKept: more emails with deferred recipients on disk
// than the in-memory limit: every one is loaded (none goes to everybody again) and a
// [ warn] line gives the count.
func TestDeferredRecipientsBeyondTheLimitAreKept(t *testing.T) {
	dir := t.TempDir()
	cfg := durableConfig(dir, "soc@example.com", "busy@example.com")
	j, _, err := journal.Open(dir, ledgerName(cfg), journal.Options{}, func(journal.Entry) {})
	if err != nil {
		t.Fatal(err)
	}
	n := DefaultDeferredLimit + 5
	at := time.Now().UnixNano()
	for i := range n {
		e := journal.Entry{Kind: journal.Deferred, Time: at, Mask: 0b10}
		binary.LittleEndian.PutUint64(e.Key[:], uint64(i))
		if err := j.Append(e); err != nil {
			t.Fatal(err)
		}
	}
	j.Close()
	log := &recorder{Max: LevelInfo}
	in := mustOpenDurable(t, cfg, newSender(), log)
	if got := in.owed.len(); got != n {
		t.Errorf("%d emails with deferred recipients in memory, want all %d", got, n)
	}
	want := fmt.Sprintf("%d emails with deferred recipients loaded, more than the %d kept for new deferrals: all %d are kept", n, DefaultDeferredLimit, n)
	if w := log.at(LevelWarn); len(w) != 1 || !strings.Contains(w[0], want) {
		t.Errorf("warn lines = %q, want one containing %q", w, want)
	}
}
