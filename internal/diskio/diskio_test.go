package diskio

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestLockIsExclusive: a second open file description of the same file cannot take the lock
// while the first holds it, and can once it is released.
func TestLockIsExclusive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.lock")
	open := func() *os.File {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	a, b := open(), open()
	defer b.Close()
	if err := Lock(a); err != nil {
		t.Fatalf("first Lock: %v", err)
	}
	if err := Lock(b); !errors.Is(err, syscall.EWOULDBLOCK) {
		t.Fatalf("second Lock while held = %v, want EWOULDBLOCK", err)
	}
	Unlock(a)
	if err := Lock(b); err != nil {
		t.Fatalf("Lock after Unlock: %v", err)
	}
}

// TestSyncDir: a directory syncs; a missing one is an error naming it.
func TestSyncDir(t *testing.T) {
	dir := t.TempDir()
	if err := SyncDir(dir); err != nil {
		t.Errorf("SyncDir(%s) = %v", dir, err)
	}
	missing := filepath.Join(dir, "missing")
	if err := SyncDir(missing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("SyncDir(missing) = %v, want ErrNotExist", err)
	}
}
