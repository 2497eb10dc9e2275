package e2e

import (
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// Issue 19 through a real Fluent Bit (FLUENT_BIT): a fault server that answers as Exchange
// Online does (3 connections per mailbox, then 432 4.3.2; a recipient budget, then 554 5.2.0
// SubmissionQuotaExceeded until the window rolls), reached as smtp.office365.com so that the
// provider's defaults apply (fluent-bit gets its own /etc/hosts: withHosts).

// exchangeKeys is a configuration for fs reached as Exchange Online (smtp.office365.com on
// fs's port), with Fluent Bit's retries unlimited and a short quota_pause.
func exchangeKeys(t *testing.T, fs *faultServer) map[string]string {
	t.Helper()
	_, port, err := net.SplitHostPort(fs.addr)
	if err != nil {
		t.Fatal(err)
	}
	keys := faultKeys(fs, "soc@example.com")
	keys["dest_host"] = "smtp.office365.com:" + port
	keys["quota_pause"] = "2s"
	keys["dead_letter_dir"] = t.TempDir()
	return keys
}

// startExchangeFluentBit runs fluent-bit with one smtp output for fs as Exchange Online.
func startExchangeFluentBit(t *testing.T, keys map[string]string) *fluentBitRun {
	t.Helper()
	service := map[string]string{"scheduler.base": "1", "scheduler.cap": "3"}
	out := []outputSection{{match: "*", retryLimit: "no_limits", keys: keys}}
	return startFluentBitHosts(t, service, out, true, "127.0.0.1 localhost\n127.0.0.1 smtp.office365.com\n")
}

// checkNoRejection fails the test when fluent-bit logged a rejection or the output wrote a
// dead letter.
func checkNoRejection(t *testing.T, fb *fluentBitRun, deadDir string) {
	t.Helper()
	if l := fb.logLines("email rejected"); len(l) > 0 {
		t.Errorf("quota replies logged as rejections: %q", head2(l))
	}
	if es, err := os.ReadDir(deadDir); err != nil || len(es) > 0 {
		t.Errorf("dead_letter_dir holds %d file(s) (%v), want none", len(es), err)
	}
}

func head2(l []string) []string { return l[:min(len(l), 2)] }

// TestFluentBitQuotaExchangeBudget: 150 records against a budget of 50 recipients: the first
// 50 go out, the rest get the quota reply and are kept (never rejected or dead-lettered)
// while the instance pauses; once the window rolls every record is delivered exactly once,
// on at most 3 connections at any moment (the provider's default max_connections).
func TestFluentBitQuotaExchangeBudget(t *testing.T) {
	fluentBit(t)
	fs := startFaultServer(t, faultOptions{maxSessions: 3, recipientBudget: 50})
	keys := exchangeKeys(t, fs)
	fb := startExchangeFluentBit(t, keys)
	fb.waitLog(30*time.Second, "started:", `provider="Exchange Online"`, "max_connections=3", "quota_pause=2s")
	for first := 0; first < 150; first += 50 {
		fb.send(faultTag, numbered(first, 50))
	}
	storedAtLeast(fs, 50)
	fs.waitUntil("a quota reply", fbWait, func() bool { return fs.quotaReplies > 0 })
	line := fb.waitLog(time.Minute, "[error]", "quota reply from the mail provider: Exchange Online limit hit",
		"code=554 enhanced_code=5.2.0", "SubmissionQuotaExceeded", "kept for a retry", "max_emails_per_minute")
	t.Logf("the operator reads: %s", line)
	fb.waitLog(time.Minute, "[ warn]", "sending paused after a quota reply until")
	time.Sleep(3 * time.Second) // some paused flushes, some more quota replies
	c := fs.Counters()
	if c.Stored != 50 {
		t.Errorf("stored %d before the window rolled, want the budget of 50", c.Stored)
	}
	fs.rollWindow(10_000)
	storedAtLeast(fs, 150)
	fb.stop()
	d := checkDelivery(t, fs, span(0, 150))
	if d.Messages != 150 || d.Duplicates != 0 {
		t.Errorf("server stored %+v, want 150 messages and no duplicate", d)
	}
	checkNoRejection(t, fb, keys["dead_letter_dir"])
	fs.mu.Lock()
	peak, refused, quota, txs := fs.peak, len(fs.refused), fs.quotaReplies, fs.txs
	fs.mu.Unlock()
	if peak > 3 || refused > 0 {
		t.Errorf("at most %d connections at once and %d refused with 432, want at most 3 and none", peak, refused)
	}
	t.Logf("150 records, budget 50: %d transactions, %d quota replies, %d emails stored, at most %d connections at once, %d paused-flush lines",
		txs, quota, d.Messages, peak, len(fb.logLines("sending paused after a quota reply")))
}

// TestFluentBitQuotaExchangeConnectionLimit: max_connections 4 set against Exchange's 3:
// the fourth connection is refused with 432 4.3.2, the instance opens fewer from then on (a
// handful of refusals, not one per record), and every record is delivered exactly once.
func TestFluentBitQuotaExchangeConnectionLimit(t *testing.T) {
	fluentBit(t)
	fs := startFaultServer(t, faultOptions{maxSessions: 3})
	keys := exchangeKeys(t, fs)
	keys["max_connections"] = "4"
	fb := startExchangeFluentBit(t, keys)
	fb.waitLog(30*time.Second, "started:", "max_connections=4")
	const n = 400
	for first := 0; first < n; first += 50 {
		fb.send(faultTag, numbered(first, 50))
	}
	storedAtLeast(fs, n)
	fb.stop()
	d := checkDelivery(t, fs, span(0, n))
	if d.Messages != n || d.Duplicates != 0 {
		t.Errorf("server stored %+v, want %d messages and no duplicate", d, n)
	}
	checkNoRejection(t, fb, keys["dead_letter_dir"])
	fs.mu.Lock()
	peak, refused := fs.peak, len(fs.refused)
	fs.mu.Unlock()
	if peak > 3 || refused > 3 {
		t.Errorf("%d connections at once, %d refused with 432: want at most 3 and at most 3 (one per lowering of the limit)", peak, refused)
	}
	retried := 0
	for _, l := range fb.logLines("will be retried", "432 4.3.2") {
		if strings.Contains(l, "Concurrent connections limit exceeded") {
			retried++
		}
	}
	t.Logf("%d records with max_connections 4 against 3 allowed: %d connection(s) refused with 432, %d retry line(s) naming it, at most %d connections at once",
		n, refused, retried, peak)
}
