package e2e

import (
	"net"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/smtpout/smtpout/chunk"
)

// prefixRE finds the instance name in the plugin's log prefix.
var prefixRE = regexp.MustCompile(`\[output:smtp:([^\]]*)\]`)

// pluginNames returns the distinct instance names in the plugin's log lines, sorted.
func pluginNames(log string) []string {
	seen := map[string]bool{}
	for _, m := range prefixRE.FindAllStringSubmatch(log, -1) {
		seen[m[1]] = true
	}
	var out []string
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// trySend is send for a moment when the forward socket may be down (a hot reload): it
// reports whether the chunk was written.
func (r *fluentBitRun) trySend(tag string, data []byte) bool {
	conn, err := net.DialTimeout("unix", r.sock, time.Second)
	if err != nil {
		return false
	}
	defer conn.Close()
	var e chunk.Encoder
	e.AppendValue([]any{tag, data})
	_, err = conn.Write(e.Bytes())
	return err == nil
}

// TestFluentBitInstanceNames: the plugin names each instance as Fluent Bit does (its Alias,
// else smtp.N counted over every output), in its log prefix and in the name label of its
// metrics, so they join with Fluent Bit's own fluentbit_output_* series; and still after a
// hot reload, when Fluent Bit builds every instance anew in the same process.
func TestFluentBitInstanceNames(t *testing.T) {
	fluentBit(t)
	srv := startServer(t)
	port := freePort(t)
	service := httpServer(port)
	service["Hot_Reload"] = "On"
	fb := startFluentBitWith(t, service, []outputSection{
		{plugin: "stdout", match: "nothing.*"},                                           // smtp.0 is not ours
		{match: "plain.*", keys: baseKeys(srv, "plain@example.com")},                     // smtp.1
		{match: "aliased.*", alias: "oncall", keys: baseKeys(srv, "oncall@example.com")}, // smtp.2, shown as oncall
	}, true)

	fb.send("plain.app", numbered(0, 2))
	fb.send("aliased.app", numbered(10, 1))
	srv.waitMessages(t, 3)
	joined := func(s string) bool {
		return strings.Contains(s, `fluentbit_smtp_emails_delivered_total{name="smtp.1"} 2`) &&
			strings.Contains(s, `fluentbit_smtp_emails_delivered_total{name="oncall"} 1`) &&
			strings.Contains(s, `fluentbit_output_proc_records_total{name="smtp.1"} 2`) &&
			strings.Contains(s, `fluentbit_output_proc_records_total{name="oncall"} 1`)
	}
	fb.waitMetrics(port, "our counters and Fluent Bit's under the same names", joined)
	log := fb.log()
	for _, want := range []string{"[output:smtp:smtp.1] started:", "[output:smtp:oncall] started:"} {
		if strings.Count(log, want) != 1 {
			t.Errorf("want one %q line in fluent-bit's log", want)
		}
	}
	if diff := cmp.Diff([]string{"oncall", "smtp.1"}, pluginNames(log)); diff != "" {
		t.Errorf("instance names in the plugin's log (-want +got):\n%s", diff)
	}

	// Hot reload: Fluent Bit stops every instance and starts them again from the same file.
	if err := fb.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for strings.Count(fb.log(), "[output:smtp:smtp.1] started:") < 2 || strings.Count(fb.log(), "[output:smtp:oncall] started:") < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no second start of both instances within a minute of SIGHUP")
		}
		time.Sleep(100 * time.Millisecond)
	}
	for !fb.trySend("plain.app", numbered(100, 2)) {
		if time.Now().After(deadline) {
			t.Fatalf("the forward input did not come back after the reload")
		}
		time.Sleep(100 * time.Millisecond)
	}
	srv.waitMessages(t, 5)
	fb.waitMetrics(port, "the reloaded instance's counters under Fluent Bit's name", func(s string) bool {
		return strings.Contains(s, `fluentbit_smtp_emails_delivered_total{name="smtp.1"} 2`) &&
			strings.Contains(s, `fluentbit_output_proc_records_total{name="smtp.1"} 2`)
	})
	if diff := cmp.Diff([]string{"oncall", "smtp.1"}, pluginNames(fb.log())); diff != "" {
		t.Errorf("instance names in the plugin's log after the reload (-want +got):\n%s", diff)
	}
}
