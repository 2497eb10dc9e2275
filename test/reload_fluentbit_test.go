package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Hot reloads and stop signals through a real Fluent Bit (FLUENT_BIT=/path/to/fluent-bit;
// skipped otherwise), issue 18 items 0 and 2, with the configuration the README recommends
// for hot reload: Hot_Reload On, and on the smtp output Workers 0 (a Go output with Workers
// >= 1 dies on the second reload: test/reload-crash) and a short flush_timeout (with Workers
// 0 the flush runs on the engine thread, and Fluent Bit's Grace only starts counting once it
// returns).

// hotReloadFlushTimeout is the flush_timeout the README recommends with Workers 0.
const hotReloadFlushTimeout = "0.5s"

// hotReloadService is the [SERVICE] addition of these scenarios.
const hotReloadService = "    Hot_Reload On\n"

// newHotReloadRig is newRestartRig (filesystem storage, ledger_dir) with Hot_Reload On and
// the smtp output's Workers 0 and flush_timeout, as the README recommends for hot reload;
// service adds [SERVICE] lines.
func newHotReloadRig(t *testing.T, keys map[string]string, service string) *restartRig {
	t.Helper()
	keys["flush_timeout"] = hotReloadFlushTimeout
	r := newRestartRig(t, keys, hotReloadService+service)
	b, err := os.ReadFile(r.conf)
	if err != nil {
		t.Fatal(err)
	}
	conf := strings.Replace(string(b), "    Workers 2\n", "    Workers 0\n", 1)
	if conf == string(b) {
		t.Fatalf("the restart rig's configuration has no Workers line to change:\n%s", b)
	}
	if err := os.WriteFile(r.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return r
}

// reload sends SIGHUP and waits until Fluent Bit logged its n-th successful reload.
func (r *restartRig) reload(n int) {
	r.t.Helper()
	if err := r.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		r.t.Fatalf("SIGHUP: %v", err)
	}
	r.waitReloaded(n)
}

// waitReloaded waits until Fluent Bit logged its n-th successful reload.
func (r *restartRig) waitReloaded(n int) {
	r.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for len(linesWith(r.log(), "[reload] successful reload done")) < n {
		select {
		case err := <-r.waited:
			r.waited <- err
			r.t.Fatalf("fluent-bit exited during reload %d: %v", n, err)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("no successful reload %d within 60s", n)
		}
	}
}

// reloadHTTP asks for the n-th reload through Fluent Bit's HTTP endpoint (POST
// /api/v2/reload on addr, HTTP_Server On) and waits as reload does.
func (r *restartRig) reloadHTTP(addr string, n int) {
	r.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	resp, err := http.Post("http://"+addr+"/api/v2/reload", "application/json", nil)
	for err != nil && time.Now().Before(deadline) { // the server restarts with each reload
		time.Sleep(100 * time.Millisecond)
		resp, err = http.Post("http://"+addr+"/api/v2/reload", "application/json", nil)
	}
	if err != nil {
		r.t.Fatalf("POST /api/v2/reload: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		r.t.Fatalf("POST /api/v2/reload: %s %s", resp.Status, body)
	}
	r.waitReloaded(n)
}

// cont sends SIGCONT (Fluent Bit dumps its state and re-installs its signal handlers) and
// waits until Fluent Bit logged it.
func (r *restartRig) cont() {
	r.t.Helper()
	seen := len(linesWith(r.log(), "caught signal (SIGCONT)"))
	if err := r.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		r.t.Fatalf("SIGCONT: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(linesWith(r.log(), "caught signal (SIGCONT)")) == seen {
		if time.Now().After(deadline) {
			r.t.Fatalf("fluent-bit did not log SIGCONT within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sendAfterReload is send for the moments after a reload, when the forward socket may still
// be coming back.
func (r *restartRig) sendAfterReload(tag string, data []byte) {
	r.t.Helper()
	run := &fluentBitRun{t: r.t, sock: r.sock}
	deadline := time.Now().Add(30 * time.Second)
	for !run.trySend(tag, data) {
		if time.Now().After(deadline) {
			r.t.Fatalf("the forward input did not accept a connection within 30s of the reload")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stopWith sends sig and returns how long fluent-bit took to exit and its exit error (at
// most 30 s, then it is killed and the test fails).
func (r *restartRig) stopWith(sig syscall.Signal) (time.Duration, error) {
	r.t.Helper()
	start := time.Now()
	_ = r.cmd.Process.Signal(sig)
	var err error
	select {
	case err = <-r.waited:
	case <-time.After(30 * time.Second):
		_ = r.cmd.Process.Kill()
		err = <-r.waited
		r.t.Errorf("fluent-bit did not exit within 30s of %v", sig)
	}
	r.cmd = nil
	return time.Since(start), err
}

// TestFluentBitFiveHotReloadsDeliverAfterEach: the configuration the README recommends for
// hot reload survives five reloads in a row (SIGHUP), delivers the records sent after each,
// nothing twice, and stops cleanly on SIGTERM.
func TestFluentBitFiveHotReloadsDeliverAfterEach(t *testing.T) {
	fluentBit(t)
	fs := startFaultServer(t, faultOptions{})
	r := newHotReloadRig(t, faultKeys(fs, "soc@example.com"), "")
	const per = 20
	r.start()
	r.send("app.reload", numbered(0, per))
	storedAtLeast(fs, per)
	for n := 1; n <= 5; n++ {
		r.reload(n)
		r.sendAfterReload("app.reload", numbered(n*per, per))
		storedAtLeast(fs, (n+1)*per)
	}
	took, err := r.stopWith(syscall.SIGTERM)
	if err != nil {
		t.Errorf("fluent-bit after five reloads and SIGTERM: %v, want a clean exit", err)
	}
	t.Logf("%s: five reloads, %d emails, exited %v after SIGTERM", filepath.Base(filepath.Dir(r.bin)),
		len(fs.Stored()), took.Round(time.Millisecond))
	c := countDelivery(fs, span(0, 6*per))
	if len(c.Lost) > 0 || c.Duplicates > 0 || c.Stored != 6*per {
		t.Errorf("after five reloads: stored=%d lost=%v duplicates=%d, want %d stored once each",
			c.Stored, c.Lost, c.Duplicates, 6*per)
	}
	if l := linesWith(r.log(), "caught signal (SIGSEGV)"); len(l) > 0 {
		t.Errorf("fluent-bit crashed: %q", l)
	}
	checkSignatures(t, fs)
}

// TestFluentBitStopSignalAfterTwoReloadsExitsInGrace: two hot reloads (SIGHUP, then Fluent
// Bit's HTTP endpoint POST /api/v2/reload) and a SIGCONT, then records to a server that takes 40 ms a
// reply and, in the middle of the chunk, SIGTERM, SIGINT or SIGQUIT (Fluent Bit stops
// gracefully on each): Fluent Bit exits within its Grace (5 s) because the plugin still
// watches the signal after the reloads and ends the flush at flush_timeout; after a restart
// on the same storage and ledger every record arrives once.
func TestFluentBitStopSignalAfterTwoReloadsExitsInGrace(t *testing.T) {
	fluentBit(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT} {
		t.Run(signalName(sig), func(t *testing.T) {
			fs := startFaultServer(t, faultOptions{delay: 40 * time.Millisecond})
			api := reservePort(t)
			host, port, _ := net.SplitHostPort(api)
			r := newHotReloadRig(t, faultKeys(fs, "soc@example.com"),
				fmt.Sprintf("    HTTP_Server On\n    HTTP_Listen %s\n    HTTP_Port %s\n", host, port))
			const total = 600
			r.start()
			r.reload(1)          // SIGHUP
			r.reloadHTTP(api, 2) // POST /api/v2/reload
			r.cont()             // SIGCONT re-installs Fluent Bit's handlers too
			r.sendAfterReload("app.stop", numbered(0, total))
			storedAtLeast(fs, 50)
			took, err := r.stopWith(sig)
			before := countDelivery(fs, span(0, total))
			t.Logf("%s: fluent-bit exited %v after %s (after two reloads) with %d of %d records delivered",
				filepath.Base(filepath.Dir(r.bin)), took.Round(time.Millisecond), signalName(sig), before.Distinct, total)
			var ee *exec.ExitError
			if err != nil && !errors.As(err, &ee) {
				t.Errorf("fluent-bit: %v", err)
			}
			if ee != nil && ee.ProcessState.Sys().(syscall.WaitStatus).Signaled() {
				t.Errorf("fluent-bit was killed by a signal (%v), want a graceful stop", err)
			}
			// Grace 5 s, plus up to 1 s before Fluent Bit's main loop (a sleep(1) poll) sees the
			// signal, plus a margin for a loaded machine.
			if took > 7*time.Second {
				t.Errorf("fluent-bit took %v to exit after %s, want within its Grace of 5s (and the 1 s before Fluent Bit sees the signal)", took, signalName(sig))
			}
			if before.Distinct == total {
				t.Fatalf("all %d records arrived before the signal: the scenario needs a stop mid-chunk", total)
			}
			restartExpectingEachOnce(t, r, fs, total)
		})
	}
}

// signalName is "SIGTERM" for syscall.SIGTERM, and so on.
func signalName(sig syscall.Signal) string {
	switch sig {
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGQUIT:
		return "SIGQUIT"
	}
	return fmt.Sprint(sig)
}
