package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smtpout/smtpout/chunk"
	"github.com/smtpout/smtpout/testsupport/proc"
)

// Storms through a real Fluent Bit (FLUENT_BIT; issue 19): 3,000 records in 30 s, fed to the
// forward input in batches, against a fault server that answers as Exchange Online does (3
// connections per mailbox, then 432 4.3.2; a recipient budget that rolls, 554 5.2.0 while it
// is spent), with and without digests.

// stormTag is the tag of every storm record.
const stormTag = "alerts.storm"

// The storm of issue 19: 3,000 records in 30 s, as 30 batches of 100 a second apart.
const (
	stormRecords = 3000
	stormBatches = 30
	stormEvery   = time.Second
)

// stormChunk builds the records numbered first to first+count-1 (field "n", each record's
// unique id), each from host(n) (field "host"; nil: no host field), timed now.
func stormChunk(first, count int, host func(n int) string) []byte {
	var e chunk.Encoder
	now := time.Now()
	for n := first; n < first+count; n++ {
		rec := map[string]any{"n": n, "msg": fmt.Sprintf("detection %d", n), "rule": "worm.smb.scan"}
		if host != nil {
			rec["host"] = host(n)
		}
		e.AppendV2(now.Add(time.Duration(n-first)*time.Microsecond), nil, rec)
	}
	return e.Bytes()
}

// storm sends total records numbered from 0 in batches, one batch every interval, through
// send, and returns how long the sending took.
func storm(send func(tag string, data []byte), total, batches int, every time.Duration, host func(int) string) time.Duration {
	began := time.Now()
	per := total / batches
	for b := 0; b < batches; b++ {
		if b > 0 {
			<-time.After(time.Until(began.Add(time.Duration(b) * every)))
		}
		count := per
		if b == batches-1 {
			count = total - b*per
		}
		send(stormTag, stormChunk(b*per, count, host))
	}
	return time.Since(began)
}

// fluentBitVersion is the name of FLUENT_BIT's directory (4.2.8, 5.1.1), for reports.
func fluentBitVersion(t *testing.T) string { return filepath.Base(filepath.Dir(fluentBit(t))) }

// recordsAtLeast waits (within) until the server holds at least n distinct records, in
// single emails and digests.
func recordsAtLeast(fs *faultServer, n int, within time.Duration) {
	fs.t.Helper()
	fs.waitUntil(fmt.Sprintf("%d distinct records stored", n), within, func() bool {
		seen := make(map[int]bool, n)
		for _, m := range fs.msgs {
			for _, r := range m.Records {
				seen[r] = true
			}
		}
		return len(seen) >= n
	})
}

// stormRun is one storm through Fluent Bit against an Exchange-like fault server, done.
type stormRun struct {
	fs         *faultServer
	fb         *fluentBitRun
	keys       map[string]string
	sent, took time.Duration // sending the storm; from its start to the last record stored
	tally      recordTally
}

// exchangeStorm starts a fault server with opt reached as Exchange Online and Fluent Bit
// with digest_window window ("": off), sends the storm, waits until every record is stored,
// stops Fluent Bit and checks the records (checkRecords).
func exchangeStorm(t *testing.T, opt faultOptions, window string) stormRun {
	t.Helper()
	st := stormRun{fs: startFaultServer(t, opt)}
	st.keys = exchangeKeys(t, st.fs)
	started := []string{"started:", `provider="Exchange Online"`, "max_connections=3"}
	if window != "" {
		st.keys["digest_window"] = window
		started = append(started, "digest_window="+window)
	}
	st.fb = startExchangeFluentBit(t, st.keys)
	st.fb.waitLog(30*time.Second, started...)
	began := time.Now()
	st.sent = storm(st.fb.send, stormRecords, stormBatches, stormEvery, nil)
	recordsAtLeast(st.fs, stormRecords, fbWait)
	st.took = time.Since(began)
	st.fb.stop()
	st.tally = checkRecords(t, st.fs, span(0, stormRecords))
	return st
}

// exchangeLimits returns the most connections fs saw at once, the connections it refused with
// 432 4.3.2 and the quota replies it gave.
func exchangeLimits(fs *faultServer) (peak, refused, quota int) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.peak, len(fs.refused), fs.quotaReplies
}

// TestFluentBitQuotaStormWithoutDigests: the storm without digests (one email per record)
// against Exchange's limits with a recipient budget of 500 that rolls over a 10 s window:
// every record gets its email exactly once once the budget comes back, none is rejected or
// dead-lettered, on at most 3 connections at any moment.
func TestFluentBitQuotaStormWithoutDigests(t *testing.T) {
	fluentBit(t)
	const budget, window = 500, 10 * time.Second
	st := exchangeStorm(t, faultOptions{maxSessions: 3, recipientBudget: budget, budgetWindow: window}, "")
	fs, fb, keys, c := st.fs, st.fb, st.keys, st.tally
	sent, took := st.sent, st.took
	if c.Emails != stormRecords || c.Digests != 0 || c.Repeats != 0 {
		t.Errorf("server stored %+v, want %d single emails and no repeat", c, stormRecords)
	}
	checkNoRejection(t, fb, keys["dead_letter_dir"])
	peak, refused, quota := exchangeLimits(fs)
	if peak > 3 || refused > 0 {
		t.Errorf("%d connections at once, %d refused with 432: want at most 3 and none", peak, refused)
	}
	if quota == 0 {
		t.Errorf("no quota reply: the budget of %d never ran out, so the scenario proved nothing", budget)
	}
	t.Logf("%s: %d records sent in %.1fs, all %d delivered once %.1fs after the storm began (budget %d recipients per %v): %d quota replies, %d paused-flush lines, at most %d connections at once",
		fluentBitVersion(t), stormRecords, sent.Seconds(), c.Records, took.Seconds(), budget, window, quota,
		len(fb.logLines("sending paused after a quota reply")), peak)
}

// TestFluentBitStormEmailsBench prints what a 10,000-record storm (30 s, in batches a second
// apart) costs with digests off and with digest_window 10s: the emails sent and fluent-bit's
// CPU time per record (from /proc, so the plugin's rendering, spooling and SMTP included). A
// benchmark, not a check: it runs only with SMTPOUT_STORM_BENCH=1 (about 40 s per setting):
//
//	SMTPOUT_STORM_BENCH=1 FLUENT_BIT=/path/to/fluent-bit go test -count=1 -run TestFluentBitStormEmailsBench -v ./test
func TestFluentBitStormEmailsBench(t *testing.T) {
	fluentBit(t)
	if os.Getenv("SMTPOUT_STORM_BENCH") != "1" {
		t.Skip("skipped: a benchmark; set SMTPOUT_STORM_BENCH=1 to run it")
	}
	const records = 10_000
	for _, window := range []string{"off", "10s"} {
		t.Run("digest_window="+window, func(t *testing.T) {
			fs := startFaultServer(t, faultOptions{})
			keys := faultKeys(fs, "soc@example.com")
			if window != "off" {
				needDigests(t)
				keys["digest_window"] = window
			}
			fb := startFaultFluentBit(t, keys)
			fb.waitLog(30*time.Second, "started:")
			pid := fb.cmd.Process.Pid
			before, err := proc.CPU(pid)
			if err != nil {
				t.Fatal(err)
			}
			began := time.Now()
			storm(fb.send, records, stormBatches, stormEvery, nil)
			recordsAtLeast(fs, records, fbWait)
			took := time.Since(began)
			after, err := proc.CPU(pid)
			if err != nil {
				t.Fatal(err)
			}
			load, _ := os.ReadFile("/proc/loadavg")
			fb.stop()
			c := checkRecords(t, fs, span(0, records))
			t.Logf("%s digest_window=%s: %d records in 30 s -> %d emails (%d single, %d digests, largest %d records), all delivered %.1fs after the storm began; fluent-bit CPU %.1f µs per record (load average %s)",
				fluentBitVersion(t), window, records, c.Emails, c.Singles, c.Digests, c.Largest, took.Seconds(),
				float64((after-before).Microseconds())/records, strings.Join(strings.Fields(string(load))[:3], " "))
		})
	}
}
