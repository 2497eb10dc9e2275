package output

import (
	"bytes"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The readable digest's HTML part is built for a phone at 3 a.m. (360 px wide): the subject,
// the count, first and last time and the group; a compact table of the records with only the
// fields whose values differ between them; then the first records in full, each as the single
// email's table (htmlWriter.recordRows). Like the single email's HTML it is written directly,
// every text through appendHTMLText or appendHTMLKey, with inline styles only.

// Bounds of the digest's HTML. The NDJSON part always holds every record in full.
const (
	// DigestHTMLRows is how many records the compact table shows at most; a row after them
	// counts the rest ("N more records in the attachment").
	DigestHTMLRows = 50
	// DigestHTMLColumns is how many differing fields the compact table shows beside the
	// time: what fits a 360 px screen.
	DigestHTMLColumns = 3
	// DigestHTMLFull is how many records are shown in full after the compact table.
	DigestHTMLFull = 3
	// digestCellRunes is where a value in the compact table is shortened, with "…".
	digestCellRunes = 60
	// digestMaxLeaves bounds the fields of one record the compact table looks at.
	digestMaxLeaves = 200
	// digestMaxFlatDepth is the nesting below which a nested value is one field (its JSON).
	digestMaxFlatDepth = 4
)

// HTML of the digest, around what htmlHead and htmlTitleBlock start.
const (
	htmlDigestCount = `</h1>
<div style="margin:0 6px 2px;font-size:16px;font-weight:600">`
	htmlDigestSpan = `</div>
<div style="margin:0 6px 10px;font-size:13px;opacity:.75">`
	htmlDigestTableEnd = "</tbody>\n</table>\n"
	// htmlDigestCompact opens the compact table: fixed layout, so long values wrap instead of
	// widening the page.
	htmlDigestCompact = `<table width="100%" cellpadding="4" style="border-collapse:collapse;table-layout:fixed;font-size:13px;text-align:left;margin-top:8px">
<thead><tr style="border-bottom:1px solid rgba(127,127,127,.5)">`
	htmlDigestHead      = `<th style="vertical-align:bottom">`
	htmlDigestHeadTime  = `<th style="vertical-align:bottom;width:19%">`
	htmlDigestHeadEnd   = "</th>"
	htmlDigestBody      = "</tr></thead>\n<tbody style=\"vertical-align:top;text-align:left\">\n"
	htmlDigestCell      = "<td>"
	htmlDigestCellEnd   = "</td>"
	htmlDigestRowEnd    = "</tr>\n"
	htmlDigestSection   = `<h2 style="margin:20px 6px 4px;font-size:16px;line-height:1.3">`
	htmlDigestSectionEn = "</h2>\n"
	htmlDigestNote      = `<p style="margin:6px 6px 0;font-size:13px;opacity:.8">`
	htmlDigestNoteEnd   = "</p>\n"
	htmlDigestEnd       = `<p style="margin:16px 6px 0;font-size:12px;opacity:.75">Every record, in full and signed, is one line of the attached NDJSON part (header X-Smtpout-Signature; smtpout verify checks it).</p>
</div>
</body>
</html>
`
	htmlDigestMore = " more values not shown: the attached NDJSON part holds the whole record"
)

// digestHTML writes the HTML part of digest d (summary s, first member decoded as first)
// into st.html and returns it.
func (r *Renderer) digestHTML(st *state, d Digest, s *digestSummary, first Record) []byte {
	w := &st.hw
	w.b = w.b[:0]
	w.b = append(w.b, htmlHead...)
	w.b = appendHTMLText(w.b, st.subj)
	w.b = append(w.b, htmlTitleBlock...)
	w.b = appendHTMLText(w.b, st.subj)
	w.b = append(w.b, htmlDigestCount...)
	w.b = strconv.AppendInt(w.b, int64(s.count), 10)
	if s.count == 1 {
		w.b = append(w.b, " record"...)
	} else {
		w.b = append(w.b, " records"...)
	}
	w.b = append(w.b, htmlDigestSpan...)
	w.b = s.appendSpan(w.b)
	if tags := s.tags(); tags != "" {
		w.b = append(w.b, " &middot; Tag "...)
		w.b = appendHTMLText(w.b, sanitize(st.scratch[:0], tags, MaxSubjectRunes))
	}
	w.b = append(w.b, "</div>\n"...)

	if len(s.group) > 0 {
		w.b = append(w.b, htmlTable...)
		for i, g := range s.group {
			if i%2 == 1 {
				w.b = append(w.b, htmlRowStriped...)
			} else {
				w.b = append(w.b, htmlRow...)
			}
			if i == 0 {
				w.b = append(w.b, htmlKeyFirst...)
			} else {
				w.b = append(w.b, htmlKey...)
			}
			w.b = appendHTMLKey(w.b, shorten(groupKeyText(g.Key)))
			w.b = append(w.b, htmlValue...)
			w.b = appendHTMLText(w.b, shorten(g.Value))
			w.b = append(w.b, htmlRowEnd...)
		}
		w.b = append(w.b, htmlDigestTableEnd...)
	}

	recs := make([]Record, min(len(d.Members), max(DigestHTMLRows, DigestHTMLFull)))
	recs[0] = first
	for i := 1; i < len(recs); i++ {
		recs[i] = decodeMember(d.Members[i])
	}
	if len(d.Members) > 1 {
		r.compactTable(w, d.Members, recs[:min(len(recs), DigestHTMLRows)], s)
	}

	full := min(len(d.Members), DigestHTMLFull)
	for i := range full {
		w.b = append(w.b, htmlDigestSection...)
		if len(d.Members) == 1 {
			w.b = append(w.b, "The record"...)
		} else {
			w.b = append(w.b, "Record "...)
			w.b = strconv.AppendInt(w.b, int64(i+1), 10)
			w.b = append(w.b, " of "...)
			w.b = strconv.AppendInt(w.b, int64(len(d.Members)), 10)
		}
		w.b = append(w.b, htmlDigestSectionEn...)
		w.b = append(w.b, htmlTable...)
		// The payload holds the date key already, if there is one.
		w.recordRows(recs[i], "", htmlDigestMore)
		w.b = append(w.b, htmlDigestTableEnd...)
	}
	if len(d.Members) > full {
		w.b = append(w.b, htmlDigestNote...)
		w.b = strconv.AppendInt(w.b, int64(len(d.Members)-full), 10)
		w.b = append(w.b, " more records in full in the attachment."...)
		w.b = append(w.b, htmlDigestNoteEnd...)
	}
	w.b = append(w.b, htmlDigestEnd...)
	st.html = w.b
	return w.b
}

// field is one leaf of a record as the compact table sees it: its path and its value as text.
type field struct {
	path, text string
}

// column is a field whose values differ between the records of the compact table.
type column struct {
	path     string
	distinct int // how many different values it has in the rows
	total    int // the length of its values in all rows (shortened as shown)
}

// compactTable writes the table of recs (the first of members, decoded): the time and the
// fields whose values differ, at most DigestHTMLColumns of them. The columns shown are those
// with the fewest different values (which hosts, users, files a storm touched, rather than
// an ID unique to every record), then the shortest, then by name; they appear by name.
func (r *Renderer) compactTable(w *htmlWriter, members []DigestMember, recs []Record, s *digestSummary) {
	rows := make([]map[string]string, len(recs))
	var fl flattener
	var seen map[string]int // path -> column index
	var cols []column
	for i, rec := range recs {
		leaves := fl.flatten(rec.Fields)
		if seen == nil {
			seen = make(map[string]int, len(leaves))
		}
		rows[i] = make(map[string]string, len(leaves))
		for _, f := range leaves {
			if f.path == r.dateKey {
				continue // the time column shows it
			}
			rows[i][f.path] = f.text
			if _, ok := seen[f.path]; !ok {
				seen[f.path] = len(cols)
				cols = append(cols, column{path: f.path})
			}
		}
	}
	var differ []column
	values := map[string]struct{}{}
	for _, c := range cols {
		clear(values)
		for _, row := range rows {
			v, ok := row[c.path]
			c.total += min(utf8.RuneCountInString(v), digestCellRunes)
			if !ok {
				v = "\x00absent" // an absent field differs from any value
			}
			values[v] = struct{}{}
		}
		if c.distinct = len(values); c.distinct > 1 {
			differ = append(differ, c)
		}
	}
	slices.SortFunc(differ, func(a, b column) int {
		if a.distinct != b.distinct {
			return a.distinct - b.distinct
		}
		if a.total != b.total {
			return a.total - b.total
		}
		return strings.Compare(a.path, b.path)
	})
	shown := differ[:min(len(differ), DigestHTMLColumns)]
	slices.SortFunc(shown, func(a, b column) int { return strings.Compare(a.path, b.path) })

	w.b = append(w.b, htmlDigestSection...)
	w.b = append(w.b, "The records"...)
	w.b = append(w.b, htmlDigestSectionEn...)
	if len(differ) > len(shown) {
		w.b = append(w.b, htmlDigestNote...)
		w.b = strconv.AppendInt(w.b, int64(len(shown)), 10)
		w.b = append(w.b, " of "...)
		w.b = strconv.AppendInt(w.b, int64(len(differ)), 10)
		w.b = append(w.b, " fields that differ between the records are shown."...)
		w.b = append(w.b, htmlDigestNoteEnd...)
	} else if len(differ) == 0 {
		w.b = append(w.b, htmlDigestNote...)
		w.b = append(w.b, "The records differ only in their time."...)
		w.b = append(w.b, htmlDigestNoteEnd...)
	}
	w.b = append(w.b, htmlDigestCompact...)
	w.b = append(w.b, htmlDigestHeadTime...)
	w.b = append(w.b, "time"...)
	w.b = append(w.b, htmlDigestHeadEnd...)
	for _, c := range shown {
		w.b = append(w.b, htmlDigestHead...)
		w.b = appendHTMLKey(w.b, shortenRunes(c.path, digestCellRunes))
		w.b = append(w.b, htmlDigestHeadEnd...)
	}
	w.b = append(w.b, htmlDigestBody...)
	first, last := s.first.UTC(), s.last.UTC()
	layout := "15:04:05"
	if first.YearDay() != last.YearDay() || first.Year() != last.Year() {
		layout = "01-02 15:04:05"
	}
	for i, row := range rows {
		if i%2 == 1 {
			w.b = append(w.b, htmlRowStriped...)
		} else {
			w.b = append(w.b, htmlRow...)
		}
		w.b = append(w.b, htmlDigestCell...)
		w.b = members[i].Time.UTC().AppendFormat(w.b, layout)
		w.b = append(w.b, htmlDigestCellEnd...)
		for _, c := range shown {
			w.b = append(w.b, htmlDigestCell...)
			w.b = appendHTMLText(w.b, shortenRunes(row[c.path], digestCellRunes))
			w.b = append(w.b, htmlDigestCellEnd...)
		}
		w.b = append(w.b, htmlDigestRowEnd...)
	}
	w.b = append(w.b, htmlDigestTableEnd...)
	if more := len(members) - len(rows); more > 0 {
		w.b = append(w.b, htmlDigestNote...)
		w.b = strconv.AppendInt(w.b, int64(more), 10)
		if more == 1 {
			w.b = append(w.b, " more record in the attachment."...)
		} else {
			w.b = append(w.b, " more records in the attachment."...)
		}
		w.b = append(w.b, htmlDigestNoteEnd...)
	}
}

// flattener lists the fields of decoded records for the compact table, reusing its buffers
// from one record to the next.
type flattener struct {
	leaves []field
	keys   [][]string // sorted keys, one slice per depth
	buf    bytes.Buffer
	enc    *json.Encoder
}

// flatten returns the leaves of fields (a decoded payload): scalars as their text, maps
// below digestMaxFlatDepth walked with "." between keys, arrays and deeper maps as their JSON;
// at most digestMaxLeaves leaves. The result is valid until the next call.
func (f *flattener) flatten(fields map[string]any) []field {
	f.leaves = f.walk(f.leaves[:0], "", fields, 0)
	return f.leaves
}

// walk appends the leaves of m, at depth, under prefix.
func (f *flattener) walk(dst []field, prefix string, m map[string]any, depth int) []field {
	for len(f.keys) <= depth {
		f.keys = append(f.keys, nil)
	}
	keys := f.keys[depth][:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	f.keys[depth] = keys
	for _, k := range keys {
		if len(dst) >= digestMaxLeaves {
			break
		}
		path := k
		if prefix != "" {
			path = prefix + "." + k
		}
		if sub, ok := m[k].(map[string]any); ok && len(sub) > 0 && depth+1 < digestMaxFlatDepth {
			dst = f.walk(dst, path, sub, depth+1)
			continue
		}
		dst = append(dst, field{path: path, text: f.text(m[k])})
	}
	return dst
}

// text returns a decoded JSON value as the compact table shows it.
func (f *flattener) text(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		return x
	case json.Number:
		return x.String()
	case bool:
		return strconv.FormatBool(x)
	}
	if f.enc == nil {
		f.enc = json.NewEncoder(&f.buf)
		f.enc.SetEscapeHTML(false) // the HTML writer escapes
	}
	f.buf.Reset()
	if f.enc.Encode(v) != nil {
		return ""
	}
	return string(bytes.TrimSuffix(f.buf.Bytes(), []byte("\n")))
}

// shortenRunes returns s cut to at most n runes, with "…" in place of the rest.
func shortenRunes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := 0
	for j := range s {
		if i == n {
			return s[:j] + "…"
		}
		i++
	}
	return s
}
