package spool

// Opening a spool: the lock, the salt, reading the frames back, cutting a torn tail.

import (
	"bytes"
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

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
		var start int64
		if start, err = s.head(fi.Size(), &st); err == nil {
			err = s.load(fi.Size()-st.Truncated, start, &st)
		}
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

// saltPrefix starts the content of a lock file: the salt of the file it locks, a copy of the
// one in the file's head frame for when that frame is damaged.
const saltPrefix = "smtpout digest spool salt="

// lockedSalt reads the salt the lock file records (nil: none).
func (s *Spool) lockedSalt() []byte {
	b, err := io.ReadAll(io.NewSectionReader(s.lock, 0, 256))
	if err != nil {
		return nil
	}
	v, ok := strings.CutPrefix(strings.TrimSpace(string(b)), saltPrefix)
	if !ok {
		return nil
	}
	salt, err := hex.DecodeString(v)
	if err != nil || len(salt) != saltSize {
		return nil
	}
	return salt
}

// head finds the file's salt and returns where its frames after the head frame start. The
// salt comes from the head frame at offset 0 or, when that frame is damaged, from the lock
// file; a file with neither cannot be read (its frames' checksums cover the salt), and is cut
// to nothing (State.Truncated). A new file gets a new salt, written with its first frame.
func (s *Spool) head(size int64, st *State) (start int64, err error) {
	locked := s.lockedSalt()
	if size >= headSize {
		b := make([]byte, headSize)
		if _, err := s.f.ReadAt(b, 0); err != nil {
			return 0, fmt.Errorf("read %s: %w", s.path, err)
		}
		if h, ok := parseHeader(b, nil); ok && h.kind == kindHead && h.n == headSize-headerSize && crc32Checksum(b[headerSize:]) == h.bodyCRC {
			if next, salt, err := decodeHead(b[headerSize:]); err == nil {
				s.salt, s.nextSeq, start = salt, max(s.nextSeq, next), headSize
			}
		}
	}
	if s.salt == nil {
		s.salt = locked
	}
	if s.salt == nil {
		if size > 0 {
			if err := s.f.Truncate(0); err != nil {
				return 0, fmt.Errorf("cut %s, unreadable without its salt: %w", s.path, err)
			}
			st.Truncated = size
		}
		s.salt = make([]byte, saltSize)
		if _, err := rand.Read(s.salt); err != nil {
			return 0, err
		}
	}
	if !bytes.Equal(locked, s.salt) {
		// A failure (a full disk) only loses the copy: the head frame holds the salt.
		if s.lock.Truncate(0) == nil {
			_, _ = s.lock.WriteAt([]byte(saltPrefix+hex.EncodeToString(s.salt)+"\n"), 0)
		}
	}
	return start, nil
}

// load reads the file's frames from start into s and st, and cuts off a bad tail.
func (s *Spool) load(size, start int64, st *State) error {
	w := &window{r: s.f, size: size}
	var (
		recs     = make(map[uint64]Record)
		spans    = make(map[uint64]span)
		done     = make(map[uint64]bool)
		maxSeq   uint64
		off             = start
		runStart int64  = -1 // first bad frame since the last good one
		run      int         // bad frames since the last good one
		inPrefix = true      // only head and root frames so far
	)
	s.roots = make(map[string]rootAt)
	s.base = start
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
		h, ok := parseHeader(hb, s.salt)
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
		st.Truncated += size - cut
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
		next, _, err := decodeHead(b)
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
			if h, ok = parseHeader(b[i:i+headerSize], s.salt); ok && h.n <= w.size-(p+i)-headerSize {
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
