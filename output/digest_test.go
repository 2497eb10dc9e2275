package output

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"net/textproto"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/smtpout/smtpout/config"
)

// TestEmailPayloadIsTheSignedPayload: Email.Payload is exactly what Payload returns for the
// record and what the signature covers, in both formats.
func TestEmailPayloadIsTheSignedPayload(t *testing.T) {
	for _, readable := range []bool{false, true} {
		cfg := testConfig(readable)
		r := mustRenderer(t, cfg)
		rec := detection()
		e := mustRender(t, r, rec)
		want, err := Payload(rec, cfg.JSONDateKey)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(string(want), string(e.Payload)); diff != "" {
			t.Errorf("readable=%v: Email.Payload (-Payload +Email.Payload):\n%s", readable, diff)
		}
		if got := Sign(e.Payload, []byte(cfg.SecretKey.Reveal())); got != e.Signature {
			t.Errorf("readable=%v: Sign(Email.Payload) = %s, Email.Signature = %s", readable, got, e.Signature)
		}
		if cap(e.Data) != len(e.Data) {
			t.Errorf("readable=%v: appending to Data could overwrite Payload", readable)
		}
	}
}

// TestThreadPutsReferencesFirst: Thread adds In-Reply-To and References in front, and the
// signature still verifies.
func TestThreadPutsReferencesFirst(t *testing.T) {
	cfg := testConfig(false)
	r := mustRenderer(t, cfg)
	e := mustRender(t, r, detection())
	got := Thread(e.Data, "root@example.com")
	p := parseEmail(t, got)
	if diff := cmp.Diff([]string{"<root@example.com>", "<root@example.com>"},
		[]string{p.header.Get("In-Reply-To"), p.header.Get("References")}); diff != "" {
		t.Errorf("threading headers (-want +got):\n%s", diff)
	}
	if err := Verify(bytes.NewReader(got), []byte(cfg.SecretKey.Reveal())); err != nil {
		t.Errorf("threaded email does not verify: %v", err)
	}
	if string(Thread(e.Data, "")) != string(e.Data) {
		t.Error("Thread with no root changed the email")
	}
}

// digestMembers renders n records from hosts (round robin), one second apart from start, with
// the renderer r, and returns them as digest members with their single emails.
func digestMembers(t testing.TB, r *Renderer, n int, hosts []string, start time.Time) ([]DigestMember, []*Email, []Record) {
	t.Helper()
	var members []DigestMember
	var emails []*Email
	var recs []Record
	for i := range n {
		rec := Record{Tag: "lc.detections", Time: start.Add(time.Duration(i) * time.Second), Fields: map[string]any{
			"cat":    []byte("Suspicious Shell"),
			"host":   hosts[i%len(hosts)],
			"pid":    int64(1000 + i),
			"ratio":  float64(i) / 4,
			"detect": map[any]any{"event": map[any]any{"FILE_PATH": []byte(fmt.Sprintf("/tmp/x%d <&>", i))}},
		}}
		e := mustRender(t, r, rec)
		members = append(members, DigestMember{MessageID: e.MessageID, Tag: rec.Tag, Time: rec.Time, Payload: e.Payload})
		emails = append(emails, e)
		recs = append(recs, rec)
	}
	return members, emails, recs
}

// digestParsed is a digest taken apart with the standard library only.
type digestParsed struct {
	header mail.Header
	keys   []string // canonical header names, sorted
	parts  []string // media types, nested ones as "outer>inner"
	ndjson []byte   // decoded NDJSON part
	text   string   // decoded text/plain summary
	html   string   // decoded HTML ("" in machine format)
	disp   string   // the NDJSON part's disposition and file name
}

// parseDigest parses a digest with net/mail and mime/multipart, independently of Verify.
func parseDigest(t testing.TB, data []byte) digestParsed {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("mail.ReadMessage: %v", err)
	}
	p := digestParsed{header: msg.Header}
	for k, vs := range msg.Header {
		for range vs {
			p.keys = append(p.keys, k)
		}
	}
	slices.Sort(p.keys)
	var walk func(h textproto.MIMEHeader, body io.Reader, prefix string)
	walk = func(h textproto.MIMEHeader, body io.Reader, prefix string) {
		mt, params, err := mime.ParseMediaType(h.Get("Content-Type"))
		if err != nil {
			t.Fatalf("Content-Type %q: %v", h.Get("Content-Type"), err)
		}
		p.parts = append(p.parts, prefix+mt)
		if strings.HasPrefix(mt, "multipart/") {
			mr := multipart.NewReader(body, params["boundary"])
			for {
				part, err := mr.NextRawPart()
				if err == io.EOF {
					return
				}
				if err != nil {
					t.Fatalf("NextRawPart: %v", err)
				}
				walk(part.Header, part, prefix+mt+">")
			}
		}
		b := decodeQP(t, h.Get("Content-Transfer-Encoding"), body)
		switch mt {
		case "text/plain":
			p.text = strings.ReplaceAll(string(b), "\r\n", "\n") // QP text: hard line breaks are CRLF
		case "text/html":
			p.html = string(b)
		case NDJSONType:
			if params["charset"] != "UTF-8" {
				t.Errorf("NDJSON part charset %q", params["charset"])
			}
			p.ndjson = b
			disp, dp, err := mime.ParseMediaType(h.Get("Content-Disposition"))
			if err != nil {
				t.Fatalf("Content-Disposition %q: %v", h.Get("Content-Disposition"), err)
			}
			p.disp = disp + "; filename=" + dp["filename"]
		}
	}
	walk(textproto.MIMEHeader(msg.Header), msg.Body, "")
	return p
}

// TestRenderDigest renders digests in both formats and checks, with the standard library,
// every header the design names and every NDJSON line against the payload of its record.
func TestRenderDigest(t *testing.T) {
	start := time.Date(2026, 11, 27, 10, 1, 7, 250, time.UTC)
	group := []GroupValue{{Key: "$host", Value: "web-1"}, {Key: "$detect['cat']", Value: "shell"}}
	for _, tc := range []struct {
		name     string
		readable bool
		n        int
		group    []GroupValue
		root     string
		headline string
	}{
		{"machine, one record", false, 1, nil, "", "1 record, 10:01:07 UTC"},
		{"machine, three records in a group, threaded", false, 3, group, "root@corp.com",
			"3 records, 10:01:07 to 10:01:09 UTC, host=web-1, detect['cat']=shell"},
		{"readable, one record", true, 1, nil, "", "1 record, 10:01:07 UTC"},
		{"readable, 60 records, threaded", true, 60, group[:1], "root@corp.com",
			"60 records, 10:01:07 to 10:02:06 UTC, host=web-1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(tc.readable)
			r := mustRenderer(t, cfg)
			members, emails, recs := digestMembers(t, r, tc.n, []string{"web-1"}, start)
			e, err := r.RenderDigest(Digest{Group: tc.group, Members: members, ThreadRoot: tc.root})
			if err != nil {
				t.Fatal(err)
			}
			checkLines(t, e.Data)
			p := parseDigest(t, e.Data)

			wantKeys := []string{"Cc", "Content-Type", "Date", "From", "Message-Id", "Mime-Version",
				"Subject", "To", "X-Fluent-Tag", "X-Smtpout-Records", "X-Smtpout-Signature"}
			if tc.root != "" {
				wantKeys = append(wantKeys, "In-Reply-To", "References")
			}
			slices.Sort(wantKeys)
			if diff := cmp.Diff(wantKeys, p.keys); diff != "" {
				t.Errorf("header names (-want +got):\n%s", diff)
			}
			wantParts := []string{"multipart/mixed", "multipart/mixed>text/plain", "multipart/mixed>" + NDJSONType}
			if tc.readable {
				wantParts = []string{"multipart/mixed", "multipart/mixed>multipart/alternative",
					"multipart/mixed>multipart/alternative>text/plain", "multipart/mixed>multipart/alternative>text/html",
					"multipart/mixed>" + NDJSONType}
			}
			if diff := cmp.Diff(wantParts, p.parts); diff != "" {
				t.Errorf("MIME structure (-want +got):\n%s", diff)
			}

			// Message-ID: SHA-256 over the members' Message-IDs, NUL-separated.
			var ids []string
			for _, em := range emails {
				ids = append(ids, em.MessageID)
			}
			sum := sha256.Sum256([]byte(strings.Join(ids, "\x00")))
			wantID := hex.EncodeToString(sum[:16]) + "@corp.com"
			var dec mime.WordDecoder
			subject, err := dec.DecodeHeader(p.header.Get("Subject"))
			if err != nil {
				t.Fatal(err)
			}
			wantThread := ""
			if tc.root != "" {
				wantThread = "<" + tc.root + ">"
			}
			got := map[string]string{
				"Message-Id": p.header.Get("Message-Id"), "Date": p.header.Get("Date"), "Subject": subject,
				"X-Smtpout-Records": p.header.Get(RecordsHeader), "In-Reply-To": p.header.Get("In-Reply-To"),
				"References": p.header.Get("References"), "X-Fluent-Tag": p.header.Get(TagHeader),
				"Content-Disposition": p.disp, "Email.MessageID": e.MessageID,
				"DigestMessageID": r.DigestMessageID(members),
			}
			want := map[string]string{
				"Message-Id": "<" + wantID + ">", "Date": recs[tc.n-1].Time.Format("Mon, 02 Jan 2006 15:04:05 -0700"),
				"Subject": r.RenderSubject(recs[0]), "X-Smtpout-Records": fmt.Sprint(tc.n),
				"In-Reply-To": wantThread, "References": wantThread, "X-Fluent-Tag": "lc.detections",
				"Content-Disposition": "attachment; filename=smtpout-digest-20261127T100107Z.ndjson",
				"Email.MessageID":     wantID,
				"DigestMessageID":     wantID,
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("headers (-want +got):\n%s", diff)
			}

			// Every line is the payload of its record, as Payload encodes it independently.
			lines := strings.SplitAfter(string(p.ndjson), "\n")
			if lines[len(lines)-1] != "" {
				t.Errorf("NDJSON does not end with a line break")
			}
			lines = lines[:len(lines)-1]
			var wantLines []string
			for _, rec := range recs {
				pl, err := Payload(rec, cfg.JSONDateKey)
				if err != nil {
					t.Fatal(err)
				}
				wantLines = append(wantLines, string(pl)+"\n")
			}
			if diff := cmp.Diff(wantLines, lines); diff != "" {
				t.Errorf("NDJSON lines (-Payload +part):\n%s", diff)
			}
			if diff := cmp.Diff(string(p.ndjson), string(e.Payload)); diff != "" {
				t.Errorf("Email.Payload (-part +Payload):\n%s", diff)
			}
			wantSig := "sha256=" + hmacHex(testSecret, string(p.ndjson))
			if p.header.Get(SignatureHeader) != wantSig || e.Signature != wantSig {
				t.Errorf("signature header %q, Email.Signature %q, want HMAC of the part %q",
					p.header.Get(SignatureHeader), e.Signature, wantSig)
			}
			if !strings.HasPrefix(p.text, tc.headline+"\n") {
				t.Errorf("summary starts %q, want %q", p.text[:min(len(p.text), 120)], tc.headline)
			}
			if tc.readable != (p.html != "") {
				t.Errorf("readable=%v but HTML part of %d bytes", tc.readable, len(p.html))
			}

			// Verify accepts it and gives back each line with its single email's signature.
			v, err := VerifyEmail(bytes.NewReader(e.Data), []byte(testSecret))
			if err != nil {
				t.Fatalf("VerifyEmail: %v", err)
			}
			var gotSigs, wantSigs []string
			for i, l := range v.Lines {
				gotSigs = append(gotSigs, l.Signature)
				if string(l.Payload)+"\n" != lines[i] {
					t.Errorf("VerifyEmail line %d = %q, want %q", i+1, l.Payload, lines[i])
				}
			}
			for _, em := range emails {
				wantSigs = append(wantSigs, em.Signature)
			}
			if !v.Digest {
				t.Error("VerifyEmail: not a digest")
			}
			if diff := cmp.Diff(wantSigs, gotSigs); diff != "" {
				t.Errorf("line signatures (-single emails +VerifyEmail):\n%s", diff)
			}
		})
	}
}

// TestRenderDigestDeterministic: the same members give the same bytes, and a different order
// a different Message-ID.
func TestRenderDigestDeterministic(t *testing.T) {
	r := mustRenderer(t, testConfig(true))
	members, _, _ := digestMembers(t, r, 5, []string{"a", "b"}, fixedTime)
	a, err := r.RenderDigest(Digest{Members: members})
	if err != nil {
		t.Fatal(err)
	}
	b, err := r.RenderDigest(Digest{Members: slices.Clone(members)})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Data, b.Data) {
		t.Error("the same digest rendered twice differs")
	}
	rev := slices.Clone(members)
	slices.Reverse(rev)
	c, err := r.RenderDigest(Digest{Members: rev})
	if err != nil {
		t.Fatal(err)
	}
	if c.MessageID == a.MessageID {
		t.Error("members in another order gave the same Message-ID")
	}
}

func TestRenderDigestErrors(t *testing.T) {
	r := mustRenderer(t, testConfig(false))
	good := DigestMember{MessageID: "a@corp.com", Tag: "t", Time: fixedTime, Payload: []byte(`{"a":1}`)}
	for _, tc := range []struct {
		name    string
		members []DigestMember
		wantErr error
		wantMsg string
	}{
		{"no members", nil, nil, "no members"},
		{"empty payload", []DigestMember{good, {MessageID: "b@corp.com"}}, ErrBadMember, "member 1 (message b@corp.com)"},
		{"line break", []DigestMember{{MessageID: "c@corp.com", Payload: []byte("{\"a\":\n1}")}}, ErrBadMember, "message c@corp.com"},
		{"not an object", []DigestMember{{MessageID: "d@corp.com", Payload: []byte(`[1]`)}}, ErrBadMember, "member 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := r.RenderDigest(Digest{Members: tc.members})
			if err == nil {
				t.Fatal("RenderDigest passed")
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("err = %v, want %v", err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("err = %q, want it to mention %q", err, tc.wantMsg)
			}
		})
	}
}

// TestVerifyDigestErrors: a digest whose part, count or lines are wrong does not verify.
func TestVerifyDigestErrors(t *testing.T) {
	r := mustRenderer(t, testConfig(false))
	members, _, _ := digestMembers(t, r, 3, []string{"web-1"}, fixedTime)
	e, err := r.RenderDigest(Digest{Members: members})
	if err != nil {
		t.Fatal(err)
	}
	good := string(e.Data)
	// signed builds a digest whose NDJSON part holds content, signed correctly, with a
	// records header of count.
	signed := func(count, content string) string {
		return "Subject: x\r\n" + SignatureHeader + ": sha256=" + hmacHex(testSecret, content) + "\r\n" +
			RecordsHeader + ": " + count + "\r\nMIME-Version: 1.0\r\n" +
			"Content-Type: multipart/mixed; boundary=b\r\n\r\n" +
			"--b\r\nContent-Type: text/plain\r\n\r\nsummary\r\n" +
			"--b\r\nContent-Type: " + NDJSONType + "\r\n\r\n" + content + "\r\n--b--\r\n"
	}
	for _, tc := range []struct {
		name    string
		msg     string
		wantErr error // nil with wantMsg "": must verify
		wantMsg string
	}{
		{"good", good, nil, ""},
		{"7bit part", signed("2", "{\"a\":1}\n{\"b\":[2]}\n"), nil, ""},
		{"count too high", strings.Replace(good, RecordsHeader+": 3", RecordsHeader+": 4", 1), ErrRecordsMismatch, "header says 4, the part holds 3"},
		{"count not a number", strings.Replace(good, RecordsHeader+": 3", RecordsHeader+": three", 1), ErrMalformedRecords, ""},
		{"two counts", strings.Replace(good, RecordsHeader+": 3", RecordsHeader+": 3\r\n"+RecordsHeader+": 3", 1), ErrMalformedRecords, ""},
		{"count removed: the summary is not signed", strings.Replace(good, RecordsHeader+": 3\r\n", "", 1), ErrMismatch, ""},
		{"no NDJSON part", strings.Replace(good, "Content-Type: "+NDJSONType, "Content-Type: application/json", 1), ErrNoDigestPart, "no application/x-ndjson part"},
		{"a line is an array", signed("2", "{\"a\":1}\n[2]\n"), ErrDigestLine, "line 2"},
		{"a line is not JSON", signed("1", "{\"a\":1\n"), ErrDigestLine, "line 1"},
		{"an empty line", signed("2", "{\"a\":1}\n\n"), ErrDigestLine, "line 2"},
		{"no final line break", signed("1", "{\"a\":1}"), ErrDigestLine, "line break"},
		{"no records", signed("0", ""), ErrDigestLine, "no records"},
		{"tampered line", strings.Replace(good, "x1 <&>", "x9 <&>", 1), ErrMismatch, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := VerifyEmail(strings.NewReader(tc.msg), []byte(testSecret))
			if tc.wantErr == nil && tc.wantMsg == "" {
				if err != nil {
					t.Fatalf("VerifyEmail: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("VerifyEmail passed")
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("err = %v, want %v", err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("err = %q, want it to mention %q", err, tc.wantMsg)
			}
			if err := Verify(strings.NewReader(tc.msg), []byte(testSecret)); err == nil {
				t.Error("Verify passed what VerifyEmail refused")
			}
		})
	}
	if !strings.Contains(good, "x1 <&>") {
		t.Fatal("the digest does not hold the text the test tampers with")
	}
}

// TestSplitDigest: at most maxRecords members and MaxDigestPayload bytes of NDJSON per
// digest, order kept, nothing split or dropped.
func TestSplitDigest(t *testing.T) {
	// m returns a member named id whose NDJSON line (payload and line break) is n bytes.
	m := func(id string, n int) DigestMember {
		return DigestMember{MessageID: id, Payload: bytes.Repeat([]byte("x"), n-1)}
	}
	big := MaxDigestPayload / 2
	for _, tc := range []struct {
		name    string
		members []DigestMember
		max     int
		want    [][]string
	}{
		{"none", nil, 10, nil},
		{"one", []DigestMember{m("a", 10)}, 10, [][]string{{"a"}}},
		{"by count", []DigestMember{m("a", 1), m("b", 1), m("c", 1), m("d", 1), m("e", 1)}, 2,
			[][]string{{"a", "b"}, {"c", "d"}, {"e"}}},
		{"no count limit", []DigestMember{m("a", 1), m("b", 1), m("c", 1)}, 0, [][]string{{"a", "b", "c"}}},
		{"by size: exactly the bound fits", []DigestMember{m("a", big), m("b", MaxDigestPayload-big), m("c", 1)}, 1000,
			[][]string{{"a", "b"}, {"c"}}},
		{"by size: one byte over", []DigestMember{m("a", big), m("b", MaxDigestPayload-big+1), m("c", 1)}, 1000,
			[][]string{{"a"}, {"b", "c"}}},
		{"a record bigger than the bound stays whole and alone",
			[]DigestMember{m("a", 1), m("huge", MaxPayloadSize+1), m("c", 1)}, 1000,
			[][]string{{"a"}, {"huge"}, {"c"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := SplitDigest(tc.members, tc.max)
			var ids [][]string
			for _, d := range got {
				var row []string
				for _, mb := range d {
					row = append(row, mb.MessageID)
				}
				ids = append(ids, row)
			}
			if diff := cmp.Diff(tc.want, ids); diff != "" {
				t.Errorf("SplitDigest (-want +got):\n%s", diff)
			}
			for _, d := range got {
				if len(d) > 1 && ndjsonSize(d) > MaxDigestPayload {
					t.Errorf("a digest of %d members holds %d bytes of NDJSON", len(d), ndjsonSize(d))
				}
				if cap(d) != len(d) {
					t.Errorf("a digest's slice has room to append over the next one")
				}
			}
		})
	}
}

// ndjsonSize returns the NDJSON size of members.
func ndjsonSize(members []DigestMember) int {
	n := 0
	for _, m := range members {
		n += len(m.Payload) + 1
	}
	return n
}

// TestDigestSubject: a digest's subject is the subject its first record's single email has,
// rendered from the decoded payload (numbers, nested keys, the tag), in both formats.
func TestDigestSubject(t *testing.T) {
	for _, tc := range []struct {
		name string
		toks []config.Token
		want string
	}{
		{"tag only", []config.Token{lit("Alert "), tagTok(), lit(" "), tagPartTok(1)}, "Alert lc.detections detections"},
		{"numbers and nested keys", []config.Token{key("pid"), lit(" "), key("ratio"), lit(" "), key("detect", "event", "FILE_PATH"), lit(" "), key("missing")},
			"1001 0.25 /tmp/x1 <&>"},
		{"a map", []config.Token{key("detect")}, `{"event":{"FILE_PATH":"/tmp/x1 <&>"}}`},
	} {
		for _, readable := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/readable=%v", tc.name, readable), func(t *testing.T) {
				r := mustRenderer(t, withSubject(readable, tc.toks...))
				members, _, recs := digestMembers(t, r, 3, []string{"h"}, fixedTime)
				e, err := r.RenderDigest(Digest{Members: members[1:]})
				if err != nil {
					t.Fatal(err)
				}
				var dec mime.WordDecoder
				got, err := dec.DecodeHeader(parseDigest(t, e.Data).header.Get("Subject"))
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff([]string{tc.want, tc.want}, []string{got, r.RenderSubject(recs[1])}); diff != "" {
					t.Errorf("subject (-want +[digest, single email]):\n%s", diff)
				}
			})
		}
	}
}

// TestDigestHTMLBounded: however many and however big the records, the HTML part stays
// bounded (three records in full, each within the single email's bounds, and a compact table
// of short cells), while the NDJSON part holds every byte.
func TestDigestHTMLBounded(t *testing.T) {
	r := mustRenderer(t, testConfig(true))
	big := strings.Repeat("0123456789", 20<<10) // 200 KB
	var d Digest
	for i := range 40 {
		fields := map[string]any{"i": int64(i), "big": big + fmt.Sprint(i)}
		for k := range 300 {
			fields[fmt.Sprintf("k%03d", k)] = fmt.Sprintf("%d-%s", i, big[:1000])
		}
		e := mustRender(t, r, Record{Tag: "t", Time: fixedTime, Fields: fields})
		d.Members = append(d.Members, DigestMember{MessageID: e.MessageID, Tag: "t", Time: fixedTime, Payload: e.Payload})
	}
	e, err := r.RenderDigest(d)
	if err != nil {
		t.Fatal(err)
	}
	p := parseDigest(t, e.Data)
	if want := ndjsonSize(d.Members); len(p.ndjson) != want {
		t.Errorf("NDJSON part holds %d bytes, want %d", len(p.ndjson), want)
	}
	const bound = DigestHTMLFull*2*MaxHTMLTableSize + DigestHTMLRows*(1+DigestHTMLColumns)*4*digestCellRunes + 64<<10
	if len(p.html) > bound {
		t.Errorf("HTML part is %d bytes for %d bytes of records, want at most %d", len(p.html), len(p.ndjson), bound)
	}
	t.Logf("%d records, %d bytes of NDJSON, %d bytes of HTML", len(d.Members), len(p.ndjson), len(p.html))
}
