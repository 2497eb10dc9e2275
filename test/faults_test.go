package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/google/go-cmp/cmp"

	"github.com/smtpout/smtpout/testsupport/testcert"
)

// The fault matrix of issue 6, through the C host: each scenario sends a known set of records
// to the in-process fault server and counts by Message-ID what the server stored. The host
// plays Fluent Bit's retry loop: a chunk that comes back FLB_RETRY is flushed again, bounded.

const faultTag = "app.faults"

// retryBackoff is the pause between the host's re-flushes of a chunk (Fluent Bit's scheduler
// waits seconds; the scenarios only need the order of events).
const retryBackoff = 200 * time.Millisecond

// startFaultHost starts a host with instance 0 configured by keys and initialised.
func startFaultHost(t *testing.T, keys map[string]string) *Host {
	t.Helper()
	h := StartHost(t)
	h.Configure(0, keys)
	if rc := h.Init(0); rc != flbOK {
		t.Fatalf("init = %d, want FLB_OK; log:\n%s", rc, h.Log())
	}
	return h
}

// flushUntilOK flushes data until FLB_OK, as Fluent Bit re-schedules a chunk after
// FLB_RETRY, at most tries times; it returns every code in order. Any code other than OK and
// RETRY, or running out of tries, fails the test.
func flushUntilOK(t *testing.T, h *Host, data []byte, tries int) []int {
	t.Helper()
	var codes []int
	for try := 1; ; try++ {
		rc := h.Flush(0, faultTag, data)
		codes = append(codes, rc)
		switch {
		case rc == flbOK:
			return codes
		case rc != flbRetry:
			t.Fatalf("flush %d = %d, want FLB_OK or FLB_RETRY (codes %v); log:\n%s", try, rc, codes, h.Log())
		case try == tries:
			t.Fatalf("chunk still not delivered after %d flushes (codes %v); log:\n%s", tries, codes, h.Log())
		}
		<-time.After(retryBackoff)
	}
}

// checkExit runs FLBPluginExitCtx and checks the totals line.
func checkExit(t *testing.T, h *Host, wantTotals string) {
	t.Helper()
	if rc := h.Exit(0); rc != flbOK {
		t.Errorf("exit = %d, want FLB_OK", rc)
	}
	if l := h.LogLines("[ info] [output:smtp:smtp.0] stopped: " + wantTotals); len(l) != 1 {
		t.Errorf("want one stopped line starting %q; log:\n%s", wantTotals, h.Log())
	}
}

func TestFaultServerDownAtStartThenUp(t *testing.T) {
	cert := testcert.New(t)
	addr := reservePort(t) // nothing listens there yet
	h := startFaultHost(t, faultKeysAt(addr, cert, "soc@example.com"))
	// Init succeeded with the server down: Init never dials.
	data := numbered(0, 10)

	upAt := time.Now().Add(5 * time.Second)
	var fs *faultServer
	var codes []int
	retriesWhileDown := 0
	for try := 1; ; try++ {
		if fs == nil && !time.Now().Before(upAt) {
			fs = startFaultServer(t, faultOptions{addr: addr, cert: cert})
		}
		rc := h.Flush(0, faultTag, data)
		codes = append(codes, rc)
		if fs == nil {
			if rc != flbRetry {
				t.Fatalf("flush %d while the server is down = %d, want FLB_RETRY; log:\n%s", try, rc, h.Log())
			}
			retriesWhileDown++
		} else {
			if rc != flbOK {
				t.Fatalf("first flush after the server came up = %d, want FLB_OK (codes %v); log:\n%s", rc, codes, h.Log())
			}
			break
		}
		if try > 100 {
			t.Fatalf("too many flushes: %v", codes)
		}
		<-time.After(500 * time.Millisecond) // Fluent Bit's retry back-off
	}
	if retriesWhileDown < 2 {
		t.Errorf("%d flushes while the server was down, want several", retriesWhileDown)
	}
	d := checkDelivery(t, fs, span(0, 10))
	if d.Messages != 10 || d.Duplicates != 0 {
		t.Errorf("server stored %+v, want 10 messages and no duplicate", d)
	}
	if c := fs.Counters(); c.Txs != 10 {
		t.Errorf("server saw %d transactions, want 10 (one per record)", c.Txs)
	}
	if l := h.LogLines("[ warn] [output:smtp:smtp.0]", "10 email(s) will be retried", "smtp dial "+addr); len(l) == 0 {
		t.Errorf("want a warning naming the failed dial to %s; log:\n%s", addr, h.Log())
	}
	if l := h.LogLines("[error]"); len(l) != 0 {
		t.Errorf("a server that is down is transient trouble, not an [error]: %q", l)
	}
	checkExit(t, h, fmt.Sprintf("records=%d delivered=10 rejected=0 retried=%d skipped=0", 10*len(codes), 10*retriesWhileDown))
}

func TestFault451OnFirstTransactions(t *testing.T) {
	const failFirst = 12 // more than one chunk: the first flush fails completely
	fs := startFaultServer(t, faultOptions{plan: func(tx int) fault {
		if tx <= failFirst {
			return fault451
		}
		return faultNone
	}})
	h := startFaultHost(t, faultKeys(fs, "soc@example.com"))

	codes := flushUntilOK(t, h, numbered(0, 10), 5)
	if diff := cmp.Diff([]int{flbRetry, flbRetry, flbOK}, codes); diff != "" {
		t.Errorf("flush codes (-want +got):\n%s", diff)
	}
	d := checkDelivery(t, fs, span(0, 10))
	if d.Messages != 10 || d.Duplicates != 0 {
		t.Errorf("server stored %+v, want 10 messages and no duplicate", d)
	}
	// 10 refused, then 2 refused and 8 stored, then the last 2: nothing sent twice.
	if c := fs.Counters(); c.Txs != 22 || c.Injected[fault451] != failFirst {
		t.Errorf("server saw %d transactions with %d faults, want 22 with %d", c.Txs, c.Injected[fault451], failFirst)
	}
	if l := h.LogLines("[ warn] [output:smtp:smtp.0]", "will be retried", "451 4.3.0"); len(l) == 0 {
		t.Errorf("want a warning with the 451 reply; log:\n%s", h.Log())
	}
	checkExit(t, h, "records=30 delivered=10 rejected=0 retried=12 skipped=8")
}

func TestFaultConnectionDroppedDuringData(t *testing.T) {
	for _, tc := range []struct {
		name     string
		chunking string
		fault    fault
		wantDups int
	}{
		{"DATA, dropped before the server stored it", "false", faultDropBeforeStore, 0},
		{"DATA, dropped after the server stored it", "false", faultDropAfterStore, 1},
		{"BDAT, dropped after the server stored it", "true", faultDropAfterStore, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := startFaultServer(t, faultOptions{plan: func(tx int) fault {
				if tx == 4 {
					return tc.fault
				}
				return faultNone
			}})
			keys := faultKeys(fs, "soc@example.com")
			keys["chunking"] = tc.chunking
			h := startFaultHost(t, keys)

			codes := flushUntilOK(t, h, numbered(0, 10), 5)
			if diff := cmp.Diff([]int{flbRetry, flbOK}, codes); diff != "" {
				t.Errorf("flush codes (-want +got):\n%s", diff)
			}
			d := checkDelivery(t, fs, span(0, 10))
			if d.Messages != 10+tc.wantDups || d.Duplicates != tc.wantDups {
				t.Errorf("server stored %+v, want %d messages with %d duplicate(s)", d, 10+tc.wantDups, tc.wantDups)
			}
			if c := fs.Counters(); c.Txs != 11 {
				t.Errorf("server saw %d transactions, want 11 (the dropped record once more)", c.Txs)
			}
			// The record whose fate the plugin could not know is named, and it is the one the
			// server holds twice when it did store it.
			uncertain := h.LogLines("[ warn] [output:smtp:smtp.0] delivery of Message-ID <", "is uncertain")
			if len(uncertain) != 1 {
				t.Fatalf("want one warning about the uncertain delivery, got %q\nlog:\n%s", uncertain, h.Log())
			}
			if tc.wantDups > 0 {
				seen := make(map[string]int)
				for _, m := range fs.Stored() {
					seen[m.MessageID]++
				}
				for id, n := range seen {
					if n == 2 && !strings.Contains(uncertain[0], "<"+id+">") {
						t.Errorf("Message-ID <%s> arrived twice but the warning names another: %s", id, uncertain[0])
					}
				}
			}
			checkExit(t, h, "records=20 delivered=10 rejected=0 retried=1 skipped=9")
		})
	}
}

func TestFaultOneOfThreeRecipientsRejected(t *testing.T) {
	fs := startFaultServer(t, faultOptions{rejectRcpt: map[string]*smtp.SMTPError{
		"gone@example.com": {Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user here"},
	}})
	h := startFaultHost(t, faultKeys(fs, "SOC <soc@example.com>, Gone <gone@example.com>, CERT <cert@example.com>"))
	data := numbered(0, 5)

	if rc := h.Flush(0, faultTag, data); rc != flbOK {
		t.Fatalf("flush = %d, want FLB_OK (a refused recipient is not retried); log:\n%s", rc, h.Log())
	}
	d := checkDelivery(t, fs, span(0, 5))
	if d.Messages != 5 || d.Duplicates != 0 {
		t.Errorf("server stored %+v, want 5 messages", d)
	}
	for _, m := range fs.Stored() {
		if diff := cmp.Diff([]string{"soc@example.com", "cert@example.com"}, m.EnvTo); diff != "" {
			t.Errorf("message <%s> envelope recipients (-want +got):\n%s", m.MessageID, diff)
		}
		want := fmt.Sprintf("[error] [output:smtp:smtp.0] recipient rejected: address=gone@example.com message_id=<%s> code=550 enhanced_code=5.1.1 ", m.MessageID)
		if l := h.LogLines(want); len(l) != 1 {
			t.Errorf("want one line %q, got %q", want, l)
		}
	}
	if l := h.LogLines("recipient rejected:"); len(l) != 5 {
		t.Errorf("%d recipient-rejected lines, want 5 (one per message)", len(l))
	}
	// The chunk coming back (another output's retry) emails nobody twice.
	if rc := h.Flush(0, faultTag, data); rc != flbOK {
		t.Errorf("second flush = %d, want FLB_OK", rc)
	}
	if n := len(fs.Stored()); n != 5 {
		t.Errorf("after the chunk came back the server holds %d messages, want 5", n)
	}
	checkExit(t, h, "records=10 delivered=5 rejected=0 retried=0 skipped=5 dropped=0 malformed=0 recipients_rejected=5")
}

// TestFaultRecipientDeferred: one of three recipients refused for now (451 greylisting) while
// the others accept. The chunk is retried and the retry goes to that recipient alone: everyone
// ends with exactly one copy of every record.
func TestFaultRecipientDeferred(t *testing.T) {
	fs := startFaultServer(t, faultOptions{rejectRcpt: map[string]*smtp.SMTPError{
		"grey@example.com": {Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "Greylisted, try again later"},
	}})
	h := startFaultHost(t, faultKeys(fs, "SOC <soc@example.com>, Grey <grey@example.com>, CERT <cert@example.com>"))
	data := numbered(0, 5)

	if rc := h.Flush(0, faultTag, data); rc != flbRetry {
		t.Fatalf("flush with a deferred recipient = %d, want FLB_RETRY; log:\n%s", rc, h.Log())
	}
	if l := h.LogLines("[ warn] [output:smtp:smtp.0] recipient deferred: address=grey@example.com", "code=451 enhanced_code=4.7.1"); len(l) != 5 {
		t.Errorf("%d 'recipient deferred' lines, want 5 (one per message)\nlog:\n%s", len(l), h.Log())
	}
	fs.acceptRcpt("grey@example.com")
	if rc := h.Flush(0, faultTag, data); rc != flbOK {
		t.Fatalf("retry = %d, want FLB_OK; log:\n%s", rc, h.Log())
	}
	copies := map[string]map[string]int{} // recipient -> Message-ID -> copies
	for _, m := range fs.Stored() {
		for _, to := range m.EnvTo {
			if copies[to] == nil {
				copies[to] = map[string]int{}
			}
			copies[to][m.MessageID]++
		}
	}
	for _, to := range []string{"soc@example.com", "grey@example.com", "cert@example.com"} {
		if len(copies[to]) != 5 {
			t.Errorf("%s received %d distinct emails, want 5", to, len(copies[to]))
		}
		for id, n := range copies[to] {
			if n != 1 {
				t.Errorf("%s received <%s> %d times, want once", to, id, n)
			}
		}
	}
	if rc := h.Flush(0, faultTag, data); rc != flbOK || len(fs.Stored()) != 10 {
		t.Errorf("third flush = %d with %d messages stored, want FLB_OK and still 10", rc, len(fs.Stored()))
	}
}

func TestFaultAuthenticationFailure(t *testing.T) {
	fs := startFaultServer(t, faultOptions{users: map[string]string{"fluent": testPassword}, authRefused: true})
	keys := faultKeys(fs, "soc@example.com")
	keys["username"] = "fluent"
	keys["password"] = testPassword
	h := startFaultHost(t, keys)
	data := numbered(0, 5)

	for i := 1; i <= 2; i++ {
		if rc := h.Flush(0, faultTag, data); rc != flbRetry {
			t.Fatalf("flush %d while AUTH is refused = %d, want FLB_RETRY; log:\n%s", i, rc, h.Log())
		}
	}
	if c := fs.Counters(); c.AuthFails == 0 || c.Txs != 0 || c.Stored != 0 {
		t.Fatalf("server counters %+v, want AUTH failures and no transaction", c)
	}
	// The [error] line says what to fix; it is not repeated per record (10 records so far).
	fix := h.LogLines("[error] [output:smtp:smtp.0]", "cannot be delivered until this is fixed", "smtp AUTH", "535 5.7.8", "check username/password")
	if len(fix) == 0 || len(fix) >= 10 {
		t.Errorf("want the AUTH error line once or a few times, not per record: got %d\nlog:\n%s", len(fix), h.Log())
	}

	fs.acceptAuth() // the operator fixed the credentials on the server
	if rc := h.Flush(0, faultTag, data); rc != flbOK {
		t.Fatalf("flush after AUTH works = %d, want FLB_OK; log:\n%s", rc, h.Log())
	}
	d := checkDelivery(t, fs, span(0, 5))
	if d.Messages != 5 || d.Duplicates != 0 {
		t.Errorf("server stored %+v, want 5 messages and no duplicate", d)
	}
	checkExit(t, h, "records=15 delivered=5 rejected=0 retried=10 skipped=0")
	if strings.Contains(h.Log(), testPassword) {
		t.Errorf("the password appears in the log")
	}
}

func TestFault421FromIdleConnection(t *testing.T) {
	fs := startFaultServer(t, faultOptions{})
	h := startFaultHost(t, faultKeys(fs, "soc@example.com"))

	if rc := h.Flush(0, faultTag, numbered(0, 5)); rc != flbOK {
		t.Fatalf("first flush = %d; log:\n%s", rc, h.Log())
	}
	before := fs.Counters()
	// Between flushes the server times the pooled connections out: 421 4.4.2, then close.
	if n := fs.expireIdle(); n != before.Opened || n == 0 {
		t.Fatalf("expired %d idle sessions, want the %d the first flush opened", n, before.Opened)
	}
	fs.waitUntil("every idle session closed", 30*time.Second, func() bool { return fs.ended == fs.opened })

	if rc := h.Flush(0, faultTag, numbered(100, 5)); rc != flbOK {
		t.Fatalf("flush after the idle 421 = %d, want FLB_OK at once (transparent reconnect); log:\n%s", rc, h.Log())
	}
	d := checkDelivery(t, fs, append(span(0, 5), span(100, 5)...))
	if d.Messages != 10 || d.Duplicates != 0 {
		t.Errorf("server stored %+v, want 10 messages", d)
	}
	after := fs.Counters()
	if after.Opened <= before.Opened {
		t.Errorf("no new connection after the idle 421 (opened %d then %d)", before.Opened, after.Opened)
	}
	if after.Txs != 10 {
		t.Errorf("server saw %d transactions, want 10", after.Txs)
	}
	if l := h.LogLines("[error]"); len(l) != 0 {
		t.Errorf("a reconnect is not an error: %q", l)
	}
	checkExit(t, h, "records=10 delivered=10 rejected=0 retried=0 skipped=0")
}

func TestFaultShutdownDuringStalledFlush(t *testing.T) {
	fs := startFaultServer(t, faultOptions{plan: func(tx int) fault {
		if tx == 2 {
			return faultStall
		}
		return faultNone
	}})
	keys := faultKeys(fs, "soc@example.com")
	keys["timeout"] = "60s" // far beyond the bound on Exit below: the stall must be cut short
	keys["max_connections"] = "2"
	h := startFaultHost(t, keys)

	// Connection 1: one record delivered, then idle in the pool.
	if rc := h.Flush(0, faultTag, numbered(0, 1)); rc != flbOK {
		t.Fatalf("flush A = %d; log:\n%s", rc, h.Log())
	}
	// Flush B takes connection 1 and the server stalls it after the whole message arrived.
	job := h.Start(0, faultTag, numbered(10, 1))
	fs.waitUntil("stalled", 30*time.Second, func() bool { return fs.stalls == 1 })
	// Flush C, meanwhile, opens connection 2, delivers, and leaves it idle.
	if rc := h.Flush(0, faultTag, numbered(20, 1)); rc != flbOK {
		t.Fatalf("flush C = %d; log:\n%s", rc, h.Log())
	}

	start := time.Now()
	rc := h.Exit(0)
	took := time.Since(start)
	if rc != flbOK {
		t.Errorf("exit = %d, want FLB_OK", rc)
	}
	if took > 10*time.Second {
		t.Errorf("exit took %v with a flush stalled (timeout 60s), want it cut short", took)
	}
	if got := h.Do(fmt.Sprintf("join %d", job)); got != fmt.Sprintf("join %d -> %d", job, flbRetry) {
		t.Errorf("stalled flush returned %q, want FLB_RETRY (%d)", got, flbRetry)
	}
	fs.waitUntil("every session ended", 10*time.Second, func() bool { return fs.opened == 2 && fs.ended == 2 })
	c := fs.Counters()
	if diff := cmp.Diff([]string{"client closed"}, c.StallEnds); diff != "" {
		t.Errorf("how the stalled connection ended (-want +got):\n%s", diff)
	}
	if c.Quits != 1 {
		t.Errorf("server read %d QUIT, want 1 (on the idle connection; the stalled one is closed)", c.Quits)
	}
	d := checkDelivery(t, fs, []int{0, 20})
	if d.Messages != 2 {
		t.Errorf("server stored %+v, want records 0 and 20 only", d)
	}
	if l := h.LogLines("[ warn] [output:smtp:smtp.0] delivery of Message-ID <", "is uncertain"); len(l) != 1 {
		t.Errorf("want the stalled record's uncertain delivery logged once, got %q", l)
	}
	if l := h.LogLines("[ info] [output:smtp:smtp.0] stopped: records=3 delivered=2 rejected=0 retried=1"); len(l) != 1 {
		t.Errorf("want one stopped line with the totals; log:\n%s", h.Log())
	}
	// Fluent Bit does not flush after ExitCtx; if a host did, the chunk goes back.
	if rc := h.Flush(0, faultTag, numbered(30, 1)); rc != flbRetry {
		t.Errorf("flush after exit = %d, want FLB_RETRY", rc)
	}
}
