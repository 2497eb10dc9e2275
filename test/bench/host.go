package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// goTool is the go command: $GO, else "go" on PATH.
func goTool() string {
	if g := os.Getenv("GO"); g != "" {
		return g
	}
	return "go"
}

// moduleRoot returns the directory holding go.mod.
func moduleRoot() (string, error) {
	out, err := exec.Command(goTool(), "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the smtpout module (run from the repository)")
	}
	return filepath.Dir(mod), nil
}

// buildPlugin builds smtpout.so into dir as the Makefile does (without -race: its runtime
// cannot be loaded into a foreign process).
func buildPlugin(root, dir string) (string, error) {
	so := filepath.Join(dir, "smtpout.so")
	cmd := exec.Command(goTool(), "build", "-buildmode=c-shared", "-trimpath", "-ldflags=-s -w", "-o", so, ".")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build -buildmode=c-shared: %v\n%s", err, out)
	}
	return so, nil
}

// buildHost compiles test/host/host.c into dir.
func buildHost(root, dir string) (string, error) {
	host := filepath.Join(dir, "host")
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "gcc"
	}
	cmd := exec.Command(cc, "-O1", "-Wall", "-Wextra", "-Werror", "-rdynamic", "-o", host,
		filepath.Join(root, "test", "host", "host.c"), "-ldl", "-lpthread")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%s host.c: %v\n%s", cc, err, out)
	}
	return host, nil
}

// Host drives the C host over its standard input, one command and one reply line at a time.
type Host struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	replies chan string
	logPath string
	waited  chan error
}

// replyTimeout bounds one host command (a bench command of 100,000 emails at 10 ms RTT
// without pipelining takes minutes).
const replyTimeout = 30 * time.Minute

// StartHost starts hostBin with the plugin's log in logPath, loads so and registers it.
func StartHost(hostBin, so, logPath string) (*Host, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	h := &Host{replies: make(chan string, 16), logPath: logPath, waited: make(chan error, 1)}
	h.cmd = exec.Command(hostBin, "-")
	h.cmd.Stderr = logFile
	if h.stdin, err = h.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := h.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := h.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start host: %w", err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			h.replies <- sc.Text()
		}
		close(h.replies)
	}()
	go func() { h.waited <- h.cmd.Wait() }()
	if r, err := h.Do("load " + so); err != nil || !strings.Contains(r, "flushctx") {
		h.Stop()
		return nil, fmt.Errorf("load: %q %v", r, err)
	}
	if r, err := h.Do("register"); err != nil || !strings.HasPrefix(r, "register -> 0 ") {
		h.Stop()
		return nil, fmt.Errorf("register: %q %v", r, err)
	}
	return h, nil
}

// Pid is the host's process id.
func (h *Host) Pid() int { return h.cmd.Process.Pid }

// Do sends one command and returns its reply; a reply starting with "error:" is an error.
func (h *Host) Do(command string) (string, error) {
	if _, err := io.WriteString(h.stdin, command+"\n"); err != nil {
		return "", fmt.Errorf("host: write %q: %w", command, err)
	}
	select {
	case r, ok := <-h.replies:
		if !ok {
			return "", fmt.Errorf("host exited during %q; log:\n%s", command, h.Log())
		}
		if strings.HasPrefix(r, "error:") {
			return r, fmt.Errorf("host: %q: %s", command, r)
		}
		return r, nil
	case <-time.After(replyTimeout):
		return "", fmt.Errorf("host: no reply to %q within %v", command, replyTimeout)
	}
}

// Configure sets instance 0's keys in a stable order.
func (h *Host) Configure(keys map[string]string) error {
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if _, err := h.Do(fmt.Sprintf("set 0 %s %s", k, keys[k])); err != nil {
			return err
		}
	}
	return nil
}

// Stop quits the host (killing it after 30 s).
func (h *Host) Stop() {
	_, _ = io.WriteString(h.stdin, "quit\n")
	_ = h.stdin.Close()
	select {
	case <-h.waited:
	case <-time.After(30 * time.Second):
		_ = h.cmd.Process.Kill()
		<-h.waited
	}
}

// Log returns what the plugin logged so far.
func (h *Host) Log() string {
	b, err := os.ReadFile(h.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read the host log: %v)", err)
	}
	return string(b)
}

// kv parses the "k=v k=v" fields of a reply after its "->".
func kv(reply string) map[string]int64 {
	_, rest, _ := strings.Cut(reply, "->")
	out := make(map[string]int64)
	for _, f := range strings.Fields(rest) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			out[k] = n
		}
	}
	return out
}

// procStatus returns VmHWM and VmRSS of pid in KiB, from /proc/<pid>/status.
func procStatus(pid int) (hwm, rss int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "VmHWM":
			hwm = n
		case "VmRSS":
			rss = n
		}
	}
	return hwm, rss, nil
}
