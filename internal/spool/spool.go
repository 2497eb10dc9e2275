// Package spool keeps one output instance's records that wait for their group's digest on
// disk, in ledger_dir, so a process killed with SIGKILL loses none of them: the file
// "<name>.digest" holds one CRC-32C framed record per waiting record (Add, one pwrite(2)
// each), a frame naming the records a delivered digest carried (Done), and each group's thread
// root (SetRoot). Sync (fdatasync) makes them survive a power loss; the caller batches it once
// per flush.
//
// A torn tail (a crash mid-write, a full disk) is cut back to the last whole frame at Open and
// reported (State.Truncated); a damaged frame inside the file is skipped and counted
// (State.Damaged) and the good frames after it are kept, even when its length field is the
// damaged part (Open then finds the next frame by its header checksum). A failed write never
// leaves a partial frame behind: the file is cut back and the error returned.
//
// The file stays small without a background task: when a Done leaves nothing waiting, the file
// is cut back to its thread roots; when dead bytes exceed the live ones and 1 MiB, the live
// frames are rewritten into "<name>.digest.compact", which is synced and renamed over the
// file. A compaction that fails (a full disk) is no error of Done or SetRoot: the old file
// stays in use, the failure is reported (LastCompaction, Options.OnCompact) and the next try
// waits, longer after each failure in a row.
//
// Each spool holds an exclusive flock(2) on "<name>.digest.lock" beside its file for as long
// as it is open, so a second opener (another process, or another instance of this one) gets
// ErrLocked. The lock file also keeps a copy of the file's salt, which every frame's header
// checksum covers so that bytes inside a payload can never pass for a frame (frame.go). The
// package does no cgo and never logs: errors name the file.
package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Record is one record waiting for its group's digest.
type Record struct {
	Seq       uint64 // assigned by Add; unique within the file's life
	Group     string // the pipeline's opaque group key
	MessageID string // the record's single-email Message-ID
	Tag       string
	Time      time.Time
	Payload   []byte // the record's JSON payload
}

// Root is a group's thread root: the Message-ID of its first email of a UTC day.
type Root struct{ Group, Day, MessageID string } // Day "2006-01-02"

// Defaults and limits.
const (
	// DefaultMaxBytes is the default bound on the live bytes of a spool.
	DefaultMaxBytes = 256 << 20
	// CompactRetryMin is how long a spool waits after a failed compaction before it tries
	// again; the wait doubles with each failure in a row, up to CompactRetryMax.
	CompactRetryMin = time.Minute
	// CompactRetryMax bounds the wait between failed compactions.
	CompactRetryMax = time.Hour
	// compactMinDead is how many dead bytes a file holds at least before it is rewritten.
	compactMinDead = 1 << 20
	// dayLayout is the layout of Root.Day.
	dayLayout = "2006-01-02"
)

// Suffixes of the files a spool named N keeps in its directory: N.digest, N.digest.lock
// and, while a compaction runs, N.digest.compact.
const (
	FileSuffix = ".digest"
	LockSuffix = ".lock"
	tmpSuffix  = ".compact"
)

// ErrLocked means another spool (in this or another process) holds the lock of the file.
var ErrLocked = errors.New("digest spool file is locked by another Fluent Bit instance or process")

// ErrFull means a record does not fit under Options.MaxBytes.
var ErrFull = errors.New("digest spool is full")

// Options tune a Spool; the zero value gives the defaults.
type Options struct {
	// MaxBytes bounds the live bytes (waiting records and thread roots, as framed on disk):
	// Add returns ErrFull beyond it (DefaultMaxBytes).
	MaxBytes int64
	// Now is the clock (time.Now); it dates the roots kept and the compaction back-off.
	Now func() time.Time
	// OnCompact, when set, is called with the result of every compaction and cut-back, after
	// the Done or SetRoot that ran it has released the spool.
	OnCompact func(Compaction)
	// wrap, for tests, wraps the data files to inject write failures.
	wrap func(file) file
	// syncDir, for tests, replaces the fsync of the directory (fsyncDir).
	syncDir func(dir string) error
}

// State is what Open found in the file.
type State struct {
	// Waiting are the records not yet Done, in Seq order.
	Waiting []Record
	// Roots are the latest root of each group, by Group; roots older than yesterday (UTC)
	// are left out.
	Roots []Root
	// Damaged is how many damaged frames inside the file (good ones follow them) were
	// skipped.
	Damaged int
	// Truncated is how many bytes of a torn or damaged tail were cut off (the whole file when
	// both its head frame and the lock file's copy of its salt were lost: nothing in it can be
	// checked).
	Truncated int64
	// Created is true when Open created the file.
	Created bool
	// SyncErr is a failed fsync of the directory after the file was created: the file may
	// not survive a power loss (Open goes on).
	SyncErr error
	// Compaction is the compaction Open ran to rewrite a damaged or mostly dead file, when it
	// ran one. A failed one (Compaction.Err) does not fail Open.
	Compaction *Compaction
}

// Compaction is the result of one compaction or cut-back of the file.
type Compaction struct {
	Before, After int64 // file size in bytes
	Err           error
	// Failures is how many compactions in a row have failed, this one included (0 when it
	// succeeded); Retry is how long the spool waits before it tries again.
	Failures int
	Retry    time.Duration
}

// file is what the spool needs of its data file.
type file interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	Truncate(size int64) error
	Sync() error
	Close() error
}

// osFile makes Sync an fdatasync.
type osFile struct{ *os.File }

func (f osFile) Sync() error {
	for {
		if err := syscall.Fdatasync(int(f.Fd())); err != syscall.EINTR {
			return err
		}
	}
}

// span is where a frame lies in the file.
type span struct{ off, n int64 }

// rootAt is a root and its frame.
type rootAt struct {
	Root
	span
}

// Spool is one open spool file. Safe for concurrent use.
type Spool struct {
	opt  Options
	path string
	lock *os.File

	// syncMu serialises Sync against Done, SetRoot and Close (which may compact and swap the
	// file); Add takes only mu, so it never waits for an fdatasync.
	syncMu sync.Mutex

	mu        sync.Mutex
	f         file
	size      int64             // bytes of whole frames
	live      map[uint64]span   // the waiting records
	liveBytes int64             // their frames' bytes
	roots     map[string]rootAt // the latest root of each group
	rootBytes int64             // their frames' bytes
	nextSeq   uint64
	salt      []byte   // the file's salt (frame.go)
	pending   []uint64 // Done Seqs whose frame could not be written yet
	base      int64    // end of the leading head and root frames: a cut-back keeps these
	clean     int64    // size after the last compaction or cut-back: nothing dead past it
	dirty     bool     // written since the last Sync
	closed    bool
	failures  int       // compactions failed in a row
	retryAt   time.Time // no compaction before this, after a failure
	last      Compaction
	buf       []byte
}

// Path returns the data file's path: dir/name + FileSuffix.
func Path(dir, name string) string { return filepath.Join(dir, name+FileSuffix) }

// dropOldRoots forgets the roots of days before yesterday (UTC): no email of today can
// thread to them.
func (s *Spool) dropOldRoots() {
	oldest := s.opt.Now().UTC().AddDate(0, 0, -1).Format(dayLayout)
	for g, r := range s.roots {
		if r.Day < oldest {
			delete(s.roots, g)
			s.rootBytes -= r.n
		}
	}
}

// liveSize is the size a compaction would leave.
func (s *Spool) liveSize() int64 { return headSize + s.rootBytes + s.liveBytes }

// mostlyDead reports whether the file holds more dead bytes than live ones, and over 1 MiB.
func (s *Spool) mostlyDead() bool {
	dead := s.size - s.liveSize()
	return dead > s.liveSize() && dead > compactMinDead
}

// frame returns a buffer of n bytes' capacity for one frame, its header left to sealFrame.
func (s *Spool) frame(n int64) []byte {
	if int64(cap(s.buf)) < n {
		s.buf = make([]byte, 0, max(n, 4096))
	}
	return s.buf[:headerSize]
}

// release drops a frame buffer grown past 1 MiB by a large record.
func (s *Spool) release() {
	if cap(s.buf) > 1<<20 {
		s.buf = nil
	}
}

// write appends the frame b with one pwrite and returns its offset; the first frame of an
// empty file goes with the head frame. On failure nothing of it stays in the file.
func (s *Spool) write(b []byte) (int64, error) {
	off, at := s.size, s.size
	if off == 0 {
		h := appendHead(make([]byte, headerSize, headSize+len(b)), s.nextSeq, s.salt)
		sealFrame(h, kindHead, nil)
		b = append(h, b...)
		at = headSize
	}
	n, err := s.f.WriteAt(b, off)
	if err != nil || n != len(b) {
		if err == nil {
			err = fmt.Errorf("short write of %d of %d bytes", n, len(b))
		}
		// Cut back whatever part of the frame reached the file, even when n says none did:
		// on a full tmpfs pwrite stores a partial frame and Go reports 0 bytes.
		if terr := s.f.Truncate(off); terr != nil {
			err = errors.Join(err, fmt.Errorf("cut back the partial frame: %w", terr))
		}
		return 0, err
	}
	if off == 0 {
		s.base = headSize // a cut-back keeps the head frame
	}
	s.size += int64(n)
	s.dirty = true
	return at, nil
}

// Add writes r (its Seq is assigned here) at the end of the file with one pwrite, without a
// sync, and returns its Seq. A record that would take the live bytes past Options.MaxBytes
// gets an error wrapping ErrFull. On a write failure (a full disk) nothing of r stays in the
// file and the error is returned; the spool goes on working.
func (s *Spool) Add(r Record) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, fmt.Errorf("add to %s: %w", s.path, os.ErrClosed)
	}
	r.Seq = s.nextSeq
	n := recordSize(&r)
	if n-headerSize > maxBody || s.liveSize()+n > s.opt.MaxBytes {
		return 0, fmt.Errorf("add a record of %d bytes to %s, which holds %d of at most %d: %w", n, s.path, s.liveSize(), s.opt.MaxBytes, ErrFull)
	}
	b := appendRecord(s.frame(n), &r)
	sealFrame(b, kindRecord, s.salt)
	off, err := s.write(b)
	s.release()
	if err != nil {
		return 0, fmt.Errorf("add to %s: %w", s.path, err)
	}
	s.nextSeq++
	s.live[r.Seq] = span{off, n}
	s.liveBytes += n
	return r.Seq, nil
}

// Done records that the records of seqs were delivered (in a digest): they are no longer
// waiting, and Open leaves them out. Seqs that are not waiting are ignored. When the frame
// cannot be written (a full disk) the error is returned, the records count as delivered here
// all the same, and the next Done, compaction or cut-back writes them down; a restart before
// that would hand them back as waiting. Done may compact the file; a failed compaction is no
// error of Done (see LastCompaction).
func (s *Spool) Done(seqs ...uint64) error {
	if err := s.lockAll("mark records done in"); err != nil {
		return err
	}
	all := s.pending
	for _, seq := range seqs {
		if sp, ok := s.live[seq]; ok {
			delete(s.live, seq)
			s.liveBytes -= sp.n
			all = append(all, seq)
		}
	}
	var err error
	if len(all) > 0 {
		b := appendDone(s.frame(headerSize+8*int64(len(all))), all)
		sealFrame(b, kindDone, s.salt)
		_, err = s.write(b)
		s.release()
		s.pending = nil
		if err != nil {
			s.pending = all
		}
	}
	c := s.maybeCompact(len(all) > 0)
	if err != nil && len(s.pending) == 0 {
		err = nil // a compaction or cut-back wrote the file without them
	}
	s.unlockAll(c)
	if err != nil {
		return fmt.Errorf("mark %d records done in %s: %w", len(s.pending), s.path, err)
	}
	return nil
}

// SetRoot records r as its group's thread root, replacing the group's earlier one. Setting
// the root a group already has writes nothing.
func (s *Spool) SetRoot(r Root) error {
	if err := s.lockAll("set a thread root in"); err != nil {
		return err
	}
	if cur, ok := s.roots[r.Group]; ok && cur.Root == r {
		s.unlockAll(nil)
		return nil
	}
	n := rootSize(r)
	b := appendRoot(s.frame(n), r)
	sealFrame(b, kindRoot, s.salt)
	off, err := s.write(b)
	s.release()
	var c *Compaction
	if err == nil {
		if old, ok := s.roots[r.Group]; ok {
			s.rootBytes -= old.n
		}
		s.roots[r.Group] = rootAt{r, span{off, n}}
		s.rootBytes += n
		c = s.maybeCompact(false)
	}
	s.unlockAll(c)
	if err != nil {
		return fmt.Errorf("set a thread root in %s: %w", s.path, err)
	}
	return nil
}

// lockAll takes syncMu and mu for a change that may compact the file; on a closed spool it
// takes neither and returns an error saying what could not be done.
func (s *Spool) lockAll(what string) error {
	s.syncMu.Lock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.syncMu.Unlock()
		return fmt.Errorf("%s %s: %w", what, s.path, os.ErrClosed)
	}
	return nil
}

// unlockAll releases what lockAll took, then hands the compaction the change ran, if any, to
// Options.OnCompact.
func (s *Spool) unlockAll(c *Compaction) {
	s.mu.Unlock()
	s.syncMu.Unlock()
	if c != nil && s.opt.OnCompact != nil {
		s.opt.OnCompact(*c)
	}
}

// Sync makes every frame written so far durable (fdatasync), when any was written since the
// last Sync. Adds go on while the fdatasync runs.
func (s *Spool) Sync() error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	s.mu.Lock()
	if s.closed || !s.dirty {
		s.mu.Unlock()
		return nil
	}
	f := s.f
	s.dirty = false // frames written from here on make it dirty again
	s.mu.Unlock()
	if err := f.Sync(); err != nil {
		s.mu.Lock()
		s.dirty = true
		s.mu.Unlock()
		return fmt.Errorf("fdatasync %s: %w", s.path, err)
	}
	return nil
}

// Waiting returns how many records wait (added, not Done).
func (s *Spool) Waiting() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.live)
}

// Size returns the data file's size in bytes.
func (s *Spool) Size() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.size
}

// Path returns the data file's path.
func (s *Spool) Path() string { return s.path }

// LastCompaction returns the result of the last compaction or cut-back (the zero Compaction
// before the first): a failed one has Err set, and the spool goes on with its old file.
func (s *Spool) LastCompaction() Compaction {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// Close syncs the file, closes it and releases the lock. Later calls fail with an error
// wrapping os.ErrClosed. Safe to call twice.
func (s *Spool) Close() error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var err error
	if s.dirty {
		if serr := s.f.Sync(); serr != nil {
			err = fmt.Errorf("fdatasync %s: %w", s.path, serr)
		}
	}
	if cerr := s.f.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("close %s: %w", s.path, cerr)
	}
	s.unlock()
	return err
}
