package e2e

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// buildDir holds smtpout.so and the host, built once per test binary run.
var buildDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "smtpout-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	buildDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// moduleRoot is the directory holding go.mod (the parent of this package's directory).
func moduleRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test source")
	}
	return filepath.Dir(filepath.Dir(file))
}

var (
	buildOnce sync.Once
	buildErr  error
	soPath    string
	hostPath  string
)

// artifacts builds smtpout.so (without -race: the detector's runtime cannot be loaded into a
// foreign process) and the C host, once, and returns their paths.
func artifacts(t testing.TB) (so, host string) {
	t.Helper()
	buildOnce.Do(func() {
		root := moduleRoot(t)
		soPath = filepath.Join(buildDir, "smtpout.so")
		hostPath = filepath.Join(buildDir, "host")
		gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
		build := exec.Command(gobin, "build", "-buildmode=c-shared", "-o", soPath, ".")
		build.Dir = root
		build.Env = append(os.Environ(), "CGO_ENABLED=1")
		if out, err := build.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build -buildmode=c-shared: %v\n%s", err, out)
			return
		}
		cc := os.Getenv("CC")
		if cc == "" {
			cc = "gcc"
		}
		gcc := exec.Command(cc, "-O1", "-g", "-Wall", "-Wextra", "-Werror", "-rdynamic",
			"-o", hostPath, filepath.Join(root, "test", "host", "host.c"), "-ldl", "-lpthread")
		if out, err := gcc.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("%s host.c: %v\n%s", cc, err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return soPath, hostPath
}

// replyTimeout bounds how long one host command may take (a flush talks SMTP).
const replyTimeout = 2 * time.Minute

// Host drives one run of the C host over its standard input, one command and one reply line
// at a time. The plugin's log lines go to a file the host writes directly (no pipe), so every
// line logged before a reply is readable with Log once the reply has arrived.
type Host struct {
	t       testing.TB
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	replies chan string
	logPath string
	waited  chan error
	dir     string // for chunk files
	nchunk  int
}

// StartHost starts the host, loads smtpout.so and registers it (checking what
// FLBPluginRegister filled in). The host is stopped when the test ends.
func StartHost(t testing.TB) *Host {
	t.Helper()
	so, hostBin := artifacts(t)
	h := &Host{
		t:       t,
		replies: make(chan string, 64),
		waited:  make(chan error, 1),
		dir:     t.TempDir(),
	}
	h.logPath = filepath.Join(h.dir, "host.log")
	logFile, err := os.Create(h.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close() // the child has its own descriptor
	h.cmd = exec.Command(hostBin, "-")
	h.cmd.Stderr = logFile
	if h.stdin, err = h.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := h.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.cmd.Start(); err != nil {
		t.Fatalf("start host: %v", err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			h.replies <- sc.Text()
		}
		close(h.replies)
	}()
	go func() { h.waited <- h.cmd.Wait() }()
	t.Cleanup(h.stop)

	if got := h.Do("load " + so); !strings.HasPrefix(got, "load -> ok exports=register,init,flushctx,exitctx,unregister") {
		t.Fatalf("load: %q", got)
	}
	want := "register -> 0 type=2 proxy=11 name=smtp description="
	if got := h.Do("register"); !strings.HasPrefix(got, want) {
		t.Fatalf("register = %q, want prefix %q", got, want)
	}
	return h
}

// stop ends the host: "quit" and a bounded wait, then kill.
func (h *Host) stop() {
	_, _ = io.WriteString(h.stdin, "quit\n")
	_ = h.stdin.Close()
	select {
	case <-h.waited:
	case <-time.After(30 * time.Second):
		_ = h.cmd.Process.Kill()
		<-h.waited
		h.t.Errorf("host did not stop within 30s; log:\n%s", h.Log())
	}
	if h.t.Failed() || os.Getenv("SMTPOUT_E2E_LOG") == "1" {
		h.t.Logf("host log:\n%s", h.Log())
	}
}

// Do sends one command and returns its reply line.
func (h *Host) Do(command string) string {
	h.t.Helper()
	if _, err := io.WriteString(h.stdin, command+"\n"); err != nil {
		h.t.Fatalf("host: write %q: %v\nlog:\n%s", command, err, h.Log())
	}
	select {
	case r, ok := <-h.replies:
		if !ok {
			h.t.Fatalf("host exited during %q; log:\n%s", command, h.Log())
		}
		if strings.HasPrefix(r, "error:") {
			h.t.Fatalf("host: %q: %s", command, r)
		}
		return r
	case <-time.After(replyTimeout):
		h.t.Fatalf("host: no reply to %q within %v; log:\n%s", command, replyTimeout, h.Log())
	}
	return ""
}

// Expect sends a command and fails the test unless the reply is want.
func (h *Host) Expect(command, want string) {
	h.t.Helper()
	if got := h.Do(command); got != want {
		h.t.Errorf("%s: reply %q, want %q", command, got, want)
	}
}

// Configure sets instance i's keys (in a stable order).
func (h *Host) Configure(i int, keys map[string]string) {
	h.t.Helper()
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		h.Expect(fmt.Sprintf("set %d %s %s", i, k, keys[k]), "ok")
	}
}

// Init runs FLBPluginInit for instance i and returns its code.
func (h *Host) Init(i int) int {
	h.t.Helper()
	var n, rc int
	r := h.Do(fmt.Sprintf("init %d", i))
	if _, err := fmt.Sscanf(r, "init %d -> %d", &n, &rc); err != nil {
		h.t.Fatalf("init reply %q: %v", r, err)
	}
	return rc
}

// Chunk writes a chunk to a file for flush commands and returns its path.
func (h *Host) Chunk(data []byte) string {
	h.t.Helper()
	h.nchunk++
	p := filepath.Join(h.dir, fmt.Sprintf("chunk%d.bin", h.nchunk))
	if err := os.WriteFile(p, data, 0o600); err != nil {
		h.t.Fatal(err)
	}
	return p
}

// Flush runs FLBPluginFlushCtx for instance i on the host's main thread and returns its code.
func (h *Host) Flush(i int, tag string, data []byte) int {
	h.t.Helper()
	var n, rc int
	r := h.Do(fmt.Sprintf("flush %d %s %s", i, tag, h.Chunk(data)))
	if _, err := fmt.Sscanf(r, "flush %d -> %d", &n, &rc); err != nil {
		h.t.Fatalf("flush reply %q: %v", r, err)
	}
	return rc
}

// Start runs a flush on a new host thread and returns the job number.
func (h *Host) Start(i int, tag string, data []byte) int {
	h.t.Helper()
	var j int
	r := h.Do(fmt.Sprintf("start %d %s %s", i, tag, h.Chunk(data)))
	if _, err := fmt.Sscanf(r, "start %d", &j); err != nil {
		h.t.Fatalf("start reply %q: %v", r, err)
	}
	return j
}

// JoinAll waits for every started job and returns their codes by job number.
func (h *Host) JoinAll() map[int]int {
	h.t.Helper()
	r := h.Do("joinall")
	rest, ok := strings.CutPrefix(r, "joinall ->")
	if !ok {
		h.t.Fatalf("joinall reply %q", r)
	}
	out := make(map[int]int)
	for _, f := range strings.Fields(rest) {
		var j, rc int
		if _, err := fmt.Sscanf(f, "%d:%d", &j, &rc); err != nil {
			h.t.Fatalf("joinall reply %q: %v", r, err)
		}
		out[j] = rc
	}
	return out
}

// Exit runs FLBPluginExitCtx for instance i and returns its code.
func (h *Host) Exit(i int) int {
	h.t.Helper()
	var n, rc int
	r := h.Do(fmt.Sprintf("exit %d", i))
	if _, err := fmt.Sscanf(r, "exit %d -> %d", &n, &rc); err != nil {
		h.t.Fatalf("exit reply %q: %v", r, err)
	}
	return rc
}

// Log returns what the plugin logged so far (the host's stderr).
func (h *Host) Log() string {
	b, err := os.ReadFile(h.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read the host log: %v)", err)
	}
	return string(b)
}

// LogLines returns the log lines that contain every one of parts.
func (h *Host) LogLines(parts ...string) []string { return linesWith(h.Log(), parts...) }

// linesWith returns the non-empty lines of log that contain every one of parts.
func linesWith(log string, parts ...string) []string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		ok := l != ""
		for _, p := range parts {
			ok = ok && strings.Contains(l, p)
		}
		if ok {
			out = append(out, l)
		}
	}
	return out
}

// Fluent Bit return codes.
const (
	flbError = 0
	flbOK    = 1
	flbRetry = 2
)
