package e2e

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/smtpout/smtpout/config"
)

// Digests through a real Fluent Bit (FLUENT_BIT; issue 19): a storm against Exchange's
// limits, threads per digest_by group, and records waiting for their digest when Fluent Bit
// is killed or stopped. Every record carries a unique "n"; the fault server parses single
// emails and every NDJSON line of digests (parseStored), and checkRecords counts them.

// needDigests skips the test when the plugin does not know digest_window yet (the branches
// that build digests are merged separately).
func needDigests(t *testing.T) {
	t.Helper()
	fluentBit(t)
	if !slices.Contains(config.Keys, "digest_window") {
		t.Skip("skipped: this build has no digest_window key (digests are not built)")
	}
}

// TestFluentBitDigestStormExchange: 3,000 records in 30 s with digest_window 10s against a
// server that answers as Exchange Online (3 connections, then 432 4.3.2; a budget of 2
// recipients per rolling 25 s, then 554 5.2.0 until it rolls): every record arrives exactly
// once across the opening single email and the digests, every digest verifies, at most 3
// connections at once, nothing rejected; a handful of emails instead of 3,000.
func TestFluentBitDigestStormExchange(t *testing.T) {
	needDigests(t)
	st := exchangeStorm(t, faultOptions{maxSessions: 3, recipientBudget: 2, budgetWindow: 25 * time.Second}, "10s")
	fs, fb, keys, c := st.fs, st.fb, st.keys, st.tally
	sent, took := st.sent, st.took
	if c.Repeats != 0 {
		t.Errorf("%d email(s) stored twice, want none (nothing was cut off mid-reply)", c.Repeats)
	}
	if c.Singles < 1 || c.Digests < 1 {
		t.Errorf("server stored %+v, want the opening single email and digests", c)
	}
	// 30 s of storm in 10 s windows: the opening email and one digest per window (a window
	// of more than digest_max_records=1000 split in two) is under 10; 20 leaves room for a
	// slow machine stretching the storm.
	if c.Emails > 20 {
		t.Errorf("%d emails for %d records, want a handful (at most 20)", c.Emails, stormRecords)
	}
	checkNoRejection(t, fb, keys["dead_letter_dir"])
	peak, refused, quota := exchangeLimits(fs)
	if peak > 3 || refused > 0 {
		t.Errorf("%d connections at once, %d refused with 432: want at most 3 and none", peak, refused)
	}
	t.Logf("%s: %d records sent in %.1fs, all delivered %.1fs after the storm began in %d emails (%d single, %d digests, largest %d records); %d quota replies, at most %d connections at once",
		fluentBitVersion(t), stormRecords, sent.Seconds(), took.Seconds(), c.Emails, c.Singles, c.Digests, c.Largest, quota, peak)
}

// TestFluentBitDigestByHostThreads: digest_by $host with records from three hosts in three
// bursts: each host's first record opens its thread as a single email, each later email
// (digest) carries only that host's records and names that email in In-Reply-To and
// References, so a mail client shows three conversations; every record arrives once.
func TestFluentBitDigestByHostThreads(t *testing.T) {
	needDigests(t)
	fs := startFaultServer(t, faultOptions{})
	keys := faultKeys(fs, "soc@example.com")
	keys["subject"] = "Alert $TAG on $host"
	keys["digest_window"] = "3s"
	keys["digest_by"] = "$host"
	fb := startFaultFluentBit(t, keys)
	fb.waitLog(30*time.Second, "started:", "digest_window=3s")
	hosts := []string{"web-1", "web-2", "db-1"}
	const bursts, per = 3, 60 // per burst, 20 records of each host, interleaved
	storm(fb.send, bursts*per, bursts, 4*time.Second, func(n int) string { return hosts[n%len(hosts)] })
	recordsAtLeast(fs, bursts*per, fbWait)
	fb.stop()

	c := checkRecords(t, fs, span(0, bursts*per))
	if c.Repeats != 0 {
		t.Errorf("%d email(s) stored twice, want none", c.Repeats)
	}
	byHost := make(map[string][]stored)
	for _, m := range fs.Stored() {
		h := m.Hosts[0]
		for _, o := range m.Hosts {
			if o != h {
				t.Errorf("email <%s> mixes hosts %q and %q: digest_by $host must keep them apart", m.MessageID, h, o)
				break
			}
		}
		byHost[h] = append(byHost[h], m)
	}
	roots := make(map[string]string) // root Message-ID -> host
	var report []string
	for _, h := range hosts {
		ms := byHost[h]
		if len(ms) < 2 {
			t.Errorf("host %s: %d email(s), want its opening email and at least one digest", h, len(ms))
			continue
		}
		root := ms[0]
		if root.Digest || root.InReplyTo != "" || len(root.References) != 0 {
			t.Errorf("host %s: its first email <%s> (digest=%v) names a thread (In-Reply-To %q, References %q), want the single email that opens one",
				h, root.MessageID, root.Digest, root.InReplyTo, root.References)
		}
		if other, ok := roots[root.MessageID]; ok {
			t.Errorf("hosts %s and %s share the thread root <%s>", other, h, root.MessageID)
		}
		roots[root.MessageID] = h
		for _, m := range ms[1:] {
			if m.InReplyTo != root.MessageID || !slices.Contains(m.References, root.MessageID) {
				t.Errorf("host %s: email <%s> has In-Reply-To %q and References %q, want both to name its thread root <%s>",
					h, m.MessageID, m.InReplyTo, m.References, root.MessageID)
			}
		}
		for _, m := range ms {
			if want := "Alert " + stormTag + " on " + h; m.Subject != want {
				t.Errorf("host %s: email <%s> has the subject %q, want %q (the same in the whole thread)", h, m.MessageID, m.Subject, want)
			}
		}
		report = append(report, fmt.Sprintf("%s: %d emails (%d digests)", h, len(ms), countDigests(ms)))
	}
	t.Logf("%s: %d records of 3 hosts in %d bursts: %s; %d threads", fluentBitVersion(t), bursts*per, bursts, strings.Join(report, ", "), len(roots))
}

// countDigests counts the digests among ms.
func countDigests(ms []stored) int {
	n := 0
	for _, m := range ms {
		if m.Digest {
			n++
		}
	}
	return n
}

// digestedRE finds the count of records taken into a digest in the plugin's debug line of a
// flush ("flush tag=... digested=N").
var digestedRE = regexp.MustCompile(`\] flush tag=.* digested=(\d+)`)

// digested returns the records the plugin's flushes took into digests so far, from their
// debug lines in log (the output needs log_level debug).
func digested(log string) int {
	total := 0
	for _, m := range digestedRE.FindAllStringSubmatch(log, -1) {
		n, _ := strconv.Atoi(m[1])
		total += n
	}
	return total
}

// digestKeys is the configuration of the SIGKILL and SIGTERM scenarios: fs, digest_window
// window, and log_level debug for the flush lines that count the records taken (digested).
func digestKeys(fs *faultServer, window string) map[string]string {
	keys := faultKeys(fs, "soc@example.com")
	keys["digest_window"] = window
	keys["log_level"] = "debug"
	return keys
}

// openWindow sends record 0 and waits for its single email (it opens the group's window),
// then sends records 1 to waiting and waits until every one of them was taken into the
// plugin's keeping to wait for their digest (the flushes' debug lines in log say so: the
// plugin returns FLB_OK for them only after that).
func openWindow(t *testing.T, fs *faultServer, send func(tag string, data []byte), log func() string, waiting int) {
	t.Helper()
	send(stormTag, stormChunk(0, 1, nil))
	storedAtLeast(fs, 1)
	send(stormTag, stormChunk(1, waiting/2, nil))
	send(stormTag, stormChunk(1+waiting/2, waiting-waiting/2, nil))
	deadline := time.Now().Add(time.Minute)
	for digested(log()) < waiting {
		if time.Now().After(deadline) {
			t.Fatalf("after 1m the plugin's flushes took %d of %d records into a digest", digested(log()), waiting)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := len(fs.Stored()); got != 1 {
		t.Fatalf("%d emails before the window closed, want only the opening one: the scenario needs records still waiting", got)
	}
}

// TestFluentBitDigestSIGKILLMidWindow: with ledger_dir and filesystem storage, Fluent Bit is
// killed while 100 records wait for their digest (taken by the plugin, not yet sent), and
// started again with the same configuration: every record is delivered. "waiting" kills in
// the middle of a 30 s window; "on the wire" kills once the server stored the digest but
// before it answered (it holds every reply 5 s), so that digest goes out again: the only
// repeats are whole digests under the same Message-ID, at most max_connections (4).
func TestFluentBitDigestSIGKILLMidWindow(t *testing.T) {
	needDigests(t)
	for _, tc := range []struct {
		name   string
		window string
		delay  time.Duration // the server's reply delay
		onWire bool          // kill once the digest is stored, before its reply
	}{
		{"waiting", "30s", 0, false},
		{"on the wire", "8s", 5 * time.Second, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const waiting = 100
			fs := startFaultServer(t, faultOptions{delay: tc.delay})
			r := newRestartRig(t, digestKeys(fs, tc.window), "")
			r.start()
			openWindow(t, fs, r.send, r.log, waiting)
			if tc.onWire {
				storedAtLeast(fs, 2)
			}
			began := time.Now()
			r.kill()
			r.start()
			if tc.onWire {
				storedAtLeast(fs, 3) // the digest again
			} else {
				recordsAtLeast(fs, waiting+1, fbWait)
			}
			took := time.Since(began)
			// A stop while a reply is held back would cut that digest off again: let every
			// transaction be answered first.
			fs.waitUntil("every transaction answered", fbWait, func() bool { return fs.open == 0 })
			r.term()

			c := checkRecords(t, fs, span(0, waiting+1))
			if c.Repeats > 4 || c.Repeats != c.Repeated {
				t.Errorf("%d emails stored again after the SIGKILL, %d of them digests: want at most max_connections (4), digests only", c.Repeats, c.Repeated)
			}
			if c.Digests < 1 || tc.onWire && c.Repeated < 1 {
				t.Errorf("server stored %+v, want the waiting records in a digest (sent again when the kill cut it off)", c)
			}
			t.Logf("%s: SIGKILL with %d records waiting for their digest (%s), restarted: all %d delivered (the last email %.1fs after the kill) in %d emails (%d single, %d digests); %d email(s) repeated (%d of them digests)",
				fluentBitVersion(t), waiting, tc.name, c.Records, took.Seconds(), c.Emails, c.Singles, c.Digests, c.Repeats, c.Repeated)
		})
	}
}

// TestFluentBitDigestSIGTERMSendsWaiting: SIGTERM while 100 records wait, in memory (no
// ledger_dir), for a digest whose window (60 s) is far from over: the digest goes out before
// Fluent Bit exits, within its Grace (5 s), and no record is lost.
func TestFluentBitDigestSIGTERMSendsWaiting(t *testing.T) {
	needDigests(t)
	const waiting = 100
	fs := startFaultServer(t, faultOptions{})
	fb := startFaultFluentBit(t, digestKeys(fs, "60s"))
	openWindow(t, fs, fb.send, fb.log, waiting)
	signalled := time.Now()
	took := termWait(t, "fluent-bit", fb.cmd.Process, fb.waited)
	fb.waited <- nil // it exited (termWait took its status)
	exited := signalled.Add(took)

	c := checkRecords(t, fs, span(0, waiting+1))
	if c.Repeats != 0 || c.Digests < 1 {
		t.Errorf("server stored %+v, want the waiting records in digests and no repeat", c)
	}
	var last time.Time
	for _, m := range fs.Stored() {
		if m.Arrived.After(last) {
			last = m.Arrived
		}
	}
	if last.After(exited) {
		t.Errorf("the last email arrived %v after fluent-bit exited", last.Sub(exited))
	}
	// Grace 5 s is Fluent Bit's bound; 3 s more for a loaded machine's process exit.
	if took > 8*time.Second {
		t.Errorf("fluent-bit took %v to exit after SIGTERM, want within its Grace (5s)", took)
	}
	t.Logf("%s: SIGTERM with %d records waiting for a 60s window: %d digest(s) sent %.2fs after the signal, fluent-bit exited after %.2fs",
		fluentBitVersion(t), waiting, c.Digests, last.Sub(signalled).Seconds(), took.Seconds())
}

// TestFluentBitDigestReloadWhileOverQuotaKeepsSpool: a hot reload while the server answers
// every message with Exchange's quota reply: the old instance's last try at the waiting digest
// fails, so the records stay in the spool (ledger_dir), and the new instance (which can take
// the spool's lock only once the old one let it go) loads them and delivers them once the
// budget comes back: every record once, nothing dead-lettered.
func TestFluentBitDigestReloadWhileOverQuotaKeepsSpool(t *testing.T) {
	needDigests(t)
	fs := startFaultServer(t, faultOptions{recipientBudget: 1}) // the opening email uses it up
	keys := digestKeys(fs, "30s")
	keys["quota_pause"] = "1s"
	dead := t.TempDir()
	keys["dead_letter_dir"] = dead
	r := newHotReloadRig(t, keys, "")
	const waiting = 30
	r.start()
	openWindow(t, fs, r.send, r.log, waiting)
	r.reload(1)
	deadline := time.Now().Add(time.Minute)
	for len(linesWith(r.log(), "waiting for their digests loaded")) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("after the reload the new instance never loaded the waiting records from the spool")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := len(fs.Stored()); got != 1 {
		t.Fatalf("%d emails stored while over quota, want only the opening one", got)
	}
	fs.rollWindow(100)
	recordsAtLeast(fs, waiting+1, fbWait)
	r.term()
	c := checkRecords(t, fs, span(0, waiting+1))
	if c.Repeats > 0 {
		t.Errorf("%d email(s) stored twice, want none", c.Repeats)
	}
	if es, err := os.ReadDir(dead); err != nil || len(es) > 0 {
		t.Errorf("dead_letter_dir holds %d file(s) (%v), want none", len(es), err)
	}
	t.Logf("%s: reload while over quota: %d records stayed in the spool, delivered by the new instance once the budget came back, in %d emails (%d digests), none repeated",
		fluentBitVersion(t), waiting, c.Emails, c.Digests)
}

// TestFluentBitDigestHotReloadsKeepWaitingRecords: five hot reloads (the README's hot-reload
// configuration, with ledger_dir and filesystem storage), each while records wait for their
// group's digest: the old instance's Close sends them (or leaves them in the spool for the new
// instance, which must take the spool's lock after the old one let it go), and every record
// arrives exactly once, with no crash.
func TestFluentBitDigestHotReloadsKeepWaitingRecords(t *testing.T) {
	needDigests(t)
	fs := startFaultServer(t, faultOptions{})
	r := newHotReloadRig(t, digestKeys(fs, "30s"), "")
	const per, reloads = 20, 5
	r.start()
	openWindow(t, fs, r.send, r.log, per-1) // record 0 alone, 1 to 19 waiting
	for n := 1; n <= reloads; n++ {
		r.reload(n)
		recordsAtLeast(fs, n*per, fbWait) // the waiting records went out at the reload
		r.sendAfterReload(stormTag, stormChunk(n*per, per, nil))
		// The new instance's group has had no email: its first record goes out alone, the
		// rest wait for the next reload.
		want := (n + 1) * (per - 1)
		deadline := time.Now().Add(time.Minute)
		for digested(r.log()) < want {
			if time.Now().After(deadline) {
				t.Fatalf("reload %d: the flushes took %d records into digests, want %d", n, digested(r.log()), want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	took, err := r.stopWith(syscall.SIGTERM)
	if err != nil {
		t.Errorf("fluent-bit after %d reloads and SIGTERM: %v, want a clean exit", reloads, err)
	}
	if l := linesWith(r.log(), "caught signal (SIGSEGV)"); len(l) > 0 {
		t.Errorf("fluent-bit crashed: %q", l)
	}
	c := checkRecords(t, fs, span(0, (reloads+1)*per))
	if c.Repeats > 0 {
		t.Errorf("%d email(s) stored twice across %d reloads, want none", c.Repeats, reloads)
	}
	if c.Digests < reloads+1 {
		t.Errorf("%d digests, want at least %d (one per reload and one at SIGTERM)", c.Digests, reloads+1)
	}
	t.Logf("%s: %d reloads with records waiting for their digest: all %d records in %d emails (%d single, %d digests), none repeated; exited %v after SIGTERM",
		fluentBitVersion(t), reloads, c.Records, c.Emails, c.Singles, c.Digests, took.Round(time.Millisecond))
}
