// Package chromium starts a real headless Chromium for a test and drives it over the Chrome
// DevTools protocol, spoken on a pipe (--remote-debugging-pipe): no port is opened, no
// dependency is needed, and Chromium fetches nothing from any network.
//
// The binary is found through the CHROMIUM environment variable, then PATH (chromium,
// chromium-browser). When it is missing the test is skipped, or fails when
// SMTPOUT_REQUIRE_BROWSER=1 (as `make test` and CI set it).
package chromium

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// callTimeout bounds one DevTools call.
const callTimeout = 30 * time.Second

// Browser is one running Chromium.
type Browser struct {
	cmd    *exec.Cmd
	in     io.WriteCloser // Chromium reads commands from it (its fd 3)
	stderr *strings.Builder

	mu      sync.Mutex
	nextID  int
	waiting map[int]chan message
	done    chan struct{} // closed when the reader stops
	readErr error
}

// message is one DevTools message: a reply (ID set) or an event.
type message struct {
	ID        int             `json:"id,omitempty"`
	Method    string          `json:"method,omitempty"`
	SessionID string          `json:"sessionId,omitempty"`
	Params    any             `json:"params,omitempty"`
	Result    json.RawMessage `json:"result,omitempty"`
	Error     *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error,omitempty"`
}

// Path returns the Chromium binary to use, or "" when there is none.
func Path() string {
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// Start starts a headless Chromium with a fresh profile for t and stops it when t ends. It
// skips t when no binary is found, unless SMTPOUT_REQUIRE_BROWSER=1.
func Start(t testing.TB) *Browser {
	t.Helper()
	bin := Path()
	if bin == "" {
		msg := "no chromium binary (install Debian's chromium package, or set CHROMIUM)"
		if os.Getenv("SMTPOUT_REQUIRE_BROWSER") == "1" {
			t.Fatal(msg + "; SMTPOUT_REQUIRE_BROWSER=1")
		}
		t.Skip(msg)
	}
	cmdR, cmdW, err := os.Pipe() // commands: we write, Chromium reads on fd 3
	if err != nil {
		t.Fatal(err)
	}
	resR, resW, err := os.Pipe() // replies: Chromium writes on fd 4, we read
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--no-default-browser-check", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--disable-extensions",
		"--disable-default-apps", "--disable-dev-shm-usage", "--mute-audio", "--hide-scrollbars",
		"--disable-features=Translate,MediaRouter,OptimizationHints",
		"--user-data-dir="+t.TempDir(), "--remote-debugging-pipe", "about:blank")
	cmd.ExtraFiles = []*os.File{cmdR, resW}
	var stderr strings.Builder
	cmd.Stderr = &lockedWriter{w: &stderr}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	cmdR.Close()
	resW.Close()
	b := &Browser{cmd: cmd, in: cmdW, stderr: &stderr, waiting: map[int]chan message{}, done: make(chan struct{})}
	go b.read(resR)
	t.Cleanup(func() {
		_ = b.call("", "Browser.close", nil, nil)
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		cmdW.Close()
		resR.Close()
	})
	var v struct {
		Product string `json:"product"`
	}
	if err := b.call("", "Browser.getVersion", nil, &v); err != nil {
		t.Fatalf("chromium %s: %v\n%s", bin, err, stderr.String())
	}
	t.Logf("browser: %s", v.Product)
	return b
}

// lockedWriter serialises writes to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// read delivers replies to their callers until the pipe closes; events are dropped.
func (b *Browser) read(r io.Reader) {
	br := bufio.NewReaderSize(r, 1<<20)
	var err error
	for {
		var raw []byte
		raw, err = br.ReadBytes(0)
		if err != nil {
			break
		}
		var m message
		if err = json.Unmarshal(raw[:len(raw)-1], &m); err != nil {
			err = fmt.Errorf("devtools message: %w", err)
			break
		}
		if m.ID == 0 {
			continue
		}
		b.mu.Lock()
		ch := b.waiting[m.ID]
		delete(b.waiting, m.ID)
		b.mu.Unlock()
		if ch != nil {
			ch <- m
		}
	}
	b.mu.Lock()
	b.readErr = err
	b.mu.Unlock()
	close(b.done)
}

// call sends method with params in session ("" for the browser) and decodes the reply's
// result into result (when not nil).
func (b *Browser) call(session, method string, params, result any) error {
	b.mu.Lock()
	b.nextID++
	id := b.nextID
	ch := make(chan message, 1)
	b.waiting[id] = ch
	b.mu.Unlock()
	req, err := json.Marshal(message{ID: id, Method: method, SessionID: session, Params: params})
	if err != nil {
		return err
	}
	if _, err := b.in.Write(append(req, 0)); err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	select {
	case m := <-ch:
		if m.Error != nil {
			return fmt.Errorf("%s: %s (%d)", method, m.Error.Message, m.Error.Code)
		}
		if result != nil {
			if err := json.Unmarshal(m.Result, result); err != nil {
				return fmt.Errorf("%s: %w", method, err)
			}
		}
		return nil
	case <-b.done:
		b.mu.Lock()
		defer b.mu.Unlock()
		return fmt.Errorf("%s: chromium closed the pipe (%v)", method, b.readErr)
	case <-time.After(callTimeout):
		return fmt.Errorf("%s: no reply within %v", method, callTimeout)
	}
}

// Page is one browser tab.
type Page struct {
	b       *Browser
	target  string
	session string
}

// NewPage opens a blank tab, closed when t ends.
func (b *Browser) NewPage(t testing.TB) *Page {
	t.Helper()
	var tgt struct {
		TargetID string `json:"targetId"`
	}
	if err := b.call("", "Target.createTarget", map[string]any{"url": "about:blank"}, &tgt); err != nil {
		t.Fatal(err)
	}
	var att struct {
		SessionID string `json:"sessionId"`
	}
	if err := b.call("", "Target.attachToTarget", map[string]any{"targetId": tgt.TargetID, "flatten": true}, &att); err != nil {
		t.Fatal(err)
	}
	p := &Page{b: b, target: tgt.TargetID, session: att.SessionID}
	t.Cleanup(func() { _ = b.call("", "Target.closeTarget", map[string]any{"targetId": tgt.TargetID}, nil) })
	return p
}

// Emulate makes the page a device width CSS pixels wide and height high, at scale device
// pixels per CSS pixel; mobile applies the viewport meta tag as a phone does. dark selects
// prefers-color-scheme: dark.
func (p *Page) Emulate(width, height int, scale float64, mobile, dark bool) error {
	if err := p.b.call(p.session, "Emulation.setDeviceMetricsOverride", map[string]any{
		"width": width, "height": height, "deviceScaleFactor": scale, "mobile": mobile,
		"screenWidth": width, "screenHeight": height,
	}, nil); err != nil {
		return err
	}
	scheme := "light"
	if dark {
		scheme = "dark"
	}
	return p.b.call(p.session, "Emulation.setEmulatedMedia", map[string]any{
		"features": []map[string]string{{"name": "prefers-color-scheme", "value": scheme}},
	}, nil)
}

// Navigate loads url and waits until the document is complete.
func (p *Page) Navigate(url string) error {
	var nav struct {
		ErrorText string `json:"errorText"`
	}
	if err := p.b.call(p.session, "Page.navigate", map[string]any{"url": url}, &nav); err != nil {
		return err
	}
	if nav.ErrorText != "" {
		return fmt.Errorf("navigate %s: %s", url, nav.ErrorText)
	}
	deadline := time.Now().Add(callTimeout)
	for {
		var ready struct {
			URL   string `json:"url"`
			State string `json:"state"`
		}
		if err := p.Eval(`({url: location.href, state: document.readyState})`, &ready); err != nil {
			return err
		}
		if ready.URL == url && ready.State == "complete" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("navigate %s: not loaded within %v (at %s, %s)", url, callTimeout, ready.URL, ready.State)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Eval evaluates the JavaScript expression expr in the page and decodes its value (JSON) into
// out.
func (p *Page) Eval(expr string, out any) error {
	var res struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	if err := p.b.call(p.session, "Runtime.evaluate", map[string]any{
		"expression": expr, "returnByValue": true,
	}, &res); err != nil {
		return err
	}
	if e := res.ExceptionDetails; e != nil {
		return fmt.Errorf("evaluate: %s %s", e.Text, e.Exception.Description)
	}
	if out == nil {
		return nil
	}
	if len(res.Result.Value) == 0 {
		return errors.New("evaluate: no value")
	}
	return json.Unmarshal(res.Result.Value, out)
}

// Screenshot returns a PNG of the page's top width x height CSS pixels, beyond the viewport
// if need be.
func (p *Page) Screenshot(width, height int) ([]byte, error) {
	var shot struct {
		Data string `json:"data"`
	}
	if err := p.b.call(p.session, "Page.captureScreenshot", map[string]any{
		"format": "png", "captureBeyondViewport": true,
		"clip": map[string]any{"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
	}, &shot); err != nil {
		return nil, err
	}
	return base64.StdEncoding.DecodeString(shot.Data)
}
