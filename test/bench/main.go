// Command bench is the engine of `make bench`: it drives smtpout.so through the C host
// (test/host) exactly as Fluent Bit calls it, against a local TLS SMTP sink that discards
// what it receives, optionally behind a delay proxy that adds a round-trip time, and runs a
// baseline sender (go-mail's DialAndSend: a new connection, TLS handshake and AUTH per email,
// as the peers send) against the same sink in the same run. Its last lines are a table of
// emails/s, CPU µs per email, allocations per email and peak RSS for both, with ratios.
//
//	go run ./test/bench [-records 100000] [-size 2048] [-format machine|readable]
//	    [-tls implicit|starttls] [-connections 4] [-workers 2] [-rtt 10ms]
//	    [-pipelining on|off] [-chunking on|off] [-baseline on|off] [-so smtpout.so]
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/smtpout/smtpout/output"
	"github.com/smtpout/smtpout/testsupport/testcert"
)

// options are the command-line flags.
type options struct {
	records     int
	size        int
	format      string
	tlsMode     string
	connections int
	workers     int
	rtt         time.Duration
	pipelining  string
	chunking    string
	baseline    string
	perFlush    int
	baseEmails  int
	checkpoints string
	warmup      int
	so          string
	keep        bool
	ledger      string
	trials      int
	fluentBit   string
	fbFlush     string
	perfOut     string
	perfStat    bool
	repeat      int
	servers     string
	depths      string
	postfix     string
	mailpit     string
	baseReuse   int
}

// Credentials of the sink; never secrets of anyone.
const (
	benchUser   = "bench"
	benchPass   = "bench-password"
	benchSecret = "bench-secret-key-0123456789"
	benchFrom   = "smtpout@bench.example"
	benchTo     = "soc@bench.example"
)

func main() {
	if raw := os.Getenv(serveEnv); raw != "" {
		if err := serveMain(raw); err != nil {
			fmt.Fprintln(os.Stderr, "bench serve:", err)
			os.Exit(1)
		}
		return
	}
	if raw := os.Getenv(baselineEnv); raw != "" {
		if err := baselineMain(raw); err != nil {
			fmt.Fprintln(os.Stderr, "bench baseline:", err)
			os.Exit(1)
		}
		return
	}
	var o options
	flag.IntVar(&o.records, "records", 100_000, "emails measured (rounded up to whole flushes)")
	flag.IntVar(&o.size, "size", 2048, "JSON payload bytes per record")
	flag.StringVar(&o.format, "format", "machine", "email format: machine or readable")
	flag.StringVar(&o.tlsMode, "tls", "implicit", "TLS mode: implicit or starttls")
	flag.IntVar(&o.connections, "connections", 4, "max_connections of the instance (and the baseline's concurrent senders)")
	flag.IntVar(&o.workers, "workers", 2, "host threads flushing at once (Fluent Bit's Workers)")
	flag.DurationVar(&o.rtt, "rtt", 0, "round-trip time added by a loopback delay proxy (e.g. 10ms)")
	flag.StringVar(&o.pipelining, "pipelining", "on", "pipelining key: on or off")
	flag.StringVar(&o.chunking, "chunking", "on", "chunking key: on or off")
	flag.StringVar(&o.baseline, "baseline", "on", "also run the go-mail DialAndSend baseline: on or off")
	flag.IntVar(&o.perFlush, "per-flush", 100, "records per chunk (per flush)")
	flag.IntVar(&o.baseEmails, "baseline-records", 0, "emails the baseline sends (0: min(records, 2000), or 400 with -rtt)")
	flag.StringVar(&o.checkpoints, "checkpoints", "", "comma-separated email counts after which peak RSS is also read (default: records/10 when records >= 20000)")
	flag.IntVar(&o.warmup, "warmup", 0, "warm-up flushes before measuring (0: 2 per worker)")
	flag.StringVar(&o.so, "so", "", "use this smtpout.so instead of building one")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory (plugin log, chunk, certificates)")
	flag.StringVar(&o.ledger, "ledger", "off", "ledger_dir (in the work directory): off, on, or both (runs alternating, compared by medians)")
	flag.IntVar(&o.trials, "trials", 3, "with -ledger both: runs of each")
	flag.StringVar(&o.fluentBit, "fluent-bit", "", "real-host mode: run this fluent-bit (tail -> smtp, then tail -> null) instead of the C host")
	flag.StringVar(&o.fbFlush, "flush", "1", "real-host mode: [SERVICE] Flush of the fluent-bit configuration, seconds")
	flag.StringVar(&o.perfOut, "perf-record", "", "real-host mode: record the smtp run with `perf record -e cpu-clock -g` into this file")
	flag.IntVar(&o.repeat, "repeat", 1, "real-host mode: runs of each output (the table shows the medians)")
	flag.StringVar(&o.servers, "servers", "smtp-sink,mailpit,go-smtp+fsync,sink", "real-host mode: the servers, in order: smtp-sink (Postfix's, behind a TLS terminator), mailpit, go-smtp+fsync (stores and syncs each message), sink (in-process, answers at once: the best case)")
	flag.StringVar(&o.depths, "pipeline-depths", "", "real-host mode: comma-separated pipeline_depth values also run against the servers that offer CHUNKING (besides the default)")
	flag.StringVar(&o.postfix, "postfix-cache", "", "real-host mode: where Debian's postfix package is extracted for smtp-sink (default: bin/postfix in the module)")
	flag.StringVar(&o.mailpit, "mailpit", "", "real-host mode: the mailpit binary (default: $MAILPIT, else bin/mailpit in the module)")
	flag.IntVar(&o.baseReuse, "baseline-emails", 2000, "real-host mode: emails the go-mail baseline (connection reuse) sends to each server per repeat (0: none)")
	flag.BoolVar(&o.perfStat, "perf-stat", false, "real-host mode: count the smtp run's syscalls and context switches per record with `perf stat`")
	flag.Parse()
	if o.fluentBit != "" {
		if o.records < 1 || o.size < 1 || o.repeat < 1 {
			fmt.Fprintln(os.Stderr, "bench: -records, -size and -repeat must be positive")
			os.Exit(2)
		}
		if err := runFluentBit(o); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	if err := o.check(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		flag.Usage()
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func (o *options) check() error {
	var errs []error
	onOff := func(name, v string) {
		if v != "on" && v != "off" {
			errs = append(errs, fmt.Errorf("-%s %q: want on or off", name, v))
		}
	}
	onOff("pipelining", o.pipelining)
	onOff("chunking", o.chunking)
	onOff("baseline", o.baseline)
	if o.format != "machine" && o.format != "readable" {
		errs = append(errs, fmt.Errorf("-format %q: want machine or readable", o.format))
	}
	if o.ledger != "off" && o.ledger != "on" && o.ledger != "both" {
		errs = append(errs, fmt.Errorf("-ledger %q: want off, on or both", o.ledger))
	}
	if o.tlsMode != "implicit" && o.tlsMode != "starttls" {
		errs = append(errs, fmt.Errorf("-tls %q: want implicit or starttls", o.tlsMode))
	}
	if o.records < 1 || o.size < 1 || o.perFlush < 1 || o.connections < 1 || o.workers < 1 || o.workers > 64 || o.rtt < 0 {
		errs = append(errs, errors.New("-records, -size, -per-flush, -connections and -workers (<= 64) must be positive, -rtt not negative"))
	}
	if o.baseEmails == 0 {
		o.baseEmails = min(o.records, 2000)
		if o.rtt > 0 {
			o.baseEmails = min(o.records, 400)
		}
	}
	if o.warmup == 0 {
		o.warmup = 2 * o.workers
	}
	if o.checkpoints == "" && o.records >= 20_000 {
		o.checkpoints = strconv.Itoa(o.records / 10)
	}
	return errors.Join(errs...)
}

// segments splits the measured flushes at the checkpoints (in flushes, ascending).
func (o *options) segments() ([]int, error) {
	flushes := (o.records + o.perFlush - 1) / o.perFlush
	var segs []int
	done := 0
	for _, f := range strings.Split(o.checkpoints, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-checkpoints: %q is not a positive email count", f)
		}
		cp := n / o.perFlush
		if cp <= done || cp >= flushes {
			continue
		}
		segs = append(segs, cp-done)
		done = cp
	}
	return append(segs, flushes-done), nil
}

// figures are one sender's results.
type figures struct {
	name    string
	emails  int64
	failed  int64
	ns      int64
	cpuUs   float64 // CPU time of the measured part minus the idle process's, µs
	allocs  int64   // -1 when unknown
	hwmKiB  int64
	goroutN int64
}

func (f figures) perSec() float64 { return float64(f.emails) / (float64(f.ns) / 1e9) }
func (f figures) cpuPerEmail() float64 {
	return f.cpuUs / float64(f.emails)
}
func (f figures) allocsPerEmail() float64 {
	if f.allocs < 0 {
		return -1
	}
	return float64(f.allocs) / float64(f.emails)
}

// checkpoint is the host's memory after a number of measured emails.
type checkpoint struct {
	emails         int64
	hwmKiB, rssKiB int64
	heapBytes      int64
}

// pluginRun is what runPlugin measured.
type pluginRun struct {
	figures
	sent        int64 // every email the host flushed, warm-up included
	checkpoints []checkpoint
	goroutines  struct{ before, after, exited int64 }
	retries     int64
}

func run(o options) error {
	loadBefore := loadavg()
	dir, root, so, cleanup, err := prepare(o, "smtpout-bench-")
	if err != nil {
		return err
	}
	defer cleanup()
	hostBin, err := buildHost(root, dir)
	if err != nil {
		return err
	}
	cert, err := testcert.Generate(dir)
	if err != nil {
		return err
	}
	sink, err := StartSink(cert.ServerTLS(), o.tlsMode == "starttls", benchUser, benchPass)
	if err != nil {
		return err
	}
	defer sink.Close()
	addr := sink.Addr()
	if o.rtt > 0 {
		p, err := StartDelayProxy(addr, o.rtt)
		if err != nil {
			return err
		}
		defer p.Close()
		addr = p.Addr()
	}
	data, recordSize, err := buildChunk(o.perFlush, o.size)
	if err != nil {
		return err
	}
	chunkPath := filepath.Join(dir, "chunk.bin")
	if err := os.WriteFile(chunkPath, data, 0o600); err != nil {
		return err
	}

	ledgers := []string{o.ledger}
	if o.ledger == "both" {
		ledgers = nil
		for t := range max(o.trials, 1) { // alternate the order, so drift in the machine's load hits both
			if t%2 == 0 {
				ledgers = append(ledgers, "off", "on")
			} else {
				ledgers = append(ledgers, "on", "off")
			}
		}
	}
	var runs []pluginRun
	var offRuns, onRuns []pluginRun
	var sent int64
	for _, l := range ledgers {
		fmt.Fprintf(os.Stderr, "bench: smtpout (ledger_dir %s) ...\n", l)
		ol := o
		ol.ledger = l
		pr, err := runPlugin(ol, hostBin, so, dir, chunkPath, addr, cert.CAFile)
		if err != nil {
			return err
		}
		runs = append(runs, pr)
		if l == "on" {
			onRuns = append(onRuns, pr)
		} else {
			offRuns = append(offRuns, pr)
		}
		sent += pr.sent
	}
	pr := runs[0]
	sample := sink.Sample()
	pluginSessions := sink.Sessions()
	verifyErr := output.Verify(bytes.NewReader(sample), []byte(benchSecret))
	if got := sink.Messages(); got != sent {
		return fmt.Errorf("the sink accepted %d messages, the plugin reported %d delivered", got, sent)
	}

	var base *figures
	if o.baseline == "on" {
		fmt.Fprintln(os.Stderr, "bench: baseline ...")
		b, err := runBaseline(o, chunkPath, addr, cert.CAFile)
		if err != nil {
			return err
		}
		base = &b
	}
	report(os.Stdout, o, recordSize, pr, base, sink, pluginSessions, verifyErr, loadBefore)
	if o.ledger == "both" {
		reportLedger(os.Stdout, o, offRuns, onRuns, dir)
	}
	return nil
}

// reportLedger compares runs without ledger_dir (off) with runs with it (on), by medians:
// the CPU each email costs more and the throughput lost, against the targets of issue 15.
func reportLedger(w io.Writer, o options, off, on []pluginRun, ledgerDir string) {
	each := func(runs []pluginRun, f func(pluginRun) float64) string {
		parts := make([]string, len(runs))
		for i, r := range runs {
			parts[i] = fmt.Sprintf("%.1f", f(r))
		}
		return strings.Join(parts, " ")
	}
	cpu := func(r pluginRun) float64 { return r.cpuPerEmail() }
	rate := func(r pluginRun) float64 { return r.perSec() }
	fmt.Fprintf(w, "ledger_dir off, %d runs: emails/s %s; CPU µs/email %s\n", len(off), each(off, rate), each(off, cpu))
	fmt.Fprintf(w, "ledger_dir on,  %d runs: emails/s %s; CPU µs/email %s\n", len(on), each(on, rate), each(on, cpu))
	fmt.Fprintf(w, "%-34s %10s %14s\n", "medians", "emails/s", "CPU µs/email")
	fmt.Fprintf(w, "%-34s %10.1f %14.1f\n", "smtpout without ledger_dir", median(off, rate), median(off, cpu))
	fmt.Fprintf(w, "%-34s %10.1f %14.1f\n", "smtpout with ledger_dir", median(on, rate), median(on, cpu))
	fs := "?"
	if out, err := exec.Command("df", "--output=fstype", ledgerDir).Output(); err == nil {
		if f := strings.Fields(string(out)); len(f) == 2 {
			fs = f[1]
		}
	}
	extra := median(on, cpu) - median(off, cpu)
	loss := 100 * (1 - median(on, rate)/median(off, rate))
	fmt.Fprintf(w, "ledger_dir in %s (%s): one write per email, one fdatasync per flush of %d\n", ledgerDir, fs, o.perFlush)
	fmt.Fprintf(w, "target: ledger_dir costs <= 10 µs CPU per email: %+.1f µs %s\n", extra, onOff(extra <= 10))
	if o.rtt == 10*time.Millisecond {
		fmt.Fprintf(w, "target: ledger_dir loses <= 10%% of throughput at 10 ms RTT: %.1f%% %s\n", loss, onOff(loss <= 10))
	} else {
		fmt.Fprintf(w, "reported: throughput lost with ledger_dir at rtt %v: %.1f%% (target applies at 10 ms)\n", o.rtt, loss)
	}
}

// runPlugin starts the host, configures one instance against addr, warms it up, measures
// the idle process, then flushes o.records emails (in two segments when a checkpoint is set).
func runPlugin(o options, hostBin, so, dir, chunkPath, addr, caFile string) (pluginRun, error) {
	var pr pluginRun
	pr.name = "smtpout"
	h, err := StartHost(hostBin, so, filepath.Join(dir, "host.log"))
	if err != nil {
		return pr, err
	}
	defer h.Stop()
	fail := func(err error) (pluginRun, error) {
		return pr, fmt.Errorf("%w\nplugin log:\n%s", err, tail(h.Log(), 30))
	}
	keys := map[string]string{
		"dest_host":       addr,
		"dest_email":      benchTo,
		"from_email":      benchFrom,
		"username":        benchUser,
		"password":        benchPass,
		"secret_key":      benchSecret,
		"tls_ca_file":     caFile,
		"tls_server_name": "localhost",
		"helo_name":       "bench.local",
		"is_starttls":     strconv.FormatBool(o.tlsMode == "starttls"),
		"is_readable":     strconv.FormatBool(o.format == "readable"),
		"max_connections": strconv.Itoa(o.connections),
		"pipelining":      o.pipelining,
		"chunking":        o.chunking,
	}
	if o.ledger == "on" {
		ld, err := os.MkdirTemp(dir, "ledger-") // a fresh ledger per run: the runs send the same emails
		if err != nil {
			return fail(err)
		}
		keys["ledger_dir"] = ld
		pr.name = "smtpout with ledger_dir"
	}
	if err := h.Configure(keys); err != nil {
		return fail(err)
	}
	if r, err := h.Do("init 0"); err != nil || r != "init 0 -> 1" {
		return fail(fmt.Errorf("init: %q %v", r, err))
	}
	stats := func() map[string]int64 {
		r, err := h.Do("stats")
		if err != nil || strings.Contains(r, "absent") {
			return nil
		}
		return kv(r)
	}
	bench := func(tag string, flushes int) (map[string]int64, error) {
		r, err := h.Do(fmt.Sprintf("bench 0 %s %s %d %d", tag, chunkPath, flushes, o.workers))
		if err != nil {
			return nil, err
		}
		b := kv(r)
		pr.sent += b["ok"] * int64(o.perFlush)
		if b["ok"] != int64(flushes) {
			pr.retries += b["retry"]
			return b, fmt.Errorf("%s: %q: not every flush returned FLB_OK", tag, r)
		}
		return b, nil
	}
	if s := stats(); s != nil {
		pr.goroutines.before = s["goroutines"]
	}
	if _, err := bench("warm", o.warmup); err != nil {
		return fail(err)
	}

	// The idle process: what the Go runtime and the pooled connections cost doing nothing.
	r0, err := h.Do("rusage")
	if err != nil {
		return fail(err)
	}
	idleStart := time.Now()
	time.Sleep(time.Second)
	r1, err := h.Do("rusage")
	if err != nil {
		return fail(err)
	}
	idleElapsed := time.Since(idleStart)
	u0, u1 := kv(r0), kv(r1)
	idleRate := float64(u1["utime_us"]+u1["stime_us"]-u0["utime_us"]-u0["stime_us"]) / float64(idleElapsed.Nanoseconds())

	segments, err := o.segments()
	if err != nil {
		return fail(err)
	}
	pr.allocs = 0
	for i, n := range segments {
		s0 := stats()
		b, err := bench(fmt.Sprintf("run%d", i), n)
		if err != nil {
			return fail(err)
		}
		s1 := stats()
		pr.ns += b["ns"]
		pr.cpuUs += float64(b["utime_us"]+b["stime_us"]) - idleRate*float64(b["ns"])
		if s0 == nil || s1 == nil {
			pr.allocs = -1
		} else if pr.allocs >= 0 {
			pr.allocs += s1["allocs"] - s0["allocs"]
		}
		pr.emails += int64(n * o.perFlush)
		hwm, rss, err := procStatus(h.Pid())
		if err != nil {
			return fail(err)
		}
		pr.checkpoints = append(pr.checkpoints, checkpoint{emails: pr.emails, hwmKiB: hwm, rssKiB: rss, heapBytes: s1["heap_bytes"]})
		pr.hwmKiB = hwm
	}
	if s := stats(); s != nil {
		pr.goroutines.after = s["goroutines"]
		pr.goroutN = s["goroutines"]
	}
	if r, err := h.Do("exit 0"); err != nil || r != "exit 0 -> 1" {
		return fail(fmt.Errorf("exit: %q %v", r, err))
	}
	if s := stats(); s != nil {
		pr.goroutines.exited = s["goroutines"]
	}
	if strings.Contains(h.Log(), "[error]") || strings.Contains(h.Log(), "[ warn]") {
		fmt.Fprintf(os.Stderr, "bench: the plugin logged warnings or errors:\n%s\n", tail(h.Log(), 20))
	}
	return pr, nil
}

// runBaseline runs this binary again as the baseline sender and reads its report.
func runBaseline(o options, chunkPath, addr, caFile string) (figures, error) {
	return runBaselineArgs(baselineArgs{
		Addr: addr, CAFile: caFile, StartTLS: o.tlsMode == "starttls", Chunk: chunkPath,
		Emails: o.baseEmails, Concurrency: o.connections, Warmup: o.connections,
		User: benchUser, Pass: benchPass, Secret: benchSecret, From: benchFrom, To: benchTo,
	})
}

// runBaselineArgs runs the baseline process (baselineMain) with a and reads its report.
func runBaselineArgs(a baselineArgs) (figures, error) {
	self, err := os.Executable()
	if err != nil {
		return figures{}, err
	}
	args, err := json.Marshal(a)
	if err != nil {
		return figures{}, err
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), baselineEnv+"="+string(args))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return figures{}, fmt.Errorf("baseline: %v\n%s", err, stderr.String())
	}
	var r baselineReport
	if err := json.Unmarshal(out, &r); err != nil {
		return figures{}, fmt.Errorf("baseline report %q: %v", out, err)
	}
	if r.Failed > 0 {
		return figures{}, fmt.Errorf("baseline: %d of %d emails failed, first: %s", r.Failed, r.Emails, r.FirstError)
	}
	return figures{
		name:    "baseline",
		emails:  r.Emails,
		ns:      r.Ns,
		cpuUs:   float64(r.UtimeUs + r.StimeUs - r.IdleUs),
		allocs:  r.Allocs,
		hwmKiB:  r.HWMKiB,
		goroutN: r.Goroutines,
	}, nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

func onOff(b bool) string {
	if b {
		return "PASS"
	}
	return "MISS"
}

func mib(kib int64) float64 { return float64(kib) / 1024 }

// report prints the run's description, the targets that apply and, last, the table.
func report(w io.Writer, o options, recordSize int, pr pluginRun, base *figures, sink *Sink,
	pluginSessions int64, verifyErr error, loadBefore string) {
	fmt.Fprintf(w, "machine: %s, %d CPUs, %s %s/%s, load %s before, %s after\n",
		cpuModel(), runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH, loadBefore, loadavg())
	chunking := o.chunking
	if o.pipelining == "off" {
		chunking += " (unused: BDAT needs pipelining)"
	}
	fmt.Fprintf(w, "run: %d emails (%d per flush) of a %d-byte JSON record, %s format, %s TLS, max_connections %d, %d workers, rtt %v, pipelining %s, chunking %s\n",
		pr.emails, o.perFlush, recordSize, o.format, o.tlsMode, o.connections, o.workers, o.rtt, o.pipelining, chunking)
	if o.format == "readable" && o.baseline == "on" {
		fmt.Fprintln(w, "note: the baseline always sends the machine format (a JSON text/plain body): readable ratios favour it")
	}
	verified := "signature of a received email verified"
	if verifyErr != nil {
		verified = "SIGNATURE CHECK FAILED: " + verifyErr.Error()
	}
	fmt.Fprintf(w, "sink: %d messages accepted; smtpout used %d connection(s) for %d emails (warm-up included); %s\n",
		sink.Messages(), pluginSessions, pr.sent, verified)
	fmt.Fprintf(w, "plugin goroutines: %d before the first flush, %d after the run, %d after FLBPluginExitCtx\n",
		pr.goroutines.before, pr.goroutines.after, pr.goroutines.exited)
	if len(pr.checkpoints) > 1 {
		a, b := pr.checkpoints[0], pr.checkpoints[len(pr.checkpoints)-1]
		for _, c := range pr.checkpoints {
			fmt.Fprintf(w, "smtpout memory after %d emails: peak RSS %.1f MiB, RSS %.1f MiB, Go heap objects %.1f MiB\n",
				c.emails, mib(c.hwmKiB), mib(c.rssKiB), float64(c.heapBytes)/(1<<20))
		}
		growth := 100 * (float64(b.hwmKiB) - float64(a.hwmKiB)) / float64(a.hwmKiB)
		fmt.Fprintf(w, "target: peak RSS flat within 10%% from %d to %d emails: %+.1f%% %s\n", a.emails, b.emails, growth, onOff(growth <= 10))
	}
	if o.rtt == 0 && o.format == "machine" && o.tlsMode == "implicit" && recordSize >= 1800 && recordSize <= 2300 {
		fmt.Fprintf(w, "target: CPU per email <= 100 µs (2 KB, machine, implicit TLS, reused connections, steady state): %.1f µs %s\n",
			pr.cpuPerEmail(), onOff(pr.cpuPerEmail() <= 100))
	}
	if o.rtt == 10*time.Millisecond && o.connections == 4 {
		if o.pipelining == "on" {
			fmt.Fprintf(w, "target: >= 180 emails/s at 10 ms RTT with 4 connections: %.1f %s\n", pr.perSec(), onOff(pr.perSec() >= 180))
		} else {
			fmt.Fprintf(w, "reported: emails/s at 10 ms RTT with 4 connections, pipelining off: %.1f (no target)\n", pr.perSec())
		}
	}
	allocs := func(f figures) string {
		if f.allocs < 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.1f", f.allocsPerEmail())
	}
	fmt.Fprintf(w, "%-34s %10s %14s %14s %13s %8s\n", "", "emails/s", "CPU µs/email", "allocs/email", "peak RSS MiB", "emails")
	fmt.Fprintf(w, "%-34s %10.1f %14.1f %14s %13.1f %8d\n", "smtpout (.so in the C host)", pr.perSec(), pr.cpuPerEmail(), allocs(pr.figures), mib(pr.hwmKiB), pr.emails)
	if base != nil {
		fmt.Fprintf(w, "%-34s %10.1f %14.1f %14s %13.1f %8d\n", "baseline (go-mail DialAndSend)", base.perSec(), base.cpuPerEmail(), allocs(*base), mib(base.hwmKiB), base.emails)
		ratio := func(a, b float64) string {
			if a <= 0 || b <= 0 {
				return "n/a"
			}
			return fmt.Sprintf("%.2fx", a/b)
		}
		fmt.Fprintf(w, "%-34s %10s %14s %14s %13s\n", "smtpout advantage (higher=better)",
			ratio(pr.perSec(), base.perSec()), ratio(base.cpuPerEmail(), pr.cpuPerEmail()),
			ratio(base.allocsPerEmail(), pr.allocsPerEmail()), ratio(mib(base.hwmKiB), mib(pr.hwmKiB)))
	}
}

// prepare makes a run's work directory (removed by cleanup unless -keep) and finds or builds
// smtpout.so (-so) in it; root is the module's root.
func prepare(o options, prefix string) (dir, root, so string, cleanup func(), err error) {
	cleanup = func() {}
	if dir, err = os.MkdirTemp("", prefix); err != nil {
		return "", "", "", cleanup, err
	}
	if o.keep {
		fmt.Fprintln(os.Stderr, "bench: work directory", dir)
	} else {
		cleanup = func() { os.RemoveAll(dir) }
	}
	if root, err = moduleRoot(); err != nil {
		return dir, "", "", cleanup, err
	}
	so = o.so
	if so == "" {
		fmt.Fprintln(os.Stderr, "bench: building smtpout.so ...")
		so, err = buildPlugin(root, dir)
	} else {
		so, err = filepath.Abs(so)
	}
	return dir, root, so, cleanup, err
}
