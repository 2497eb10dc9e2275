// Package journal keeps one output instance's delivery ledger on disk: an append-only file of
// fixed-size records (48 bytes, each with a CRC-32C), one per settled Message-ID or per change
// of an email's deferred recipients. A record is written with one pwrite(2) as soon as the
// caller has it, so a process killed with SIGKILL loses none that were appended; Sync
// (fdatasync) makes them survive a power loss, and the caller batches it once per flush.
//
// The file is bounded by count and by age: Open skips records past either limit, and once the
// file holds Options.MaxEntries plus half again, Append starts a compaction in the background
// that rewrites the live records into a new file and renames it into place while appends go
// on. A compaction that fails (a full disk) is not an error of Open or Append: it is reported,
// and the next attempt waits, longer after each failure. A truncated or corrupt tail (a crash
// mid-write, a full disk) is cut back to the last good record at Open and reported; a damaged
// record inside the file is skipped and counted, and the good records after it are kept. A
// failed write never leaves a partial record behind: the file is cut back to its last whole
// record and the error returned, so the caller can fall back.
//
// Each journal holds an exclusive flock(2) on "<name>.lock" beside its file for as long as it
// is open, so a second opener (another process, or another instance of this one) gets
// ErrLocked instead of a shared, corrupt file. The lock file also records the journal's MaxAge,
// so RemoveStale judges every unused file by its own retention, not by the caller's. The
// package does no cgo and never logs.
package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/smtpout/smtpout/internal/diskio"
)

// RecordSize is the size of one record on disk, in bytes.
const RecordSize = 48

// Defaults of Options.
const (
	// DefaultMaxEntries is how many settled Message-IDs are kept: a day of 5 emails a second.
	DefaultMaxEntries = 500_000
	// DefaultMaxAge is how long a settled Message-ID is kept.
	DefaultMaxAge = 24 * time.Hour
	// CompactRetryMin is how long a journal waits after a failed compaction before it tries
	// again; the wait doubles with each failure in a row, up to CompactRetryMax.
	CompactRetryMin = time.Minute
	// CompactRetryMax bounds the wait between failed compactions.
	CompactRetryMax = time.Hour
)

// Suffixes of the files a journal named N keeps in its directory.
const (
	FileSuffix = ".ledger"
	LockSuffix = ".lock"
	tmpSuffix  = ".compact"
)

// ErrLocked means another journal (in this or another process) holds the lock of the file.
var ErrLocked = errors.New("ledger file is locked by another Fluent Bit instance or process")

// Kind says what one record means.
type Kind byte

// The kinds of record.
const (
	// Settled: the Message-ID is done for good (delivered, or rejected with 5xx).
	Settled Kind = 'S'
	// Deferred: the email reached some recipients; Mask says which envelope recipients (by
	// index in the instance's recipient list) are still owed it. A later Deferred record for
	// the same key replaces it; a Settled record ends it.
	Deferred Kind = 'D'
)

// Key identifies an email: the first 16 bytes of the SHA-256 of its Message-ID.
type Key [16]byte

// Entry is one record.
type Entry struct {
	Kind Kind
	// Time is when the record was written, in Unix nanoseconds.
	Time int64
	Key  Key
	// Mask is the set of owed recipients of a Deferred record (bit i: recipient i).
	Mask uint64
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func (e Entry) encode(b *[RecordSize]byte) {
	*b = [RecordSize]byte{}
	b[0] = byte(e.Kind)
	binary.LittleEndian.PutUint64(b[8:], uint64(e.Time))
	copy(b[16:32], e.Key[:])
	binary.LittleEndian.PutUint64(b[32:], e.Mask)
	binary.LittleEndian.PutUint32(b[44:], crc32.Checksum(b[:44], castagnoli))
}

func decode(b []byte) (Entry, bool) {
	if binary.LittleEndian.Uint32(b[44:]) != crc32.Checksum(b[:44], castagnoli) {
		return Entry{}, false
	}
	e := Entry{Kind: Kind(b[0]), Time: int64(binary.LittleEndian.Uint64(b[8:])), Mask: binary.LittleEndian.Uint64(b[32:])}
	copy(e.Key[:], b[16:32])
	if e.Kind != Settled && e.Kind != Deferred {
		return Entry{}, false
	}
	return e, true
}

// Options tune a Journal; the zero value gives the defaults.
type Options struct {
	// MaxEntries is how many Settled records are kept, newest first (DefaultMaxEntries).
	MaxEntries int
	// MaxAge is how long a record is kept (DefaultMaxAge).
	MaxAge time.Duration
	// Now is the clock (time.Now).
	Now func() time.Time
	// OnCompact, when set, is called after each background compaction with its result.
	OnCompact func(Compaction)
	// wrap, for tests, wraps the data file to inject write failures.
	wrap func(file) file
	// syncDir, for tests, replaces the fsync of the directory (diskio.SyncDir).
	syncDir func(dir string) error
}

// file is what the journal needs of its data file.
type file interface {
	io.ReaderAt
	io.WriterAt
	Truncate(size int64) error
	Sync() error
	Close() error
}

// osFile adds fdatasync to *os.File.
type osFile struct{ *os.File }

func (f osFile) Sync() error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			if err != nil {
				return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
			}
			return nil
		}
	}
}

// Report says what Open found in the file.
type Report struct {
	Path string
	// Loaded is how many records were handed to the load function.
	Loaded int
	// Expired is how many good records were left out for age or count.
	Expired int
	// Cut is how many bytes of a truncated or corrupt tail were removed (0: none); Reason
	// says what was wrong with the first bad record of the tail.
	Cut    int64
	Reason string
	// Damaged is how many damaged records inside the file (good records follow them) were
	// skipped; DamagedAt is the offset of the first.
	Damaged   int
	DamagedAt int64
	// Size is the file's size after Open, in bytes.
	Size int64
	// SyncErr is a failed fsync of the directory after the file was created: the file may
	// not survive a power loss (Open goes on).
	SyncErr error
	// Compaction is the compaction Open ran to drop expired records, when it ran one. A
	// failed one (Compaction.Err) does not fail Open: the file keeps its expired records
	// until a later compaction succeeds.
	Compaction *Compaction
}

// Compaction is the result of one compaction.
type Compaction struct {
	Before, After int64 // file size in bytes
	Err           error
	// Failures is how many compactions in a row have failed, this one included (0 when it
	// succeeded); Retry is how long the journal waits before it tries again.
	Failures int
	Retry    time.Duration
}

// Journal is one open ledger file. Safe for concurrent use.
type Journal struct {
	opt  Options
	path string
	lock *os.File

	syncMu sync.Mutex // serialises Sync, and the file swap of a compaction against it

	mu         sync.Mutex
	f          file
	size       int64 // bytes of whole, good records
	kept       int64 // records the last compaction kept
	dirty      bool  // appended since the last Sync
	compacting bool
	since      []Entry   // appended while a compaction runs
	failures   int       // compactions failed in a row
	retryAt    time.Time // no compaction starts before this, after a failure
	closed     bool
	wg         sync.WaitGroup
	buf        [RecordSize]byte
}

// Path returns the data file's path: dir/name + FileSuffix.
func Path(dir, name string) string { return filepath.Join(dir, name+FileSuffix) }

// Open locks and opens dir/name.ledger (creating it), reads its good records and hands those
// within the limits to load, oldest first. A bad tail is cut off (Report.Cut). It fails with
// an error wrapping ErrLocked when another journal holds the file.
func Open(dir, name string, opt Options, load func(Entry)) (*Journal, Report, error) {
	if opt.MaxEntries <= 0 {
		opt.MaxEntries = DefaultMaxEntries
	}
	if opt.MaxAge <= 0 {
		opt.MaxAge = DefaultMaxAge
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	j := &Journal{opt: opt, path: Path(dir, name)}
	rep := Report{Path: j.path}
	lockPath := filepath.Join(dir, name+LockSuffix)
	lf, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, rep, err
	}
	if err := diskio.Lock(lf); err != nil {
		lf.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, rep, fmt.Errorf("%s: %w", lockPath, ErrLocked)
		}
		return nil, rep, &os.PathError{Op: "flock", Path: lockPath, Err: err}
	}
	j.lock = lf
	recordMaxAge(lf, opt.MaxAge)
	_, statErr := os.Lstat(j.path)
	f, err := os.OpenFile(j.path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		j.unlock()
		return nil, rep, err
	}
	if os.IsNotExist(statErr) {
		// A new file: its directory entry must survive a power loss too. A failure is
		// reported, not fatal, like a failed sync of the records.
		if err := j.syncDir(dir); err != nil {
			rep.SyncErr = fmt.Errorf("fsync the directory of the new %s: %w", j.path, err)
		}
	}
	j.f = osFile{f}
	if opt.wrap != nil {
		j.f = opt.wrap(j.f)
	}
	fi, err := f.Stat()
	if err != nil {
		j.closeFiles()
		return nil, rep, err
	}
	sc, err := scan(j.f, fi.Size())
	if err != nil {
		j.closeFiles()
		return nil, rep, err
	}
	good, bad, reason := sc.good, sc.bad, sc.reason
	rep.Damaged, rep.DamagedAt = sc.damaged, sc.damagedAt
	if bad > 0 {
		if err := j.f.Truncate(good); err != nil {
			j.closeFiles()
			return nil, rep, fmt.Errorf("cut the bad tail of %s: %w", j.path, err)
		}
		rep.Cut, rep.Reason = bad, reason
	}
	j.size = good
	keep, total, err := j.keep(j.f, good)
	if err != nil {
		j.closeFiles()
		return nil, rep, err
	}
	err = each(j.f, good, func(_ int64, e Entry) {
		if keep(e) {
			rep.Loaded++
			load(e)
		}
	})
	if err != nil {
		j.closeFiles()
		return nil, rep, err
	}
	rep.Expired = int(total) - rep.Loaded
	if (rep.Expired > 0 && j.needsCompaction(int64(rep.Expired))) || rep.Damaged > 0 {
		j.compacting = true
		c := j.compact()
		rep.Compaction = &c // a failure is reported, not fatal: appends work on the old file
	}
	rep.Size = j.size
	return j, rep, nil
}

func (j *Journal) unlock() {
	if j.lock != nil {
		diskio.Unlock(j.lock)
		j.lock = nil
	}
}

func (j *Journal) closeFiles() {
	if j.f != nil {
		j.f.Close()
	}
	j.unlock()
}

func (j *Journal) syncDir(dir string) error {
	if j.opt.syncDir != nil {
		return j.opt.syncDir(dir)
	}
	return diskio.SyncDir(dir)
}

// maxAgePrefix starts the content of a lock file: the MaxAge of the journal that last held it.
const maxAgePrefix = "smtpout ledger max_age_ns="

// recordMaxAge writes maxAge into the held lock file, for RemoveStale. A failure (a full disk)
// only means RemoveStale falls back to its caller's age for this file.
func recordMaxAge(lf *os.File, maxAge time.Duration) {
	b := []byte(maxAgePrefix + strconv.FormatInt(int64(maxAge), 10) + "\n")
	if old, err := io.ReadAll(io.NewSectionReader(lf, 0, 256)); err == nil && string(old) == string(b) {
		return
	}
	if lf.Truncate(0) == nil {
		_, _ = lf.WriteAt(b, 0)
	}
}

// recordedMaxAge reads the MaxAge a lock file records; ok is false when it records none (a
// file written before lock files recorded it, or an unreadable one).
func recordedMaxAge(lockPath string) (time.Duration, bool) {
	b, err := os.ReadFile(lockPath)
	if err != nil {
		return 0, false
	}
	v, found := strings.CutPrefix(strings.TrimSpace(string(b)), maxAgePrefix)
	if !found {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return 0, false
	}
	return time.Duration(n), true
}

// scanResult is what scan found in a file.
type scanResult struct {
	good      int64  // end of the last good record: the file's valid length
	bad       int64  // bytes after it: a torn or damaged tail
	reason    string // what was wrong at the start of the tail
	damaged   int    // damaged records before good, skipped
	damagedAt int64  // offset of the first of them
}

// scan checks every whole record of the file. Records are always written at multiples of
// RecordSize, so a damaged record (a flipped bit) is skipped and the records after it are read
// at their own offsets; the damaged records after the last good one, and a partial record at
// the end, are the tail to cut.
func scan(f io.ReaderAt, size int64) (r scanResult, err error) {
	buf := make([]byte, 4096*RecordSize)
	var (
		run      int   // damaged records since the last good one
		runStart int64 // offset of the first of them
	)
	var off int64
	for off < size {
		n, err := f.ReadAt(buf, off)
		if err != nil && err != io.EOF {
			return scanResult{}, err
		}
		whole := n / RecordSize * RecordSize
		if whole == 0 {
			break
		}
		for i := 0; i < whole; i += RecordSize {
			if _, ok := decode(buf[i : i+RecordSize]); !ok {
				if run == 0 {
					runStart = off + int64(i)
				}
				run++
				continue
			}
			if run > 0 {
				if r.damaged == 0 {
					r.damagedAt = runStart
				}
				r.damaged += run
				run = 0
			}
			r.good = off + int64(i) + RecordSize
		}
		off += int64(whole)
	}
	r.bad = size - r.good
	switch {
	case run > 0:
		r.reason = fmt.Sprintf("corrupt record at offset %d", runStart)
	case r.bad > 0:
		r.reason = fmt.Sprintf("partial record of %d bytes at offset %d", r.bad, r.good)
	}
	return r, nil
}

// each calls fn for every good record in [0, end); damaged ones are skipped.
func each(f io.ReaderAt, end int64, fn func(off int64, e Entry)) error {
	buf := make([]byte, 4096*RecordSize)
	for off := int64(0); off < end; {
		want := min(int64(len(buf)), end-off)
		n, err := f.ReadAt(buf[:want], off)
		if int64(n) < want {
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		for i := 0; i < n; i += RecordSize {
			if e, ok := decode(buf[i : i+RecordSize]); ok {
				fn(off+int64(i), e)
			}
		}
		off += int64(n)
	}
	return nil
}

// keep returns the retention rule for the records in [0, end): a record is kept when it is
// younger than MaxAge and, for Settled records, among the newest MaxEntries. total is how
// many records there are.
func (j *Journal) keep(f io.ReaderAt, end int64) (rule func(Entry) bool, total int64, err error) {
	var settled int64
	if err := each(f, end, func(_ int64, e Entry) {
		total++
		if e.Kind == Settled {
			settled++
		}
	}); err != nil {
		return nil, 0, err
	}
	skip := settled - int64(j.opt.MaxEntries) // the oldest Settled records past the count
	oldest := j.opt.Now().Add(-j.opt.MaxAge).UnixNano()
	return func(e Entry) bool {
		if e.Kind == Settled && skip > 0 {
			skip--
			return false
		}
		return e.Time >= oldest
	}, total, nil
}

// needsCompaction reports whether the file holds enough dead records to be worth rewriting:
// extra past those known to be dead now.
func (j *Journal) needsCompaction(dead int64) bool {
	return dead >= int64(j.opt.MaxEntries/2) || dead*2 >= j.size/RecordSize
}

// Append writes e at the end of the file with one pwrite. On failure (a full disk) nothing of
// e stays in the file and the error is returned; the journal goes on working and the next
// Append tries again.
func (j *Journal) Append(e Entry) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return os.ErrClosed
	}
	e.encode(&j.buf)
	n, err := j.f.WriteAt(j.buf[:], j.size)
	if err != nil || n != RecordSize {
		if err == nil {
			err = io.ErrShortWrite
		}
		// Cut back whatever part of the record reached the file, even when n says none did:
		// on a full tmpfs pwrite stores a partial record and Go reports 0 bytes.
		if terr := j.f.Truncate(j.size); terr != nil {
			err = errors.Join(err, fmt.Errorf("cut back the partial record: %w", terr))
		}
		return fmt.Errorf("append to %s: %w", j.path, err)
	}
	j.size += RecordSize
	j.dirty = true
	if j.compacting {
		j.since = append(j.since, e)
		return nil
	}
	if j.size/RecordSize > j.threshold() && !j.opt.Now().Before(j.retryAt) {
		j.compacting = true
		j.wg.Add(1)
		go func() {
			defer j.wg.Done()
			c := j.compact()
			if j.opt.OnCompact != nil {
				j.opt.OnCompact(c)
			}
		}()
	}
	return nil
}

// threshold is the record count past which Append starts a compaction: half again
// MaxEntries, or twice what the last compaction kept when that was more (deferred records
// that are all still live).
func (j *Journal) threshold() int64 {
	return max(int64(j.opt.MaxEntries)*3/2, 2*j.kept)
}

// Sync makes every appended record durable (fdatasync), when any was appended since the last
// Sync.
// Appends go on while the fdatasync runs.
func (j *Journal) Sync() error {
	j.syncMu.Lock()
	defer j.syncMu.Unlock()
	j.mu.Lock()
	if j.closed || !j.dirty {
		j.mu.Unlock()
		return nil
	}
	f := j.f
	j.dirty = false // records appended from here on make it dirty again
	j.mu.Unlock()
	if err := f.Sync(); err != nil {
		j.mu.Lock()
		j.dirty = true
		j.mu.Unlock()
		return fmt.Errorf("sync %s: %w", j.path, err)
	}
	return nil
}

// Path returns the data file's path.
func (j *Journal) Path() string { return j.path }

// Size returns the data file's size in bytes.
func (j *Journal) Size() int64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.size
}

// Compact rewrites the file with only the records within the limits, now. Appends go on
// while it runs.
func (j *Journal) Compact() Compaction {
	j.mu.Lock()
	if j.compacting || j.closed {
		j.mu.Unlock()
		return Compaction{Before: j.Size(), After: j.Size()}
	}
	j.compacting = true
	j.mu.Unlock()
	return j.compact()
}

// compact does the work of Compact; the caller has set j.compacting. The records up to the
// current end are filtered into a new file without the lock; those appended meanwhile are
// added under the lock, then the new file is synced and renamed over the old one.
func (j *Journal) compact() (c Compaction) {
	j.mu.Lock()
	src, end := j.f, j.size
	j.since = nil
	j.mu.Unlock()
	c.Before = end
	tmp := j.path + tmpSuffix
	fail := func(err error) Compaction {
		os.Remove(tmp)
		j.mu.Lock()
		j.compacting, j.since = false, nil
		j.failures++
		c.Failures = j.failures
		c.Retry = CompactRetryMin << min(j.failures-1, 16)
		c.Retry = min(c.Retry, CompactRetryMax)
		j.retryAt = j.opt.Now().Add(c.Retry)
		j.mu.Unlock()
		c.Err = fmt.Errorf("compact %s: %w", j.path, err)
		c.After = c.Before
		return c
	}
	out, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fail(err)
	}
	var nf file = osFile{out}
	if j.opt.wrap != nil {
		nf = j.opt.wrap(nf)
	}
	keep, _, err := j.keep(src, end)
	if err != nil {
		nf.Close()
		return fail(err)
	}
	var (
		w    = make([]byte, 0, 4096*RecordSize)
		off  int64
		werr error
		rec  [RecordSize]byte
	)
	flush := func() {
		if werr == nil && len(w) > 0 {
			_, werr = nf.WriteAt(w, off)
			off += int64(len(w))
		}
		w = w[:0]
	}
	add := func(e Entry) {
		e.encode(&rec)
		w = append(w, rec[:]...)
		if len(w) == cap(w) {
			flush()
		}
	}
	if err := each(src, end, func(_ int64, e Entry) {
		if keep(e) {
			add(e)
		}
	}); err != nil {
		nf.Close()
		return fail(err)
	}
	flush()
	j.syncMu.Lock() // no Sync may be using the old file when it is closed below
	defer j.syncMu.Unlock()
	j.mu.Lock()
	for _, e := range j.since {
		add(e)
	}
	flush()
	if werr == nil {
		werr = nf.Sync()
	}
	if werr == nil {
		werr = os.Rename(tmp, j.path)
	}
	if werr == nil {
		werr = j.syncDir(filepath.Dir(j.path))
	}
	if werr != nil {
		j.mu.Unlock()
		nf.Close()
		return fail(werr)
	}
	old := j.f
	j.f, j.size, j.kept, j.dirty = nf, off, off/RecordSize, false
	j.compacting, j.since = false, nil
	j.failures, j.retryAt = 0, time.Time{}
	j.mu.Unlock()
	old.Close()
	c.After = off
	return c
}

// Close waits for a compaction in progress, syncs the file, closes it and releases the lock.
// Later Appends fail with os.ErrClosed. Safe to call twice.
func (j *Journal) Close() error {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return nil
	}
	j.closed = true
	j.mu.Unlock()
	j.wg.Wait()
	j.syncMu.Lock()
	defer j.syncMu.Unlock()
	j.mu.Lock()
	defer j.mu.Unlock()
	var err error
	if j.dirty {
		if err = j.f.Sync(); err != nil {
			err = fmt.Errorf("sync %s: %w", j.path, err)
		}
	}
	if cerr := j.f.Close(); err == nil {
		err = cerr
	}
	j.unlock()
	return err
}

// RemoveStale deletes the data files in dir of journals nobody holds whose last write is
// older than their own MaxAge (every record in them has expired): the ledgers of
// configurations that no longer run. Each file is judged by the MaxAge its lock file records,
// so an instance with a short ledger_max_age never deletes the ledger of one with a longer
// one; maxAge is used only for a file whose lock file records none. A journal that is open
// (its lock is held, in this process or another) is left alone; the lock files stay, so a
// journal opened meanwhile is never split in two. It returns what it removed.
func RemoveStale(dir string, maxAge time.Duration, now time.Time) ([]Stale, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*"+FileSuffix))
	if err != nil {
		return nil, err
	}
	var removed []Stale
	var errs []error
	for _, p := range paths {
		lockPath := strings.TrimSuffix(p, FileSuffix) + LockSuffix
		age := maxAge
		if a, ok := recordedMaxAge(lockPath); ok {
			age = a
		}
		fi, err := os.Lstat(p)
		if err != nil || !fi.Mode().IsRegular() || now.Sub(fi.ModTime()) < age {
			continue
		}
		lf, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if diskio.Lock(lf) != nil { // in use
			lf.Close()
			continue
		}
		// Check again under the lock: a journal may have been opened and written meanwhile,
		// with another MaxAge.
		if a, ok := recordedMaxAge(lockPath); ok {
			age = a
		}
		if fi, err := os.Lstat(p); err == nil && now.Sub(fi.ModTime()) >= age {
			if err := os.Remove(p); err != nil {
				errs = append(errs, err)
			} else {
				removed = append(removed, Stale{Path: p, MaxAge: age})
			}
		}
		diskio.Unlock(lf)
	}
	return removed, errors.Join(errs...)
}

// Stale is a data file RemoveStale removed, and the MaxAge it was judged by.
type Stale struct {
	Path   string
	MaxAge time.Duration
}
