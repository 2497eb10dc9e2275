package spool

// Keeping the file small: the cut-back to the roots and the rewrite of the live frames.

import (
	"cmp"
	"fmt"
	"os"
	"slices"
	"time"
)

// maybeCompact cuts the file back to its roots when a Done left nothing waiting (done), or
// rewrites it when it is mostly dead. A failure's back-off holds rewrites, not cut-backs: a
// truncation needs no room on the disk and frees it. The caller holds syncMu and mu.
func (s *Spool) maybeCompact(done bool) *Compaction {
	emptied := done && len(s.live) == 0 && s.size > s.clean
	if emptied && s.rootsInBase() {
		c := s.cutBack()
		return &c
	}
	if s.opt.Now().Before(s.retryAt) || !(emptied || s.mostlyDead()) {
		return nil
	}
	c := s.compact()
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
	b := appendHead(s.frame(headSize), s.nextSeq, s.salt)
	sealFrame(b, kindHead, s.salt)
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
		sealFrame(appendHead(b[:headerSize], s.nextSeq, s.salt), kindHead, nil)
		return nil
	})
	newRoots := make(map[string]rootAt, len(roots))
	for _, r := range roots {
		sp := span{at(), r.n}
		put(r.n, func(b []byte) error {
			sealFrame(appendRoot(b[:headerSize], r.Root), kindRoot, s.salt)
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
