package output

import (
	"bytes"
	"html/template"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// htmlTemplate is the readable format's HTML part: a title block and a two-column table, inline
// styles only, no fixed widths, long values wrapped. html/template escapes every value.
var htmlTemplate = template.Must(template.New("email").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Subject}}</title>
</head>
<body style="margin:0;padding:0;background-color:#f4f5f7;">
<div style="max-width:960px;margin:0 auto;padding:12px;font-family:-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;color:#1f2328;">
<h1 style="margin:0 0 6px 0;font-size:18px;line-height:1.35;word-break:break-word;overflow-wrap:anywhere;">{{.Subject}}</h1>
<p style="margin:0 0 12px 0;font-size:13px;line-height:1.5;color:#57606a;word-break:break-word;overflow-wrap:anywhere;">Tag <strong style="color:#1f2328;">{{.Tag}}</strong> &middot; {{.Time}}</p>
<table role="presentation" cellpadding="0" cellspacing="0" border="0" style="width:100%;max-width:960px;border-collapse:collapse;table-layout:auto;background-color:#ffffff;border:1px solid #d0d7de;font-size:13px;line-height:1.45;">
{{- range .Rows}}
<tr>
<th scope="row" style="text-align:left;vertical-align:top;padding:6px 10px;border-top:1px solid #d0d7de;background-color:#f6f8fa;font-weight:600;word-break:break-all;overflow-wrap:anywhere;">{{.Key}}</th>
<td style="vertical-align:top;padding:6px 10px;border-top:1px solid #d0d7de;font-family:SFMono-Regular,Consolas,'Liberation Mono',Menlo,monospace;white-space:pre-wrap;word-break:break-word;overflow-wrap:anywhere;">{{.Value}}{{if .Truncated}}<span style="color:#9a6700;font-style:italic;"> … (truncated, {{.Size}} bytes total)</span>{{end}}</td>
</tr>
{{- end}}
</table>
<p style="margin:12px 0 0 0;font-size:11px;color:#57606a;">The signed JSON record is the plain-text part of this email (header X-Smtpout-Signature).</p>
</div>
</body>
</html>
`))

// htmlData is what the HTML template shows.
type htmlData struct {
	Subject string
	Tag     string
	Time    string
	Rows    []htmlRow
}

// htmlRow is one line of the field table.
type htmlRow struct {
	Key       string
	Value     string
	Truncated bool
	Size      int
}

// renderHTML writes the HTML part for rec into w.
func (r *Renderer) renderHTML(w *bytes.Buffer, rec Record, subject []byte) error {
	fields := make(map[string]any, len(rec.Fields)+1)
	for k, v := range rec.Fields {
		fields[k] = v
	}
	if r.dateKey != "" {
		if _, ok := fields[r.dateKey]; !ok {
			fields[r.dateKey] = rec.Time
		}
	}
	var t table
	t.flatten("", Normalize(fields))
	if t.omitted > 0 {
		t.rows = append(t.rows, htmlRow{Key: "…", Value: strconv.Itoa(t.omitted) +
			" more values not shown: the JSON part holds the whole record"})
	}
	d := htmlData{
		Subject: string(subject),
		Tag:     string(sanitize(nil, rec.Tag, MaxSubjectRunes)),
		Time:    rec.Time.UTC().Format(time.RFC3339Nano),
		Rows:    t.rows,
	}
	return r.html.Execute(w, d)
}

// table collects the rows of the HTML table within MaxHTMLRows and MaxHTMLTableSize.
type table struct {
	rows    []htmlRow
	size    int // bytes of the keys and values in rows
	omitted int // values left out once a bound was reached
}

// full reports whether no further row fits.
func (t *table) full() bool {
	return len(t.rows) >= MaxHTMLRows || t.size >= MaxHTMLTableSize
}

// add appends row, or counts it as omitted when it does not fit; the table is then full, so
// the rows shown are always a prefix of the record's.
func (t *table) add(row htmlRow) {
	if t.full() || t.size+len(row.Key)+len(row.Value) > MaxHTMLTableSize {
		t.size = MaxHTMLTableSize
		t.omitted++
		return
	}
	t.size += len(row.Key) + len(row.Value)
	t.rows = append(t.rows, row)
}

// flatten adds the table rows of a normalised value: nested keys as dotted paths, array
// elements as path[i], in sorted order. Keys, paths and values over MaxHTMLValueSize bytes
// are shortened (on a UTF-8 boundary; a path keeps its start and its end); shortened values
// are flagged. Once the table is full the
// remaining values are only counted.
func (t *table) flatten(path string, v any) {
	if t.full() {
		t.omitted += countValues(v, path == "")
		return
	}
	switch x := v.(type) {
	case map[string]any:
		if len(x) == 0 && path != "" {
			t.add(htmlRow{Key: path, Value: "{}"})
			return
		}
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			p := shorten(k)
			if path != "" {
				p = shortenPath(path + "." + p)
			}
			t.flatten(p, x[k])
		}
		return
	case []any:
		if len(x) == 0 {
			t.add(htmlRow{Key: path, Value: "[]"})
			return
		}
		for i, el := range x {
			if t.full() {
				for _, rest := range x[i:] {
					t.omitted += countValues(rest, false)
				}
				return
			}
			t.flatten(shortenPath(path+"["+strconv.Itoa(i)+"]"), el)
		}
		return
	case nil:
		t.add(htmlRow{Key: path, Value: "null"})
		return
	}
	s := scalarString(v)
	row := htmlRow{Key: path, Value: s}
	if len(s) > MaxHTMLValueSize {
		cut := MaxHTMLValueSize
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		row = htmlRow{Key: path, Value: s[:cut], Truncated: true, Size: len(s)}
	}
	t.add(row)
}

// countValues returns how many rows flatten would give v (root: v is the whole record).
func countValues(v any, root bool) int {
	switch x := v.(type) {
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
