package output

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smtpout/smtpout/testsupport/chromium"
)

// stormHosts are the hosts of stormRecords.
var stormHosts = []string{"DESKTOP-7Q2K9LM.corp.example", "web-1.corp.example", "build-agent-03.corp.example"}

// stormRecords returns n detections of one rule from the three stormHosts in turn, two
// seconds apart, each with its own process, detection ID and command line, as a worm would
// make them.
func stormRecords(n int) []Record {
	users := []string{`CORP\jdoe`, `CORP\svc-build`, `CORP\asmith`}
	recs := make([]Record, n)
	for i := range recs {
		rec := lcWindowsDetection()
		rec.Time = fixedTime.Add(time.Duration(i) * 2 * time.Second)
		rec.Fields["detect_id"] = []byte(fmt.Sprintf("c41f9e7a-2b6d-4a0e-9f13-%012d", i))
		detect := rec.Fields["detect"].(map[any]any)
		routing := detect["routing"].(map[any]any)
		routing["hostname"] = []byte(stormHosts[i%len(stormHosts)])
		routing["event_id"] = []byte(fmt.Sprintf("7b3e2f1a-0c9d-4e8b-a7f6-%012d", i))
		routing["event_time"] = uint64(rec.Time.UnixMilli())
		event := detect["event"].(map[any]any)
		event["PROCESS_ID"] = int64(7312 + 7*i)
		event["USER_NAME"] = []byte(users[i%len(users)])
		event["COMMAND_LINE"] = []byte(fmt.Sprintf(`"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe" -NoProfile -EncodedCommand SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoAZQBjAHQAIABO%04d`, i))
		recs[i] = rec
	}
	return recs
}

// stormDigest renders records with r and returns their digest, grouped by $cat.
func stormDigest(t testing.TB, r *Renderer, recs []Record) Digest {
	t.Helper()
	d := Digest{Group: []GroupValue{{Key: "$cat", Value: "Encoded PowerShell Spawned By Office"}}}
	for _, rec := range recs {
		e := mustRender(t, r, rec)
		d.Members = append(d.Members, DigestMember{MessageID: e.MessageID, Tag: rec.Tag, Time: rec.Time, Payload: e.Payload})
	}
	return d
}

// TestDigestInBrowser renders a readable digest of 200 records from 3 hosts, loads its HTML in
// headless Chromium at phone (360 CSS px) and desktop (1024 px) width, and checks what a
// reader sees: nothing scrolls sideways; the count, the time span, the group value, every
// host and the count of records left out of the table are in the visible text. Screenshots
// go where TestReadableInBrowser puts them; the phone view becomes docs/digest-phone.png when
// SMTPOUT_DOCS_SCREENSHOTS is set (make docs-screenshots).
//
// It needs Chromium: skipped without it, failed without it when SMTPOUT_REQUIRE_BROWSER=1.
func TestDigestInBrowser(t *testing.T) {
	b := chromium.Start(t)
	dir, docs := screenshotDirs(t)
	r := mustRenderer(t, testConfig(true))
	e, err := r.RenderDigest(stormDigest(t, r, stormRecords(200)))
	if err != nil {
		t.Fatal(err)
	}
	p := parseDigest(t, e.Data)
	file := filepath.Join(t.TempDir(), "digest.html")
	if err := os.WriteFile(file, []byte(p.html), 0o644); err != nil {
		t.Fatal(err)
	}
	u := (&url.URL{Scheme: "file", Path: file}).String()
	want := append([]string{"200 records", "10:00:00 to 10:06:38 UTC", "Encoded PowerShell Spawned By Office",
		"150 more records in the attachment", "Record 3 of 200"}, stormHosts...)
	for _, v := range []view{
		{"phone", 360, 780, 1, true, false},
		{"phone-dark", 360, 780, 1, true, true},
		{"desktop", 1024, 768, 1, false, false},
	} {
		t.Run(v.name, func(t *testing.T) {
			pg, m := loadPage(t, b, u, v)
			text := collapseSpace(m.Text)
			for _, w := range want {
				if !strings.Contains(text, w) {
					t.Errorf("the visible text lacks %q", w)
				}
			}
			out := filepath.Join(dir, "digest-"+v.name+".png")
			screenshot(t, pg, out, v.width, min(m.Height, maxShot))
			t.Logf("%s: %dx%d CSS px, scrollWidth %d", out, v.width, m.Height, m.ScrollWidth)
			if docs != "" && v.name == "phone" {
				docsScreenshot(t, pg, filepath.Join(docs, "digest-phone.png"), v, m)
			}
		})
	}
}
