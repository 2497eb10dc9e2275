package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/smtpout/smtpout/config"
	"github.com/smtpout/smtpout/output"
	"github.com/smtpout/smtpout/testsupport/proc"
	"github.com/smtpout/smtpout/testsupport/testcert"
)

// The real-host mode (-fluent-bit PATH): a real Fluent Bit tails a file of JSON lines (json
// parser) into the smtp output (smtpout.so, defaults, Workers 2, implicit TLS) against the
// same local TLS sink, then the same Fluent Bit, same input, into a `null` output as the
// baseline. Both are measured the same way: the fluent-bit process's CPU time (utime+stime
// of every thread, /proc/PID/stat) from the moment the records are appended to the tailed
// file until Fluent Bit reports every record flushed (its own
// fluentbit_output_proc_records_total), divided by the records; peak RSS is VmHWM then.

// fbRun is one fluent-bit process's figures.
type fbRun struct {
	output  string // "smtp" or "null"
	records int64
	cpuUs   float64 // utime+stime from the append to the last flush
	wallNs  int64   // from the append to the last flush
	rateNs  int64   // smtp: from the sink's first to its last message
	hwmKiB  int64
	retries int64
	errors  int64
}

func (r fbRun) cpuPerRecord() float64 { return r.cpuUs / float64(r.records) }

// fbVariant is one smtp configuration against one server.
type fbVariant struct {
	srv   *benchServer
	depth int // pipeline_depth set explicitly; 0: the default
	runs  []fbRun
	loads []string
}

func (v *fbVariant) label(version string) string {
	l := "fluent-bit " + version + " -> " + v.srv.name
	if v.depth > 0 {
		l += fmt.Sprintf(" depth %d", v.depth)
	}
	return l
}

// runFluentBit is the -fluent-bit mode: every server in -servers, the default configuration
// and each -pipeline-depths value (on servers with CHUNKING), a null output, and the go-mail
// baseline with connection reuse, interleaved: each repeat runs every one once.
func runFluentBit(o options) error {
	loadBefore := loadavg()
	if _, err := os.Stat(o.fluentBit); err != nil {
		return fmt.Errorf("-fluent-bit: %w", err)
	}
	dir, root, so, cleanup, err := prepare(o, "smtpout-bench-fb-")
	if err != nil {
		return err
	}
	defer cleanup()
	cert, err := testcert.Generate(dir)
	if err != nil {
		return err
	}
	var depths []int
	for _, f := range strings.Split(o.depths, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		d, err := strconv.Atoi(f)
		if err != nil || d < 1 {
			return fmt.Errorf("-pipeline-depths: %q is not a positive integer", f)
		}
		depths = append(depths, d)
	}
	var servers []*benchServer
	defer func() {
		for _, s := range servers {
			s.close()
		}
	}()
	var skipped []string
	for _, name := range strings.Split(o.servers, ",") {
		var s *benchServer
		var err error
		switch name = strings.TrimSpace(name); name {
		case "sink":
			var sink *Sink
			if sink, err = StartSink(cert.ServerTLS(), false, benchUser, benchPass); err == nil {
				s = &benchServer{name: "sink (best case)", sink: sink, addr: sink.Addr(),
					about: "in-process go-smtp sink: discards, answers every command at once (PIPELINING and CHUNKING)",
					count: sink.Messages, close: func() { _ = sink.Close() }}
			}
		case "smtp-sink":
			cache := o.postfix
			if cache == "" {
				cache = filepath.Join(root, "bin", "postfix")
			}
			s, err = startSMTPSink(cache, cert)
		case "mailpit":
			bin := o.mailpit
			if bin == "" {
				bin = os.Getenv("MAILPIT")
			}
			if bin == "" {
				bin = filepath.Join(root, "bin", "mailpit")
			}
			s, err = startMailpit(bin, dir, cert)
		case "go-smtp+fsync":
			s, err = startStoringServer(dir, cert)
		case "":
			continue
		default:
			return fmt.Errorf("-servers: unknown server %q", name)
		}
		if err != nil {
			skipped = append(skipped, fmt.Sprintf("%s: SKIPPED: %v", name, err))
			continue
		}
		servers = append(servers, s)
	}
	if len(servers) == 0 {
		return fmt.Errorf("no server could be started:\n%s", strings.Join(skipped, "\n"))
	}
	lines, lineSize, err := jsonLines(o.records, o.size)
	if err != nil {
		return err
	}
	chunkData, _, err := buildChunk(o.perFlush, o.size)
	if err != nil {
		return err
	}
	chunkPath := filepath.Join(dir, "chunk.bin")
	if err := os.WriteFile(chunkPath, chunkData, 0o600); err != nil {
		return err
	}
	parsers := filepath.Join(dir, "parsers.conf")
	if err := os.WriteFile(parsers, []byte("[PARSER]\n    Name   json\n    Format json\n"), 0o600); err != nil {
		return err
	}
	version := fluentBitVersion(o.fluentBit)

	var variants []*fbVariant
	for _, s := range servers {
		variants = append(variants, &fbVariant{srv: s})
		if s.name == "smtp-sink" || s.name == "mailpit" {
			continue // no CHUNKING: pipeline_depth does not apply
		}
		for _, d := range depths {
			if d == config.DefaultPipelineDepth {
				continue // the default run is this one
			}
			variants = append(variants, &fbVariant{srv: s, depth: d})
		}
	}
	baselines := make(map[*benchServer][]figures)
	var nullRuns []fbRun
	var nullLoads []string
	for i := range o.repeat {
		for _, v := range variants {
			fmt.Fprintf(os.Stderr, "bench: %s (run %d of %d) ...\n", v.label(version), i+1, o.repeat)
			keys := map[string]string{
				"dest_host":       v.srv.addr,
				"dest_email":      benchTo,
				"from_email":      benchFrom,
				"username":        benchUser,
				"password":        benchPass,
				"secret_key":      benchSecret,
				"tls_ca_file":     cert.CAFile,
				"tls_server_name": "localhost",
				"helo_name":       "bench.local",
			}
			if v.srv.noAuth {
				delete(keys, "username")
				delete(keys, "password")
			}
			if v.depth > 0 {
				keys["pipeline_depth"] = strconv.Itoa(v.depth)
			}
			before := v.srv.count()
			if v.srv.sink != nil {
				v.srv.sink.ResetSpan()
			}
			v.loads = append(v.loads, loadavg1())
			r, err := fluentBitOnce(o, filepath.Join(dir, fmt.Sprintf("smtp%d-%d", i, len(v.runs))+strings.NewReplacer(" ", "", "(", "", ")", "", "+", "").Replace(v.srv.name)),
				so, parsers, "smtp", keys, lines, v.srv.sink)
			if err != nil {
				return err
			}
			if err := waitCount(v.srv, before+int64(o.records)); err != nil {
				return err
			}
			v.runs = append(v.runs, r)
		}
		fmt.Fprintf(os.Stderr, "bench: %s -> null (run %d of %d) ...\n", version, i+1, o.repeat)
		nullLoads = append(nullLoads, loadavg1())
		r, err := fluentBitOnce(o, filepath.Join(dir, fmt.Sprintf("null%d", i)), "", parsers, "null", nil, lines, nil)
		if err != nil {
			return err
		}
		nullRuns = append(nullRuns, r)
		if o.baseReuse > 0 {
			for _, s := range servers {
				fmt.Fprintf(os.Stderr, "bench: go-mail baseline -> %s (run %d of %d) ...\n", s.name, i+1, o.repeat)
				f, err := runBaselineArgs(baselineArgs{
					Addr: s.addr, CAFile: cert.CAFile, Chunk: chunkPath, Reuse: true,
					Emails: o.baseReuse, Concurrency: config.DefaultMaxConnections, Warmup: config.DefaultMaxConnections,
					User: benchUser, Pass: benchPass, Secret: benchSecret, From: benchFrom, To: benchTo,
					NoAuth: s.noAuth,
				})
				if err != nil {
					return fmt.Errorf("go-mail baseline against %s: %w", s.name, err)
				}
				f.name = loadavg1()
				baselines[s] = append(baselines[s], f)
			}
		}
	}

	w := os.Stdout
	fmt.Fprintf(w, "machine: %s, %d CPUs, load %s before, %s after\n", cpuModel(), runtime.NumCPU(), loadBefore, loadavg())
	fmt.Fprintf(w, "run: Fluent Bit %s, tail input of %d JSON lines of %d bytes (json parser), Flush %s, -> smtp (smtpout.so, defaults: implicit TLS, max_connections %d, pipeline_depth %d, pipelining and chunking on; Workers 2), then the same -> null; %d interleaved run(s) of each, medians below\n",
		version, o.records, lineSize, o.fbFlush, config.DefaultMaxConnections, config.DefaultPipelineDepth, o.repeat)
	for _, s := range servers {
		fmt.Fprintf(w, "server %s: %s\n", s.name, s.about)
	}
	for _, s := range skipped {
		fmt.Fprintln(w, "server "+s)
	}
	if s := servers[len(servers)-1].sink; s != nil {
		verified := "signature of a received email verified"
		if err := output.Verify(bytes.NewReader(s.Sample()), []byte(benchSecret)); err != nil {
			verified = "SIGNATURE CHECK FAILED: " + err.Error()
		}
		fmt.Fprintf(w, "sink: %d messages accepted over %d connection(s); %s\n", s.Messages(), s.Sessions(), verified)
	}
	fmt.Fprintf(w, "every server stored every record of every run (its own count); emails/s: from the append to Fluent Bit's last flush (the sink: its first to its last message)\n")
	if o.baseReuse > 0 {
		fmt.Fprintf(w, "go-mail baseline: v0.8.1 Client, %d connections dialled once, Send per email (NOOP and RSET each), %d emails per run, CPU of its own process\n",
			config.DefaultMaxConnections, o.baseReuse)
	}
	for _, v := range variants {
		for _, r := range v.runs {
			if r.retries > 0 || r.errors > 0 {
				fmt.Fprintf(w, "note: a run of %s had %d retries and %d errors (Fluent Bit's counters)\n", v.label(version), r.retries, r.errors)
			}
		}
	}
	each := func(runs []fbRun) string {
		var parts []string
		for _, r := range runs {
			parts = append(parts, fmt.Sprintf("%.1f", r.cpuPerRecord()))
		}
		return strings.Join(parts, ", ")
	}
	fmt.Fprintf(w, "%-44s %9s %14s %12s %-24s %s\n", "", "emails/s", "CPU µs/email", "RSS MiB", "each run's CPU µs", "load (1 min) at each run")
	for _, v := range variants {
		cpu := median(v.runs, fbRun.cpuPerRecord)
		rate := median(v.runs, func(r fbRun) float64 { return float64(r.records) / (float64(r.rateNs) / 1e9) })
		hwm := median(v.runs, func(r fbRun) float64 { return mib(r.hwmKiB) })
		fmt.Fprintf(w, "%-44s %9.0f %14.1f %12.1f %-24s %s\n", v.label(version), rate, cpu, hwm, each(v.runs), strings.Join(v.loads, " "))
		if b := baselines[v.srv]; len(b) > 0 && v.depth == 0 {
			bcpu := median(b, figures.cpuPerEmail)
			brate := median(b, figures.perSec)
			bhwm := median(b, func(f figures) float64 { return mib(f.hwmKiB) })
			var parts, loads []string
			for _, f := range b {
				parts = append(parts, fmt.Sprintf("%.1f", f.cpuPerEmail()))
				loads = append(loads, f.name)
			}
			fmt.Fprintf(w, "%-44s %9.0f %14.1f %12.1f %-24s %s\n", "  go-mail reuse -> "+v.srv.name, brate, bcpu, bhwm, strings.Join(parts, ", "), strings.Join(loads, " "))
		}
	}
	nullCPU := median(nullRuns, fbRun.cpuPerRecord)
	fmt.Fprintf(w, "%-44s %9s %14.1f %12.1f %-24s %s\n", "fluent-bit "+version+" -> null (baseline)", "-", nullCPU,
		median(nullRuns, func(r fbRun) float64 { return mib(r.hwmKiB) }), each(nullRuns), strings.Join(nullLoads, " "))
	for _, v := range variants {
		if v.srv.name == "smtp-sink" && v.depth == 0 {
			cpu := median(v.runs, fbRun.cpuPerRecord)
			fmt.Fprintf(w, "target: whole fluent-bit process <= 100 µs CPU per email against smtp-sink behind TLS (defaults, Workers 2): %.1f µs %s\n", cpu, onOff(cpu <= 100))
		}
	}
	return nil
}

// waitCount waits (up to 30 s) until s has stored at least n messages; a server that cannot
// count (-1) is taken at Fluent Bit's word.
func waitCount(s *benchServer, n int64) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := s.count()
		if got < 0 || got >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s stored %d messages, want %d", s.name, got, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// loadavg1 returns the 1-minute load average.
func loadavg1() string {
	l, _, _ := strings.Cut(loadavg(), " ")
	return l
}

// median returns the median of f over runs (the mean of the middle two for an even count).
func median[R any](runs []R, f func(R) float64) float64 {
	v := make([]float64, len(runs))
	for i, r := range runs {
		v[i] = f(r)
	}
	sort.Float64s(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

// jsonLines returns n JSON lines (detection records, see record.go) of about size bytes each,
// newline included, and the size of the first.
func jsonLines(n, size int) ([]byte, int, error) {
	line := func(i, pad int) ([]byte, error) {
		b, err := json.Marshal(detection(i, pad))
		return append(b, '\n'), err
	}
	first, err := line(0, 0)
	if err != nil {
		return nil, 0, err
	}
	pad := max(size-len(first), 0)
	var buf bytes.Buffer
	for i := range n {
		b, err := line(i, pad)
		if err != nil {
			return nil, 0, err
		}
		buf.Write(b)
	}
	l, _, _ := bytes.Cut(buf.Bytes(), []byte("\n"))
	return buf.Bytes(), len(l) + 1, nil
}

// fluentBitVersion returns "4.2.8" from `fluent-bit --version`, or the binary's path.
func fluentBitVersion(bin string) string {
	out, err := exec.Command(bin, "--version").Output()
	if err == nil {
		for _, f := range strings.Fields(string(out)) {
			if len(f) > 1 && f[0] == 'v' && strings.Count(f, ".") == 2 {
				return f[1:]
			}
		}
	}
	return bin
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// fluentBitOnce runs one fluent-bit process in dir with the given output, appends lines to
// the tailed file once it is up, and measures it until every record is flushed.
func fluentBitOnce(o options, dir, so, parsers, outName string, keys map[string]string, lines []byte, sink *Sink) (fbRun, error) {
	r := fbRun{output: outName, records: int64(o.records)}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return r, err
	}
	input := filepath.Join(dir, "records.log")
	if err := os.WriteFile(input, nil, 0o600); err != nil {
		return r, err
	}
	port, err := freePort()
	if err != nil {
		return r, err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "[SERVICE]\n    Flush        %s\n    Grace        2\n    Log_Level    info\n    Parsers_File %s\n", o.fbFlush, parsers)
	fmt.Fprintf(&b, "    HTTP_Server  On\n    HTTP_Listen  127.0.0.1\n    HTTP_Port    %d\n\n", port)
	fmt.Fprintf(&b, "[INPUT]\n    Name              tail\n    Tag               bench\n    Path              %s\n    Parser            json\n    Read_from_Head    On\n    Refresh_Interval  1\n    Buffer_Chunk_Size 64k\n    Buffer_Max_Size   64k\n\n", input)
	fmt.Fprintf(&b, "[OUTPUT]\n    Name         %s\n    Match        *\n    Workers      2\n", outName)
	for _, k := range sortedKeys(keys) {
		fmt.Fprintf(&b, "    %-15s %s\n", k, keys[k])
	}
	conf := filepath.Join(dir, "fluent-bit.conf")
	if err := os.WriteFile(conf, []byte(b.String()), 0o600); err != nil {
		return r, err
	}
	logPath := filepath.Join(dir, "fluent-bit.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return r, err
	}
	defer logFile.Close()
	args := []string{"-c", conf}
	if so != "" {
		args = append([]string{"-e", so}, args...)
	}
	cmd := exec.Command(o.fluentBit, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = os.Environ()
	if err := cmd.Start(); err != nil {
		return r, fmt.Errorf("start %s: %w", o.fluentBit, err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-waited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-waited
		}
	}
	defer stop()
	fail := func(err error) (fbRun, error) {
		stop()
		log, _ := os.ReadFile(logPath)
		return r, fmt.Errorf("%s output: %w\nfluent-bit log:\n%s", outName, err, tail(string(log), 30))
	}
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d/api/v2/metrics/prometheus", port)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := scrape(metricsURL); err == nil {
			break
		}
		select {
		case err := <-waited:
			waited <- err
			return fail(fmt.Errorf("fluent-bit exited before it was ready: %v", err))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fail(errors.New("fluent-bit's HTTP server did not answer within 30s"))
		}
	}
	time.Sleep(500 * time.Millisecond) // let the tail input settle on the empty file

	pid := cmd.Process.Pid
	cpu0, err := procCPUUs(pid)
	if err != nil {
		return fail(err)
	}
	var perf *exec.Cmd
	var perfStat bytes.Buffer
	if (o.perfOut != "" || o.perfStat) && outName == "smtp" {
		if o.perfOut != "" {
			perf = exec.Command("perf", "record", "-e", "cpu-clock", "-F", "2000", "-g", "-o", o.perfOut, "-p", strconv.Itoa(pid))
			perf.Stdout, perf.Stderr = os.Stderr, os.Stderr
		} else {
			perf = exec.Command("perf", "stat", "-x", ",", "-e", perfStatEvents, "-p", strconv.Itoa(pid))
			perf.Stdout, perf.Stderr = &perfStat, &perfStat
		}
		if err := perf.Start(); err != nil {
			return fail(fmt.Errorf("perf record: %w", err))
		}
		time.Sleep(300 * time.Millisecond)
		if cpu0, err = procCPUUs(pid); err != nil {
			return fail(err)
		}
	}
	start := time.Now()
	f, err := os.OpenFile(input, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fail(err)
	}
	if _, err := f.Write(lines); err != nil {
		f.Close()
		return fail(err)
	}
	if err := f.Close(); err != nil {
		return fail(err)
	}

	timeout := time.Now().Add(time.Duration(o.records)*time.Millisecond + 60*time.Second)
	var m map[string]int64
	for {
		select {
		case err := <-waited:
			waited <- err
			return fail(fmt.Errorf("fluent-bit exited during the run: %v", err))
		case <-time.After(100 * time.Millisecond):
		}
		if m, err = scrape(metricsURL); err == nil && m["fluentbit_output_proc_records_total"] >= r.records {
			break
		}
		if time.Now().After(timeout) {
			return fail(fmt.Errorf("not every record was flushed in time: %v", m))
		}
	}
	r.wallNs = time.Since(start).Nanoseconds()
	cpu1, err := procCPUUs(pid)
	if err != nil {
		return fail(err)
	}
	if perf != nil {
		_ = perf.Process.Signal(syscall.SIGINT)
		_ = perf.Wait()
		if o.perfStat {
			printPerfStat(perfStat.String(), r.records)
		}
	}
	r.cpuUs = float64(cpu1 - cpu0)
	if r.hwmKiB, _, err = procStatus(pid); err != nil {
		return fail(err)
	}
	r.retries = m["fluentbit_output_retries_total"]
	r.errors = m["fluentbit_output_errors_total"]
	r.rateNs = r.wallNs
	if sink != nil {
		if first, last := sink.Span(); last > first {
			r.rateNs = last - first
		}
	}
	// Read before stopping: the shutdown's own "[ warn] [engine] service will shutdown" is no news.
	log, _ := os.ReadFile(logPath)
	if bytes.Contains(log, []byte("[error]")) || bytes.Contains(log, []byte("[ warn]")) {
		fmt.Fprintf(os.Stderr, "bench: fluent-bit logged warnings or errors:\n%s\n", tail(string(log), 20))
	}
	stop()
	return r, nil
}

// scrape reads Fluent Bit's Prometheus endpoint and sums each metric over its labels.
func scrape(url string) (map[string]int64, error) {
	resp, err := http.Get(url) //nolint:gosec // a loopback URL we built
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	out := make(map[string]int64)
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(f[0], "{")
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			continue
		}
		out[name] += int64(v)
	}
	return out, sc.Err()
}

// procCPUUs returns utime+stime of every thread of pid, in µs, from /proc/PID/stat.
func procCPUUs(pid int) (int64, error) {
	d, err := proc.CPU(pid)
	return d.Microseconds(), err
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// perfStatEvents are what -perf-stat counts in the smtp run: every syscall, the socket reads
// and writes (the plugin writes its sockets with sendto, Fluent Bit with write), the futex and
// epoll waits and the sleeps of the Go runtime, context switches.
const perfStatEvents = "raw_syscalls:sys_enter,syscalls:sys_enter_write,syscalls:sys_enter_sendto,syscalls:sys_enter_read," +
	"syscalls:sys_enter_futex,syscalls:sys_enter_epoll_pwait,syscalls:sys_enter_nanosleep,context-switches,page-faults"

// printPerfStat prints perf stat's CSV counts per record on stderr.
func printPerfStat(csv string, records int64) {
	for _, line := range strings.Split(csv, "\n") {
		f := strings.Split(line, ",")
		if len(f) < 3 {
			continue
		}
		n, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		fmt.Fprintf(os.Stderr, "perf stat: %-34s %8.2f per record\n", f[2], n/float64(records))
	}
}
