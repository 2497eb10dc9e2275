package output

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"
)

// digestTags are the only elements a digest's HTML part may hold.
var digestTags = func() map[string]bool {
	m := map[string]bool{"thead": true, "h2": true}
	for k := range readableTags {
		m[k] = true
	}
	return m
}()

// digestHTML is what parseDigestHTML reads from a digest's HTML part.
type digestHTMLParts struct {
	Title, Heading string
	Text           string       // the visible text of the whole body, spaces collapsed
	Group          []shownRow   // the group table's rows ("" title)
	Header         []string     // the compact table's column names
	Cells          [][]string   // the compact table's cells, row by row
	Full           [][]shownRow // the rows of each record shown in full
	Tags           []string     // every element name, in order
}

// parseDigestHTML parses a digest's HTML part with golang.org/x/net/html as a browser would.
// The tables before the first <h2> are the group's; the table with a <thead> is the compact
// table; every other table after an <h2> is one record in full.
func parseDigestHTML(t testing.TB, doc string) digestHTMLParts {
	t.Helper()
	var p digestHTMLParts
	seenH2 := false
	for _, n := range htmlElements(t, doc) {
		p.Tags = append(p.Tags, n.Data)
		switch n.DataAtom {
		case atom.Title:
			p.Title = nodeText(n)
		case atom.H1:
			p.Heading = nodeText(n)
		case atom.Body:
			p.Text = collapseSpace(nodeText(n))
		case atom.H2:
			seenH2 = true
		case atom.Table:
			var trs []*html.Node
			compact := false
			for d := range n.Descendants() {
				switch d.DataAtom {
				case atom.Thead:
					compact = true
				case atom.Tr:
					trs = append(trs, d)
				}
			}
			switch {
			case compact:
				for i, tr := range trs {
					var cells []string
					for c := range tr.ChildNodes() {
						if c.Type == html.ElementNode {
							cells = append(cells, nodeText(c))
						}
					}
					if i == 0 {
						p.Header = cells
					} else {
						p.Cells = append(p.Cells, cells)
					}
				}
			case !seenH2:
				p.Group, _, _ = readRows(t, trs)
			default:
				rows, _, more := readRows(t, trs)
				if more != "" {
					t.Fatalf("values left out of a small record: %q", more)
				}
				p.Full = append(p.Full, rows)
			}
		}
	}
	return p
}

// flatLeaves returns the test's own statement of the fields of payload the compact table
// chooses from: objects walked with "." between keys down to digestMaxFlatDepth, anything
// else one field shown as its text (a string as itself, a number as in the JSON, an array or
// deeper object as its JSON). ok is false when two fields have the same path.
func flatLeaves(t testing.TB, payload []byte) (fields map[string]string, ok bool) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("decode payload: %v", err)
	}
	fields, ok = map[string]string{}, true
	var walk func(prefix string, m map[string]any, depth int)
	walk = func(prefix string, m map[string]any, depth int) {
		for k, v := range m {
			if prefix != "" {
				k = prefix + "." + k
			}
			if sub, isMap := v.(map[string]any); isMap && len(sub) > 0 && depth+1 < digestMaxFlatDepth {
				walk(k, sub, depth+1)
				continue
			}
			var text string
			switch x := v.(type) {
			case string:
				text = x
			case json.Number:
				text = string(x)
			case nil:
				text = "null"
			default:
				var b bytes.Buffer
				enc := json.NewEncoder(&b)
				enc.SetEscapeHTML(false)
				if err := enc.Encode(x); err != nil {
					t.Fatal(err)
				}
				text = strings.TrimSuffix(b.String(), "\n")
			}
			if _, dup := fields[k]; dup {
				ok = false
			}
			fields[k] = text
		}
	}
	walk("", m, 0)
	return fields, ok && len(fields) <= digestMaxLeaves
}

// cellText is how the compact table shows a field's text: cut to digestCellRunes runes
// with "…", then as the readable format shows text.
func cellText(s string) string {
	if r := []rune(s); len(r) > digestCellRunes {
		s = string(r[:digestCellRunes]) + "…"
	}
	return shownString(s)
}

// checkDigestHTML parses the HTML part of digest d and checks it against the members'
// payloads: subject, count, group, the compact table's cells, the records in full (the
// rows their single emails show) and no element from the data.
func checkDigestHTML(t *testing.T, doc string, d Digest, subject string) {
	t.Helper()
	p := parseDigestHTML(t, doc)
	for _, tag := range p.Tags {
		if !digestTags[tag] {
			t.Fatalf("element <%s> in the HTML part:\n%s", tag, doc)
		}
	}
	if want := shownString(subject); p.Title != want || p.Heading != want {
		t.Fatalf("title %q and heading %q, want %q", p.Title, p.Heading, want)
	}
	n := len(d.Members)
	count := fmt.Sprintf("%d records", n)
	if n == 1 {
		count = "1 record"
	}
	if !strings.Contains(p.Text, count) {
		t.Fatalf("the text lacks %q:\n%s", count, p.Text)
	}
	var wantGroup []shownRow
	for _, g := range d.Group {
		// Each byte that is not UTF-8 shows as U+FFFD, as converting to runes gives.
		wantGroup = append(wantGroup, shownRow{Key: shownString(string([]rune(strings.TrimPrefix(g.Key, "$")))),
			Values: []string{shownString(g.Value)}})
	}
	if diff := cmp.Diff(wantGroup, p.Group); diff != "" {
		t.Fatalf("group rows (-want +got):\n%s", diff)
	}

	// The records in full: each exactly the rows its single email shows.
	var full [][]shownRow
	for _, m := range d.Members[:min(n, DigestHTMLFull)] {
		full = append(full, wantRows(t, m.Payload))
	}
	if diff := cmp.Diff(full, p.Full); diff != "" {
		t.Fatalf("records in full (-want +got):\n%s", diff)
	}

	// The compact table: one row per record up to DigestHTMLRows, the time and at most
	// DigestHTMLColumns fields, each cell the record's value, each column a field that differs.
	if n == 1 {
		if p.Header != nil {
			t.Fatalf("a digest of one record has a compact table %q", p.Header)
		}
		return
	}
	rows := min(n, DigestHTMLRows)
	if len(p.Header) < 1 || p.Header[0] != "time" || len(p.Header) > 1+DigestHTMLColumns || len(p.Cells) != rows {
		t.Fatalf("compact table: header %q and %d rows, want time and at most %d fields, %d rows",
			p.Header, len(p.Cells), DigestHTMLColumns, rows)
	}
	if more := fmt.Sprintf("%d more records in the attachment", n-rows); n-rows > 1 && !strings.Contains(p.Text, more) {
		t.Fatalf("the text lacks %q", more)
	}
	var leaves []map[string]string
	unambiguous := true
	for _, m := range d.Members[:rows] {
		f, ok := flatLeaves(t, m.Payload)
		leaves = append(leaves, f)
		unambiguous = unambiguous && ok
	}
	first, last := d.Members[0].Time.UTC(), d.Members[0].Time.UTC()
	for _, m := range d.Members {
		first, last = minTime(first, m.Time.UTC()), maxTime(last, m.Time.UTC())
	}
	layout := "15:04:05"
	if first.Format("2006-01-02") != last.Format("2006-01-02") {
		layout = "01-02 15:04:05"
	}
	for i, row := range p.Cells {
		if len(row) != len(p.Header) {
			t.Fatalf("compact row %d has %d cells, header %d", i, len(row), len(p.Header))
		}
		if want := d.Members[i].Time.UTC().Format(layout); row[0] != want {
			t.Errorf("compact row %d time %q, want %q", i, row[0], want)
		}
	}
	if !unambiguous {
		return // two fields share a path: which one a column shows is not this test's to say
	}
	for c, name := range p.Header[1:] {
		var path string
		for k := range leaves[0] {
			if cellText(k) == name {
				path = k
			}
		}
		distinct := map[string]bool{}
		for i, row := range p.Cells {
			v, ok := leaves[i][path]
			if path == "" {
				for k, lv := range leaves[i] {
					if cellText(k) == name {
						path, v, ok = k, lv, true
					}
				}
			}
			want := cellText(v)
			if !ok {
				v, want = "\x00absent", ""
			}
			distinct[v] = true
			if row[c+1] != want {
				t.Errorf("compact row %d column %q = %q, want %q", i, name, row[c+1], want)
			}
		}
		if len(distinct) < 2 {
			t.Errorf("column %q does not differ between the records", name)
		}
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// TestDigestHTML checks readable digests of the storm records and of small hand-made ones.
func TestDigestHTML(t *testing.T) {
	r := mustRenderer(t, testConfig(true))
	hostile := func(i int) Record {
		return Record{Tag: "t<b>", Time: fixedTime.Add(time.Duration(i) * time.Hour), Fields: map[string]any{
			"<script>": fmt.Sprintf("</td></tr></table><script>alert(%d)</script>", i%2),
			"bidi":     "invoice\u202egpj.exe",
			"long":     strings.Repeat("ab", 50) + fmt.Sprint(i),
			"nested":   map[string]any{"list": []any{"<i>", int64(i)}, "same": "x"},
			"same":     "&amp;",
		}}
	}
	for _, tc := range []struct {
		name  string
		recs  []Record
		group []GroupValue
		want  []string // in the visible text
	}{
		{"one record", stormRecords(1), nil, []string{"1 record", "10:00:00 UTC", "The record"}},
		{"three hosts, 200 records", stormRecords(200), []GroupValue{{Key: "$cat", Value: "Encoded PowerShell"}},
			[]string{"200 records", "10:00:00 to 10:06:38 UTC", "3 of 7 fields that differ", "150 more records in the attachment",
				"197 more records in full in the attachment"}},
		{"51 records", stormRecords(51), nil, []string{"1 more record in the attachment."}},
		{"hostile values over two days", []Record{hostile(0), hostile(1), hostile(30)},
			[]GroupValue{{Key: "$<b>", Value: "<i>x</i>"}, {Key: "$b", Value: "a\u202eb"}},
			[]string{"3 records", "2026-11-27 10:00:00 to 2026-11-28 16:00:00 UTC", "Tag t<b>", "11-28 16:00:00"}},
		{"records that differ only in time", []Record{
			{Tag: "t", Time: fixedTime, Fields: map[string]any{"a": "same"}},
			{Tag: "t", Time: fixedTime.Add(time.Second), Fields: map[string]any{"a": "same"}}},
			nil, []string{"The records differ only in their time."}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Digest{Group: tc.group}
			for _, rec := range tc.recs {
				e := mustRender(t, r, rec)
				d.Members = append(d.Members, DigestMember{MessageID: e.MessageID, Tag: rec.Tag, Time: rec.Time, Payload: e.Payload})
			}
			e, err := r.RenderDigest(d)
			if err != nil {
				t.Fatal(err)
			}
			p := parseDigest(t, e.Data)
			checkDigestHTML(t, p.html, d, r.RenderSubject(tc.recs[0]))
			text := parseDigestHTML(t, p.html).Text
			for _, w := range tc.want {
				if !strings.Contains(text, w) {
					t.Errorf("the visible text lacks %q:\n%.2000s", w, text)
				}
			}
		})
	}
}

// FuzzDigestHTML renders digests of records built from arbitrary keys and values and parses
// the HTML part as a browser would: it must show the group, each record's fields in the
// compact table and the first records in full exactly as their single emails show them, and
// no markup but the format's own; the digest must verify.
func FuzzDigestHTML(f *testing.F) {
	f.Add("COMMAND_LINE", []byte(`C:\Windows\System32\cmd.exe /c "echo <b>&amp;</b>"`), "routing", int64(3), uint8(4))
	f.Add("<script>", []byte("</td></tr></table><script>alert(1)</script>"), "a\"b", int64(-1), uint8(2))
	f.Add("k\x00", []byte("\x00\r\n\r x \xff\xfe"), "\u202e", int64(0), uint8(1))
	f.Add("a.b", []byte("invoice\u202egpj.exe \u200b مرحبا"), "<!--", int64(1<<40), uint8(60))
	f.Add("", []byte(""), "", int64(0), uint8(3))
	f.Fuzz(func(t *testing.T, k string, v []byte, k2 string, n int64, count uint8) {
		r := mustRenderer(t, withSubject(true, lit("S "), key(k), lit(" "), key("n", k2)))
		var d Digest
		d.Group = []GroupValue{{Key: "$" + k, Value: string(sanitize(nil, v, MaxSubjectRunes))}}
		for i := range max(int(count)%70, 1) {
			rec := Record{Tag: k2, Time: fixedTime.Add(time.Duration(i) * time.Second), Fields: map[string]any{
				k:   v,
				"i": int64(i) * n,
				"s": string(v[:min(len(v), i)]),
				"n": map[any]any{k2: []any{string(v), n, nil}, k: map[string]any{k2: v, "e": []any{}}},
				"f": float64(n) / float64(i+7),
			}}
			e, err := r.Render(rec)
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			d.Members = append(d.Members, DigestMember{MessageID: e.MessageID, Tag: rec.Tag, Time: rec.Time, Payload: e.Payload})
		}
		e, err := r.RenderDigest(d)
		if err != nil {
			t.Fatalf("RenderDigest: %v", err)
		}
		checkLines(t, e.Data)
		if _, err := VerifyEmail(bytes.NewReader(e.Data), []byte(testSecret)); err != nil {
			t.Fatalf("VerifyEmail: %v", err)
		}
		p := parseDigest(t, e.Data)
		checkDigestHTML(t, p.html, d, r.RenderSubject(decodeMember(d.Members[0])))
	})
}
