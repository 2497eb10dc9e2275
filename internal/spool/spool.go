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
// ErrLocked. The package does no cgo and never logs: errors name the file.
package spool

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
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
	// Truncated is how many bytes of a torn or damaged tail were cut off.
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

// Open locks and opens dir/name.digest (creating it), and returns what it holds. A torn tail
// is cut off (State.Truncated). It fails with an error wrapping ErrLocked when another spool
// holds the file.
func Open(dir, name string, opt Options) (*Spool, State, error) {
	if opt.MaxBytes <= 0 {
		opt.MaxBytes = DefaultMaxBytes
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	s := &Spool{opt: opt, path: Path(dir, name), nextSeq: 1}
	var st State
	lockPath := s.path + LockSuffix
	lf, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, st, err
	}
	if err := flock(lf); err != nil {
		lf.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, st, fmt.Errorf("%s: %w", lockPath, ErrLocked)
		}
		return nil, st, &os.PathError{Op: "flock", Path: lockPath, Err: err}
	}
	s.lock = lf
	_, statErr := os.Lstat(s.path)
	f, err := os.OpenFile(s.path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		s.unlock()
		return nil, st, err
	}
	if os.IsNotExist(statErr) {
		st.Created = true
		if err := s.syncDir(); err != nil {
			st.SyncErr = fmt.Errorf("fsync the directory of the new %s: %w", s.path, err)
		}
	}
	s.f = s.wrap(osFile{f})
	fi, err := f.Stat()
	if err == nil {
		err = s.load(fi.Size(), &st)
	}
	if err != nil {
		s.f.Close()
		s.unlock()
		return nil, st, err
	}
	if st.Damaged > 0 || s.mostlyDead() {
		c := s.compact()
		st.Compaction = &c
	}
	return s, st, nil
}

func (s *Spool) wrap(f file) file {
	if s.opt.wrap != nil {
		return s.opt.wrap(f)
	}
	return f
}

func flock(f *os.File) error {
	for {
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != syscall.EINTR {
			return err
		}
	}
}

func (s *Spool) unlock() {
	if s.lock != nil {
		_ = syscall.Flock(int(s.lock.Fd()), syscall.LOCK_UN)
		s.lock.Close()
		s.lock = nil
	}
}

func (s *Spool) syncDir() error {
	if s.opt.syncDir != nil {
		return s.opt.syncDir(filepath.Dir(s.path))
	}
	return fsyncDir(filepath.Dir(s.path))
}

// fsyncDir makes the directory's entries (a created or renamed file) durable.
func fsyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// load reads the file's frames into s and st, and cuts off a bad tail.
func (s *Spool) load(size int64, st *State) error {
	w := &window{r: s.f, size: size}
	var (
		recs     = make(map[uint64]Record)
		spans    = make(map[uint64]span)
		done     = make(map[uint64]bool)
		maxSeq   uint64
		off      int64
		runStart int64  = -1 // first bad frame since the last good one
		run      int         // bad frames since the last good one
		inPrefix = true      // only head and root frames so far
	)
	s.roots = make(map[string]rootAt)
	bad := func(at int64) {
		if runStart < 0 {
			runStart = at
		}
		run++
		inPrefix = false
	}
	for size-off >= headerSize {
		hb, err := w.bytes(off, headerSize)
		if err != nil {
			return fmt.Errorf("read %s: %w", s.path, err)
		}
		h, ok := parseHeader(hb)
		if ok && h.n > size-off-headerSize {
			break // a frame longer than the rest of the file: the torn tail
		}
		if !ok {
			next, found, err := s.resync(w, off+1)
			if err != nil {
				return err
			}
			if !found {
				break
			}
			bad(off)
			off = next
			continue
		}
		b, err := w.bytes(off+headerSize, h.n)
		if err != nil {
			return fmt.Errorf("read %s: %w", s.path, err)
		}
		at := span{off, headerSize + h.n}
		if !s.apply(h, b, at, recs, spans, done, &maxSeq) {
			bad(off)
			off += at.n
			continue
		}
		st.Damaged += run
		run, runStart = 0, -1
		if inPrefix && h.kind != kindHead && h.kind != kindRoot {
			inPrefix = false
		}
		off += at.n
		if inPrefix {
			s.base = off
		}
	}
	cut := off
	if runStart >= 0 {
		cut = runStart
	}
	if cut < size {
		if err := s.f.Truncate(cut); err != nil {
			return fmt.Errorf("cut the torn tail of %s: %w", s.path, err)
		}
		st.Truncated = size - cut
	}
	s.size, s.clean = cut, s.base
	s.nextSeq = max(s.nextSeq, maxSeq+1)
	s.live = make(map[uint64]span, len(recs))
	for seq, r := range recs {
		if done[seq] {
			continue
		}
		st.Waiting = append(st.Waiting, r)
		s.live[seq] = spans[seq]
		s.liveBytes += spans[seq].n
	}
	slices.SortFunc(st.Waiting, func(a, b Record) int { return cmp.Compare(a.Seq, b.Seq) })
	s.dropOldRoots()
	for _, r := range s.roots {
		st.Roots = append(st.Roots, r.Root)
	}
	slices.SortFunc(st.Roots, func(a, b Root) int { return cmp.Compare(a.Group, b.Group) })
	return nil
}

// apply takes one frame whose header is good into the maps; false means its body is damaged.
func (s *Spool) apply(h header, b []byte, at span, recs map[uint64]Record, spans map[uint64]span, done map[uint64]bool, maxSeq *uint64) bool {
	if crc32Checksum(b) != h.bodyCRC {
		return false
	}
	switch h.kind {
	case kindHead:
		next, err := decodeHead(b)
		if err != nil {
			return false
		}
		s.nextSeq = max(s.nextSeq, next)
	case kindRecord:
		r, err := decodeRecord(b)
		if err != nil {
			return false
		}
		recs[r.Seq], spans[r.Seq] = r, at
		*maxSeq = max(*maxSeq, r.Seq)
	case kindDone:
		seqs, err := decodeDone(b)
		if err != nil {
			return false
		}
		for _, seq := range seqs {
			done[seq] = true
			*maxSeq = max(*maxSeq, seq)
		}
	case kindRoot:
		r, err := decodeRoot(b)
		if err != nil {
			return false
		}
		if old, ok := s.roots[r.Group]; ok {
			s.rootBytes -= old.n
		}
		s.roots[r.Group] = rootAt{r, at}
		s.rootBytes += at.n
	}
	return true
}

// resync finds the first whole, good frame at or after from: a good header that fits in the
// file and a body that matches its checksum. Testing a header costs one 9-byte checksum, and
// a body is checksummed only behind a good header, so the scan is linear in the file's size.
func (s *Spool) resync(w *window, from int64) (int64, bool, error) {
	for p := from; w.size-p >= headerSize; {
		k := min(windowSize, w.size-p)
		b, err := w.bytes(p, k)
		if err != nil {
			return 0, false, fmt.Errorf("read %s: %w", s.path, err)
		}
		cand := int64(-1)
		var h header
		for i := int64(0); i+headerSize <= k; i++ {
			if !validKind(b[i]) {
				continue
			}
			var ok bool
			if h, ok = parseHeader(b[i : i+headerSize]); ok && h.n <= w.size-(p+i)-headerSize {
				cand = p + i
				break
			}
		}
		if cand < 0 {
			p += k - headerSize + 1
			continue
		}
		body, err := w.bytes(cand+headerSize, h.n)
		if err != nil {
			return 0, false, fmt.Errorf("read %s: %w", s.path, err)
		}
		if crc32Checksum(body) == h.bodyCRC {
			return cand, true, nil
		}
		p = cand + 1
	}
	return 0, false, nil
}

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

// write appends the frame b with one pwrite. On failure nothing of it stays in the file.
func (s *Spool) write(b []byte) (int64, error) {
	off := s.size
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
	s.size += int64(n)
	s.dirty = true
	return off, nil
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
	sealFrame(b, kindRecord)
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
	s.syncMu.Lock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.syncMu.Unlock()
		return fmt.Errorf("mark records done in %s: %w", s.path, os.ErrClosed)
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
		sealFrame(b, kindDone)
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
	s.mu.Unlock()
	s.syncMu.Unlock()
	s.report(c)
	if err != nil {
		return fmt.Errorf("mark %d records done in %s: %w", len(s.pending), s.path, err)
	}
	return nil
}

// SetRoot records r as its group's thread root, replacing the group's earlier one. Setting
// the root a group already has writes nothing.
func (s *Spool) SetRoot(r Root) error {
	s.syncMu.Lock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.syncMu.Unlock()
		return fmt.Errorf("set a thread root in %s: %w", s.path, os.ErrClosed)
	}
	if cur, ok := s.roots[r.Group]; ok && cur.Root == r {
		s.mu.Unlock()
		s.syncMu.Unlock()
		return nil
	}
	n := rootSize(r)
	b := appendRoot(s.frame(n), r)
	sealFrame(b, kindRoot)
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
	s.mu.Unlock()
	s.syncMu.Unlock()
	s.report(c)
	if err != nil {
		return fmt.Errorf("set a thread root in %s: %w", s.path, err)
	}
	return nil
}

func (s *Spool) report(c *Compaction) {
	if c != nil && s.opt.OnCompact != nil {
		s.opt.OnCompact(*c)
	}
}

// maybeCompact cuts the file back to its roots when a Done left nothing waiting (done), or
// rewrites it when it is mostly dead, unless a failure's back-off is running. The caller holds
// syncMu and mu.
func (s *Spool) maybeCompact(done bool) *Compaction {
	if s.opt.Now().Before(s.retryAt) {
		return nil
	}
	var c Compaction
	switch {
	case done && len(s.live) == 0 && s.size > s.clean:
		if s.rootsInBase() {
			c = s.cutBack()
		} else {
			c = s.compact()
		}
	case s.mostlyDead():
		c = s.compact()
	default:
		return nil
	}
	return &c
}

// rootsInBase reports whether every root lies in the leading frames a cut-back keeps.
func (s *Spool) rootsInBase() bool {
	for _, r := range s.roots {
		if r.off >= s.base {
			return false
		}
	}
	return true
}

// cutBack truncates the file to its leading head and root frames (nothing is waiting), then
// appends a head frame so Seqs stay unique. A crash before the truncation reaches the disk
// leaves the old file, which holds the same waiting records or, without the unsynced Done
// frames, hands some back again.
func (s *Spool) cutBack() Compaction {
	c := Compaction{Before: s.size}
	if err := s.f.Truncate(s.base); err != nil {
		return s.failed(c, fmt.Errorf("truncate to %d bytes: %w", s.base, err))
	}
	s.size, s.pending = s.base, nil
	b := appendHead(s.frame(headSize), s.nextSeq)
	sealFrame(b, kindHead)
	_, _ = s.write(b) // without it a restart may reuse the Seqs of records already done
	s.clean = s.size
	s.failures, s.retryAt = 0, time.Time{}
	c.After = s.size
	s.last = c
	return c
}

// failed records a failed compaction and its back-off.
func (s *Spool) failed(c Compaction, err error) Compaction {
	s.failures++
	c.Failures = s.failures
	c.Retry = min(CompactRetryMin<<min(s.failures-1, 16), CompactRetryMax)
	s.retryAt = s.opt.Now().Add(c.Retry)
	c.Err = fmt.Errorf("compact %s: %w", s.path, err)
	c.After = s.size
	s.last = c
	return c
}

// compact rewrites the live frames (a head frame, the roots, the waiting records in Seq order)
// into N.digest.compact, syncs it and renames it over the file. On failure the old file stays
// in use. The caller holds syncMu and mu.
func (s *Spool) compact() Compaction {
	c := Compaction{Before: s.size}
	tmp := s.path + tmpSuffix
	of, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return s.failed(c, err)
	}
	nf := s.wrap(osFile{of})
	discard := func(err error) Compaction {
		nf.Close()
		os.Remove(tmp)
		return s.failed(c, err)
	}
	s.dropOldRoots()
	roots := make([]rootAt, 0, len(s.roots))
	for _, r := range s.roots {
		roots = append(roots, r)
	}
	slices.SortFunc(roots, func(a, b rootAt) int { return cmp.Compare(a.Group, b.Group) })
	seqs := make([]uint64, 0, len(s.live))
	for seq := range s.live {
		seqs = append(seqs, seq)
	}
	slices.Sort(seqs)

	var (
		out  = make([]byte, 0, min(windowSize, max(s.liveSize(), 4096)))
		off  int64
		werr error
	)
	flush := func() {
		if werr == nil && len(out) > 0 {
			if _, werr = nf.WriteAt(out, off); werr == nil {
				off += int64(len(out))
			}
		}
		out = out[:0]
	}
	put := func(n int64, fill func([]byte) error) {
		if int64(len(out))+n > int64(cap(out)) {
			flush()
		}
		if n > int64(cap(out)) { // a frame bigger than the buffer goes on its own
			if werr != nil {
				return
			}
			b := make([]byte, n)
			if werr = fill(b); werr == nil {
				if _, werr = nf.WriteAt(b, off); werr == nil {
					off += n
				}
			}
			return
		}
		k := len(out)
		out = out[:k+int(n)]
		if werr == nil {
			werr = fill(out[k:])
		}
	}
	at := func() int64 { return off + int64(len(out)) }
	put(headSize, func(b []byte) error {
		sealFrame(appendHead(b[:headerSize], s.nextSeq), kindHead)
		return nil
	})
	newRoots := make(map[string]rootAt, len(roots))
	for _, r := range roots {
		sp := span{at(), r.n}
		put(r.n, func(b []byte) error {
			sealFrame(appendRoot(b[:headerSize], r.Root), kindRoot)
			return nil
		})
		newRoots[r.Group] = rootAt{r.Root, sp}
	}
	base := at()
	newLive := make(map[uint64]span, len(seqs))
	for _, seq := range seqs {
		old := s.live[seq]
		newLive[seq] = span{at(), old.n}
		put(old.n, func(b []byte) error {
			if k, err := s.f.ReadAt(b, old.off); int64(k) < old.n {
				return fmt.Errorf("read the record at offset %d: %w", old.off, err)
			}
			return nil
		})
	}
	flush()
	if werr == nil {
		werr = nf.Sync()
	}
	if werr != nil {
		return discard(werr)
	}
	if err := os.Rename(tmp, s.path); err != nil {
		return discard(err)
	}
	// The new file is in place: use it whatever happens next.
	old := s.f
	s.f, s.size, s.base, s.clean = nf, off, base, base
	s.live, s.roots, s.pending, s.dirty = newLive, newRoots, nil, false
	old.Close()
	c.After = off
	if err := s.syncDir(); err != nil {
		return s.failed(c, fmt.Errorf("fsync the directory after the rename: %w", err))
	}
	s.failures, s.retryAt = 0, time.Time{}
	s.last = c
	return c
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
