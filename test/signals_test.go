package e2e

import (
	"fmt"
	"testing"
	"time"

	flb "github.com/fluent/fluent-bit-go/output"
	"github.com/google/go-cmp/cmp"
)

// The stop-signal hook (sigterm.go) in the C host, with handlers installed as Fluent Bit
// installs them (fbsignals: SIGHUP and SIGCONT re-install every handler, as
// flb_signal_init() does), issue 18 item 2.

// slowFlushStoppedBy starts a flush of total records on instance i against fs (40 ms a
// reply), sends sig once some are stored, and returns how long the flush went on after the
// signal and what it returned, with the Fluent Bit-like handler's counts after the signal.
func slowFlushStoppedBy(t *testing.T, h *Host, fs *faultServer, i int, sig string, total int) (time.Duration, int, string) {
	t.Helper()
	j := h.Start(i, "app.sig", numbered(0, total))
	storedAtLeast(fs, 10)
	at := time.Now()
	counts := h.Do("signal " + sig)
	var jj, rc int
	r := h.Do(fmt.Sprintf("join %d", j))
	took := time.Since(at)
	if _, err := fmt.Sscanf(r, "join %d -> %d", &jj, &rc); err != nil {
		t.Fatalf("join reply %q: %v", r, err)
	}
	return took, rc, counts
}

// TestHostStopSignalAfterReloadsEndsTheFlush: after hot reloads (SIGHUP, each followed by the
// instance being started anew, as Fluent Bit does) and a SIGCONT, each of SIGTERM, SIGINT and
// SIGQUIT still ends a slow flush within flush_timeout (plus the slack for an email on the
// wire), and Fluent Bit's own handler still sees every signal exactly once.
func TestHostStopSignalAfterReloadsEndsTheFlush(t *testing.T) {
	for _, sig := range []string{"TERM", "INT", "QUIT"} {
		t.Run("SIG"+sig, func(t *testing.T) {
			fs := startFaultServer(t, faultOptions{delay: 40 * time.Millisecond})
			h := StartHost(t)
			h.Expect("fbsignals", "fbsignals -> ok")
			keys := faultKeys(fs, "soc@example.com")
			keys["flush_timeout"] = "1s"
			keys["max_connections"] = "2"
			h.Configure(0, keys)
			if rc := h.Init(0); rc != flb.FLB_OK {
				t.Fatalf("init 0 = %d", rc)
			}
			// Two reloads: SIGHUP re-installs Fluent Bit's handlers, then the old instance
			// stops and a new one starts; and a SIGCONT, which re-installs them with no Init.
			var got []string
			live := 0
			for n := 1; n <= 2; n++ {
				got = append(got, h.Do("signal HUP"))
				if rc := h.Exit(live); rc != flb.FLB_OK {
					t.Fatalf("exit %d = %d", live, rc)
				}
				live = n
				h.Configure(live, keys)
				if rc := h.Init(live); rc != flb.FLB_OK {
					t.Fatalf("init %d = %d", live, rc)
				}
			}
			got = append(got, h.Do("signal CONT"))
			took, rc, counts := slowFlushStoppedBy(t, h, fs, live, sig, 400)
			got = append(got, counts)
			want := []string{
				"signal HUP -> stops=0 reinstalls=1",
				"signal HUP -> stops=0 reinstalls=2",
				"signal CONT -> stops=0 reinstalls=3",
				"signal " + sig + " -> stops=1 reinstalls=3",
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("what the Fluent Bit-like handlers saw (-want +got):\n%s", diff)
			}
			t.Logf("SIG%s after 2 reloads and a SIGCONT: the flush returned %d, %v after the signal, %d stored",
				sig, rc, took.Round(time.Millisecond), len(fs.Stored()))
			if rc != flb.FLB_RETRY {
				t.Errorf("flush = %d, want RETRY (%d): the signal came mid-chunk", rc, flb.FLB_RETRY)
			}
			// flush_timeout 1 s + FlushFinishSlack 1 s, and 1.5 s for a loaded machine; without
			// the hook the 400 records at 40 ms a reply go on for several seconds more.
			if limit := 3500 * time.Millisecond; took > limit {
				t.Errorf("the flush went on %v after SIG%s, want within %v", took, sig, limit)
			}
		})
	}
}

// TestHostSignalsReachFluentBitsHandlerOnce: the chained handler never calls itself (no
// double chaining however often it re-arms) and never swallows a signal: after a hundred
// SIGHUPs and SIGCONTs and Inits, each signal reaches the Fluent Bit-like handler exactly
// once.
func TestHostSignalsReachFluentBitsHandlerOnce(t *testing.T) {
	fs := startFaultServer(t, faultOptions{})
	h := StartHost(t)
	h.Expect("fbsignals", "fbsignals -> ok")
	keys := faultKeys(fs, "soc@example.com")
	h.Configure(0, keys)
	if rc := h.Init(0); rc != flb.FLB_OK {
		t.Fatalf("init 0 = %d", rc)
	}
	for n := 1; n <= 100; n++ {
		sig := "HUP"
		if n%2 == 0 {
			sig = "CONT"
		}
		want := fmt.Sprintf("signal %s -> stops=0 reinstalls=%d", sig, n)
		if got := h.Do("signal " + sig); got != want {
			t.Fatalf("signal %d: %q, want %q", n, got, want)
		}
		if n%10 == 0 {
			h.Configure(n/10, keys)
			if rc := h.Init(n / 10); rc != flb.FLB_OK {
				t.Fatalf("init %d = %d", n/10, rc)
			}
		}
	}
	for n, sig := range []string{"INT", "QUIT", "TERM"} {
		h.Expect("signal "+sig, fmt.Sprintf("signal %s -> stops=%d reinstalls=100", sig, n+1))
	}
}
