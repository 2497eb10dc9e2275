package spool

import (
	"bytes"
	"encoding/hex"
	"os"
	"runtime"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// seedFile is a spool file holding records, a Done frame, roots and a head frame.
func seedFile(t testing.TB) []byte {
	dir := t.TempDir()
	s, _, err := Open(dir, "out", Options{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	s.SetRoot(Root{"a", "2026-12-05", "a@x"})
	for i := range 4 {
		s.Add(rec(i, "a"))
	}
	s.Done(1, 3)
	s.Done(2, 4) // nothing waiting: cut back, head frame
	s.Add(rec(5, "b"))
	s.SetRoot(Root{"b", "2026-12-04", "b@x"})
	s.Add(rec(6, "b"))
	s.Done(5)
	s.Close()
	b, err := os.ReadFile(Path(dir, "out"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// noSync skips every fsync: the fuzzer runs thousands of Opens, and an fsync on a loaded
// machine can take seconds.
var noSync = Options{Now: clock, wrap: func(f file) file { return unsynced{f} }, syncDir: func(string) error { return nil }}

type unsynced struct{ file }

func (unsynced) Sync() error { return nil }

// FuzzOpen opens arbitrary bytes as a spool file: Open never panics, never allocates much
// more than the file's size, and what it keeps is stable: a second Open finds the same
// records and roots, and no damage.
func FuzzOpen(f *testing.F) {
	good := seedFile(f)
	f.Add(good)
	f.Add(good[:len(good)-5])
	damaged := bytes.Clone(good)
	damaged[len(good)/2] ^= 0xff
	f.Add(damaged)
	huge := bytes.Clone(good[:headSize+headerSize])
	copy(huge[headSize+1:], []byte{0xff, 0xff, 0xff, 0x7f}) // a length of 2 GiB
	sealHeader(huge[headSize:], fileSalt(good))
	f.Add(huge)
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte{kindRecord}, 100))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(Path(dir, "out"), data, 0o600); err != nil {
			t.Fatal(err)
		}
		if len(data) >= headSize && data[0]&1 == 0 {
			// Half the time, a lock file with the salt where the head frame keeps it, so a
			// damaged head frame does not make the rest unreadable.
			lock := saltPrefix + hex.EncodeToString(fileSalt(data)) + "\n"
			if err := os.WriteFile(Path(dir, "out")+LockSuffix, []byte(lock), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		s, st, err := Open(dir, "out", noSync)
		runtime.ReadMemStats(&m1)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		if alloc := m1.TotalAlloc - m0.TotalAlloc; alloc > uint64(8*len(data)+1<<20) {
			t.Errorf("Open of %d bytes allocated %d bytes", len(data), alloc)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s, st2, err := Open(dir, "out", noSync)
		if err != nil {
			t.Fatalf("second Open: %v", err)
		}
		defer s.Close()
		if st2.Damaged != 0 || st2.Truncated != 0 {
			t.Errorf("second Open found %d damaged frames and %d bytes to cut (first: %d, %d)", st2.Damaged, st2.Truncated, st.Damaged, st.Truncated)
		}
		if diff := cmp.Diff(st.Waiting, st2.Waiting, equate); diff != "" {
			t.Errorf("records differ between two Opens (-first +second):\n%s", diff)
		}
		if diff := cmp.Diff(st.Roots, st2.Roots, equate); diff != "" {
			t.Errorf("roots differ between two Opens (-first +second):\n%s", diff)
		}
	})
}
