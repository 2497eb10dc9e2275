package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/smtpout/smtpout/config"
)

// Agents and aggregator (issue 21) through real Fluent Bit processes (FLUENT_BIT; skipped
// otherwise): an agent tails a file and forwards with Require_ack_response to one or two
// aggregators (forward input with filesystem storage, the smtp output with ledger_dir next to
// storage.path, Workers 0 as deploy/helm/aggregator.yaml has it), which email the fault server.
// Each aggregator says its own EHLO name (helo_name, as each pod's host name differs), so the
// server knows which replica sent what.

// fbProcess is one fluent-bit process, started and stopped many times on the same directories,
// its log appended to one file.
type fbProcess struct {
	t       *testing.T
	name    string
	args    []string // after the binary
	env     []string // added to the environment
	logPath string
	ready   func() bool // nil: ready once started
	runs    int
	cmd     *exec.Cmd
	waited  chan error
}

func (p *fbProcess) log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// start runs the process and waits until ready says so (at most 30 s).
func (p *fbProcess) start() {
	p.t.Helper()
	p.runs++
	lf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		p.t.Fatal(err)
	}
	defer lf.Close()
	fmt.Fprintf(lf, "=== %s run %d ===\n", p.name, p.runs)
	p.cmd = exec.Command(fluentBit(p.t), p.args...)
	p.cmd.Env = append(os.Environ(), p.env...)
	p.cmd.Stdout, p.cmd.Stderr = lf, lf
	if err := p.cmd.Start(); err != nil {
		p.t.Fatalf("start %s: %v", p.name, err)
	}
	p.waited = make(chan error, 1)
	go func(c *exec.Cmd, ch chan error) { ch <- c.Wait() }(p.cmd, p.waited)
	deadline := time.Now().Add(30 * time.Second)
	for p.ready != nil && !p.ready() {
		select {
		case err := <-p.waited:
			p.cmd = nil
			p.t.Fatalf("%s run %d exited before it was ready: %v\n%s", p.name, p.runs, err, p.log())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s run %d: not ready within 30s", p.name, p.runs)
		}
	}
}

// exited reports whether the process ended by itself (a crash), and how.
func (p *fbProcess) exited() (bool, error) {
	select {
	case err := <-p.waited:
		p.waited <- err
		return true, err
	default:
		return false, nil
	}
}

// kill ends the process with SIGKILL.
func (p *fbProcess) kill() {
	p.t.Helper()
	_ = p.cmd.Process.Kill()
	<-p.waited
	p.cmd = nil
}

// term sends SIGTERM and returns how long the process took to exit (at most 30 s, then it is
// killed and the test fails).
func (p *fbProcess) term() time.Duration {
	p.t.Helper()
	took := termWait(p.t, p.name, p.cmd.Process, p.waited)
	p.cmd = nil
	return took
}

// termWait sends SIGTERM to proc and waits until waited says it exited (at most 30 s, then it
// is killed and the test fails); it returns how long the process took.
func termWait(t *testing.T, name string, proc *os.Process, waited chan error) time.Duration {
	t.Helper()
	start := time.Now()
	_ = proc.Signal(syscall.SIGTERM)
	select {
	case <-waited:
	case <-time.After(30 * time.Second):
		_ = proc.Kill()
		<-waited
		t.Errorf("%s did not exit within 30s of SIGTERM", name)
	}
	return time.Since(start)
}

// cpu returns the CPU time (user + system) the running process used so far, from
// /proc/PID/stat (fields 14 and 15, in clock ticks of 1/100 s: USER_HZ on Linux).
func (p *fbProcess) cpu() time.Duration {
	p.t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		p.t.Fatalf("%s: %v", p.name, err)
	}
	// The command name (field 2) is in parentheses and may hold spaces: count after it.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		p.t.Fatalf("%s: /proc stat fields: %v %v", p.name, err1, err2)
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// listening reports whether something accepts TCP connections at addr.
func listening(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// topology is one agent and its aggregator replicas.
type topology struct {
	t       *testing.T
	fs      *faultServer
	aggs    []*fbProcess
	agent   *fbProcess
	appLog  string // the file the agent tails
	written int    // records written to it so far
	bound   int    // what one aggregator's SIGKILL may repeat: max_connections × pipeline_depth
}

// newTopology writes the configurations of an agent and replicas aggregators delivering to fs
// (nothing is started).
func newTopology(t *testing.T, fs *faultServer, replicas int) *topology {
	t.Helper()
	fluentBit(t)
	so, _ := artifacts(t)
	dir := t.TempDir()
	top := &topology{t: t, fs: fs, appLog: filepath.Join(dir, "app.log")}
	var upstream strings.Builder
	upstream.WriteString("[UPSTREAM]\n    name aggregators\n")
	for i := range replicas {
		name := fmt.Sprintf("aggregator-%d", i)
		d := filepath.Join(dir, name)
		storage := filepath.Join(d, "storage")
		if err := os.MkdirAll(storage, 0o700); err != nil {
			t.Fatal(err)
		}
		addr := reservePort(t)
		host, port, _ := net.SplitHostPort(addr)
		keys := faultKeys(fs, "soc@example.com")
		keys["helo_name"] = name
		keys["ledger_dir"] = storage // next to Fluent Bit's buffer, as on the persistent volume
		keys["flush_timeout"] = "0.5s"
		cfg, err := config.Parse(config.MapGetter(keys))
		if err != nil {
			t.Fatalf("the aggregator's keys: %v", err)
		}
		top.bound = cfg.MaxConnections * cfg.PipelineDepth
		var b strings.Builder
		fmt.Fprintf(&b, "[SERVICE]\n    Flush 0.2\n    Grace 10\n    Log_Level info\n")
		fmt.Fprintf(&b, "    storage.path %s\n    storage.sync normal\n    scheduler.base 1\n    scheduler.cap 2\n\n", storage)
		fmt.Fprintf(&b, "[INPUT]\n    Name forward\n    Listen %s\n    Port %s\n    storage.type filesystem\n\n", host, port)
		fmt.Fprintf(&b, "[OUTPUT]\n    Name smtp\n    Alias email\n    Match *\n    Workers 0\n    Retry_Limit no_limits\n")
		writeKeys(&b, keys)
		conf := filepath.Join(d, "fluent-bit.conf")
		if err := os.WriteFile(conf, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		top.aggs = append(top.aggs, &fbProcess{t: t, name: name, args: []string{"-e", so, "-c", conf},
			logPath: filepath.Join(d, "fluent-bit.log"), ready: func() bool { return listening(addr) }})
		fmt.Fprintf(&upstream, "\n[NODE]\n    name %s\n    host %s\n    port %s\n", name, host, port)
	}
	d := filepath.Join(dir, "agent")
	if err := os.MkdirAll(filepath.Join(d, "storage"), 0o700); err != nil {
		t.Fatal(err)
	}
	up := filepath.Join(d, "upstream.conf")
	if err := os.WriteFile(up, []byte(upstream.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "[SERVICE]\n    Flush 0.2\n    Grace 5\n    Log_Level info\n    Parsers_File %s\n", filepath.Join(moduleRoot(t), "parsers.conf"))
	fmt.Fprintf(&b, "    storage.path %s\n    storage.sync normal\n    scheduler.base 1\n    scheduler.cap 2\n\n", filepath.Join(d, "storage"))
	fmt.Fprintf(&b, "[INPUT]\n    Name tail\n    Path %s\n    Tag email.app\n    Parser json\n    Read_from_Head true\n    Refresh_Interval 1\n    DB %s\n    storage.type filesystem\n\n",
		top.appLog, filepath.Join(d, "tail.db"))
	// One worker: one forward message in flight to the aggregators at a time.
	fmt.Fprintf(&b, "[OUTPUT]\n    Name forward\n    Match email.*\n    Upstream %s\n    Require_ack_response true\n    Retry_Limit no_limits\n    Workers 1\n", up)
	conf := filepath.Join(d, "fluent-bit.conf")
	if err := os.WriteFile(conf, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	top.agent = &fbProcess{t: t, name: "agent", args: []string{"-c", conf}, logPath: filepath.Join(d, "fluent-bit.log")}
	t.Cleanup(func() {
		for _, p := range append([]*fbProcess{top.agent}, top.aggs...) {
			if p.cmd != nil {
				p.term()
			}
			if t.Failed() {
				t.Logf("%s log:\n%s", p.name, p.log())
			}
		}
	})
	return top
}

// write appends n records ({"n": ..., "msg": ...}, numbered on from the last) to the tailed file.
func (top *topology) write(n int) {
	top.t.Helper()
	f, err := os.OpenFile(top.appLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		top.t.Fatal(err)
	}
	var b strings.Builder
	for i := top.written; i < top.written+n; i++ {
		fmt.Fprintf(&b, "{\"n\":%d,\"msg\":\"record %d\"}\n", i, i)
	}
	if _, err := f.WriteString(b.String()); err != nil {
		top.t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		top.t.Fatal(err)
	}
	top.written += n
}

// startTopology starts a fault server that answers each email 5 ms after storing it (so a
// kill finds emails in flight), and an agent with replicas aggregators, the agent's file
// holding records records.
func startTopology(t *testing.T, replicas, records int) (*faultServer, *topology) {
	t.Helper()
	fluentBit(t)
	fs := startFaultServer(t, faultOptions{delay: 5 * time.Millisecond})
	top := newTopology(t, fs, replicas)
	top.write(records)
	top.startAll()
	return fs, top
}

// startAll starts every aggregator, then the agent.
func (top *topology) startAll() {
	top.t.Helper()
	for _, a := range top.aggs {
		a.start()
	}
	top.agent.start()
}

// stopAll stops the agent and the aggregators with SIGTERM.
func (top *topology) stopAll() {
	top.t.Helper()
	for _, p := range append([]*fbProcess{top.agent}, top.aggs...) {
		if p.cmd != nil {
			p.term()
		}
	}
}

// duplicates splits the server's repeated records by cause: the same replica sent a record
// again (the emails in flight when it was killed) or two replicas each sent it (a forward
// message the killed replica stored but had not acknowledged, sent again by the agent to the
// other). It returns the records of each kind, sorted.
func (top *topology) duplicates() (same, cross []int) {
	sentBy := make(map[string]map[string]int) // Message-ID -> EHLO name -> times
	n := make(map[string]int)
	for _, m := range top.fs.Stored() {
		if sentBy[m.MessageID] == nil {
			sentBy[m.MessageID] = make(map[string]int)
		}
		sentBy[m.MessageID][m.Helo]++
		n[m.MessageID] = m.N
	}
	for id, by := range sentBy {
		for _, times := range by {
			for range times - 1 {
				same = append(same, n[id])
			}
		}
		for range len(by) - 1 {
			cross = append(cross, n[id])
		}
	}
	sort.Ints(same)
	sort.Ints(cross)
	return same, cross
}

// runs counts the runs of consecutive numbers in sorted ns.
func runs(ns []int) int {
	r := 0
	for i, v := range ns {
		if i == 0 || v != ns[i-1]+1 {
			r++
		}
	}
	return r
}

// check logs what arrived and fails the test on a lost record, on more than maxSame records
// emailed twice by one replica, or on records emailed by two replicas beyond one forward
// message (none at all when maxSame is 0: no kill).
func (top *topology) check(what string, maxSame int) tally {
	top.t.Helper()
	c := countDelivery(top.fs, span(0, top.written))
	same, cross := top.duplicates()
	top.t.Logf("%s %s: records=%d stored=%d lost=%d duplicates=%d (same replica %d, bound %d; two replicas %d)",
		filepath.Base(filepath.Dir(fluentBit(top.t))), what, top.written, c.Stored, len(c.Lost), c.Duplicates, len(same), maxSame, len(cross))
	if len(c.Lost) > 0 {
		top.t.Errorf("%d records lost: %v", len(c.Lost), head(c.Lost, 20))
	}
	if len(same) > maxSame {
		top.t.Errorf("%d records emailed twice by the same replica: %v, want at most %d", len(same), head(same, 20), maxSame)
	}
	// One worker forwards one message at a time: only the one the killed replica had stored
	// and not acknowledged can reach both replicas, and it holds consecutive lines.
	if r := runs(cross); r > 1 || (r == 1 && maxSame == 0) {
		top.t.Errorf("records emailed by two replicas: %v (%d runs), want none, or one forward message's records after a kill", head(cross, 20), r)
	}
	checkSignatures(top.t, top.fs)
	return c
}

// TestFluentBitAgentToAggregatorThroughput: 2,000 records through an agent and one aggregator
// with nothing in the way: each arrives once, signed; it reports the end-to-end rate and the
// aggregator's CPU per email.
func TestFluentBitAgentToAggregatorThroughput(t *testing.T) {
	fluentBit(t)
	fs := startFaultServer(t, faultOptions{})
	top := newTopology(t, fs, 1)
	const total = 2000
	top.write(total)
	top.aggs[0].start()
	cpu0 := top.aggs[0].cpu()
	began := time.Now()
	top.agent.start()
	waitDistinct(fs, total, fbWait)
	took := time.Since(began)
	cpu := top.aggs[0].cpu() - cpu0
	top.stopAll()
	top.check("throughput", 0)
	t.Logf("%s: %d records agent -> aggregator -> SMTP in %v: %.0f emails/s end to end; aggregator CPU %v, %.0f µs per email",
		filepath.Base(filepath.Dir(fluentBit(t))), total, took.Round(time.Millisecond), float64(total)/took.Seconds(),
		cpu, float64(cpu.Microseconds())/total)
}

// TestFluentBitAggregatorKilledLosesNothing: the aggregator killed with SIGKILL at about 40 % of
// 2,000 records and started again on the same storage and ledger: every record arrives, and
// at most max_connections × pipeline_depth twice (the emails in flight at the kill).
func TestFluentBitAggregatorKilledLosesNothing(t *testing.T) {
	const total = 2000
	fs, top := startTopology(t, 1, total)
	storedAtLeast(fs, total*4/10)
	top.aggs[0].kill()
	before := countDelivery(fs, span(0, total))
	if before.Distinct == total {
		t.Fatalf("all %d records arrived before the kill: the scenario needs a kill mid-stream", total)
	}
	top.aggs[0].start()
	waitDistinct(fs, total, fbWait)
	top.stopAll()
	c := top.check(fmt.Sprintf("SIGKILL at %d of %d", before.Distinct, total), top.bound)
	if c.Stored < total {
		t.Errorf("stored %d, want at least %d", c.Stored, total)
	}
}

// TestFluentBitAggregatorsRollingRestart: two aggregators behind the agent's upstream,
// restarted one after the other with SIGTERM while records flow: each exits within its
// Grace, nothing is lost and nothing is emailed twice.
func TestFluentBitAggregatorsRollingRestart(t *testing.T) {
	const total = 2000
	fs, top := startTopology(t, 2, total)
	for i, a := range top.aggs {
		storedAtLeast(fs, total*(i+1)/3)
		// Workers 0: Grace starts once the flush on the engine thread returned, within
		// flush_timeout (0.5 s) and 1 s for the email on the wire; and a little for the process.
		took := a.term()
		t.Logf("%s exited %v after SIGTERM", a.name, took.Round(time.Millisecond))
		if took > 13*time.Second {
			t.Errorf("%s took %v to exit after SIGTERM, want within flush_timeout + 1 s + Grace = 11.5s", a.name, took)
		}
		a.start()
	}
	waitDistinct(fs, total, fbWait)
	top.stopAll()
	top.check("rolling restart (SIGTERM)", 0)
}

// TestFluentBitAggregatorReplicaKilledOtherTakesOver: two aggregators behind the agent's
// upstream; one is killed with SIGKILL, the records written meanwhile are all delivered by
// the other, and once the killed one is back it delivers what it had stored: nothing lost;
// repeated at most the killed replica's emails in flight and the one forward message it
// may have stored without acknowledging it.
func TestFluentBitAggregatorReplicaKilledOtherTakesOver(t *testing.T) {
	const half = 1000
	fs, top := startTopology(t, 2, half)
	storedAtLeast(fs, half*4/10)
	killed := top.aggs[0]
	killed.kill()
	top.write(half) // while one replica is away
	fs.waitUntil("the records written during the outage delivered", fbWait, func() bool {
		got := make(map[int]bool)
		for _, m := range fs.msgs {
			got[m.N] = true
		}
		for n := half; n < 2*half; n++ {
			if !got[n] {
				return false
			}
		}
		return true
	})
	for _, m := range fs.Stored() {
		if m.N >= half && m.Helo == killed.name {
			t.Errorf("record %d was sent by %s while it was down", m.N, killed.name)
			break
		}
	}
	killed.start()
	waitDistinct(fs, 2*half, fbWait)
	top.stopAll()
	top.check("one replica of two SIGKILLed", top.bound)
}
