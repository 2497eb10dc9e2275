package output

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/smtpout/smtpout/config"
)

// RecordsHeader is the header of a digest email that says how many records it carries.
const RecordsHeader = "X-Smtpout-Records"

// DigestMember is one record carried by a digest: the JSON payload its own single email would
// carry, byte for byte, and that email's identity. It is all the pipeline keeps (in memory,
// and in ledger_dir) while a group's digest_window runs, so a digest can be rendered after a
// restart from what was kept.
type DigestMember struct {
	// MessageID is the Message-ID of the record's single email, without angle brackets.
	MessageID string
	// Tag and Time are the record's Fluent Bit tag and time.
	Tag  string
	Time time.Time
	// Payload is the record's JSON payload (Email.Payload): one NDJSON line of the digest.
	Payload []byte
}

// GroupValue is one digest_by key, as configured (for example "$host"), and the group's value
// for it, sanitised like a subject.
type GroupValue struct {
	Key   string
	Value string
}

// Digest is one digest email to render: some or all of a group's waiting records.
type Digest struct {
	// Group holds the digest_by keys and the group's values (none: one group per instance).
	Group []GroupValue
	// Members are the records in arrival order; at least one.
	Members []DigestMember
	// ThreadRoot is the Message-ID (without angle brackets) of the group's first email of the
	// day, or "": the digest then carries In-Reply-To and References naming it.
	ThreadRoot string
}

// NDJSONType is the media type of a digest's part that holds the records, one JSON payload a
// line.
const NDJSONType = "application/x-ndjson"

// ErrBadMember means a digest member cannot be one NDJSON line: its payload is empty, is not
// a JSON object's text, or holds a line break.
var ErrBadMember = errors.New("digest member payload is not one JSON object line")

// RenderDigest renders one signed digest email carrying every member's payload: one email
// for the whole digest, whose Message-ID is DigestMessageID of the members, Date the last
// member's time, Subject the subject template rendered against the first member's record
// (its payload decoded), with X-Smtpout-Records and, when d.ThreadRoot is set, In-Reply-To and
// References. The records are one application/x-ndjson part (NDJSON of d.Members, signed
// like a single email's payload); in front of it a text summary, and in the readable format
// a phone-sized HTML digest beside that summary. The error names the digest (its first
// member) and what is wrong.
func (r *Renderer) RenderDigest(d Digest) (e *Email, err error) {
	if len(d.Members) == 0 {
		return nil, errors.New("render digest: no members")
	}
	first := d.Members[0]
	defer func() {
		if p := recover(); p != nil {
			e, err = nil, fmt.Errorf("render digest of %d records from message %s: panic: %v",
				len(d.Members), first.MessageID, p)
		}
	}()
	size := 0
	for i, m := range d.Members {
		if !oneObjectLine(m.Payload) {
			return nil, fmt.Errorf("render digest of %d records from message %s: member %d (message %s): %w",
				len(d.Members), first.MessageID, i, m.MessageID, ErrBadMember)
		}
		size += len(m.Payload) + 1
	}
	id := r.DigestMessageID(d.Members)

	// The NDJSON part's content, and the signature over exactly those bytes.
	ndjson := make([]byte, 0, size)
	for _, m := range d.Members {
		ndjson = append(append(ndjson, m.Payload...), '\n')
	}
	st := r.pool.Get().(*state)
	defer r.put(st)
	st.mac.Reset()
	st.mac.Write(ndjson)
	var sigb [7 + 64]byte
	sig := append(sigb[:0], "sha256="...)
	sig = hex.AppendEncode(sig, st.mac.Sum(st.sum[:0]))

	// The first record's fields are decoded when the subject or the HTML shows them.
	firstRec := Record{Tag: first.Tag, Time: first.Time}
	if r.readable || r.subjectHasKeys {
		firstRec = decodeMember(first)
	}
	st.subj = r.appendSubject(st.subj[:0], firstRec, &st.enc)
	sum := summarize(d)

	// The email is written straight into the buffer it is returned in, sized for the NDJSON
	// in quoted-printable (about 4 % more for JSON text) and the rest.
	var html []byte
	if r.readable {
		html = r.digestHTML(st, d, &sum, firstRec)
	}
	out := make([]byte, 0, 4<<10+len(ndjson)+len(ndjson)/16+len(html)+len(html)/8)
	if d.ThreadRoot != "" {
		out = appendThread(out, d.ThreadRoot)
	}
	out = appendHead(out, d.Members[len(d.Members)-1].Time, r.headers, st.subj, id)
	mixed := boundaryFor([]byte(id[:32]))
	out = append(out, "Content-Type: multipart/mixed; boundary=\""...)
	out = append(out, mixed...)
	out = append(out, "\"\r\n"...)
	if tags := sum.tags(); tags != "" {
		out = appendTextHeader(out, TagHeader, sanitize(st.scratch[:0], tags, MaxSubjectRunes))
	}
	out = append(out, RecordsHeader+": "...)
	out = strconv.AppendInt(out, int64(len(d.Members)), 10)
	out = append(out, "\r\n"+SignatureHeader+": "...)
	out = append(out, sig...)
	out = append(out, "\r\n\r\n"...)
	text := sum.appendText(nil, st.subj)
	if r.readable {
		alt := "=_smtpout_alt_" + id[:32]
		out = append(out, "--"...)
		out = append(out, mixed...)
		out = append(out, "\r\nContent-Type: multipart/alternative;\r\n boundary=\""...)
		out = append(out, alt...)
		out = append(out, "\"\r\n\r\n"...)
		out = appendAlternative(out, alt, text, true, html)
	} else {
		out = appendPart(out, mixed, textPartHeader, text, true)
	}
	out = appendPart(out, mixed, "Content-Type: "+NDJSONType+"; charset=UTF-8\r\n"+
		"Content-Transfer-Encoding: quoted-printable\r\n"+
		"Content-Disposition: attachment;\r\n filename=\""+DigestFilename(d.Members)+"\"\r\n", ndjson, false)
	out = append(out, "--"...)
	out = append(out, mixed...)
	out = append(out, "--\r\n"...)

	recips := make([]string, len(r.recipients))
	copy(recips, r.recipients)
	return &Email{
		MessageID:   id,
		From:        r.from,
		Recipients:  recips,
		Data:        out[:len(out):len(out)],
		Signature:   string(sig),
		PayloadSize: len(ndjson),
		Payload:     ndjson,
	}, nil
}

// DigestMessageID returns the Message-ID (without angle brackets) RenderDigest gives the
// digest of members: the first 16 bytes of SHA-256 over the members' Message-IDs in order,
// NUL-separated, in hex, "@" and the domain of from_email. The same members always give the
// same ID, so a digest sent again after a crash carries the Message-ID of the one that may
// have been delivered.
func (r *Renderer) DigestMessageID(members []DigestMember) string {
	h := sha256.New()
	for i, m := range members {
		if i > 0 {
			h.Write([]byte{0})
		}
		h.Write([]byte(m.MessageID))
	}
	var sum [sha256.Size]byte
	return hex.EncodeToString(h.Sum(sum[:0])[:16]) + "@" + r.domain
}

// DigestFilename returns the file name of a digest's NDJSON attachment:
// "smtpout-digest-<first member's time, UTC, 20060102T150405Z>.ndjson".
func DigestFilename(members []DigestMember) string {
	if len(members) == 0 {
		return "smtpout-digest.ndjson"
	}
	return "smtpout-digest-" + members[0].Time.UTC().Format("20060102T150405Z") + ".ndjson"
}

// oneObjectLine reports whether p can be one NDJSON line of a digest: it looks like a JSON
// object (braces at both ends; the payload encoder wrote it) and holds no line break.
func oneObjectLine(p []byte) bool {
	return len(p) >= 2 && p[0] == '{' && p[len(p)-1] == '}' && bytes.IndexByte(p, '\n') < 0
}

// decodeMember returns m as a Record: its tag and time, and its payload decoded with
// encoding/json (numbers kept as json.Number, so none changes). A payload that does not
// decode gives a record without fields.
func decodeMember(m DigestMember) Record {
	rec := Record{Tag: m.Tag, Time: m.Time}
	dec := json.NewDecoder(bytes.NewReader(m.Payload))
	dec.UseNumber()
	var fields map[string]any
	if dec.Decode(&fields) == nil {
		rec.Fields = fields
	}
	return rec
}

// digestSummary is what the first visible line of a digest says: the count, the first and
// last time, the group.
type digestSummary struct {
	count       int
	first, last time.Time
	group       []GroupValue
	tagList     []string // distinct tags in order of first appearance, at most maxTags
	moreTags    bool
}

// maxTags bounds the tags a digest's X-Fluent-Tag names.
const maxTags = 8

// summarize returns the summary of d.
func summarize(d Digest) digestSummary {
	s := digestSummary{count: len(d.Members), first: d.Members[0].Time, last: d.Members[0].Time, group: d.Group}
	for _, m := range d.Members {
		if m.Time.Before(s.first) {
			s.first = m.Time
		}
		if m.Time.After(s.last) {
			s.last = m.Time
		}
		if !s.moreTags && !slices.Contains(s.tagList, m.Tag) {
			if len(s.tagList) == maxTags {
				s.moreTags = true
			} else {
				s.tagList = append(s.tagList, m.Tag)
			}
		}
	}
	return s
}

// tags returns the X-Fluent-Tag value of a digest: its distinct tags, comma-separated.
func (s *digestSummary) tags() string {
	var b []byte
	for i, t := range s.tagList {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = append(b, t...)
	}
	if s.moreTags {
		b = append(b, ", ..."...)
	}
	return string(b)
}

// appendHeadline appends the first visible line of a digest, such as
// "42 records, 10:01:07 to 10:11:02 UTC, host=web-1" (with the dates when the records span
// more than one UTC day), as plain text.
func (s *digestSummary) appendHeadline(b []byte) []byte {
	b = strconv.AppendInt(b, int64(s.count), 10)
	if s.count == 1 {
		b = append(b, " record, "...)
	} else {
		b = append(b, " records, "...)
	}
	b = s.appendSpan(b)
	for _, g := range s.group {
		b = append(b, ", "...)
		b = append(b, groupKeyText(g.Key)...)
		b = append(b, '=')
		b = append(b, g.Value...)
	}
	return b
}

// appendSpan appends the first and last time: "10:01:07 to 10:11:02 UTC", with dates when they
// are on different UTC days, or one time when they are equal to the second.
func (s *digestSummary) appendSpan(b []byte) []byte {
	first, last := s.first.UTC(), s.last.UTC()
	layout := "15:04:05"
	if first.YearDay() != last.YearDay() || first.Year() != last.Year() {
		layout = "2006-01-02 15:04:05"
	}
	b = first.AppendFormat(b, layout)
	if !last.Truncate(time.Second).Equal(first.Truncate(time.Second)) {
		b = append(b, " to "...)
		b = last.AppendFormat(b, layout)
	}
	return append(b, " UTC"...)
}

// groupKeyText returns a digest_by key as the summary names it: without its leading "$".
func groupKeyText(key string) string {
	return strings.TrimPrefix(key, "$")
}

// appendText appends the text/plain summary part of a digest.
func (s *digestSummary) appendText(b, subject []byte) []byte {
	b = s.appendHeadline(b)
	b = append(b, "\n\n"...)
	b = append(b, subject...)
	b = append(b, "\n\nEvery record is one line of the attached "+NDJSONType+
		" part, exactly the JSON its own email would carry.\n"+
		"The header "+SignatureHeader+" signs that part; smtpout verify checks it and\n"+
		"prints each line's single-email signature.\n"...)
	return b
}

// GroupValues returns the group of rec under the digest_by templates by: one value per
// template, rendered against rec like a subject (a missing key renders as "").
func (r *Renderer) GroupValues(rec Record, by []config.Template) []GroupValue {
	if len(by) == 0 {
		return nil
	}
	var e encoder
	out := make([]GroupValue, len(by))
	for i, t := range by {
		out[i] = GroupValue{Key: t.Raw, Value: string(appendTemplate(nil, t.Tokens, rec, &e))}
	}
	return out
}

// Thread returns data, a rendered email, with In-Reply-To and References headers naming root
// (a Message-ID without angle brackets) put in front of its headers; root "" returns data as
// it is. The signature covers the payload only, so it stays valid.
func Thread(data []byte, root string) []byte {
	if root == "" {
		return data
	}
	out := make([]byte, 0, len(data)+2*len(root)+32)
	return append(appendThread(out, root), data...)
}

// appendThread appends In-Reply-To and References headers naming root.
func appendThread(out []byte, root string) []byte {
	out = append(out, "In-Reply-To: <"...)
	out = append(out, root...)
	out = append(out, ">\r\nReferences: <"...)
	out = append(out, root...)
	return append(out, ">\r\n"...)
}

// MaxDigestPayload is the most NDJSON, in bytes (payloads and their line breaks), that
// SplitDigest puts in one digest beside its first record. It equals MaxPayloadSize, the
// largest payload a single email may carry: a digest is then never bigger than the biggest
// single email the plugin already sends (its HTML part is bounded), and JSON text, mostly
// ASCII, grows by about 4 % in quoted-printable, so 10 MiB stays far below Gmail's 25 MB
// and Exchange Online's default 25-35 MB message size limits, which count the encoded
// message. A digest of one record of MaxPayloadSize is that record alone, never cut.
const MaxDigestPayload = MaxPayloadSize

// SplitDigest splits members, in order, into consecutive digests of at most maxRecords
// members (no limit when maxRecords <= 0) and at most MaxDigestPayload bytes of NDJSON each.
// It never splits or drops a record: a member too big for the bound alone is a digest of its
// own. The digests share members' backing array.
func SplitDigest(members []DigestMember, maxRecords int) [][]DigestMember {
	var out [][]DigestMember
	start, size := 0, 0
	for i, m := range members {
		n := len(m.Payload) + 1
		if i > start && (maxRecords > 0 && i-start >= maxRecords || size+n > MaxDigestPayload) {
			out = append(out, members[start:i:i])
			start, size = i, 0
		}
		size += n
	}
	if start < len(members) {
		out = append(out, members[start:len(members):len(members)])
	}
	return out
}
