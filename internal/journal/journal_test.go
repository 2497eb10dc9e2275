package journal

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func key(i int) Key {
	var k Key
	copy(k[:], fmt.Sprintf("key-%011d", i))
	return k
}

func settled(i int, at time.Time) Entry {
	return Entry{Kind: Settled, Time: at.UnixNano(), Key: key(i)}
}

// openAll opens dir/name and returns the journal and every entry it loaded.
func openAll(t *testing.T, dir, name string, opt Options) (*Journal, []Entry, Report) {
	t.Helper()
	var got []Entry
	j, rep, err := Open(dir, name, opt, func(e Entry) { got = append(got, e) })
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { j.Close() })
	return j, got, rep
}

func appendAll(t *testing.T, j *Journal, es ...Entry) {
	t.Helper()
	for _, e := range es {
		if err := j.Append(e); err != nil {
			t.Fatalf("Append: %v", err)
		}
	}
}

var now = time.Date(2026, 12, 2, 3, 0, 0, 0, time.UTC)

func clock() time.Time { return now }

func TestReopenLoadsWhatWasAppended(t *testing.T) {
	dir := t.TempDir()
	want := []Entry{
		settled(1, now),
		{Kind: Deferred, Time: now.UnixNano(), Key: key(2), Mask: 0b101},
		settled(3, now),
		settled(2, now),
	}
	j, got, _ := openAll(t, dir, "a", Options{Now: clock})
	if len(got) != 0 {
		t.Fatalf("a new journal loaded %d entries", len(got))
	}
	appendAll(t, j, want...)
	if err := j.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	_, got, rep := openAll(t, dir, "a", Options{Now: clock})
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("entries after reopening (-want +got):\n%s", diff)
	}
	if rep.Size != int64(len(want)*RecordSize) || rep.Cut != 0 {
		t.Errorf("report %+v, want size %d and nothing cut", rep, len(want)*RecordSize)
	}
}

func TestSecondOpenerIsLockedOutUntilClose(t *testing.T) {
	dir := t.TempDir()
	j, _, _ := openAll(t, dir, "a", Options{})
	if _, _, err := Open(dir, "a", Options{}, func(Entry) {}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open in the same process: %v, want ErrLocked", err)
	}
	// Another name in the same directory is another journal.
	openAll(t, dir, "b", Options{})
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	openAll(t, dir, "a", Options{}) // a closed journal released its lock
}

// TestLockHolder is not a test: TestOtherProcessIsLockedOut runs the test binary with
// JOURNAL_HOLD=dir to hold a journal's lock in another process.
func TestLockHolder(t *testing.T) {
	dir := os.Getenv("JOURNAL_HOLD")
	if dir == "" {
		t.Skip("helper process only")
	}
	j, _, err := Open(dir, "a", Options{}, func(Entry) {})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	defer j.Close()
	fmt.Println("locked")
	os.Stdout.Sync()
	var b [1]byte
	os.Stdin.Read(b[:]) // hold until the parent closes our stdin
}

func TestOtherProcessIsLockedOut(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run", "^TestLockHolder$")
	cmd.Env = append(os.Environ(), "JOURNAL_HOLD="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line := make([]byte, 7)
	if _, err := stdout.Read(line); err != nil || string(line) != "locked\n" {
		t.Fatalf("helper said %q, %v", line, err)
	}
	_, _, err = Open(dir, "a", Options{}, func(Entry) {})
	if !errors.Is(err, ErrLocked) {
		t.Errorf("Open while another process holds the journal: %v, want ErrLocked", err)
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper: %v", err)
	}
	openAll(t, dir, "a", Options{}) // the lock went with the process
}

func TestBadTailIsCutBackToTheLastGoodRecord(t *testing.T) {
	good := []Entry{settled(1, now), settled(2, now), settled(3, now)}
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, path string) // applied to a file holding good + one more
		want   []Entry
		cut    int64
	}{
		{"torn last record", func(t *testing.T, p string) { truncate(t, p, 3*RecordSize+17) }, good, 17},
		{"flipped bit in the last record", func(t *testing.T, p string) { flip(t, p, 3*RecordSize+20) }, good, RecordSize},
		{"zeroed tail (no data after a crash)", func(t *testing.T, p string) { zero(t, p, 3*RecordSize, RecordSize) }, good, RecordSize},
		{"corrupt last two records", func(t *testing.T, p string) { flip(t, p, 2*RecordSize+3); flip(t, p, 3*RecordSize+3) }, good[:2], 2 * RecordSize},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			j, _, _ := openAll(t, dir, "a", Options{Now: clock})
			appendAll(t, j, append(good, settled(4, now))...)
			j.Close()
			tc.damage(t, Path(dir, "a"))
			j, got, rep := openAll(t, dir, "a", Options{Now: clock})
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("entries loaded (-want +got):\n%s", diff)
			}
			if rep.Cut != tc.cut || rep.Reason == "" {
				t.Errorf("report %+v, want %d bytes cut with a reason", rep, tc.cut)
			}
			// Appends go on after the last good record, and read back.
			appendAll(t, j, settled(5, now))
			j.Close()
			_, got, rep = openAll(t, dir, "a", Options{Now: clock})
			if diff := cmp.Diff(append(tc.want[:len(tc.want):len(tc.want)], settled(5, now)), got); diff != "" {
				t.Errorf("entries after an append and reopen (-want +got):\n%s", diff)
			}
			if rep.Cut != 0 {
				t.Errorf("second reopen cut %d bytes", rep.Cut)
			}
		})
	}
}

func truncate(t *testing.T, p string, n int64) {
	if err := os.Truncate(p, n); err != nil {
		t.Fatal(err)
	}
}

func flip(t *testing.T, p string, off int64) {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[off] ^= 0x10
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func zero(t *testing.T, p string, off, n int64) {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	clear(b[off : off+n])
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// fullDisk is a data file with room for limit bytes: a write past it writes what fits and
// fails with ENOSPC, as write(2) does on a full file system.
type fullDisk struct {
	file
	mu    sync.Mutex
	limit int64
}

func (f *fullDisk) WriteAt(p []byte, off int64) (int, error) {
	f.mu.Lock()
	room := f.limit - off
	f.mu.Unlock()
	if room >= int64(len(p)) {
		return f.file.WriteAt(p, off)
	}
	n := 0
	if room > 0 {
		n, _ = f.file.WriteAt(p[:room], off)
	}
	return n, &os.PathError{Op: "write", Path: "ledger", Err: syscall.ENOSPC}
}

func (f *fullDisk) setLimit(n int64) {
	f.mu.Lock()
	f.limit = n
	f.mu.Unlock()
}

func TestFullDiskFailsTheAppendAndLeavesNoPartialRecord(t *testing.T) {
	dir := t.TempDir()
	var disk *fullDisk
	opt := Options{Now: clock, wrap: func(f file) file {
		disk = &fullDisk{file: f, limit: 2*RecordSize + 10}
		return disk
	}}
	j, _, _ := openAll(t, dir, "a", opt)
	appendAll(t, j, settled(1, now), settled(2, now))
	err := j.Append(settled(3, now))
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Append on a full disk: %v, want ENOSPC", err)
	}
	if fi, _ := os.Stat(Path(dir, "a")); fi.Size() != 2*RecordSize {
		t.Errorf("file is %d bytes after the failed append, want %d (no partial record)", fi.Size(), 2*RecordSize)
	}
	disk.setLimit(1 << 20) // space freed: the journal works again
	appendAll(t, j, settled(4, now))
	j.Close()
	_, got, rep := openAll(t, dir, "a", Options{Now: clock})
	if diff := cmp.Diff([]Entry{settled(1, now), settled(2, now), settled(4, now)}, got); diff != "" {
		t.Errorf("entries after reopening (-want +got):\n%s", diff)
	}
	if rep.Cut != 0 {
		t.Errorf("reopen cut %d bytes: the failed append left debris", rep.Cut)
	}
}

// TestFullTmpfs fills a real 64 KiB tmpfs (skipped where mounting is not allowed).
func TestFullTmpfs(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=64k"); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v); TestFullDiskFailsTheAppendAndLeavesNoPartialRecord covers the logic", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, 0) }) // after the journal's cleanup Close
	j, _, _ := openAll(t, dir, "a", Options{Now: clock})
	var n int
	var err error
	for n = 0; n < 10_000; n++ {
		if err = j.Append(settled(n, now)); err != nil {
			break
		}
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("after %d appends: %v, want ENOSPC", n, err)
	}
	t.Logf("ENOSPC after %d records: %v", n, err)
	if err := j.Append(settled(n+1, now)); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("append on a still full disk: %v", err)
	}
	j.Close()
	_, got, rep := openAll(t, dir, "a", Options{Now: clock})
	if len(got) != n || rep.Cut != 0 {
		t.Errorf("reopened a full tmpfs: %d entries (want %d), %d bytes cut (want 0)", len(got), n, rep.Cut)
	}
}

func TestRetentionByCountAndAge(t *testing.T) {
	dir := t.TempDir()
	old := now.Add(-25 * time.Hour)
	j, _, _ := openAll(t, dir, "a", Options{Now: clock})
	appendAll(t, j,
		settled(1, old), // too old
		Entry{Kind: Deferred, Time: old.UnixNano(), Key: key(9), Mask: 1}, // too old
		settled(2, now), // past the count (the 3 newest are kept)
		Entry{Kind: Deferred, Time: now.UnixNano(), Key: key(8), Mask: 2},
		settled(3, now), settled(4, now), settled(5, now),
	)
	j.Close()
	_, got, rep := openAll(t, dir, "a", Options{Now: clock, MaxEntries: 3, MaxAge: 24 * time.Hour})
	want := []Entry{
		{Kind: Deferred, Time: now.UnixNano(), Key: key(8), Mask: 2},
		settled(3, now), settled(4, now), settled(5, now),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("entries kept (-want +got):\n%s", diff)
	}
	if rep.Expired != 3 {
		t.Errorf("report %+v, want 3 expired", rep)
	}
	// Open compacted the file down to what it kept.
	if rep.Size != int64(len(want)*RecordSize) {
		t.Errorf("file is %d bytes after Open, want %d", rep.Size, len(want)*RecordSize)
	}
}

func TestCompactionRunsWhileAppendsGoOn(t *testing.T) {
	dir := t.TempDir()
	const max = 1000
	done := make(chan Compaction, 10)
	j, _, _ := openAll(t, dir, "a", Options{Now: clock, MaxEntries: max, OnCompact: func(c Compaction) { done <- c }})
	// 2,000 appends: past 1,500 a compaction starts in the background and the appends
	// carry on while it runs.
	for i := range 2000 {
		if err := j.Append(settled(i, now)); err != nil {
			t.Fatal(err)
		}
	}
	var c Compaction
	select {
	case c = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("no compaction within 10s")
	}
	if c.Err != nil || c.After >= c.Before {
		t.Fatalf("compaction %+v, want a smaller file and no error", c)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	// Nothing appended was lost to the compaction: the newest max records are all there,
	// and the file holds fewer than the 2,000 appended.
	var got []Entry
	j2, rep, err := Open(dir, "a", Options{Now: clock, MaxEntries: 1 << 20}, func(e Entry) { got = append(got, e) })
	if err != nil {
		t.Fatal(err)
	}
	defer j2.Close()
	if len(got) >= 2000 || len(got) < max || rep.Cut != 0 {
		t.Fatalf("after compaction the file holds %d records (cut %d), want between %d and 2000", len(got), rep.Cut, max)
	}
	have := make(map[Key]bool)
	for _, e := range got {
		have[e.Key] = true
	}
	for i := 2000 - max; i < 2000; i++ {
		if !have[key(i)] {
			t.Fatalf("record %d, among the newest %d, lost by the compaction", i, max)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "a"+tmpSuffix)); !os.IsNotExist(err) {
		t.Errorf("compaction left its temporary file: %v", err)
	}
}

func TestRemoveStaleDeletesOnlyOldUnheldLedgers(t *testing.T) {
	dir := t.TempDir()
	old := now.Add(-48 * time.Hour)
	for _, name := range []string{"old-free", "old-held", "new-free"} {
		j, _, _ := openAll(t, dir, name, Options{Now: clock})
		appendAll(t, j, settled(1, old))
		if name != "old-held" {
			j.Close()
		}
		if name != "new-free" {
			if err := os.Chtimes(Path(dir, name), old, old); err != nil {
				t.Fatal(err)
			}
		}
	}
	removed, err := RemoveStale(dir, 24*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Stale{{Path(dir, "old-free"), 24 * time.Hour}}, removed); diff != "" {
		t.Errorf("removed (-want +got):\n%s", diff)
	}
	for name, want := range map[string]bool{"old-free": false, "old-held": true, "new-free": true} {
		if _, err := os.Stat(Path(dir, name)); (err == nil) != want {
			t.Errorf("%s exists = %v, want %v", name, err == nil, want)
		}
	}
}

// TestDamagedRecordInsideIsSkipped: a damaged record with good ones after it costs that
// record only: the others load, the damage is counted, and the rewritten file is clean.
func TestDamagedRecordInsideIsSkipped(t *testing.T) {
	dir := t.TempDir()
	es := []Entry{settled(1, now), settled(2, now), settled(3, now), settled(4, now), settled(5, now)}
	j, _, _ := openAll(t, dir, "a", Options{Now: clock})
	appendAll(t, j, es...)
	j.Close()
	flip(t, Path(dir, "a"), RecordSize+3)
	zero(t, Path(dir, "a"), 3*RecordSize, RecordSize)
	j, got, rep := openAll(t, dir, "a", Options{Now: clock})
	want := []Entry{es[0], es[2], es[4]}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("entries loaded (-want +got):\n%s", diff)
	}
	if rep.Damaged != 2 || rep.DamagedAt != RecordSize || rep.Cut != 0 {
		t.Errorf("report %+v, want 2 damaged records from offset %d and nothing cut", rep, RecordSize)
	}
	appendAll(t, j, settled(6, now))
	j.Close()
	_, got, rep = openAll(t, dir, "a", Options{Now: clock})
	if diff := cmp.Diff(append(want, settled(6, now)), got); diff != "" {
		t.Errorf("entries after an append and reopen (-want +got):\n%s", diff)
	}
	if rep.Damaged != 0 || rep.Cut != 0 {
		t.Errorf("second reopen found damage again: %+v", rep)
	}
}

// blockCompaction puts a directory (not empty) where compactions write their new file, so
// every compaction of dir/name fails.
func blockCompaction(t *testing.T, dir, name string) (unblock func()) {
	t.Helper()
	tmp := Path(dir, name) + tmpSuffix
	if err := os.MkdirAll(filepath.Join(tmp, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := os.RemoveAll(tmp); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFailedCompactionAtOpenIsNotFatal: Open's compaction of expired records fails (a
// leftover path in the way): Open still succeeds, reports the failure, and appends work.
func TestFailedCompactionAtOpenIsNotFatal(t *testing.T) {
	dir := t.TempDir()
	j, _, _ := openAll(t, dir, "a", Options{Now: clock})
	old := now.Add(-48 * time.Hour)
	for i := range 10 {
		appendAll(t, j, settled(i, old))
	}
	appendAll(t, j, settled(10, now))
	j.Close()
	blockCompaction(t, dir, "a")
	j, got, rep := openAll(t, dir, "a", Options{Now: clock})
	if diff := cmp.Diff([]Entry{settled(10, now)}, got); diff != "" {
		t.Errorf("entries loaded (-want +got):\n%s", diff)
	}
	if rep.Compaction == nil || rep.Compaction.Err == nil || rep.Compaction.Failures != 1 || rep.Compaction.Retry != CompactRetryMin {
		t.Errorf("report.Compaction = %+v, want the failure, 1 in a row, retry in %v", rep.Compaction, CompactRetryMin)
	}
	appendAll(t, j, settled(11, now))
	j.Close()
	_, got, _ = openAll(t, dir, "a", Options{Now: clock})
	if diff := cmp.Diff([]Entry{settled(10, now), settled(11, now)}, got); diff != "" {
		t.Errorf("entries after an append and reopen (-want +got):\n%s", diff)
	}
}

// TestFailedCompactionBacksOff: a compaction that keeps failing is tried once per back-off
// (growing), not on every append, and the journal compacts again once the fault is gone.
func TestFailedCompactionBacksOff(t *testing.T) {
	dir := t.TempDir()
	var (
		mu    sync.Mutex
		at    = now
		comps []Compaction
	)
	tick := func() time.Time { mu.Lock(); defer mu.Unlock(); return at }
	advance := func(d time.Duration) { mu.Lock(); at = at.Add(d); mu.Unlock() }
	opt := Options{MaxEntries: 10, Now: tick, OnCompact: func(c Compaction) {
		mu.Lock()
		comps = append(comps, c)
		mu.Unlock()
	}}
	unblock := blockCompaction(t, dir, "a")
	j, _, _ := openAll(t, dir, "a", opt)
	idle := j.wg.Wait // a background compaction and its OnCompact call have ended
	n := 0
	appendN := func(k int) {
		for range k {
			appendAll(t, j, settled(n, tick()))
			n++
			idle()
		}
	}
	attempts := func() []time.Duration {
		mu.Lock()
		defer mu.Unlock()
		var out []time.Duration
		for _, c := range comps {
			if c.Err == nil {
				out = append(out, 0)
			} else {
				out = append(out, c.Retry)
			}
		}
		return out
	}
	appendN(1500)
	if diff := cmp.Diff([]time.Duration{CompactRetryMin}, attempts()); diff != "" {
		t.Fatalf("compactions for 1,500 appends (retry waits; -want +got):\n%s", diff)
	}
	advance(CompactRetryMin)
	appendN(100)
	if diff := cmp.Diff([]time.Duration{CompactRetryMin, 2 * CompactRetryMin}, attempts()); diff != "" {
		t.Fatalf("compactions after the first back-off (-want +got):\n%s", diff)
	}
	unblock()
	advance(2 * CompactRetryMin)
	appendN(1)
	if diff := cmp.Diff([]time.Duration{CompactRetryMin, 2 * CompactRetryMin, 0}, attempts()); diff != "" {
		t.Fatalf("compactions once the fault is gone (-want +got):\n%s", diff)
	}
	if got := j.Size() / RecordSize; got > 10 {
		t.Errorf("%d records after a successful compaction, want at most 10", got)
	}
}

// TestNewFileSyncsItsDirectory: creating the ledger file fsyncs its directory, so the new
// entry survives a power loss; reopening an existing file does not need to.
func TestNewFileSyncsItsDirectory(t *testing.T) {
	dir := t.TempDir()
	var synced []string
	opt := Options{Now: clock, syncDir: func(d string) error { synced = append(synced, d); return nil }}
	j, _, _ := openAll(t, dir, "a", opt)
	j.Close()
	openAll(t, dir, "a", opt)
	if diff := cmp.Diff([]string{dir}, synced); diff != "" {
		t.Errorf("directories synced (-want +got):\n%s", diff)
	}
	// A failed fsync of the directory is reported, and the journal works.
	opt.syncDir = func(string) error { return syscall.EIO }
	j, _, rep := openAll(t, dir, "b", opt)
	if !errors.Is(rep.SyncErr, syscall.EIO) {
		t.Errorf("Report.SyncErr = %v, want the EIO of the directory's fsync", rep.SyncErr)
	}
	appendAll(t, j, settled(1, now))
}

// TestRemoveStaleJudgesEachFileByItsOwnMaxAge: two instances sharing the directory with 1h
// and 48h, both unused for 2h: only the 1h ledger goes, whoever calls RemoveStale. A file
// whose lock file records no age is judged by the caller's.
func TestRemoveStaleJudgesEachFileByItsOwnMaxAge(t *testing.T) {
	dir := t.TempDir()
	ages := map[string]time.Duration{"short": time.Hour, "long": 48 * time.Hour, "legacy": 48 * time.Hour}
	past := now.Add(-2 * time.Hour)
	for name, age := range ages {
		j, _, _ := openAll(t, dir, name, Options{Now: clock, MaxAge: age})
		appendAll(t, j, settled(1, past))
		j.Close()
		if err := os.Chtimes(Path(dir, name), past, past); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "legacy"+LockSuffix), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, caller := range []time.Duration{time.Hour, 48 * time.Hour} {
		removed, err := RemoveStale(dir, caller, now)
		if err != nil {
			t.Fatal(err)
		}
		want := []Stale{{Path(dir, "legacy"), time.Hour}, {Path(dir, "short"), time.Hour}}
		if caller != time.Hour {
			want = nil // already removed by the first call
		}
		if diff := cmp.Diff(want, removed); diff != "" {
			t.Errorf("RemoveStale(%v) removed (-want +got):\n%s", caller, diff)
		}
	}
	if _, err := os.Stat(Path(dir, "long")); err != nil {
		t.Errorf("the 48h ledger was removed: %v", err)
	}
}
