// Package diskio holds the file-system primitives the plugin's on-disk files (internal/journal's
// ledger, internal/spool's digest spool) share: an exclusive, non-blocking flock(2) that a
// second owner cannot take, and an fsync of a directory that makes a created or renamed file's
// entry durable. It does no cgo and never logs.
package diskio

import (
	"os"
	"syscall"
)

// Lock takes an exclusive flock(2) on f without waiting: it returns syscall.EWOULDBLOCK when
// another open file description (this process's or another's) holds it. An interrupted call
// is retried.
func Lock(f *os.File) error {
	for {
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != syscall.EINTR {
			return err
		}
	}
}

// Unlock releases the flock(2) on f and closes it.
func Unlock(f *os.File) {
	_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	f.Close()
}

// SyncDir makes the directory's entries (a file created or renamed in it) durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
