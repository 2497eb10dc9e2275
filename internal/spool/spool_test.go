package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var now = time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)

func clock() time.Time { return now }

// rec is a record of group g; its Seq is left for Add.
func rec(i int, g string) Record {
	return Record{
		Group:     g,
		MessageID: fmt.Sprintf("%032x@example.com", i),
		Tag:       "wazuh.alerts",
		Time:      now.Add(time.Duration(i) * time.Second).Add(123456789),
		Payload:   []byte(fmt.Sprintf(`{"date":%d,"host":"web-%d","rule":"sshd"}`, i, i%3)),
	}
}

// withSeq returns r as Add numbers it.
func withSeq(r Record, seq uint64) Record {
	r.Seq = seq
	return r
}

// equate compares nil and empty as equal, and large payloads with bytes.Equal (cmp's
// element-by-element walk of 3 MiB takes minutes under the race detector).
var equate = cmp.Options{
	cmpopts.EquateEmpty(),
	cmp.FilterValues(func(a, b []byte) bool { return len(a) > 4096 || len(b) > 4096 }, cmp.Comparer(bytes.Equal)),
}

func openSpool(t testing.TB, dir string, opt Options) (*Spool, State) {
	t.Helper()
	if opt.Now == nil {
		opt.Now = clock
	}
	s, st, err := Open(dir, "out", opt)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, st
}

func add(t testing.TB, s *Spool, rs ...Record) []uint64 {
	t.Helper()
	var seqs []uint64
	for _, r := range rs {
		seq, err := s.Add(r)
		if err != nil {
			t.Fatalf("Add: %v", err)
		}
		seqs = append(seqs, seq)
	}
	return seqs
}

func done(t testing.TB, s *Spool, seqs ...uint64) {
	t.Helper()
	if err := s.Done(seqs...); err != nil {
		t.Fatalf("Done: %v", err)
	}
}

func setRoot(t testing.TB, s *Spool, r Root) {
	t.Helper()
	if err := s.SetRoot(r); err != nil {
		t.Fatalf("SetRoot: %v", err)
	}
}

// kill ends s the way SIGKILL ends the process: no sync, no last write, the descriptors
// closed by the kernel, the page cache (what was written) kept.
func kill(s *Spool) {
	s.syncMu.Lock()
	s.mu.Lock()
	s.closed = true
	s.f.Close()
	s.unlock()
	s.mu.Unlock()
	s.syncMu.Unlock()
}

// TestRoundTrip: what Add, Done and SetRoot wrote is what Open finds, after a clean Close
// and after a kill without one.
func TestRoundTrip(t *testing.T) {
	today, yesterday, older := "2026-12-05", "2026-12-04", "2026-12-03"
	big := rec(7, "g")
	big.Payload = bytes.Repeat([]byte("x"), 3<<20) // bigger than the read window
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, s *Spool)
		want State
	}{
		{"empty", func(*testing.T, *Spool) {}, State{}},
		{"added", func(t *testing.T, s *Spool) {
			add(t, s, rec(1, "a"), rec(2, "b"), rec(3, "a"))
		}, State{Waiting: []Record{withSeq(rec(1, "a"), 1), withSeq(rec(2, "b"), 2), withSeq(rec(3, "a"), 3)}}},
		{"some done", func(t *testing.T, s *Spool) {
			add(t, s, rec(1, "a"), rec(2, "b"), rec(3, "a"), rec(4, "b"))
			done(t, s, 1, 3)
		}, State{Waiting: []Record{withSeq(rec(2, "b"), 2), withSeq(rec(4, "b"), 4)}}},
		{"done twice, unknown Seqs ignored", func(t *testing.T, s *Spool) {
			add(t, s, rec(1, "a"), rec(2, "b"))
			done(t, s, 1, 99)
			done(t, s, 1)
		}, State{Waiting: []Record{withSeq(rec(2, "b"), 2)}}},
		{"all done, then more: Seqs go on", func(t *testing.T, s *Spool) {
			add(t, s, rec(1, "a"), rec(2, "a"))
			done(t, s, 1, 2)
			add(t, s, rec(3, "a"))
		}, State{Waiting: []Record{withSeq(rec(3, "a"), 3)}}},
		{"roots: latest per group, none before yesterday", func(t *testing.T, s *Spool) {
			setRoot(t, s, Root{"a", today, "first-a@x"})
			setRoot(t, s, Root{"b", yesterday, "b@x"})
			setRoot(t, s, Root{"c", older, "c@x"})
			setRoot(t, s, Root{"a", today, "second-a@x"})
			setRoot(t, s, Root{"a", today, "second-a@x"})
		}, State{Roots: []Root{{"a", today, "second-a@x"}, {"b", yesterday, "b@x"}}}},
		{"roots and records, all done", func(t *testing.T, s *Spool) {
			setRoot(t, s, Root{"a", today, "a@x"})
			add(t, s, rec(1, "a"), rec(2, "a"))
			setRoot(t, s, Root{"b", today, "b@x"})
			done(t, s, 2, 1)
			add(t, s, rec(3, "b"))
		}, State{Waiting: []Record{withSeq(rec(3, "b"), 3)}, Roots: []Root{{"a", today, "a@x"}, {"b", today, "b@x"}}}},
		{"odd fields", func(t *testing.T, s *Spool) {
			add(t, s, Record{}, Record{Group: "host=wéb\x00-1", Tag: "t", Time: time.Unix(-5, 7).UTC(), Payload: []byte("{}\n")}, big)
		}, State{Waiting: []Record{{Seq: 1, Time: time.Time{}}, {Seq: 2, Group: "host=wéb\x00-1", Tag: "t", Time: time.Unix(-5, 7), Payload: []byte("{}\n")}, withSeq(big, 3)}}},
	} {
		for _, end := range []string{"Close", "kill"} {
			t.Run(tc.name+"/"+end, func(t *testing.T) {
				dir := t.TempDir()
				s, st := openSpool(t, dir, Options{})
				if !st.Created || len(st.Waiting) != 0 {
					t.Fatalf("a new spool: %+v", st)
				}
				tc.run(t, s)
				if got, want := s.Waiting(), len(tc.want.Waiting); got != want {
					t.Errorf("Waiting() = %d, want %d", got, want)
				}
				if end == "Close" {
					if err := s.Close(); err != nil {
						t.Fatal(err)
					}
				} else {
					kill(s)
				}
				s2, st := openSpool(t, dir, Options{})
				if diff := cmp.Diff(tc.want, st, equate); diff != "" {
					t.Errorf("State after reopening (-want +got):\n%s", diff)
				}
				// The next Seq follows every Seq the file ever handed out.
				seq, err := s2.Add(rec(100, "z"))
				if err != nil || seq != s.nextSeq {
					t.Errorf("Add after reopening: Seq %d, %v; want %d", seq, err, s.nextSeq)
				}
			})
		}
	}
}

func TestSeqsStayUniqueAcrossCutBacksAndCompactions(t *testing.T) {
	dir := t.TempDir()
	s, _ := openSpool(t, dir, Options{})
	seen := map[uint64]bool{}
	for round := range 3 {
		seqs := add(t, s, rec(1, "a"), rec(2, "a"))
		done(t, s, seqs...)
		s.Close()
		s, _ = openSpool(t, dir, Options{})
		for _, q := range seqs {
			if seen[q] {
				t.Fatalf("round %d: Seq %d handed out twice", round, q)
			}
			seen[q] = true
		}
	}
}

func TestPath(t *testing.T) {
	if got, want := Path("/var/lib/fb", "smtp.0"), "/var/lib/fb/smtp.0.digest"; got != want {
		t.Errorf("Path = %q, want %q", got, want)
	}
}

// threeRecords writes three records, closes the spool and returns the file's bytes and where
// each frame starts (and the end).
func threeRecords(t *testing.T, dir string) (file []byte, starts []int64) {
	t.Helper()
	s, _ := openSpool(t, dir, Options{})
	for i := 1; i <= 3; i++ {
		starts = append(starts, s.Size())
		add(t, s, rec(i, "g"))
	}
	starts = append(starts, s.Size())
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(Path(dir, "out"))
	if err != nil {
		t.Fatal(err)
	}
	return b, starts
}

// fileSalt is the salt in the head frame of a spool file's bytes.
func fileSalt(b []byte) []byte { return b[headSize-saltSize : headSize] }

func writeFile(t *testing.T, dir string, b []byte) {
	t.Helper()
	if err := os.WriteFile(Path(dir, "out"), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestTornTailAtEveryOffset: a crash mid-write of the last frame, at every byte of it: Open
// cuts it off, keeps the two before, and appends go on from there.
func TestTornTailAtEveryOffset(t *testing.T) {
	file, starts := threeRecords(t, t.TempDir())
	first2 := []Record{withSeq(rec(1, "g"), 1), withSeq(rec(2, "g"), 2)}
	last := starts[2]
	for cut := last; cut < starts[3]; cut++ {
		dir := t.TempDir()
		writeFile(t, dir, file[:cut])
		s, st := openSpool(t, dir, Options{})
		if diff := cmp.Diff(State{Waiting: first2, Truncated: cut - last}, st, equate); diff != "" {
			t.Fatalf("torn at byte %d of the last frame: State (-want +got):\n%s", cut-last, diff)
		}
		add(t, s, rec(4, "g"))
		kill(s)
		_, st = openSpool(t, dir, Options{})
		want := append(first2[:2:2], withSeq(rec(4, "g"), 3))
		if diff := cmp.Diff(State{Waiting: want}, st, equate); diff != "" {
			t.Fatalf("torn at byte %d, appended, reopened: State (-want +got):\n%s", cut-last, diff)
		}
	}
}

// TestUnwrittenTail: the last frame's length reached the disk but its body did not (zeros), or
// only zeros follow the last frame (a file extended by a crash): cut off as a tail.
func TestUnwrittenTail(t *testing.T) {
	file, starts := threeRecords(t, t.TempDir())
	first2 := []Record{withSeq(rec(1, "g"), 1), withSeq(rec(2, "g"), 2)}
	for _, tc := range []struct {
		name string
		b    []byte
		want State
	}{
		{"zeroed body", append(file[:starts[2]+headerSize:starts[2]+headerSize], make([]byte, starts[3]-starts[2]-headerSize)...),
			State{Waiting: first2, Truncated: starts[3] - starts[2]}},
		{"zeros after the last frame", append(file[:len(file):len(file)], make([]byte, 4096)...),
			State{Waiting: append(first2, withSeq(rec(3, "g"), 3)), Truncated: 4096}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, dir, tc.b)
			_, st := openSpool(t, dir, Options{})
			if diff := cmp.Diff(tc.want, st, equate); diff != "" {
				t.Errorf("State (-want +got):\n%s", diff)
			}
		})
	}
}

// TestFlippedByteInTheMiddleFrame, at every byte of it (kind, length, checksums, body): the
// middle record is skipped and counted, the others kept, and Open rewrites the file clean.
func TestFlippedByteInTheMiddleFrame(t *testing.T) {
	file, starts := threeRecords(t, t.TempDir())
	want := State{Waiting: []Record{withSeq(rec(1, "g"), 1), withSeq(rec(3, "g"), 3)}, Damaged: 1}
	for at := starts[1]; at < starts[2]; at++ {
		dir := t.TempDir()
		b := bytes.Clone(file)
		b[at] ^= 0x10
		writeFile(t, dir, b)
		s, st := openSpool(t, dir, Options{})
		if st.Compaction == nil || st.Compaction.Err != nil {
			t.Fatalf("flipped byte %d of the middle frame: Open's compaction %+v, want one without error", at-starts[1], st.Compaction)
		}
		st.Compaction = nil
		if diff := cmp.Diff(want, st, equate); diff != "" {
			t.Fatalf("flipped byte %d of the middle frame: State (-want +got):\n%s", at-starts[1], diff)
		}
		s.Close()
		_, st = openSpool(t, dir, Options{})
		if diff := cmp.Diff(State{Waiting: want.Waiting}, st, equate); diff != "" {
			t.Fatalf("flipped byte %d, reopened: State (-want +got):\n%s", at-starts[1], diff)
		}
	}
}

// TestDamagedDoneFrameHandsItsRecordsBack: losing a Done frame can repeat a digest, never lose
// a record.
func TestDamagedDoneFrameHandsItsRecordsBack(t *testing.T) {
	dir := t.TempDir()
	s, _ := openSpool(t, dir, Options{})
	add(t, s, rec(1, "g"), rec(2, "g"), rec(3, "g"))
	at := s.Size()
	done(t, s, 1, 2)
	add(t, s, rec(4, "g"))
	s.Close()
	b, _ := os.ReadFile(Path(dir, "out"))
	b[at+headerSize+3] ^= 1
	writeFile(t, dir, b)
	_, st := openSpool(t, dir, Options{})
	st.Compaction = nil
	want := State{Waiting: []Record{withSeq(rec(1, "g"), 1), withSeq(rec(2, "g"), 2), withSeq(rec(3, "g"), 3), withSeq(rec(4, "g"), 4)}, Damaged: 1}
	if diff := cmp.Diff(want, st, equate); diff != "" {
		t.Errorf("State (-want +got):\n%s", diff)
	}
}

// fullDisk is a data file with room for limit bytes: a write past it writes what fits and
// fails with ENOSPC, as write(2) does on a full file system.
type fullDisk struct {
	file
	mu    *sync.Mutex
	limit *int64
}

func (f fullDisk) WriteAt(p []byte, off int64) (int, error) {
	f.mu.Lock()
	room := *f.limit - off
	f.mu.Unlock()
	if room >= int64(len(p)) {
		return f.file.WriteAt(p, off)
	}
	n := 0
	if room > 0 {
		n, _ = f.file.WriteAt(p[:room], off)
	}
	return n, &os.PathError{Op: "write", Path: "spool", Err: syscall.ENOSPC}
}

// disk is a file system of a given size, shared by the data file and a compaction's new file.
type disk struct {
	mu    sync.Mutex
	limit int64
}

func (d *disk) wrap(f file) file { return fullDisk{f, &d.mu, &d.limit} }

func (d *disk) set(n int64) {
	d.mu.Lock()
	d.limit = n
	d.mu.Unlock()
}

func TestFullDiskFailsTheWriteAndLeavesNoPartialFrame(t *testing.T) {
	dir := t.TempDir()
	d := &disk{limit: 1 << 30}
	s, _ := openSpool(t, dir, Options{wrap: d.wrap})
	seqs := add(t, s, rec(1, "g"), rec(2, "g"), rec(3, "g"))
	size := s.Size()
	d.set(size + 10)
	for _, op := range []struct {
		name string
		do   func() error
	}{
		{"Add", func() error { _, err := s.Add(rec(4, "g")); return err }},
		{"SetRoot", func() error { return s.SetRoot(Root{"g", "2026-12-05", "r@x"}) }},
		{"Done", func() error { return s.Done(seqs[0]) }},
	} {
		err := op.do()
		if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), Path(dir, "out")) {
			t.Errorf("%s on a full disk: %v, want ENOSPC naming the file", op.name, err)
		}
		if fi, _ := os.Stat(Path(dir, "out")); fi.Size() != size || s.Size() != size {
			t.Errorf("after the failed %s the file is %d bytes (Size %d), want %d: no partial frame", op.name, fi.Size(), s.Size(), size)
		}
	}
	// The failed Done counts here, and is written down with the next one.
	if got := s.Waiting(); got != 2 {
		t.Errorf("Waiting() = %d after Done of one of 3 failed to write, want 2", got)
	}
	d.set(1 << 30) // space freed
	add(t, s, rec(5, "g"))
	done(t, s, seqs[1])
	kill(s)
	_, st := openSpool(t, dir, Options{})
	if diff := cmp.Diff(State{Waiting: []Record{withSeq(rec(3, "g"), 3), withSeq(rec(5, "g"), 4)}}, st, equate); diff != "" {
		t.Errorf("State after reopening (-want +got):\n%s", diff)
	}
}

// TestFullTmpfs fills a real 64 KiB tmpfs (skipped where mounting is not allowed).
func TestFullTmpfs(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=64k"); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v); TestFullDiskFailsTheWriteAndLeavesNoPartialFrame covers the logic", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, 0) }) // after the spool's cleanup Close
	s, _ := openSpool(t, dir, Options{})
	r := rec(1, "g")
	r.Payload = bytes.Repeat([]byte("y"), 3000)
	var n int
	var err error
	for n = 0; n < 1000; n++ {
		if _, err = s.Add(r); err != nil {
			break
		}
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("after %d records: %v, want ENOSPC", n, err)
	}
	t.Logf("ENOSPC after %d records: %v", n, err)
	kill(s)
	_, st := openSpool(t, dir, Options{})
	if len(st.Waiting) != n || st.Truncated != 0 || st.Damaged != 0 {
		t.Errorf("reopened a full tmpfs: %d waiting (want %d), %d bytes cut, %d damaged (want 0)", len(st.Waiting), n, st.Truncated, st.Damaged)
	}
}

func TestFullSpool(t *testing.T) {
	dir := t.TempDir()
	r := rec(1, "g")
	n := recordSize(&r)
	s, _ := openSpool(t, dir, Options{MaxBytes: headSize + 3*n})
	seqs := add(t, s, r, r, r)
	if _, err := s.Add(r); !errors.Is(err, ErrFull) {
		t.Fatalf("Add past MaxBytes: %v, want ErrFull", err)
	}
	done(t, s, seqs[0])
	add(t, s, r) // room again
	huge := r
	huge.Payload = make([]byte, 4*n)
	done(t, s, seqs[1:]...)
	if _, err := s.Add(huge); !errors.Is(err, ErrFull) {
		t.Fatalf("Add of a record bigger than MaxBytes: %v, want ErrFull", err)
	}
}

func TestSecondOpenerIsLockedOutUntilClose(t *testing.T) {
	dir := t.TempDir()
	s, _ := openSpool(t, dir, Options{})
	if _, _, err := Open(dir, "out", Options{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open in the same process: %v, want ErrLocked", err)
	}
	if _, _, err := Open(dir, "other", Options{}); err != nil {
		t.Fatalf("another name in the same directory: %v", err)
	}
	s.Close()
	openSpool(t, dir, Options{}) // a closed spool released its lock
}

// TestLockHolder is not a test: TestOtherProcessIsLockedOut runs the test binary with
// SPOOL_HOLD=dir to hold a spool's lock in another process.
func TestLockHolder(t *testing.T) {
	dir := os.Getenv("SPOOL_HOLD")
	if dir == "" {
		t.Skip("helper process only")
	}
	s, _, err := Open(dir, "out", Options{})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	defer s.Close()
	fmt.Println("locked")
	os.Stdout.Sync()
	var b [1]byte
	os.Stdin.Read(b[:]) // hold until the parent closes our stdin
}

func TestOtherProcessIsLockedOut(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run", "^TestLockHolder$")
	cmd.Env = append(os.Environ(), "SPOOL_HOLD="+dir)
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
	if _, _, err := Open(dir, "out", Options{}); !errors.Is(err, ErrLocked) {
		t.Errorf("Open while another process holds the spool: %v, want ErrLocked", err)
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper: %v", err)
	}
	openSpool(t, dir, Options{}) // the lock went with the process
}

// TestCompactionKeepsTheFileSmall: 10,000 Add/Done pairs of 2 KB records, with nothing left
// waiting after each Done (cut back to the roots) and with one record always waiting
// (rewritten once mostly dead): the file never grows past a few MiB, and what waits survives.
func TestCompactionKeepsTheFileSmall(t *testing.T) {
	for _, tc := range []struct {
		name  string
		keep  bool  // one record always waits
		bound int64 // largest file allowed
		least int   // compactions or cut-backs at least
	}{
		{"nothing left waiting", false, 3 * 2200, 10_000},           // one per Done
		{"one always waiting", true, 2*compactMinDead + 3*2200, 10}, // one per MiB of dead frames

	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			var comps []Compaction
			s, _ := openSpool(t, dir, Options{OnCompact: func(c Compaction) { comps = append(comps, c) }})
			setRoot(t, s, Root{"g", "2026-12-05", "root@x"})
			r := rec(1, "g")
			r.Payload = bytes.Repeat([]byte("z"), 2048)
			var held []uint64
			if tc.keep {
				held = add(t, s, r)
			}
			var largest int64
			for i := range 10_000 {
				seq := add(t, s, r)[0]
				largest = max(largest, s.Size())
				done(t, s, seq)
				if i == 5000 {
					setRoot(t, s, Root{"h", "2026-12-05", "root-h@x"})
				}
			}
			if largest > tc.bound {
				t.Errorf("the file reached %d bytes, want at most %d", largest, tc.bound)
			}
			for _, c := range comps {
				if c.Err != nil {
					t.Fatalf("compaction failed: %v", c.Err)
				}
				if c.After > c.Before {
					t.Fatalf("compaction grew the file: %+v", c)
				}
			}
			t.Logf("%d compactions or cut-backs; largest file %d bytes", len(comps), largest)
			if len(comps) < tc.least {
				t.Errorf("%d compactions or cut-backs, want at least %d", len(comps), tc.least)
			}
			kill(s)
			_, st := openSpool(t, dir, Options{})
			var want []Record
			if tc.keep {
				want = []Record{withSeq(r, held[0])}
			}
			wantRoots := []Root{{"g", "2026-12-05", "root@x"}, {"h", "2026-12-05", "root-h@x"}}
			if diff := cmp.Diff(State{Waiting: want, Roots: wantRoots}, st, equate); diff != "" {
				t.Errorf("State after reopening (-want +got):\n%s", diff)
			}
		})
	}
}

// blockCompaction puts a directory (not empty) where compactions write their new file, so
// every compaction fails.
func blockCompaction(t *testing.T, dir string) (unblock func()) {
	t.Helper()
	tmp := Path(dir, "out") + tmpSuffix
	if err := os.MkdirAll(filepath.Join(tmp, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := os.RemoveAll(tmp); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFailedCompactionBacksOff: a compaction that keeps failing is no error of Done, is
// reported, is tried again once per back-off (growing), and succeeds once the fault is gone.
func TestFailedCompactionBacksOff(t *testing.T) {
	dir := t.TempDir()
	at := now
	tick := func() time.Time { return at }
	var comps []Compaction
	unblock := blockCompaction(t, dir)
	s, _ := openSpool(t, dir, Options{Now: tick, OnCompact: func(c Compaction) { comps = append(comps, c) }})
	r := rec(1, "g")
	r.Payload = bytes.Repeat([]byte("z"), 2048)
	held := add(t, s, r)
	pairs := func(n int) {
		for range n {
			done(t, s, add(t, s, r)...) // no error, whatever the compaction did
		}
	}
	retries := func() []time.Duration {
		var out []time.Duration
		for _, c := range comps {
			out = append(out, c.Retry)
		}
		return out
	}
	pairs(1000) // 2 MiB of dead frames
	if diff := cmp.Diff([]time.Duration{CompactRetryMin}, retries()); diff != "" {
		t.Fatalf("compactions in 1,000 pairs (retry waits; -want +got):\n%s", diff)
	}
	if c := s.LastCompaction(); c.Err == nil || !strings.Contains(c.Err.Error(), Path(dir, "out")) || c.Failures != 1 {
		t.Errorf("LastCompaction() = %+v, want the failure naming the file", c)
	}
	at = at.Add(CompactRetryMin)
	pairs(10)
	if diff := cmp.Diff([]time.Duration{CompactRetryMin, 2 * CompactRetryMin}, retries()); diff != "" {
		t.Fatalf("compactions after the first back-off (-want +got):\n%s", diff)
	}
	unblock()
	at = at.Add(2 * CompactRetryMin)
	pairs(1)
	if diff := cmp.Diff([]time.Duration{CompactRetryMin, 2 * CompactRetryMin, 0}, retries()); diff != "" {
		t.Fatalf("compactions once the fault is gone (-want +got):\n%s", diff)
	}
	if c := s.LastCompaction(); c.Err != nil || c.After >= c.Before || s.Size() != c.After {
		t.Errorf("LastCompaction() = %+v, Size() %d: want a smaller file", c, s.Size())
	}
	kill(s)
	_, st := openSpool(t, dir, Options{})
	if diff := cmp.Diff(State{Waiting: []Record{withSeq(r, held[0])}}, st, equate); diff != "" {
		t.Errorf("State after reopening (-want +got):\n%s", diff)
	}
}

// TestCompactionOnAFullDisk: the compaction's new file hits ENOSPC: Done reports no error,
// the old file stays in use, the new one is removed, and nothing is lost.
func TestCompactionOnAFullDisk(t *testing.T) {
	dir := t.TempDir()
	full := &disk{limit: 100}
	wrap := func(f file) file {
		if strings.HasSuffix(f.(osFile).Name(), tmpSuffix) {
			return full.wrap(f)
		}
		return f
	}
	var comps []Compaction
	s, _ := openSpool(t, dir, Options{wrap: wrap, OnCompact: func(c Compaction) { comps = append(comps, c) }})
	r := rec(1, "g")
	r.Payload = bytes.Repeat([]byte("z"), 2048)
	held := add(t, s, r, r)
	for range 600 { // 1.2 MiB of dead frames
		done(t, s, add(t, s, r)...)
	}
	if len(comps) != 1 || !errors.Is(comps[0].Err, syscall.ENOSPC) || comps[0].After != comps[0].Before {
		t.Fatalf("compactions: %+v, want one that failed with ENOSPC and left the file as it was", comps)
	}
	if _, err := os.Stat(Path(dir, "out") + tmpSuffix); !os.IsNotExist(err) {
		t.Errorf("the failed compaction left its new file: %v", err)
	}
	kill(s)
	_, st := openSpool(t, dir, Options{})
	want := []Record{withSeq(r, held[0]), withSeq(r, held[1])}
	if diff := cmp.Diff(want, st.Waiting, equate); diff != "" {
		t.Errorf("waiting after reopening (-want +got):\n%s", diff)
	}
}

// TestNewFileSyncsItsDirectory: creating the spool file fsyncs its directory; reopening it
// does not need to; a failed fsync is reported and the spool works.
func TestNewFileSyncsItsDirectory(t *testing.T) {
	dir := t.TempDir()
	var synced []string
	opt := Options{syncDir: func(d string) error { synced = append(synced, d); return nil }}
	s, _ := openSpool(t, dir, opt)
	s.Close()
	openSpool(t, dir, opt)
	if diff := cmp.Diff([]string{dir}, synced); diff != "" {
		t.Errorf("directories synced (-want +got):\n%s", diff)
	}
	sub := filepath.Join(dir, "sub")
	os.Mkdir(sub, 0o700)
	opt.syncDir = func(string) error { return syscall.EIO }
	s, st := openSpool(t, sub, opt)
	if !errors.Is(st.SyncErr, syscall.EIO) {
		t.Errorf("State.SyncErr = %v, want the EIO of the directory's fsync", st.SyncErr)
	}
	add(t, s, rec(1, "g"))
}

func TestClosedSpoolRefusesWork(t *testing.T) {
	s, _ := openSpool(t, t.TempDir(), Options{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := s.Add(rec(1, "g")); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Add after Close: %v", err)
	}
	if err := s.Done(1); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Done after Close: %v", err)
	}
	if err := s.SetRoot(Root{}); !errors.Is(err, os.ErrClosed) {
		t.Errorf("SetRoot after Close: %v", err)
	}
	if err := s.Sync(); err != nil {
		t.Errorf("Sync after Close: %v", err)
	}
}

// TestConcurrentUse: flushes on several workers add, sync and mark done at once (run with
// -race); everything added and not done is there after a kill.
func TestConcurrentUse(t *testing.T) {
	dir := t.TempDir()
	s, _ := openSpool(t, dir, Options{})
	r := rec(1, "g")
	r.Payload = bytes.Repeat([]byte("c"), 4096)
	var wg sync.WaitGroup
	kept := make([][]uint64, 4)
	for w := range 4 {
		wg.Go(func() {
			for i := range 150 {
				seqs := add(t, s, r, r)
				if err := s.Sync(); err != nil {
					t.Error(err)
				}
				if err := s.Done(seqs[0]); err != nil {
					t.Error(err)
				}
				if i%2 == 0 {
					if err := s.Done(seqs[1]); err != nil {
						t.Error(err)
					}
				} else {
					kept[w] = append(kept[w], seqs[1])
				}
			}
		})
	}
	wg.Wait()
	var want int
	for _, k := range kept {
		want += len(k)
	}
	kill(s)
	_, st := openSpool(t, dir, Options{})
	if len(st.Waiting) != want || st.Damaged != 0 || st.Truncated != 0 {
		t.Errorf("reopened: %d waiting (want %d), %d damaged, %d cut", len(st.Waiting), want, st.Damaged, st.Truncated)
	}
}

// TestKilledWriter is not a test: TestSIGKILLLosesNothing runs the test binary with
// SPOOL_KILL=dir to write records in another process until it is killed.
func TestKilledWriter(t *testing.T) {
	dir := os.Getenv("SPOOL_KILL")
	if dir == "" {
		t.Skip("helper process only")
	}
	s, _, err := Open(dir, "out", Options{Now: clock})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	if err := s.SetRoot(Root{"g", "2026-12-05", "root@x"}); err != nil {
		fmt.Println("set root:", err)
		os.Exit(2)
	}
	// Records 1..1000; every third is done in a Done of its own, without any Sync.
	for i := 1; i <= 1000; i++ {
		seq, err := s.Add(rec(i, "g"))
		if err != nil {
			fmt.Println("add:", err)
			os.Exit(2)
		}
		if i%3 == 0 {
			if err := s.Done(seq); err != nil {
				fmt.Println("done:", err)
				os.Exit(2)
			}
		}
	}
	fmt.Println("written")
	os.Stdout.Sync()
	var b [1]byte
	os.Stdin.Read(b[:]) // the parent kills us here
	os.Exit(3)
}

// TestSIGKILLLosesNothing: a process that added records (no Sync) is killed with SIGKILL;
// the next Open finds every record it added and did not mark done, and its thread root.
func TestSIGKILLLosesNothing(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run", "^TestKilledWriter$")
	cmd.Env = append(os.Environ(), "SPOOL_KILL="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line := make([]byte, 8)
	if _, err := stdout.Read(line); err != nil || string(line) != "written\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper said %q, %v", line, err)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("helper ended with %v, want killed", err)
	}
	var want []Record
	for i := 1; i <= 1000; i++ {
		if i%3 != 0 {
			want = append(want, withSeq(rec(i, "g"), uint64(i)))
		}
	}
	_, st := openSpool(t, dir, Options{}) // the lock went with the process
	if diff := cmp.Diff(State{Waiting: want, Roots: []Root{{"g", "2026-12-05", "root@x"}}}, st, equate); diff != "" {
		t.Errorf("State after SIGKILL (-want +got):\n%s", diff)
	}
}

// TestHugeLengthFieldIsNotAllocated: a length field of 2 GiB, damaged in the middle of the
// file or whole at its end, costs no allocation of its size: Open reads what the file holds.
func TestHugeLengthFieldIsNotAllocated(t *testing.T) {
	file, starts := threeRecords(t, t.TempDir())
	first2 := []Record{withSeq(rec(1, "g"), 1), withSeq(rec(2, "g"), 2)}
	huge := func(at int64, seal bool) []byte {
		b := bytes.Clone(file)
		copy(b[at+1:at+5], []byte{0xff, 0xff, 0xff, 0x7f})
		if seal {
			sealHeader(b[at:at+headerSize], fileSalt(file))
		}
		return b
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want State
	}{
		{"damaged, middle frame", huge(starts[1], false),
			State{Waiting: []Record{withSeq(rec(1, "g"), 1), withSeq(rec(3, "g"), 3)}, Damaged: 1}},
		{"whole header, last frame", huge(starts[2], true),
			State{Waiting: first2, Truncated: starts[3] - starts[2]}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, dir, tc.b)
			var m0, m1 runtime.MemStats
			runtime.ReadMemStats(&m0)
			s, st, err := Open(dir, "out", Options{Now: clock})
			runtime.ReadMemStats(&m1)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if alloc := m1.TotalAlloc - m0.TotalAlloc; alloc > 1<<20 {
				t.Errorf("Open of a %d-byte file allocated %d bytes", len(tc.b), alloc)
			}
			st.Compaction = nil
			if diff := cmp.Diff(tc.want, st, equate); diff != "" {
				t.Errorf("State (-want +got):\n%s", diff)
			}
		})
	}
}

// syncCount counts the fdatasyncs of the data file.
type syncCount struct {
	file
	n *int
}

func (f syncCount) Sync() error { *f.n++; return f.file.Sync() }

// TestSyncOnlyWhenWritten: Sync costs an fdatasync only when something was written since the
// last one, and Close syncs what is left.
func TestSyncOnlyWhenWritten(t *testing.T) {
	var n int
	s, _ := openSpool(t, t.TempDir(), Options{wrap: func(f file) file { return syncCount{f, &n} }})
	steps := []struct {
		name string
		do   func()
		want int
	}{
		{"nothing written", func() {}, 0},
		{"Add", func() { add(t, s, rec(1, "g"), rec(2, "g")) }, 1},
		{"nothing since", func() {}, 1},
		{"SetRoot", func() { setRoot(t, s, Root{"g", "2026-12-05", "r@x"}) }, 2},
		{"Done", func() { done(t, s, 1) }, 3},
		{"Done of nothing waiting", func() { done(t, s, 1) }, 3},
	}
	for _, st := range steps {
		st.do()
		if err := s.Sync(); err != nil {
			t.Fatal(err)
		}
		if n != st.want {
			t.Errorf("after %s and Sync: %d fdatasyncs, want %d", st.name, n, st.want)
		}
	}
	add(t, s, rec(3, "g"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n != 4 {
		t.Errorf("Close after an Add: %d fdatasyncs, want 4", n)
	}
}

// forge is a frame as someone who knows the format and not the file builds it: kind, length,
// the body's CRC-32C, the CRC-32C of those 9 bytes, the body.
func forge(kind byte, body []byte) []byte {
	b := []byte{kind}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(body)))
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(body, crc32.MakeTable(crc32.Castagnoli)))
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)))
	return append(b, body...)
}

// TestFramesInsidePayloadsAreNotFrames: a record's payload is data from outside (a log line)
// and may hold bytes built to look like frames: a Done frame for the other records, a record
// of the sender's choosing. When that record's own header is lost (a crash that wrote its
// body's page and not its header's), the search for the next frame must not take them.
func TestFramesInsidePayloadsAreNotFrames(t *testing.T) {
	var done []byte
	for seq := uint64(1); seq <= 8; seq++ {
		done = binary.LittleEndian.AppendUint64(done, seq)
	}
	fake := rec(666, "g")
	fake.Seq = 2
	var forged []byte
	forged = append(forged, forge('D', done)...)
	forged = append(forged, forge('R', appendRecord(nil, &fake))...)
	evil := rec(2, "g")
	evil.Payload = append(append([]byte(`{"msg":"`), forged...), `"}`...)
	for _, tc := range []struct {
		name  string
		after bool // a good record follows the damaged one
	}{{"damaged record in the middle", true}, {"damaged record at the end", false}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s, _ := openSpool(t, dir, Options{})
			add(t, s, rec(1, "g"))
			at := s.Size()
			add(t, s, evil)
			want := []Record{withSeq(rec(1, "g"), 1)}
			if tc.after {
				add(t, s, rec(3, "g"))
				want = append(want, withSeq(rec(3, "g"), 3))
			}
			kill(s)
			b, _ := os.ReadFile(Path(dir, "out"))
			clear(b[at : at+headerSize]) // the header's page never reached the disk
			writeFile(t, dir, b)
			_, st := openSpool(t, dir, Options{})
			if diff := cmp.Diff(want, st.Waiting, equate); diff != "" {
				t.Errorf("waiting after the evil record's header was lost (-want +got):\n%s", diff)
			}
		})
	}
}

// TestSaltFromTheHeadFrameOrTheLockFile: the salt every header checksum covers is read from
// the head frame, from the lock file when the head frame is damaged, and a file with neither
// is unreadable: cut to nothing, reported, and the spool works on.
func TestSaltFromTheHeadFrameOrTheLockFile(t *testing.T) {
	file, starts := threeRecords(t, t.TempDir())
	all := []Record{withSeq(rec(1, "g"), 1), withSeq(rec(2, "g"), 2), withSeq(rec(3, "g"), 3)}
	lock := "smtpout digest spool salt=" + fmt.Sprintf("%x", fileSalt(file)) + "\n"
	damagedHead := bytes.Clone(file)
	damagedHead[5] ^= 1
	for _, tc := range []struct {
		name string
		b    []byte
		lock string // the lock file's content ("": none)
		want State
	}{
		{"head frame and lock file", file, lock, State{Waiting: all}},
		{"head frame, no lock file", file, "", State{Waiting: all}},
		{"damaged head frame, lock file", damagedHead, lock, State{Waiting: all, Damaged: 1}},
		{"damaged head frame, no lock file", damagedHead, "", State{Truncated: starts[3]}},
		{"damaged head frame, damaged lock file", damagedHead, lock[:20], State{Truncated: starts[3]}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, dir, tc.b)
			if tc.lock != "" {
				if err := os.WriteFile(Path(dir, "out")+LockSuffix, []byte(tc.lock), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			s, st := openSpool(t, dir, Options{})
			st.Compaction = nil
			if diff := cmp.Diff(tc.want, st, equate); diff != "" {
				t.Errorf("State (-want +got):\n%s", diff)
			}
			seq := add(t, s, rec(4, "g"))[0]
			s.Close()
			if b, _ := os.ReadFile(Path(dir, "out") + LockSuffix); !strings.HasPrefix(string(b), saltPrefix) || len(b) != len(lock) {
				t.Errorf("lock file holds %q, want the salt", b)
			}
			// Whatever was found, the file is sound again: nothing damaged, the new record kept.
			_, st = openSpool(t, dir, Options{})
			want := append(tc.want.Waiting[:len(tc.want.Waiting):len(tc.want.Waiting)], withSeq(rec(4, "g"), seq))
			if diff := cmp.Diff(State{Waiting: want}, st, equate); diff != "" {
				t.Errorf("State after an Add and reopening (-want +got):\n%s", diff)
			}
		})
	}
}

// TestCutBackIgnoresTheBackOff: rewrites keep failing (a full disk: the new file finds no
// room), and the back-off holds them; once nothing waits, the cut-back (a truncation, which
// needs no room and frees it) runs all the same.
func TestCutBackIgnoresTheBackOff(t *testing.T) {
	dir := t.TempDir()
	blockCompaction(t, dir)
	var comps []Compaction
	s, _ := openSpool(t, dir, Options{OnCompact: func(c Compaction) { comps = append(comps, c) }})
	r := rec(1, "g")
	r.Payload = bytes.Repeat([]byte("z"), 2048)
	held := add(t, s, r)
	for range 600 { // 1.2 MiB of dead frames: a rewrite is tried, and fails
		done(t, s, add(t, s, r)...)
	}
	if len(comps) != 1 || comps[0].Err == nil {
		t.Fatalf("compactions: %+v, want one failed rewrite", comps)
	}
	big := s.Size()
	done(t, s, held...)
	if got := s.Size(); got > 2*headSize {
		t.Errorf("nothing waits, and the file is %d bytes (was %d): not cut back during the back-off", got, big)
	}
}
