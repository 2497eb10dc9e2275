package e2e

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestFluentBitSharedLedgerDirDifferentMaxAges (issue 18 item 3): two smtp outputs share
// ledger_dir, one with ledger_max_age 1h and one with 48h, the 1h one first (so it starts
// first). The 48h output's server refuses every transaction after its fifth with 451, so
// that output settles 5 of the 10 records and Fluent Bit keeps the chunk in its filesystem
// storage. Fluent Bit is stopped, both ledger files are aged two hours (past the shorter
// age), and Fluent Bit is started again with the server accepting everything: the chunk is
// replayed, no ledger file is removed, and no record reaches either server twice.
func TestFluentBitSharedLedgerDirDifferentMaxAges(t *testing.T) {
	fluentBit(t)
	var hold atomic.Bool
	hold.Store(true)
	short := startFaultServer(t, faultOptions{})
	long := startFaultServer(t, faultOptions{plan: func(tx int) fault {
		if hold.Load() && tx > 5 {
			return fault451
		}
		return faultNone
	}})
	keys := faultKeys(short, "short@example.com")
	keys["ledger_max_age"] = "1h"
	r := newRestartRig(t, keys, "")
	longKeys := faultKeys(long, "long@example.com")
	longKeys["ledger_max_age"] = "48h"
	appendOutput(t, r, longKeys)

	const total = 10
	began := time.Now()
	step := func(what string) { t.Logf("%6.1fs %s", time.Since(began).Seconds(), what) }
	r.start()
	r.send("app.shared", numbered(0, total))
	storedAtLeast(short, total)
	storedAtLeast(long, 5)
	long.waitUntil("the chunk retried at least once (451 again)", fbWait, func() bool {
		return long.injected[fault451] > total-5
	})
	step("first run: 10 and 5 stored, the chunk retried")
	r.term()
	step("first run stopped")
	files := ledgerFiles(t, r.ledgerDir)
	if len(files) != 2 {
		t.Fatalf("ledger files after the first run: %q, want one per output", files)
	}
	past := time.Now().Add(-2 * time.Hour)
	for _, f := range files {
		if err := os.Chtimes(f, past, past); err != nil {
			t.Fatal(err)
		}
	}

	hold.Store(false)
	r.start()
	step("restarted")
	waitDistinct(long, total, 2*time.Minute)
	step("replayed chunk delivered")
	r.send("app.shared", numbered(total, 1)) // a last record: both outputs have flushed since
	storedAtLeast(short, total+1)
	waitDistinct(long, total+1, 2*time.Minute)
	step("last record delivered")
	r.term()
	step("stopped")

	if got := ledgerFiles(t, r.ledgerDir); strings.Join(got, " ") != strings.Join(files, " ") {
		t.Errorf("ledger files after the restart: %q, want %q", got, files)
	}
	if l := linesWith(r.log(), "ledger: removed"); len(l) > 0 {
		t.Errorf("ledger files removed: %q", l)
	}
	for name, fs := range map[string]*faultServer{"1h": short, "48h": long} {
		c := countDelivery(fs, span(0, total+1))
		t.Logf("%s: %s output: stored=%d lost=%d duplicates=%d", filepath.Base(filepath.Dir(r.bin)), name, c.Stored, len(c.Lost), c.Duplicates)
		if len(c.Lost) > 0 || c.Duplicates > 0 {
			t.Errorf("%s output: lost=%v duplicates=%d, want every record once", name, c.Lost, c.Duplicates)
		}
		checkSignatures(t, fs)
	}
	if n := len(linesWith(r.log(), "] ledger:", "5 settled Message-ID(s)")); n != 1 {
		t.Errorf("%d start-up lines of the 48h output loading its 5 settled IDs after the restart, want 1", n)
	}
}

// appendOutput adds a second smtp [OUTPUT] section with keys to the rig's configuration, with
// the same ledger_dir as the first.
func appendOutput(t *testing.T, r *restartRig, keys map[string]string) {
	t.Helper()
	f, err := os.OpenFile(r.conf, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("\n" + restartOutput(r.ledgerDir, keys)); err != nil {
		t.Fatal(err)
	}
}

// ledgerFiles lists the ledger data files in dir, sorted.
func ledgerFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.ledger"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(m)
	return m
}
