package e2e

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/smtpout/smtpout/chunk"
)

// fluentBit returns the fluent-bit binary named by FLUENT_BIT, or skips the test.
func fluentBit(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("FLUENT_BIT")
	if bin == "" {
		t.Skip("skipped: FLUENT_BIT is not set; set FLUENT_BIT=/path/to/fluent-bit to run this scenario through a real Fluent Bit")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("FLUENT_BIT=%s: %v", bin, err)
	}
	return bin
}

// outputSection is one [OUTPUT] section of the generated configuration: an smtp output
// (Workers 2, Retry_Limit 5 unless workers and retryLimit say otherwise) or, with plugin set, another
// of Fluent Bit's outputs with only Match.
type outputSection struct {
	plugin     string // "" is smtp
	alias      string
	match      string
	retryLimit string
	workers    string // smtp only; "" is 2
	keys       map[string]string
}

// fluentBitRun is one fluent-bit process reading records from a forward input on a Unix
// socket (no TCP port to choose) and writing its log to a file.
type fluentBitRun struct {
	t       *testing.T
	cmd     *exec.Cmd
	sock    string
	logPath string
	waited  chan error
}

// writeConfig writes a classic fluent-bit.conf and returns its path; service adds keys to
// [SERVICE].
func writeConfig(t *testing.T, dir, sock string, service map[string]string, outputs []outputSection) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "[SERVICE]\n    Flush        0.2\n    Grace        5\n    Log_Level    info\n")
	writeKeys(&b, service)
	fmt.Fprintf(&b, "\n[INPUT]\n    Name         forward\n    Unix_Path    %s\n    Unix_Perm    0600\n\n", sock)
	for _, o := range outputs {
		if o.plugin != "" {
			fmt.Fprintf(&b, "[OUTPUT]\n    Name         %s\n    Match        %s\n", o.plugin, o.match)
		} else {
			limit := o.retryLimit
			if limit == "" {
				limit = "5"
			}
			workers := o.workers
			if workers == "" {
				workers = "2"
			}
			fmt.Fprintf(&b, "[OUTPUT]\n    Name         smtp\n    Match        %s\n    Workers      %s\n    Retry_Limit  %s\n", o.match, workers, limit)
		}
		if o.alias != "" {
			fmt.Fprintf(&b, "    Alias        %s\n", o.alias)
		}
		writeKeys(&b, o.keys)
		b.WriteString("\n")
	}
	path := filepath.Join(dir, "fluent-bit.conf")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// writeKeys writes keys as indented "key value" lines, sorted.
func writeKeys(b *strings.Builder, keys map[string]string) {
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		fmt.Fprintf(b, "    %-15s %s\n", k, keys[k])
	}
}

// startFluentBit runs fluent-bit with smtpout.so and the given outputs.
func startFluentBit(t *testing.T, outputs []outputSection, wantReady bool) *fluentBitRun {
	t.Helper()
	return startFluentBitWith(t, nil, outputs, wantReady)
}

// startFluentBitWith is startFluentBit with extra [SERVICE] keys. When wantReady, it waits
// until the forward input accepts a connection.
func startFluentBitWith(t *testing.T, service map[string]string, outputs []outputSection, wantReady bool) *fluentBitRun {
	t.Helper()
	return startFluentBitHosts(t, service, outputs, wantReady, "")
}

// startFluentBitHosts is startFluentBitWith where, when hosts is not empty, fluent-bit sees
// it as /etc/hosts (bind-mounted in a mount namespace of its own, which needs root: the test
// is skipped without one), so that a provider's host name (smtp.office365.com) reaches a
// server on 127.0.0.1.
func startFluentBitHosts(t *testing.T, service map[string]string, outputs []outputSection, wantReady bool, hosts string) *fluentBitRun {
	t.Helper()
	bin := fluentBit(t)
	so, _ := artifacts(t)
	dir := t.TempDir()
	r := &fluentBitRun{t: t, sock: filepath.Join(dir, "forward.sock"), logPath: filepath.Join(dir, "fluent-bit.log"), waited: make(chan error, 1)}
	conf := writeConfig(t, dir, r.sock, service, outputs)
	logFile, err := os.Create(r.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	r.cmd = exec.Command(bin, "-e", so, "-c", conf)
	if hosts != "" {
		r.cmd = withHosts(t, dir, hosts, r.cmd)
	}
	r.cmd.Stdout, r.cmd.Stderr = logFile, logFile
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("start fluent-bit: %v", err)
	}
	go func() { r.waited <- r.cmd.Wait() }()
	t.Cleanup(func() {
		r.stop()
		if t.Failed() {
			t.Logf("fluent-bit log:\n%s", r.log())
		}
	})
	if !wantReady {
		return r
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if r.accepting() {
			return r
		}
		select {
		case err := <-r.waited:
			r.waited <- err
			t.Fatalf("fluent-bit exited before it was ready: %v\n%s", err, r.log())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("fluent-bit's forward socket did not appear within 30s\n%s", r.log())
		}
	}
}

// accepting reports whether the forward input takes connections. Its socket file appears at
// bind(), before listen(): only a connection proves it ready.
func (r *fluentBitRun) accepting() bool {
	conn, err := net.Dial("unix", r.sock)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

func (r *fluentBitRun) log() string {
	b, _ := os.ReadFile(r.logPath)
	return string(b)
}

// send writes one PackedForward message: [tag, bin(chunk)], in_forward passes the entries on
// verbatim.
func (r *fluentBitRun) send(tag string, data []byte) {
	r.t.Helper()
	conn, err := net.DialTimeout("unix", r.sock, 10*time.Second)
	if err != nil {
		r.t.Fatalf("connect to fluent-bit: %v", err)
	}
	defer conn.Close()
	var e chunk.Encoder
	e.AppendValue([]any{tag, data})
	if _, err := conn.Write(e.Bytes()); err != nil {
		r.t.Fatalf("write to fluent-bit: %v", err)
	}
}

// exitCode waits (bounded) for fluent-bit to exit by itself.
func (r *fluentBitRun) exitCode(within time.Duration) int {
	r.t.Helper()
	select {
	case err := <-r.waited:
		r.waited <- err
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			r.t.Fatalf("fluent-bit: %v", err)
		}
		return 0
	case <-time.After(within):
		r.t.Fatalf("fluent-bit did not exit within %v\n%s", within, r.log())
	}
	return -1
}

// stop sends SIGTERM and waits (bounded) for a graceful exit.
func (r *fluentBitRun) stop() {
	select {
	case err := <-r.waited:
		r.waited <- err
		return
	default:
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-r.waited:
		r.waited <- err
	case <-time.After(30 * time.Second):
		_ = r.cmd.Process.Kill()
		r.t.Errorf("fluent-bit did not stop within 30s of SIGTERM")
	}
}

func TestFluentBitEveryEntryFormBecomesOneEmail(t *testing.T) {
	fluentBit(t)
	srv := startServer(t)
	fb := startFluentBit(t, []outputSection{{match: "*", keys: baseKeys(srv, "soc@example.com")}}, true)

	fb.send("app.security", mixedChunk())
	srv.waitMessages(t, 6)
	fb.stop() // graceful: every flush has returned, so the count below is final
	msgs := srv.messages(t)

	var ns []int
	for _, m := range msgs {
		ns = append(ns, payloadN(t, m))
	}
	sort.Ints(ns)
	if diff := cmp.Diff([]int{1, 2, 3, 4, 5, 6}, ns); diff != "" {
		t.Errorf("records delivered (-want +got):\n%s", diff)
	}
	log := fb.log()
	if !strings.Contains(log, "[output:smtp:smtp.0] started:") {
		t.Errorf("fluent-bit's log lacks the started line")
	}
	if strings.Contains(log, testSecretKey) {
		t.Errorf("the secret key appears in fluent-bit's log")
	}
}

func TestFluentBitTwoInstancesDeliverOnlyTheirOwn(t *testing.T) {
	fluentBit(t)
	srv := startServer(t)
	fb := startFluentBit(t, []outputSection{
		{match: "red.*", keys: baseKeys(srv, "red@example.com")},
		{match: "blue.*", keys: baseKeys(srv, "blue@example.com")},
	}, true)

	fb.send("red.app", numbered(100, 3))
	fb.send("blue.app", numbered(200, 2))
	srv.waitMessages(t, 5)
	fb.stop() // graceful: every flush has returned, so the count below is final
	msgs := srv.messages(t)

	got := make(map[string][]int)
	for _, m := range msgs {
		got[strings.Join(m.To, ",")] = append(got[strings.Join(m.To, ",")], payloadN(t, m))
	}
	for _, v := range got {
		sort.Ints(v)
	}
	want := map[string][]int{"red@example.com": {100, 101, 102}, "blue@example.com": {200, 201}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("records per recipient (-want +got):\n%s", diff)
	}
}

func TestFluentBitBadConfigRefusesToStart(t *testing.T) {
	fluentBit(t)
	fb := startFluentBit(t, []outputSection{{match: "*", keys: map[string]string{
		"dest_host":   "127.0.0.1:2525",
		"dest_email":  "soc@example.com",
		"from_email":  "fb@example.com",
		"secret_key":  testSecretKey,
		"is_starttls": "perhaps",
	}}}, false)

	if code := fb.exitCode(60 * time.Second); code == 0 {
		t.Errorf("fluent-bit exited 0 with a bad configuration")
	}
	log := fb.log()
	if !strings.Contains(log, "[output:smtp:smtp.0] configuration: is_starttls:") {
		t.Errorf("fluent-bit's log does not name is_starttls:\n%s", log)
	}
	if strings.Contains(log, testSecretKey) {
		t.Errorf("the secret key appears in fluent-bit's log")
	}
}

func TestFluentBitConcurrentWorkersDeliverEveryRecordOnce(t *testing.T) {
	fluentBit(t)
	srv := startServer(t)
	fb := startFluentBit(t, []outputSection{{match: "*", keys: baseKeys(srv, "soc@example.com")}}, true)

	for c := range 5 {
		fb.send(fmt.Sprintf("app.%d", c), numbered(c*100, 10))
	}
	srv.waitMessages(t, 50)
	fb.stop() // graceful: every flush has returned, so the count below is final
	msgs := srv.messages(t)
	seen := make(map[int]int)
	for _, m := range msgs {
		seen[payloadN(t, m)]++
	}
	for c := range 5 {
		for n := c * 100; n < c*100+10; n++ {
			if seen[n] != 1 {
				t.Errorf("record %d delivered %d times, want 1", n, seen[n])
			}
		}
	}
}
