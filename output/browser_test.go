package output

import (
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/smtpout/smtpout/testsupport/chromium"
)

// TestReadableInBrowser renders records in the readable format, loads each HTML part in a real
// headless Chromium at phone (360 CSS px) and desktop (1024 px) width, and checks what a reader
// sees: nothing scrolls sideways, every value of the record is in the visible text, and at
// phone width no key cell is wider than half the page. It writes PNG screenshots of every page
// to $SMTPOUT_SCREENSHOTS (default: a temporary directory), and the phone and desktop views of
// the detection record to $SMTPOUT_DOCS_SCREENSHOTS when set (make docs-screenshots).
//
// It needs Chromium: skipped without it, failed without it when SMTPOUT_REQUIRE_BROWSER=1.
func TestReadableInBrowser(t *testing.T) {
	b := chromium.Start(t)
	dir, docs := screenshotDirs(t)
	pages := t.TempDir()
	r := mustRenderer(t, testConfig(true))
	views := []view{
		{"phone", 360, 780, 1, true, false},
		{"phone-dark", 360, 780, 1, true, true},
		{"desktop", 1024, 768, 1, false, false},
	}
	for _, tc := range []struct {
		name string
		rec  Record
	}{
		{"detection", lcWindowsDetection()},
		{"wide", wideRecord()},
		{"bigvalue", bigValueRecord()},
		{"hostile", hostileRecord()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := mustRender(t, r, tc.rec)
			p := parseEmail(t, e.Data)
			file := filepath.Join(pages, tc.name+".html")
			if err := os.WriteFile(file, []byte(p.html), 0o644); err != nil {
				t.Fatal(err)
			}
			u := (&url.URL{Scheme: "file", Path: file}).String()
			want := shownLeaves(t, p.text)
			for _, v := range views {
				if v.dark && tc.name != "detection" {
					continue // one dark view is enough to see the colours
				}
				t.Run(v.name, func(t *testing.T) {
					pg, m := loadPage(t, b, u, v)
					if m.Keys == 0 {
						t.Errorf("no key cells")
					}
					if v.mobile && m.MaxKey > float64(m.InnerWidth)/2 {
						t.Errorf("a key cell is %.0f px wide, more than half of %d px", m.MaxKey, m.InnerWidth)
					}
					text := collapseSpace(m.Text)
					for _, l := range want {
						if !strings.Contains(text, collapseSpace(l)) {
							t.Errorf("the visible text lacks the value %.80q", l)
						}
					}
					out := filepath.Join(dir, "readable-"+tc.name+"-"+v.name+".png")
					screenshot(t, pg, out, v.width, min(m.Height, maxShot))
					t.Logf("%s: %dx%d CSS px, scrollWidth %d, widest key %.0f px", out, v.width, m.Height, m.ScrollWidth, m.MaxKey)
					if docs != "" && tc.name == "detection" {
						docsScreenshot(t, pg, filepath.Join(docs, "readable-"+v.name+".png"), v, m)
					}
				})
			}
		})
	}
}

// screenshotDirs returns where the browser tests write screenshots ($SMTPOUT_SCREENSHOTS,
// made if need be, or a temporary directory) and the README's ($SMTPOUT_DOCS_SCREENSHOTS,
// "" for none).
func screenshotDirs(t *testing.T) (dir, docs string) {
	t.Helper()
	dir = os.Getenv("SMTPOUT_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, os.Getenv("SMTPOUT_DOCS_SCREENSHOTS")
}

// view is a browser window a page is shown in.
type view struct {
	name          string
	width, height int
	scale         float64
	mobile, dark  bool
}

// pageMetrics is what measureJS reads from a page.
type pageMetrics struct {
	ScrollWidth, InnerWidth, Height int
	MaxKey                          float64
	Keys                            int
	Text                            string
	Dark                            bool
}

// loadPage loads u in a new page of b shown in v and measures it. It stops the test when the
// emulation did not take, and fails it when the page scrolls sideways.
func loadPage(t *testing.T, b *chromium.Browser, u string, v view) (*chromium.Page, pageMetrics) {
	t.Helper()
	pg := b.NewPage(t)
	if err := pg.Emulate(v.width, v.height, v.scale, v.mobile, v.dark); err != nil {
		t.Fatal(err)
	}
	if err := pg.Navigate(u); err != nil {
		t.Fatal(err)
	}
	var m pageMetrics
	if err := pg.Eval(measureJS, &m); err != nil {
		t.Fatal(err)
	}
	if m.InnerWidth != v.width || m.Dark != v.dark {
		t.Fatalf("emulation: innerWidth %d dark %v, want %d %v", m.InnerWidth, m.Dark, v.width, v.dark)
	}
	if m.ScrollWidth > m.InnerWidth {
		t.Errorf("the page scrolls sideways: scrollWidth %d > innerWidth %d", m.ScrollWidth, m.InnerWidth)
	}
	return pg, m
}

// screenshot writes a PNG of the page's top width x height CSS pixels to file.
func screenshot(t *testing.T, pg *chromium.Page, file string, width, height int) {
	t.Helper()
	png, err := pg.Screenshot(width, height)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// docsScreenshot writes the README's screenshot of the page (shown in v, measured as m) to
// file: the first screen and a half, a phone at its scale.
func docsScreenshot(t *testing.T, pg *chromium.Page, file string, v view, m pageMetrics) {
	t.Helper()
	if v.mobile {
		if err := pg.Emulate(v.width, v.height, 2, v.mobile, v.dark); err != nil {
			t.Fatal(err)
		}
	}
	screenshot(t, pg, file, v.width, min(m.Height, v.height*3/2))
}

// maxShot caps the height of a screenshot, in CSS pixels.
const maxShot = 4000

// measureJS measures the loaded page.
const measureJS = `(() => {
  const keys = [...document.querySelectorAll('th')].map(e => e.getBoundingClientRect().width);
  return {
    ScrollWidth: Math.max(document.documentElement.scrollWidth, document.body.scrollWidth),
    InnerWidth: window.innerWidth,
    Height: document.documentElement.scrollHeight,
    MaxKey: Math.max(0, ...keys),
    Keys: keys.length,
    Text: document.body.innerText,
    Dark: matchMedia('(prefers-color-scheme: dark)').matches,
  };
})()`

var spaceRE = regexp.MustCompile(`[\s\x00-\x1f\x7f]+`)

// collapseSpace turns every run of white space and control characters into one space, as the
// visible text may differ from the value there (line breaks, CR, NUL).
func collapseSpace(s string) string {
	return strings.TrimSpace(spaceRE.ReplaceAllString(strings.ReplaceAll(s, "\uFFFD", " "), " "))
}
