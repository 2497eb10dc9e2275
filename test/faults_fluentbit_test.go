package e2e

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/google/go-cmp/cmp"

	"github.com/smtpout/smtpout/testsupport/testcert"
)

// The fault matrix of faults_test.go through a real Fluent Bit (FLUENT_BIT=/path/to/fluent-bit;
// skipped otherwise). Fluent Bit's own scheduler retries the chunks (Retry_Limit 5, back-off of
// several seconds), so these take longer; each waits for the server, stops Fluent Bit
// gracefully (every flush has returned) and then counts by Message-ID at the server.

// fbWait bounds how long a scenario waits for Fluent Bit's retries to deliver.
const fbWait = 3 * time.Minute

// startFaultFluentBit runs fluent-bit with one smtp output configured by keys.
func startFaultFluentBit(t *testing.T, keys map[string]string) *fluentBitRun {
	t.Helper()
	return startFluentBit(t, []outputSection{{match: "*", keys: keys}}, true)
}

// waitLog waits (bounded) until one line of fluent-bit's log contains every one of parts, and
// returns that line.
func (r *fluentBitRun) waitLog(within time.Duration, parts ...string) string {
	r.t.Helper()
	deadline := time.Now().Add(within)
	for {
		for _, l := range strings.Split(r.log(), "\n") {
			ok := true
			for _, p := range parts {
				ok = ok && strings.Contains(l, p)
			}
			if ok {
				return l
			}
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("fluent-bit's log has no line with %q within %v:\n%s", parts, within, r.log())
		}
		select {
		case err := <-r.waited:
			r.waited <- err
			r.t.Fatalf("fluent-bit exited (%v) before logging %q:\n%s", err, parts, r.log())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// logLines returns fluent-bit's log lines that contain every one of parts.
func (r *fluentBitRun) logLines(parts ...string) []string { return linesWith(r.log(), parts...) }

// storedAtLeast waits until the server stored n messages.
func storedAtLeast(fs *faultServer, n int) {
	fs.t.Helper()
	fs.waitUntil(fmt.Sprintf("%d messages stored", n), fbWait, func() bool { return len(fs.msgs) >= n })
}

func TestFluentBitFaultServerDownAtStartThenUp(t *testing.T) {
	fluentBit(t)
	cert := testcert.New(t)
	addr := reservePort(t)
	began := time.Now()
	fb := startFaultFluentBit(t, faultKeysAt(addr, cert, "soc@example.com")) // Init does not dial
	fb.send(faultTag, numbered(0, 10))
	fb.waitLog(time.Minute, "[ warn] [output:smtp:smtp.0]", "will be retried", "smtp dial "+addr)
	<-time.After(time.Until(began.Add(5 * time.Second))) // the outage lasts 5 s
	fs := startFaultServer(t, faultOptions{addr: addr, cert: cert})
	storedAtLeast(fs, 10)
	fb.stop()
	if d := checkDelivery(t, fs, span(0, 10)); d.Messages != 10 || d.Duplicates != 0 {
		t.Errorf("server stored %+v, want 10 messages and no duplicate", d)
	}
}

func TestFluentBitFault451OnFirstTransactions(t *testing.T) {
	fluentBit(t)
	fs := startFaultServer(t, faultOptions{plan: func(tx int) fault {
		if tx <= 12 {
			return fault451
		}
		return faultNone
	}})
	fb := startFaultFluentBit(t, faultKeys(fs, "soc@example.com"))
	fb.send(faultTag, numbered(0, 10))
	storedAtLeast(fs, 10)
	fb.stop()
	if d := checkDelivery(t, fs, span(0, 10)); d.Messages != 10 || d.Duplicates != 0 {
		t.Errorf("server stored %+v, want 10 messages and no duplicate", d)
	}
	if c := fs.Counters(); c.Txs != 22 {
		t.Errorf("server saw %d transactions, want 22 (nothing sent twice)", c.Txs)
	}
}

func TestFluentBitFaultConnectionDroppedDuringData(t *testing.T) {
	fluentBit(t)
	fs := startFaultServer(t, faultOptions{plan: func(tx int) fault {
		if tx == 4 {
			return faultDropAfterStore
		}
		return faultNone
	}})
	fb := startFaultFluentBit(t, faultKeys(fs, "soc@example.com"))
	fb.send(faultTag, numbered(0, 10))
	storedAtLeast(fs, 11) // the ambiguous record is stored twice
	fb.stop()
	if d := checkDelivery(t, fs, span(0, 10)); d.Messages != 11 || d.Duplicates != 1 {
		t.Errorf("server stored %+v, want 11 messages with one duplicate", d)
	}
	if l := fb.logLines("[ warn] [output:smtp:smtp.0] delivery of Message-ID <", "is uncertain"); len(l) != 1 {
		t.Errorf("want one warning about the uncertain delivery, got %q", l)
	}
}

func TestFluentBitFaultOneOfThreeRecipientsRejected(t *testing.T) {
	fluentBit(t)
	fs := startFaultServer(t, faultOptions{rejectRcpt: map[string]*smtp.SMTPError{
		"gone@example.com": {Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user here"},
	}})
	fb := startFaultFluentBit(t, faultKeys(fs, "soc@example.com, gone@example.com, cert@example.com"))
	fb.send(faultTag, numbered(0, 5))
	storedAtLeast(fs, 5)
	fb.stop()
	if d := checkDelivery(t, fs, span(0, 5)); d.Messages != 5 {
		t.Errorf("server stored %+v, want 5 messages", d)
	}
	for _, m := range fs.Stored() {
		if diff := cmp.Diff([]string{"soc@example.com", "cert@example.com"}, m.EnvTo); diff != "" {
			t.Errorf("message <%s> envelope recipients (-want +got):\n%s", m.MessageID, diff)
		}
		want := fmt.Sprintf("[error] [output:smtp:smtp.0] recipient rejected: address=gone@example.com message_id=<%s> code=550 enhanced_code=5.1.1 ", m.MessageID)
		if l := fb.logLines(want); len(l) != 1 {
			t.Errorf("want one line %q, got %q", want, l)
		}
	}
}

func TestFluentBitFaultAuthenticationFailure(t *testing.T) {
	fluentBit(t)
	fs := startFaultServer(t, faultOptions{users: map[string]string{"fluent": testPassword}, authRefused: true})
	keys := faultKeys(fs, "soc@example.com")
	keys["username"] = "fluent"
	keys["password"] = testPassword
	fb := startFaultFluentBit(t, keys)
	fb.send(faultTag, numbered(0, 5))
	fb.waitLog(time.Minute, "[error] [output:smtp:smtp.0]", "535 5.7.8", "check username/password")
	fs.acceptAuth()
	storedAtLeast(fs, 5)
	fb.stop()
	if d := checkDelivery(t, fs, span(0, 5)); d.Messages != 5 || d.Duplicates != 0 {
		t.Errorf("server stored %+v, want 5 messages and no duplicate", d)
	}
	if strings.Contains(fb.log(), testPassword) {
		t.Errorf("the password appears in fluent-bit's log")
	}
}

func TestFluentBitFault421FromIdleConnection(t *testing.T) {
	fluentBit(t)
	fs := startFaultServer(t, faultOptions{})
	fb := startFaultFluentBit(t, faultKeys(fs, "soc@example.com"))
	fb.send(faultTag, numbered(0, 5))
	storedAtLeast(fs, 5)
	if n := fs.expireIdle(); n == 0 {
		t.Fatalf("no idle session to expire")
	}
	fs.waitUntil("every idle session closed", 30*time.Second, func() bool { return fs.ended == fs.opened })
	fb.send(faultTag, numbered(100, 5))
	storedAtLeast(fs, 10)
	fb.stop()
	if d := checkDelivery(t, fs, append(span(0, 5), span(100, 5)...)); d.Messages != 10 || d.Duplicates != 0 {
		t.Errorf("server stored %+v, want 10 messages", d)
	}
	if c := fs.Counters(); c.Txs != 10 {
		t.Errorf("server saw %d transactions, want 10", c.Txs)
	}
	// Transparent: Fluent Bit never had to retry a chunk.
	if l := fb.logLines("[ warn] [engine]", "retry"); len(l) != 0 {
		t.Errorf("a chunk was retried after the idle 421: %q", l)
	}
}

// In Fluent Bit v4.2.8 flb_output_exit joins the output's worker threads before it calls
// FLBPluginOutputPreExit and FLBPluginExitCtx, so ExitCtx cannot cut a stalled flush short
// there: shutdown waits until the flush's SMTP timeout ends it. This scenario bounds that wait
// with a single record and a 10 s timeout, and checks that the connection is closed and that
// Fluent Bit exits.
func TestFluentBitFaultShutdownDuringStalledFlush(t *testing.T) {
	fluentBit(t)
	fs := startFaultServer(t, faultOptions{plan: func(tx int) fault {
		if tx == 1 {
			return faultStall
		}
		return faultNone
	}})
	keys := faultKeys(fs, "soc@example.com")
	keys["timeout"] = "10s"
	fb := startFaultFluentBit(t, keys)
	fb.send(faultTag, numbered(0, 1))
	fs.waitUntil("stalled", time.Minute, func() bool { return fs.stalls == 1 })

	start := time.Now()
	if err := fb.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-fb.waited:
		fb.waited <- err
	case <-time.After(45 * time.Second): // Grace 5 s + the 10 s timeout, with room
		t.Fatalf("fluent-bit did not exit within 45s of SIGTERM during a stalled flush:\n%s", fb.log())
	}
	t.Logf("fluent-bit exited %v after SIGTERM", time.Since(start).Round(time.Millisecond))
	fs.waitUntil("every session ended", 10*time.Second, func() bool { return fs.ended == fs.opened })
	if c := fs.Counters(); len(c.StallEnds) != 1 || c.StallEnds[0] != "client closed" {
		t.Errorf("the stalled connection ended %q, want closed by the client", c.StallEnds)
	}
	if l := fb.logLines("[ info] [output:smtp:smtp.0] stopped:"); len(l) != 1 {
		t.Errorf("want one stopped line in fluent-bit's log, got %q", l)
	}
}
