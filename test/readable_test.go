package e2e

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"

	"github.com/smtpout/smtpout/chunk"
	"github.com/smtpout/smtpout/output"
	"github.com/smtpout/smtpout/testsupport/chromium"
)

// lcRecord is a small LimaCharlie-style detection: nested detect.event and detect.routing, a
// Windows command line, a list of tags.
var lcRecord = map[string]any{
	"cat": "Encoded PowerShell",
	"detect": map[string]any{
		"event": map[string]any{
			"COMMAND_LINE": `powershell.exe -NoProfile -EncodedCommand SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoAZQBjAHQAKQA=`,
			"FILE_PATH":    `C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe`,
			"PARENT":       map[string]any{"FILE_PATH": `C:\Program Files\Microsoft Office\root\Office16\WINWORD.EXE`},
			"PROCESS_ID":   7312,
		},
		"routing": map[string]any{"hostname": "DESKTOP-7Q2K9LM", "tags": []any{"windows", "finance"}},
	},
	"priority": 8,
	"note":     `<script>alert("x")</script>`,
}

// row is one row of the readable table: its section title, key and values.
type row struct {
	Title, Key string
	Values     []string
}

// TestFluentBitReadableEmail sends a nested detection through a real Fluent Bit with
// is_readable true and reads the email back from mailpit: the signature verifies, the text
// part is the JSON, and the HTML part, parsed as a browser would, shows the record by
// sections with short keys. With Chromium at hand it also loads mailpit's own view of the
// HTML at phone width (no sideways scrolling) and saves a screenshot to $SMTPOUT_SCREENSHOTS.
func TestFluentBitReadableEmail(t *testing.T) {
	fluentBit(t)
	srv := startServer(t)
	keys := baseKeys(srv, "soc@example.com")
	keys["is_readable"] = "true"
	keys["subject"] = "LC Detection - $cat on $detect['routing']['hostname']"
	fb := startFluentBit(t, []outputSection{{match: "*", keys: keys}}, true)
	var e chunk.Encoder
	e.AppendV2(t0, nil, lcRecord)
	fb.send("lc.detections", e.Bytes())
	sums := srv.waitMessages(t, 1)
	fb.stop()

	m, err := srv.mp.Message(sums[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := output.Verify(strings.NewReader(srv.raw(t, m.ID)), []byte(testSecretKey)); err != nil {
		t.Errorf("Verify: %v", err)
	}
	if m.Subject != "LC Detection - Encoded PowerShell on DESKTOP-7Q2K9LM" {
		t.Errorf("Subject = %q", m.Subject)
	}
	want := []row{
		{"", "cat", []string{"Encoded PowerShell"}},
		{"", "date", []string{"2026-11-27T10:00:00.123456789Z"}},
		{"", "note", []string{`<script>alert("x")</script>`}},
		{"", "priority", []string{"8"}},
		{"detect › event", "COMMAND_LINE", []string{lcRecord["detect"].(map[string]any)["event"].(map[string]any)["COMMAND_LINE"].(string)}},
		{"detect › event", "FILE_PATH", []string{`C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe`}},
		{"detect › event", "PROCESS_ID", []string{"7312"}},
		{"detect › event › PARENT", "FILE_PATH", []string{`C:\Program Files\Microsoft Office\root\Office16\WINWORD.EXE`}},
		{"detect › routing", "hostname", []string{"DESKTOP-7Q2K9LM"}},
		{"detect › routing", "tags", []string{"windows", "finance"}},
	}
	if diff := cmp.Diff(want, readableRows(t, m.HTML)); diff != "" {
		t.Errorf("HTML rows (-want +got):\n%s", diff)
	}

	if chromium.Path() == "" && os.Getenv("SMTPOUT_REQUIRE_BROWSER") != "1" {
		t.Log("no chromium: mailpit's view of the HTML not loaded")
		return
	}
	b := chromium.Start(t)
	pg := b.NewPage(t)
	if err := pg.Emulate(360, 780, 2, true, false); err != nil {
		t.Fatal(err)
	}
	u := srv.mp.APIURL() + "/view/" + url.PathEscape(m.ID) + ".html"
	if err := pg.Navigate(u); err != nil {
		t.Fatal(err)
	}
	var got struct{ ScrollWidth, InnerWidth, Height int }
	if err := pg.Eval(`({ScrollWidth: document.documentElement.scrollWidth, InnerWidth: innerWidth, Height: document.documentElement.scrollHeight})`, &got); err != nil {
		t.Fatal(err)
	}
	if got.ScrollWidth > got.InnerWidth {
		t.Errorf("mailpit's view scrolls sideways at 360 px: scrollWidth %d", got.ScrollWidth)
	}
	png, err := pg.Screenshot(360, min(got.Height, 3000))
	if err != nil {
		t.Fatal(err)
	}
	dir := os.Getenv("SMTPOUT_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "mailpit-readable-phone.png")
	if err := os.WriteFile(out, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: mailpit's view at 360 px, %d px high", out, got.Height)
}

// readableRows parses the HTML part with golang.org/x/net/html and returns its table rows: a
// row with a <th> is a key and its value (an <li> per item of a list), a row with one cell a
// section title.
func readableRows(t *testing.T, doc string) []row {
	t.Helper()
	root, err := html.Parse(strings.NewReader(doc))
	if err != nil {
		t.Fatal(err)
	}
	text := func(n *html.Node) string {
		var b strings.Builder
		for d := range n.Descendants() {
			if d.Type == html.TextNode {
				b.WriteString(d.Data)
			}
		}
		return b.String()
	}
	var rows []row
	title := ""
	for n := range root.Descendants() {
		if n.Type != html.ElementNode || n.DataAtom != atom.Tr {
			continue
		}
		var cells []*html.Node
		for c := range n.ChildNodes() {
			if c.Type == html.ElementNode {
				cells = append(cells, c)
			}
		}
		if len(cells) == 1 {
			title = text(cells[0])
			continue
		}
		if len(cells) != 2 || cells[0].DataAtom != atom.Th {
			t.Fatalf("unexpected table row: %d cells", len(cells))
		}
		r := row{Title: title, Key: text(cells[0])}
		for d := range cells[1].Descendants() {
			if d.Type == html.ElementNode && d.DataAtom == atom.Li {
				r.Values = append(r.Values, text(d))
			}
		}
		if r.Values == nil {
			r.Values = []string{text(cells[1])}
		}
		rows = append(rows, r)
	}
	return rows
}
