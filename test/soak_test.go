package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The soak test of issue 6 (make soak; skipped unless SMTPOUT_SOAK=1): 20,000 records through
// the C host in 200 chunks of 100, flushed two at a time from two host threads, with faults
// injected into 5% of the server's transactions. Chunks that come back FLB_RETRY are flushed
// again, as Fluent Bit re-schedules them. It asserts that every record arrived, that every
// duplicate is explained by an ambiguous drop, and that the host's open descriptors and memory
// stay flat; it prints a report.

const (
	soakChunks   = 200
	soakPerChunk = 100
	soakThreads  = 2
	soakMaxTries = 10
	// soakFaultEvery: one transaction in 20 (5%) gets a fault, cycling through soakFaults.
	soakFaultEvery = 20
)

// resentRE finds the Message-ID in the plugin's warnings that an email may arrive twice:
// "is uncertain" (the connection was lost after the whole message went out: sent again later)
// and "may be repeated" (sent again at once on a new connection).
var resentRE = regexp.MustCompile(`delivery of Message-ID <([^>]+)> (?:is uncertain|may be repeated)`)

var soakFaults = []fault{fault451, faultDropAfterStore, fault421, faultDropBeforeStore}

// procSample is what /proc says about a process at one moment, and the plugin's goroutines
// when the host can ask it.
type procSample struct {
	RSSKB      int
	Threads    int
	FDs        int
	Goroutines int // -1: not available
}

// sampleProc reads /proc/<pid>/status and /proc/<pid>/fd of the host, and the plugin's
// goroutine count through the host's "stats" command when the plugin exports it.
func sampleProc(t *testing.T, h *Host) procSample {
	t.Helper()
	pid := h.cmd.Process.Pid
	s := procSample{Goroutines: -1}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("read the host's status: %v", err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "VmRSS:":
			s.RSSKB, _ = strconv.Atoi(f[1])
		case "Threads:":
			s.Threads, _ = strconv.Atoi(f[1])
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatalf("read the host's descriptors: %v", err)
	}
	s.FDs = len(fds)
	if r := h.tryDo("stats"); strings.HasPrefix(r, "stats -> ") {
		for _, kv := range strings.Fields(strings.TrimPrefix(r, "stats -> ")) {
			if v, ok := strings.CutPrefix(kv, "goroutines="); ok {
				s.Goroutines, _ = strconv.Atoi(v)
			}
		}
	}
	return s
}

// tryDo sends a command the host may not know (an older host.c) and returns its reply, error
// replies included.
func (h *Host) tryDo(command string) string {
	h.t.Helper()
	if _, err := fmt.Fprintln(h.stdin, command); err != nil {
		h.t.Fatalf("host: write %q: %v", command, err)
	}
	select {
	case r, ok := <-h.replies:
		if !ok {
			h.t.Fatalf("host exited during %q; log:\n%s", command, h.Log())
		}
		return r
	case <-time.After(replyTimeout):
		h.t.Fatalf("host: no reply to %q within %v", command, replyTimeout)
	}
	return ""
}

func TestSoak(t *testing.T) {
	if os.Getenv("SMTPOUT_SOAK") != "1" {
		t.Skip("skipped: the soak test runs only with SMTPOUT_SOAK=1 (make soak)")
	}
	fs := startFaultServer(t, faultOptions{plan: func(tx int) fault {
		if tx%soakFaultEvery != 0 {
			return faultNone
		}
		return soakFaults[(tx/soakFaultEvery)%len(soakFaults)]
	}})
	keys := faultKeys(fs, "soc@example.com")
	keys["timeout"] = "30s"
	h := startFaultHost(t, keys)
	// The chunks are written once; each flush hands the host the same file again.
	paths := make([]string, soakChunks)
	for i := range paths {
		paths[i] = h.Chunk(numbered(i*soakPerChunk, soakPerChunk))
	}
	tag := func(i int) string { return fmt.Sprintf("app.soak.%d", i%4) }

	began := time.Now()
	start := sampleProc(t, h)
	var warm procSample
	queue := make([]int, soakChunks)
	for i := range queue {
		queue[i] = i
	}
	tries := make([]int, soakChunks)
	flushes, retries, rounds := 0, 0, 0
	for len(queue) > 0 {
		n := min(soakThreads, len(queue))
		batch := queue[:n]
		queue = append([]int(nil), queue[n:]...)
		jobOf := make(map[int]int, n)
		for _, i := range batch {
			r := h.Do(fmt.Sprintf("start 0 %s %s", tag(i), paths[i]))
			var j int
			if _, err := fmt.Sscanf(r, "start %d", &j); err != nil {
				t.Fatalf("start reply %q: %v", r, err)
			}
			jobOf[j] = i
		}
		codes := h.JoinAll()
		if len(codes) != n {
			t.Fatalf("joinall returned %d jobs, want %d", len(codes), n)
		}
		for j, rc := range codes {
			i := jobOf[j]
			tries[i]++
			flushes++
			switch rc {
			case flbOK:
			case flbRetry:
				retries++
				if tries[i] == soakMaxTries {
					t.Fatalf("chunk %d still FLB_RETRY after %d flushes; server: %s", i, tries[i], fs.summary())
				}
				queue = append(queue, i) // Fluent Bit re-schedules it later
			default:
				t.Fatalf("chunk %d: flush = %d", i, rc)
			}
		}
		rounds++
		if rounds == 10 {
			warm = sampleProc(t, h)
		}
	}
	elapsed := time.Since(began)
	end := sampleProc(t, h)

	if rc := h.Exit(0); rc != flbOK {
		t.Errorf("exit = %d", rc)
	}
	fs.waitUntil("every session ended", 30*time.Second, func() bool { return fs.ended == fs.opened })
	afterExit := sampleProc(t, h)

	// A duplicate is explained by a drop after the server stored the message, or by an email
	// the plugin said may arrive twice because a connection closed before the server answered
	// it (a hang-up in the middle of a pipelined group loses the replies in flight).
	resent := make(map[string]int)
	for _, l := range h.LogLines("[ warn] [output:smtp:smtp.0] delivery of Message-ID <") {
		if m := resentRE.FindStringSubmatch(l); m != nil {
			resent[m[1]]++
		}
	}
	d := checkDeliveryExplained(t, fs, span(0, soakChunks*soakPerChunk), resent)
	c := fs.Counters()
	faults := 0
	for _, f := range soakFaults {
		faults += c.Injected[f]
	}
	// A duplicate is explained by a drop after the server stored the message, or by an email
	// the plugin sent again (and said so) because a connection closed before the server had
	// answered it: a pipelined group cut short by a hang-up loses the replies in flight.
	if faults*100 < c.Txs*4 || faults*100 > c.Txs*6 {
		t.Errorf("%d faults in %d transactions, want about 5%%", faults, c.Txs)
	}
	uncertain := len(h.LogLines("[ warn] [output:smtp:smtp.0] delivery of Message-ID <", "is uncertain"))
	stopped := h.LogLines("[ info] [output:smtp:smtp.0] stopped:")

	// Flat: the descriptors of the pooled connections come and go (at most max_connections, 4,
	// at a time), nothing accumulates per fault, and memory does not grow with the run.
	if end.FDs > warm.FDs+4 {
		t.Errorf("open descriptors grew from %d (after warm-up) to %d", warm.FDs, end.FDs)
	}
	if afterExit.FDs > start.FDs+3 {
		t.Errorf("open descriptors after exit %d, at start %d: connections left open", afterExit.FDs, start.FDs)
	}
	if end.RSSKB > 2*warm.RSSKB {
		t.Errorf("RSS grew from %d kB (after warm-up) to %d kB", warm.RSSKB, end.RSSKB)
	}
	if warm.Goroutines >= 0 && end.Goroutines > warm.Goroutines+8 {
		t.Errorf("goroutines grew from %d (after warm-up) to %d", warm.Goroutines, end.Goroutines)
	}

	var b strings.Builder
	fmt.Fprintf(&b, "\nsmtpout soak report (%s)\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "  records sent             %d (%d chunks of %d, %d host threads)\n", soakChunks*soakPerChunk, soakChunks, soakPerChunk, soakThreads)
	fmt.Fprintf(&b, "  flushes                  %d (%d returned FLB_RETRY and were flushed again)\n", flushes, retries)
	fmt.Fprintf(&b, "  SMTP transactions        %d on %d connections\n", c.Txs, c.Opened)
	fmt.Fprintf(&b, "  faults injected          %d (%.2f%% of transactions)\n", faults, 100*float64(faults)/float64(max(c.Txs, 1)))
	for _, f := range soakFaults {
		fmt.Fprintf(&b, "    %-34s %d\n", f, c.Injected[f])
	}
	fmt.Fprintf(&b, "  messages at the server   %d\n", d.Messages)
	fmt.Fprintf(&b, "  distinct Message-IDs     %d (records delivered: %d of %d, missing %d)\n", d.Distinct, d.Distinct, soakChunks*soakPerChunk, soakChunks*soakPerChunk-d.Distinct)
	fmt.Fprintf(&b, "  duplicates               %d (all explained: %d drops after the server stored, %d logged as uncertain; %d emails logged as sent again at once after a hang-up)\n", d.Duplicates, c.Injected[faultDropAfterStore], uncertain, d.Resent-uncertain)
	fmt.Fprintf(&b, "  elapsed                  %v (%.0f records/s)\n", elapsed.Round(time.Millisecond), float64(soakChunks*soakPerChunk)/elapsed.Seconds())
	if len(stopped) == 1 {
		fmt.Fprintf(&b, "  plugin totals            %s\n", stopped[0][strings.Index(stopped[0], "stopped:"):])
	}
	fmt.Fprintf(&b, "  host process             %10s %10s %10s %10s\n", "start", "warm", "end", "after exit")
	row := func(name string, f func(procSample) int) {
		fmt.Fprintf(&b, "    %-22s", name)
		for _, s := range []procSample{start, warm, end, afterExit} {
			if v := f(s); v >= 0 {
				fmt.Fprintf(&b, " %10d", v)
			} else {
				fmt.Fprintf(&b, " %10s", "n/a")
			}
		}
		b.WriteString("\n")
	}
	row("RSS (kB)", func(s procSample) int { return s.RSSKB })
	row("open fds", func(s procSample) int { return s.FDs })
	row("OS threads", func(s procSample) int { return s.Threads })
	row("goroutines (plugin)", func(s procSample) int { return s.Goroutines })
	fmt.Fprintf(&b, "  (start: after Init, before any flush; warm: after %d rounds; end: last flush done, pool open)\n", 10)
	t.Log(b.String())
	if out := os.Getenv("SMTPOUT_SOAK_REPORT"); out != "" {
		if err := os.WriteFile(filepath.Clean(out), []byte(b.String()), 0o644); err != nil {
			t.Errorf("write the report: %v", err)
		}
	}
}
