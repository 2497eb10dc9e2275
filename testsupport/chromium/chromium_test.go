package chromium

import (
	"bytes"
	"image/png"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPage drives a real Chromium: a local page loads, the emulated width and scheme apply,
// expressions evaluate (and a thrown error is an error), and a screenshot is a PNG of the
// requested size at the device scale.
func TestPage(t *testing.T) {
	b := Start(t)
	file := filepath.Join(t.TempDir(), "page.html")
	doc := `<!DOCTYPE html><meta name="viewport" content="width=device-width"><meta name="color-scheme" content="light dark"><p id="p">hello <b>world</b></p>`
	if err := os.WriteFile(file, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	p := b.NewPage(t)
	if err := p.Emulate(360, 640, 2, true, true); err != nil {
		t.Fatal(err)
	}
	u := (&url.URL{Scheme: "file", Path: file}).String()
	if err := p.Navigate(u); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Text  string
		Width int
		Dark  bool
	}
	if err := p.Eval(`({Text: document.getElementById('p').innerText, Width: innerWidth, Dark: matchMedia('(prefers-color-scheme: dark)').matches})`, &got); err != nil {
		t.Fatal(err)
	}
	if got.Text != "hello world" || got.Width != 360 || !got.Dark {
		t.Errorf("page = %+v, want hello world, 360 px, dark", got)
	}
	if err := p.Eval(`(() => { throw new Error("boom") })()`, nil); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("Eval of a throwing expression: %v, want an error naming boom", err)
	}
	shot, err := p.Screenshot(360, 100)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	if sz := img.Bounds().Size(); sz.X != 720 || sz.Y != 200 {
		t.Errorf("screenshot is %v, want 720x200 (360x100 CSS px at scale 2)", sz)
	}
	if err := p.Navigate("file:///nonexistent/page.html"); err == nil {
		t.Errorf("Navigate to a missing file: no error")
	}
}
