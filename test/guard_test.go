package e2e

import (
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestStormGuardHoldsTheRest: with max_emails_per_minute 5, a chunk of 12 records gets 5
// emails out and FLB_RETRY for the rest; the chunk handed back within the minute sends
// nothing more and nothing twice; the guard's warning is written once, the held records are
// counted. With SMTPOUT_E2E_SLOW=1 the test also waits out the windows until every record
// is delivered, each once (the same is shown with a fake clock for 1,000 records in
// internal/pipeline's TestStormGuardHoldsBurst).
func TestStormGuardHoldsTheRest(t *testing.T) {
	srv := startServer(t)
	h := StartHost(t)
	h.Expect("cmetrics on", "ok")
	keys := baseKeys(srv, "soc@example.com")
	keys["max_emails_per_minute"] = "5"
	h.Configure(0, keys)
	if rc := h.Init(0); rc != flbOK {
		t.Fatalf("init = %d; log:\n%s", rc, h.Log())
	}
	if l := h.LogLines("[ info] [output:smtp:smtp.0] started:", "max_emails_per_minute=5"); len(l) != 1 {
		t.Errorf("the started line does not show max_emails_per_minute=5; log:\n%s", h.Log())
	}
	data := numbered(0, 12)

	start := time.Now()
	if rc := h.Flush(0, "storm", data); rc != flbRetry {
		t.Fatalf("first flush = %d, want FLB_RETRY (7 records held)", rc)
	}
	srv.waitMessages(t, 5)
	if rc := h.Flush(0, "storm", data); rc != flbRetry {
		t.Errorf("second flush = %d, want FLB_RETRY", rc)
	}
	if time.Since(start) < 50*time.Second { // the window cannot have moved on
		msgs := srv.messages(t)
		var ns []int
		for _, m := range msgs {
			ns = append(ns, payloadN(t, m))
		}
		sort.Ints(ns)
		if diff := cmp.Diff([]int{0, 1, 2, 3, 4}, ns); diff != "" {
			t.Errorf("records delivered within the first minute (-want +got):\n%s", diff)
		}
	}
	warn := h.LogLines("[ warn] [output:smtp:smtp.0] storm guard active: 5 emails in the last minute (max_emails_per_minute=5); holding the rest in Fluent Bit's buffer")
	if len(warn) != 1 {
		t.Errorf("want one storm guard warning (the second is held back), got %q\nlog:\n%s", warn, h.Log())
	} else if !strings.Contains(warn[0], `7 record(s) of tag "storm" held, 5 sent now`) {
		t.Errorf("warning %q does not say what was held", warn[0])
	}
	m := series(h.Metrics(), "smtp.0")
	if m["emails_delivered_total"] != 5 || m["emails_held_total"] != 14 || m["emails_retried_total"] != 0 {
		t.Errorf("metrics delivered %v held %v retried %v, want 5, 14 (7 per flush), 0", m["emails_delivered_total"], m["emails_held_total"], m["emails_retried_total"])
	}

	if os.Getenv("SMTPOUT_E2E_SLOW") != "1" {
		t.Log("set SMTPOUT_E2E_SLOW=1 to wait out the windows (about two minutes) until every record is delivered")
		return
	}
	// Fluent Bit would hand the chunk back with back-off; here every 10 s.
	deadline := time.Now().Add(4 * time.Minute)
	for rc := flbRetry; rc == flbRetry; {
		if time.Now().After(deadline) {
			t.Fatal("not delivered within 4 minutes")
		}
		time.Sleep(10 * time.Second) // Fluent Bit's retry back-off, not a wait for readiness
		rc = h.Flush(0, "storm", data)
		if rc != flbOK && rc != flbRetry {
			t.Fatalf("flush = %d", rc)
		}
	}
	took := time.Since(start)
	msgs := srv.waitMessages(t, 12)
	seen := make(map[int]int)
	for _, m := range msgs {
		seen[payloadN(t, m)]++
	}
	for n := range 12 {
		if seen[n] != 1 {
			t.Errorf("record %d delivered %d times, want 1", n, seen[n])
		}
	}
	if len(msgs) != 12 {
		t.Errorf("%d messages, want 12", len(msgs))
	}
	if took < 2*time.Minute {
		t.Errorf("12 records at 5 a minute took %v, want more than 2 minutes", took)
	}
}
