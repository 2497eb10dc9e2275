package output

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"
)

// shownRow is one row of the readable table as a reader sees it: the title of its section
// ("" at the top level), its key, and its value (one per item for a list).
type shownRow struct {
	Title  string
	Key    string
	Values []string
}

// The test's own statement of the readable format, from the decoded JSON payload rather than
// from the renderer's code.

// jsonValue is a decoded JSON value with the order of its keys kept.
type jsonValue struct {
	kind byte // 'o' object, 'a' array, 's' string, 'n' number, 'b' boolean, 'z' null
	keys []string
	vals []jsonValue
	text string // a scalar's text as shown
}

// decodeJSON decodes payload keeping key order.
func decodeJSON(t testing.TB, payload []byte) jsonValue {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(payload))
	d.UseNumber()
	v, err := decodeValue(d)
	if err != nil {
		t.Fatalf("decode payload: %v", err)
	}
	if _, err := d.Token(); err != io.EOF {
		t.Fatalf("decode payload: trailing data (%v)", err)
	}
	return v
}

func decodeValue(d *json.Decoder) (jsonValue, error) {
	tok, err := d.Token()
	if err != nil {
		return jsonValue{}, err
	}
	switch x := tok.(type) {
	case json.Delim:
		v := jsonValue{kind: 'a'}
		if x == '{' {
			v.kind = 'o'
		}
		for d.More() {
			if v.kind == 'o' {
				k, err := d.Token()
				if err != nil {
					return v, err
				}
				v.keys = append(v.keys, k.(string))
			}
			el, err := decodeValue(d)
			if err != nil {
				return v, err
			}
			v.vals = append(v.vals, el)
		}
		_, err := d.Token() // the closing delimiter
		return v, err
	case string:
		return jsonValue{kind: 's', text: x}, nil
	case json.Number:
		return jsonValue{kind: 'n', text: x.String()}, nil
	case bool:
		return jsonValue{kind: 'b', text: strconv.FormatBool(x)}, nil
	case nil:
		return jsonValue{kind: 'z', text: "null"}, nil
	}
	return jsonValue{}, fmt.Errorf("unexpected token %v", tok)
}

// leaf reports whether v is shown as one value: a scalar or an empty object or array.
func (v jsonValue) leaf() bool { return v.kind != 'o' && v.kind != 'a' || len(v.vals) == 0 }

// oneRow reports whether v is shown as one row: a leaf, or an array of leaves.
func (v jsonValue) oneRow() bool {
	if v.kind != 'a' {
		return v.leaf()
	}
	for _, el := range v.vals {
		if !el.leaf() {
			return false
		}
	}
	return true
}

// shownText is how a leaf is shown: a string as itself (NUL as U+FFFD, cut past
// MaxHTMLValueSize bytes with a marker), a number as in the JSON, {} and [] for empty ones.
func (v jsonValue) shownText() string {
	switch {
	case v.kind == 'o':
		return "{}"
	case v.kind == 'a':
		return "[]"
	case v.kind != 's':
		return v.text
	}
	if len(v.text) > MaxHTMLValueSize {
		cut := MaxHTMLValueSize
		for !utf8.RuneStart(v.text[cut]) {
			cut--
		}
		return shownString(v.text[:cut]) + fmt.Sprintf(" … (truncated, %d bytes total)", len(v.text))
	}
	return shownString(v.text)
}

// hiddenRE matches the invisible format characters the readable format shows as [U+XXXX].
var hiddenRE = regexp.MustCompile("[\u061C\u200B\u200E\u200F\u202A-\u202E\u2060\u2066-\u2069\uFEFF]")

// shownString is how the readable format shows text (valid UTF-8): NUL as U+FFFD, hidden
// format characters as [U+XXXX].
func shownString(s string) string {
	s = strings.ReplaceAll(s, "\x00", "\uFFFD")
	return hiddenRE.ReplaceAllStringFunc(s, func(m string) string {
		r, _ := utf8.DecodeRuneInString(m)
		return fmt.Sprintf("[U+%04X]", r)
	})
}

// wantRows returns the rows the readable format must show for the payload, in order: in each
// object the rows of its leaves and arrays of leaves by key, then its other members as
// sections by key; in an array that is not one row, its one-row elements as rows keyed [i],
// then the others as sections path[i].
func wantRows(t testing.TB, payload []byte) []shownRow {
	var rows []shownRow
	var walk func(title string, v jsonValue)
	row := func(title, key string, v jsonValue) {
		if len(key) > MaxHTMLValueSize { // a long key is cut, marked with …
			cut := MaxHTMLValueSize
			for !utf8.RuneStart(key[cut]) {
				cut--
			}
			key = key[:cut] + "…"
		}
		if len(title) > MaxHTMLValueSize { // a long title keeps its start and its end
			head, tail := MaxHTMLValueSize/2, len(title)-MaxHTMLValueSize/2
			for !utf8.RuneStart(title[head]) {
				head--
			}
			for !utf8.RuneStart(title[tail]) {
				tail++
			}
			title = title[:head] + "…" + title[tail:]
		}
		r := shownRow{Title: shownString(title), Key: shownString(key)}
		if v.kind == 'a' && len(v.vals) > 0 {
			for _, el := range v.vals {
				r.Values = append(r.Values, el.shownText())
			}
		} else {
			r.Values = []string{v.shownText()}
		}
		rows = append(rows, r)
	}
	walk = func(title string, v jsonValue) {
		sub := func(k string) string {
			if title == "" {
				return k
			}
			return title + " › " + k
		}
		if v.kind == 'o' {
			for i, k := range v.keys {
				if v.vals[i].oneRow() {
					row(title, k, v.vals[i])
				}
			}
			for i, k := range v.keys {
				if !v.vals[i].oneRow() {
					walk(sub(k), v.vals[i])
				}
			}
			return
		}
		for i, el := range v.vals {
			if el.oneRow() {
				row(title, "["+strconv.Itoa(i)+"]", el)
			}
		}
		for i, el := range v.vals {
			if !el.oneRow() {
				walk(title+"["+strconv.Itoa(i)+"]", el)
			}
		}
	}
	walk("", decodeJSON(t, payload))
	return rows
}

// shownLeaves returns every value the readable format must show for payload.
func shownLeaves(t testing.TB, payload []byte) []string {
	var out []string
	for _, r := range wantRows(t, payload) {
		out = append(out, r.Values...)
	}
	return out
}

// parsedHTML is what parseReadable reads from an HTML part.
type parsedHTML struct {
	Title    string     // the <title> text
	Heading  string     // the <h1> text
	Rows     []shownRow // the table's rows
	Sections []string   // the section titles, in order
	More     string     // the text of the closing "more values" row, if any
	Tags     []string   // every element name, in order
}

// parseReadable parses an HTML part with golang.org/x/net/html, as a browser would, and reads
// its table: a row with a <th> is a key and a value (an <li> per item of a list); a row with
// one cell is a section title, or the "more values" row when it is the last row and says so.
func parseReadable(t testing.TB, doc string) parsedHTML {
	t.Helper()
	var p parsedHTML
	var trs []*html.Node
	for _, n := range htmlElements(t, doc) {
		p.Tags = append(p.Tags, n.Data)
		switch n.DataAtom {
		case atom.Title:
			p.Title = nodeText(n)
		case atom.H1:
			p.Heading = nodeText(n)
		case atom.Tr:
			trs = append(trs, n)
		}
	}
	p.Rows, p.Sections, p.More = readRows(t, trs)
	return p
}

// htmlElements parses doc with golang.org/x/net/html, as a browser would, and returns its
// elements in document order.
func htmlElements(t testing.TB, doc string) []*html.Node {
	t.Helper()
	root, err := html.Parse(strings.NewReader(doc))
	if err != nil {
		t.Fatalf("html.Parse: %v", err)
	}
	var out []*html.Node
	for n := range root.Descendants() {
		if n.Type == html.ElementNode {
			out = append(out, n)
		}
	}
	return out
}

// readRows reads the rows of a readable table: a row with a <th> is a key and a value (an
// <li> per item of a list); a row with one cell is a section title, or the "more values" row
// when it is the last row and says so.
func readRows(t testing.TB, trs []*html.Node) (rows []shownRow, sections []string, more string) {
	t.Helper()
	title := ""
	for i, tr := range trs {
		var cells []*html.Node
		for c := range tr.ChildNodes() {
			if c.Type == html.ElementNode {
				cells = append(cells, c)
			}
		}
		switch {
		case len(cells) == 2 && cells[0].DataAtom == atom.Th && cells[1].DataAtom == atom.Td:
			r := shownRow{Title: title, Key: nodeText(cells[0])}
			list := false
			for c := range cells[1].ChildNodes() {
				if c.Type != html.ElementNode || c.DataAtom != atom.Ul {
					continue
				}
				list = true
				for li := range c.ChildNodes() {
					if li.Type == html.ElementNode && li.DataAtom == atom.Li {
						r.Values = append(r.Values, nodeText(li))
					}
				}
			}
			if !list {
				r.Values = []string{nodeText(cells[1])}
			}
			rows = append(rows, r)
		case len(cells) == 1 && cells[0].DataAtom == atom.Td:
			text := nodeText(cells[0])
			if i == len(trs)-1 && strings.Contains(text, " more values not shown: ") {
				more = text
				continue
			}
			title = text
			sections = append(sections, title)
		default:
			t.Fatalf("table row %d has cells %v", i, cells)
		}
	}
	return rows, sections, more
}

// nodeText returns the text inside n.
func nodeText(n *html.Node) string {
	var b strings.Builder
	for d := range n.Descendants() {
		if d.Type == html.TextNode {
			b.WriteString(d.Data)
		}
	}
	return b.String()
}
