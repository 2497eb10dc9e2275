package pipeline

// The digest store in ledger_dir (internal/spool): opened next to the instance's ledger,
// under the same name with the .digest suffix, and looked at by retention.

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/smtpout/smtpout/config"
	"github.com/smtpout/smtpout/internal/spool"
)

// openDigestSpool opens the digest spool of the ledger named name in cfg.LedgerDir, loads
// its waiting records and thread roots into the instance and logs what it found. ok is false
// when the instance must not start.
func (in *Instance) openDigestSpool(cfg config.Config, name string, now func() time.Time) (ok bool) {
	sp, st, err := spool.Open(cfg.LedgerDir, name, spool.Options{Now: now, OnCompact: func(c spool.Compaction) {
		if c.Err != nil { // at most one per back-off
			in.log.Log(LevelWarn, fmt.Sprintf("digest: %v; delivery goes on and the spool keeps its dead records (%d bytes) until a compaction succeeds; %d failure(s) in a row, next attempt in %v",
				c.Err, c.Before, c.Failures, c.Retry))
		}
	}})
	path := spool.Path(cfg.LedgerDir, name)
	if err != nil {
		msg := fmt.Sprintf("configuration: ledger_dir: %s: cannot open the digest spool: %v", cfg.LedgerDir, err)
		if errors.Is(err, spool.ErrLocked) {
			msg = fmt.Sprintf("configuration: ledger_dir: %s is in use by another Fluent Bit process (%v): give each process its own ledger_dir", cfg.LedgerDir, err)
		}
		in.log.Log(LevelError, msg)
		in.log.Log(LevelError, "not started: the digest spool in ledger_dir cannot be used")
		return false
	}
	if st.Damaged > 0 {
		in.log.Log(LevelWarn, fmt.Sprintf("digest: %s: skipped %d damaged record(s) and kept the good ones; the records in the damaged ones are lost", path, st.Damaged))
	}
	if st.Truncated > 0 {
		in.log.Log(LevelWarn, fmt.Sprintf("digest: %s: removed a damaged tail of %d bytes; records written in it are lost", path, st.Truncated))
	}
	if st.SyncErr != nil {
		in.digestStoreFailedAt(path, st.SyncErr)
	}
	if c := st.Compaction; c != nil && c.Err != nil {
		in.log.Log(LevelWarn, fmt.Sprintf("digest: %s: compaction failed: %v; the file keeps its dead records until one succeeds", path, c.Err))
	}
	in.restoreDigests(sp, path, st.Waiting, st.Roots)
	in.log.Log(LevelInfo, fmt.Sprintf("digest: %s: %d record(s) waiting for their digests loaded (sent on the first turn after start-up), %d thread root(s)",
		path, len(st.Waiting), len(st.Roots)))
	return true
}

// digestSpoolsLeft warns about the digest spools in dir that no running instance holds and
// that still hold waiting records (their configuration changed or is gone): retention never
// removes them, since those records were taken from Fluent Bit and are nowhere else.
func (in *Instance) digestSpoolsLeft(dir string) {
	paths, err := filepath.Glob(filepath.Join(dir, "*"+spool.FileSuffix))
	if err != nil {
		return
	}
	for _, p := range paths {
		name := strings.TrimSuffix(filepath.Base(p), spool.FileSuffix)
		namesMu.Lock()
		mine := names[name]
		namesMu.Unlock()
		if mine {
			continue
		}
		sp, st, err := spool.Open(dir, name, spool.Options{})
		if err != nil {
			continue // held by another process, or unreadable: not ours to judge
		}
		_ = sp.Close()
		if n := len(st.Waiting); n > 0 {
			in.log.Log(LevelWarn, fmt.Sprintf(
				"ledger: %s holds %d record(s) waiting for a digest of an output that no longer runs with this configuration (dest_host, from_email or a recipient list changed); it is kept: restore that configuration to send them, or read them from the file, then remove it",
				p, n))
		}
	}
}
