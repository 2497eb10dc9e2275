package output

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// The readable format's HTML part is written directly (no template): a title block, then one
// table that follows the record's structure. Top-level values come first as rows of key and
// value; each nested map is a section titled with its path ("detect › event") whose rows carry
// the short key; an array of scalars is one row holding a bulleted list; an array holding maps
// or arrays is a section whose elements are numbered ("items[0]"). The layout is for a phone
// first: a table (as email clients demand), inline styles only, the key column a third of the
// width, keys breakable at word boundaries (<wbr> after _ . - / : and at case changes), values
// wrapping anywhere. Colours are inherited or translucent, so the message reads in light and
// dark schemes alike. Every value is text: escaped, never a link or an image.

// htmlHead starts the document; the subject follows.
const htmlHead = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<meta name="color-scheme" content="light dark">
<meta name="format-detection" content="telephone=no,date=no,address=no,email=no">
<title>`

// htmlTitleBlock follows the <title>; the subject follows it again as the heading.
const htmlTitleBlock = `</title>
</head>
<body style="margin:0;padding:0">
<div style="max-width:720px;margin:0 auto;padding:12px 6px;font:15px/1.4 -apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;word-wrap:break-word;overflow-wrap:anywhere;word-break:break-word">
<h1 style="margin:0 6px 2px;font-size:18px;line-height:1.3">`

// htmlTag follows the heading; the tag follows.
const htmlTag = `</h1>
<div style="margin:0 6px 10px;font-size:13px;opacity:.75">Tag `

// htmlTable opens a table of keys and values.
const htmlTable = `<table width="100%" cellpadding="6" style="border-collapse:collapse;font-size:14px;text-align:left;white-space:pre-wrap">
<tbody style="vertical-align:top;text-align:left">
`

// htmlTableStart follows the record time and opens the table.
const htmlTableStart = "</div>\n" + htmlTable

// htmlEnd closes the table and the document.
const htmlEnd = `</tbody>
</table>
<p style="margin:12px 6px 0;font-size:12px;opacity:.75">The signed JSON record is the plain-text part of this email (header X-Smtpout-Signature).</p>
</div>
</body>
</html>
`

// Row and cell markup.
const (
	htmlRow        = "<tr>"
	htmlRowStriped = `<tr style="background:rgba(127,127,127,.12)">`
	// htmlKeyFirst is the first key cell of the table: it sets the key column's width.
	htmlKeyFirst = `<th style="width:32%">`
	htmlKey      = `<th>`
	htmlValue    = "</th><td>"
	htmlRowEnd   = "</td></tr>\n"
	// htmlTitle opens a section title row; htmlTitlePath holds the path's ancestors.
	htmlTitle     = `<tr><td colspan="2" style="padding-top:16px;font-size:15px;font-weight:600;border-bottom:1px solid rgba(127,127,127,.5)">`
	htmlTitlePath = `<span style="font-weight:400;opacity:.75">`
	htmlTitleSep  = " &rsaquo; "
	// titleSep is htmlTitleSep as text.
	titleSep = " › "
	// htmlItems opens the value cell of an array's row: a bulleted list, one item per element.
	htmlItems    = `<td><ul style="margin:0;padding-left:16px">`
	htmlItemsEnd = "</ul>"
	htmlItem     = "<li>"
	htmlItemEnd  = "</li>"
	htmlDim      = `<span style="opacity:.6;font-style:italic">`
	htmlDimEnd   = "</span>"
	htmlMoreRow  = `<tr><td colspan="2" style="padding-top:12px;font-style:italic;opacity:.8">`
	htmlMoreText = " more values not shown: the JSON part holds the whole record"
)

// kv is one map entry: its key as shown (valid UTF-8) and its value, resolved.
type kv struct {
	key string
	val any
}

// recordTime stands for the record's time (htmlWriter.date) among the values, so that the time
// is not boxed into an interface.
type recordTime struct{}

// seg is one segment of a section's path: a map key, or an array index (idx >= 0) written
// right after the previous segment.
type seg struct {
	key string
	idx int
}

// htmlWriter writes one HTML part within MaxHTMLRows and MaxHTMLTableSize. It lives in the
// pooled render state, so its buffers are reused between records.
type htmlWriter struct {
	b        []byte
	levels   [][]kv    // sorted entries, one slice per depth
	path     []seg     // the path of the section being written
	lines    int       // values and section titles shown
	size     int       // bytes of keys, titles and values shown
	omitted  int       // values left out once a bound was reached
	titled   bool      // the current section's title is written
	stripe   bool      // the next row is striped
	keyWidth bool      // the key column's width is set
	date     time.Time // the record's time, shown where the entries hold recordTime{}
}

// renderHTML writes the HTML part for rec into st.html.
func (r *Renderer) renderHTML(st *state, rec Record, subject []byte) {
	w := &st.hw
	w.b = w.b[:0]
	w.b = append(w.b, htmlHead...)
	w.b = appendHTMLText(w.b, subject)
	w.b = append(w.b, htmlTitleBlock...)
	w.b = appendHTMLText(w.b, subject)
	w.b = append(w.b, htmlTag...)
	w.b = appendHTMLText(w.b, sanitize(st.scratch[:0], rec.Tag, MaxSubjectRunes))
	w.b = append(w.b, " &middot; "...)
	w.b = rec.Time.UTC().AppendFormat(w.b, time.RFC3339Nano)
	w.b = append(w.b, htmlTableStart...)
	w.recordRows(rec, r.dateKey, htmlMoreText)
	w.b = append(w.b, htmlEnd...)
	st.html = w.b
}

// recordRows writes the table rows of rec's fields (with its time under dateKey unless ""
// or the record has that key), within the table's bounds, ending with a row counting the
// values left out, if any, followed by moreText.
func (w *htmlWriter) recordRows(rec Record, dateKey, moreText string) {
	w.path = w.path[:0]
	w.lines, w.size, w.omitted = 0, 0, 0
	w.stripe, w.keyWidth = false, false
	w.titled = true // the top level has no title
	ents := w.stringMapEntries(rec.Fields, 0)
	if dateKey != "" {
		if _, ok := rec.Fields[dateKey]; !ok {
			w.date = rec.Time
			ents = append(ents, kv{dateKey, recordTime{}})
			slices.SortFunc(ents, compareKV)
			w.levels[0] = ents
		}
	}
	w.section(ents, 0)
	if w.omitted > 0 {
		w.b = append(w.b, htmlMoreRow...)
		w.b = strconv.AppendInt(w.b, int64(w.omitted), 10)
		w.b = append(w.b, moreText...)
		w.b = append(w.b, htmlRowEnd...)
	}
	for _, l := range w.levels {
		clear(l) // the pooled state keeps no reference to the record
	}
	w.path = w.path[:0]
}

// full reports whether no further value fits.
func (w *htmlWriter) full() bool {
	return w.lines >= MaxHTMLRows || w.size >= MaxHTMLTableSize
}

// fits reports whether one more value of n bytes fits, with the section's title when it is
// still to be written; when it does not, the table is full from then on, so the values shown
// are always a prefix of the record's.
func (w *htmlWriter) fits(n int) bool {
	lines := 1
	if !w.titled {
		lines++
	}
	if w.lines+lines > MaxHTMLRows || w.size+n > MaxHTMLTableSize {
		w.size = MaxHTMLTableSize
		return false
	}
	return true
}

// section writes the entries of one map (sorted, at depth): first the rows of its scalars
// and arrays of scalars, then its nested maps and other arrays as sections.
func (w *htmlWriter) section(ents []kv, depth int) {
	for _, e := range ents {
		if isRow(e.val) {
			w.row(e.key, -1, e.val)
		}
	}
	for _, e := range ents {
		if isRow(e.val) {
			continue
		}
		w.path = append(w.path, seg{key: e.key, idx: -1})
		w.nested(e.val, depth)
		w.path = w.path[:len(w.path)-1]
	}
}

// nested writes v, a non-empty map or an array that is not one row, as a section whose path
// is w.path; depth is that of the map or array holding v.
func (w *htmlWriter) nested(v any, depth int) {
	if w.full() {
		w.omitted += countValues(v, false)
		return
	}
	w.titled, w.stripe = false, false
	switch x := v.(type) {
	case map[string]any:
		w.section(w.stringMapEntries(x, depth+1), depth+1)
	case map[any]any:
		w.section(w.anyMapEntries(x, depth+1), depth+1)
	case []any:
		for i, el := range x {
			if el = resolve(el); isRow(el) {
				w.row("", i, el)
			}
		}
		for i, el := range x {
			if el = resolve(el); isRow(el) {
				continue
			}
			w.path = append(w.path, seg{idx: i})
			w.nested(el, depth+1)
			w.path = w.path[:len(w.path)-1]
		}
	}
}

// row writes one row: key (or "[idx]" when idx >= 0) and v, a scalar, an empty map or array,
// or an array of those.
func (w *htmlWriter) row(key string, idx int, v any) {
	if w.full() {
		w.omitted += countValues(v, false)
		return
	}
	keyLen := len(key)
	if idx >= 0 {
		keyLen = 2 + digits(idx)
	}
	arr, isArr := v.([]any)
	isArr = isArr && len(arr) > 0
	first := v
	if isArr {
		first = resolve(arr[0])
	}
	if !w.fits(keyLen + min(scalarLen(first), MaxHTMLValueSize)) {
		w.omitted += countValues(v, false)
		return
	}
	w.title()
	w.size += keyLen
	if w.stripe {
		w.b = append(w.b, htmlRowStriped...)
	} else {
		w.b = append(w.b, htmlRow...)
	}
	w.stripe = !w.stripe
	if w.keyWidth {
		w.b = append(w.b, htmlKey...)
	} else {
		w.b = append(w.b, htmlKeyFirst...)
		w.keyWidth = true
	}
	if idx >= 0 {
		w.b = append(w.b, '[')
		w.b = strconv.AppendInt(w.b, int64(idx), 10)
		w.b = append(w.b, ']')
	} else {
		w.b = appendHTMLKey(w.b, shorten(key))
	}
	if !isArr {
		w.b = append(w.b, htmlValue...)
		w.lines++
		w.value(v)
		w.b = append(w.b, htmlRowEnd...)
		return
	}
	w.b = append(w.b, "</th>"...)
	w.b = append(w.b, htmlItems...)
	for i, el := range arr {
		el = resolve(el)
		if i > 0 && !w.fits(min(scalarLen(el), MaxHTMLValueSize)) {
			w.omitted += len(arr) - i
			break
		}
		w.lines++
		w.b = append(w.b, htmlItem...)
		w.value(el)
		w.b = append(w.b, htmlItemEnd...)
	}
	w.b = append(w.b, htmlItemsEnd...)
	w.b = append(w.b, htmlRowEnd...)
}

// title writes the current section's title row unless it is written already.
func (w *htmlWriter) title() {
	if w.titled {
		return
	}
	w.titled = true
	n := 0
	for i, s := range w.path {
		switch {
		case s.idx >= 0:
			n += 2 + digits(s.idx)
		case i > 0:
			n += len(titleSep) + len(s.key)
		default:
			n += len(s.key)
		}
	}
	w.lines++
	w.size += min(n, MaxHTMLValueSize)
	w.b = append(w.b, htmlTitle...)
	if n > MaxHTMLValueSize {
		// A very long path keeps its start and its end.
		var sb strings.Builder
		for i, s := range w.path {
			sb.WriteString(segText(s, i))
		}
		w.b = appendHTMLKey(w.b, shortenPath(sb.String()))
		w.b = append(w.b, htmlRowEnd...)
		return
	}
	// The ancestors dimmed, then the last segment (with its indices).
	last := len(w.path) - 1
	for last > 0 && w.path[last].idx >= 0 {
		last--
	}
	if last > 0 {
		w.b = append(w.b, htmlTitlePath...)
		for i, s := range w.path[:last] {
			w.b = appendSeg(w.b, s, i)
		}
		w.b = append(w.b, htmlTitleSep...)
		w.b = append(w.b, "</span>"...)
	}
	for i, s := range w.path[last:] {
		if i == 0 {
			w.b = appendHTMLKey(w.b, s.key)
			continue
		}
		w.b = appendSeg(w.b, s, last+i)
	}
	w.b = append(w.b, htmlRowEnd...)
}

// appendSeg appends path segment s, the i-th of its path, as the title shows it.
func appendSeg(b []byte, s seg, i int) []byte {
	if s.idx >= 0 {
		b = append(b, '[')
		b = strconv.AppendInt(b, int64(s.idx), 10)
		return append(b, ']')
	}
	if i > 0 {
		b = append(b, htmlTitleSep...)
	}
	return appendHTMLKey(b, s.key)
}

// segText returns path segment s, the i-th of its path, as plain text.
func segText(s seg, i int) string {
	if s.idx >= 0 {
		return "[" + strconv.Itoa(s.idx) + "]"
	}
	if i > 0 {
		return titleSep + s.key
	}
	return s.key
}

// value writes one scalar or empty map or array (resolved), shortened to MaxHTMLValueSize
// bytes with a visible marker, and counts its size.
func (w *htmlWriter) value(v any) {
	switch x := v.(type) {
	case string:
		textValue(w, x)
		return
	case []byte:
		textValue(w, x)
		return
	case nil:
		w.dim("null")
		return
	case map[string]any, map[any]any:
		w.dim("{}")
		return
	case []any:
		w.dim("[]")
		return
	}
	start := len(w.b)
	if _, ok := v.(recordTime); ok {
		w.b = w.date.UTC().AppendFormat(w.b, time.RFC3339Nano)
	} else {
		w.b = appendScalar(w.b, v)
	}
	w.size += len(w.b) - start
}

// dim writes s, a word standing for a value (null, {}, []), dimmed.
func (w *htmlWriter) dim(s string) {
	w.b = append(w.b, htmlDim...)
	w.b = append(w.b, s...)
	w.b = append(w.b, htmlDimEnd...)
	w.size += len(s)
}

// textValue writes a string value, escaped; one over MaxHTMLValueSize bytes is cut on a UTF-8
// boundary and followed by a marker giving its whole size.
func textValue[S string | []byte](w *htmlWriter, s S) {
	if len(s) <= MaxHTMLValueSize {
		w.b = appendHTMLText(w.b, s)
		w.size += len(s)
		return
	}
	if !utf8.Valid([]byte(s)) {
		// Cut and count the value as the JSON part holds it.
		textValue(w, strings.ToValidUTF8(string(s), "\uFFFD"))
		return
	}
	cut := MaxHTMLValueSize
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	w.b = appendHTMLText(w.b, s[:cut])
	w.b = append(w.b, htmlDim...)
	w.b = append(w.b, " … (truncated, "...)
	w.b = strconv.AppendInt(w.b, int64(len(s)), 10)
	w.b = append(w.b, " bytes total)"...)
	w.b = append(w.b, htmlDimEnd...)
	w.size += cut
}

// appendScalar appends a number, boolean or time as the JSON part writes it (a time as its
// RFC 3339 UTC form, NaN and infinities as words); these need no escaping.
func appendScalar(b []byte, v any) []byte {
	switch x := v.(type) {
	case bool, int64, uint64, int, int32, int16, int8, uint, uint32, uint16, uint8:
		return appendBoolOrInt(b, x)
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return appendNonFinite(b, x)
		}
		return appendFloat(b, x, 64)
	case float32:
		if f := float64(x); math.IsNaN(f) || math.IsInf(f, 0) {
			return appendNonFinite(b, f)
		}
		return appendFloat(b, float64(x), 32)
	case time.Time:
		return x.UTC().AppendFormat(b, time.RFC3339Nano)
	}
	return appendHTMLText(b, fmt.Sprint(v)) // not reached: values are resolved
}

// scalarLen returns about how many bytes value writes for v (resolved).
func scalarLen(v any) int {
	switch x := v.(type) {
	case string:
		return len(x)
	case []byte:
		return len(x)
	case time.Time, recordTime:
		return len(time.RFC3339Nano)
	case nil:
		return 4
	case map[string]any, map[any]any, []any:
		return 2
	}
	return 8
}

// digits returns the number of decimal digits of n >= 0.
func digits(n int) int {
	d := 1
	for ; n >= 10; n /= 10 {
		d++
	}
	return d
}

// resolve returns v as one of the types the writer handles, converting any other type as the
// JSON part does (see fallback).
func resolve(v any) any {
	for range MaxDepth {
		switch v.(type) {
		case nil, string, []byte, bool, int64, uint64, int, int32, int16, int8,
			uint, uint32, uint16, uint8, float64, float32, time.Time, recordTime,
			map[string]any, map[any]any, []any:
			return v
		}
		v = fallback(v)
	}
	return fmt.Sprint(v)
}

// isRow reports whether v (resolved) is shown as one row: a scalar, an empty map or array,
// or an array of those.
func isRow(v any) bool {
	switch x := v.(type) {
	case map[string]any:
		return len(x) == 0
	case map[any]any:
		return len(x) == 0
	case []any:
		for _, el := range x {
			if !isLeaf(resolve(el)) {
				return false
			}
		}
	}
	return true
}

// isLeaf reports whether v (resolved) is a scalar or an empty map or array.
func isLeaf(v any) bool {
	switch x := v.(type) {
	case map[string]any:
		return len(x) == 0
	case map[any]any:
		return len(x) == 0
	case []any:
		return len(x) == 0
	}
	return true
}

// compareKV orders entries by key.
func compareKV(a, b kv) int { return strings.Compare(a.key, b.key) }

// entriesAt returns the reusable entry slice for depth, emptied.
func (w *htmlWriter) entriesAt(depth int) []kv {
	for len(w.levels) <= depth {
		w.levels = append(w.levels, nil)
	}
	return w.levels[depth][:0]
}

// stringMapEntries returns m's entries sorted by key, values resolved; keys that are not
// valid UTF-8 are repaired and colliding keys resolved as the JSON part resolves them.
func (w *htmlWriter) stringMapEntries(m map[string]any, depth int) []kv {
	ents := w.entriesAt(depth)
	for k, v := range m {
		if !utf8.ValidString(k) {
			am := make(map[any]any, len(m))
			for k, v := range m {
				am[k] = v
			}
			return w.anyMapEntries(am, depth)
		}
		ents = append(ents, kv{k, resolve(v)})
	}
	slices.SortFunc(ents, compareKV)
	w.levels[depth] = ents
	return ents
}

// anyMapEntries is stringMapEntries for a map with keys of any type (stringified).
func (w *htmlWriter) anyMapEntries(m map[any]any, depth int) []kv {
	ents := w.entriesAt(depth)
	for k, v := range m {
		s, ok := k.(string)
		if !ok || !utf8.ValidString(s) {
			ents = ents[:0]
			for _, en := range sortedEntries(m, depth) {
				ents = append(ents, kv{en.key, resolve(en.val)})
			}
			w.levels[depth] = ents
			return ents
		}
		ents = append(ents, kv{s, resolve(v)})
	}
	slices.SortFunc(ents, compareKV)
	w.levels[depth] = ents
	return ents
}

// countValues returns how many values v holds (root: v is the whole record): one per scalar
// and per empty map or array (but for an empty record).
func countValues(v any, root bool) int {
	switch x := resolve(v).(type) {
	case map[string]any:
		if len(x) == 0 {
			if root {
				return 0
			}
			return 1
		}
		n := 0
		for _, el := range x {
			n += countValues(el, false)
		}
		return n
	case map[any]any:
		if len(x) == 0 {
			return 1
		}
		n := 0
		for _, el := range x {
			n += countValues(el, false)
		}
		return n
	case []any:
		if len(x) == 0 {
			return 1
		}
		n := 0
		for _, el := range x {
			n += countValues(el, false)
		}
		return n
	}
	return 1
}

// htmlEscapes marks the bytes appendHTMLText and appendHTMLKey look at: markup, CR and NUL,
// and every byte of a multi-byte sequence (checked for valid UTF-8).
var htmlEscapes = func() (t [256]bool) {
	for _, c := range "&<>\r\x00" {
		t[c] = true
	}
	for c := utf8.RuneSelf; c < 256; c++ {
		t[c] = true
	}
	return t
}()

// appendHTMLText appends s as HTML text: & < > as character references, CR as &#13; (so the
// parser keeps it), NUL and invalid UTF-8 as U+FFFD, hidden format characters (isHidden) as
// the visible text [U+XXXX]. The result is only ever text, in an
// element's content or a <title>; never in an attribute.
func appendHTMLText[S string | []byte](b []byte, s S) []byte {
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if !htmlEscapes[c] {
			i++
			continue
		}
		var esc string
		size := 1
		switch c {
		case '&':
			esc = "&amp;"
		case '<':
			esc = "&lt;"
		case '>':
			esc = "&gt;"
		case '\r':
			esc = "&#13;"
		case 0:
			esc = "\uFFFD"
		default:
			var r rune
			r, size = utf8.DecodeRuneInString(string(s[i:min(i+utf8.UTFMax, len(s))]))
			if r == utf8.RuneError && size == 1 {
				esc = "\uFFFD"
				break
			}
			if !isHidden(r) {
				i += size
				continue
			}
			// Shown as [U+XXXX]: no bidi override can reorder what the reader sees.
			b = append(b, s[start:i]...)
			b = append(b, "[U+"...)
			b = append(b, upperHex[r>>12&0xF], upperHex[r>>8&0xF], upperHex[r>>4&0xF], upperHex[r&0xF], ']')
			i += size
			start = i
			continue
		}
		b = append(b, s[start:i]...)
		b = append(b, esc...)
		i += size
		start = i
	}
	return append(b, s[start:]...)
}

// isHidden reports whether r is an invisible format character that could make text read other
// than it is: the bidirectional marks, embeddings, overrides and isolates (a file name
// "invoice\u202Egpj.exe" shows as "invoiceexe.jpg"), zero-width space, word joiner and BOM.
func isHidden(r rune) bool {
	switch {
	case r == 0x061C, r == 0x200B, r == 0x200E, r == 0x200F, r == 0x2060, r == 0xFEFF:
		return true
	case r >= 0x202A && r <= 0x202E, r >= 0x2066 && r <= 0x2069:
		return true
	}
	return false
}

// appendHTMLKey appends key as appendHTMLText does, with a <wbr> at each word boundary, so
// that a narrow key column wraps keys between words: after _ . - / : and at a change from
// lower to upper case (eventType) or from an acronym to a word (HTTPServer).
func appendHTMLKey(b []byte, key string) []byte {
	start := 0
	for i := 1; i < len(key); i++ {
		p, c := key[i-1], key[i]
		brk := false
		switch {
		case p == '_' || p == '.' || p == '-' || p == '/' || p == ':':
			brk = !isBreakSep(c)
		case isUpper(c):
			brk = isLower(p) || isUpper(p) && i+1 < len(key) && isLower(key[i+1])
		}
		if brk {
			b = appendHTMLText(b, key[start:i])
			b = append(b, "<wbr>"...)
			start = i
		}
	}
	return appendHTMLText(b, key[start:])
}

func isUpper(c byte) bool    { return c >= 'A' && c <= 'Z' }
func isLower(c byte) bool    { return c >= 'a' && c <= 'z' }
func isBreakSep(c byte) bool { return c == '_' || c == '.' || c == '-' || c == '/' || c == ':' }

// shorten returns s cut to at most MaxHTMLValueSize bytes on a UTF-8 boundary, with "…"
// appended when it was cut.
func shorten(s string) string {
	if len(s) <= MaxHTMLValueSize {
		return s
	}
	cut := MaxHTMLValueSize
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// shortenPath returns path cut to about MaxHTMLValueSize bytes by replacing its middle with
// "…", so that the start and the last keys or indices stay visible.
func shortenPath(path string) string {
	if len(path) <= MaxHTMLValueSize {
		return path
	}
	head := MaxHTMLValueSize / 2
	for head > 0 && !utf8.RuneStart(path[head]) {
		head--
	}
	tail := len(path) - MaxHTMLValueSize/2
	for tail < len(path) && !utf8.RuneStart(path[tail]) {
		tail++
	}
	return path[:head] + "…" + path[tail:]
}
