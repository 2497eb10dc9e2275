package output

import (
	"bytes"
	"mime"
	"net/mail"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// FuzzRender renders records built from arbitrary input: Render must not panic, the message
// must parse, carry exactly our headers and recipients, decode to the payload and verify.
func FuzzRender(f *testing.F) {
	f.Add("lc.detections", "cat", []byte("Suspicious Shell"), "LC Detection - ", false)
	f.Add("a.b", "x", []byte("x\r\nBcc: evil@attacker.example\r\n\r\nbody"), "S\r\nX-Evil: 1", true)
	f.Add("t\x00\xff", "\xff\xfe", []byte("\xff\xfe\x00\u2028=?UTF-8?q?x?="), "检测 🚨", true)
	f.Add("", "", []byte{}, "", false)
	f.Add("t", "k", bytes.Repeat([]byte("word "), 80), "=?", false)
	f.Add("t", "k", []byte("<script>alert(1)</script>"), "", true)
	f.Fuzz(func(t *testing.T, tag, k string, v []byte, subj string, readable bool) {
		cfg := withSubject(readable, lit(subj), key(k), lit(" "), tagTok(), tagPartTok(1), key("n", k))
		r := mustRenderer(t, cfg)
		rec := Record{Tag: tag, Time: fixedTime, Fields: map[string]any{
			"k": string(v),
			k:   v,
			"n": map[any]any{k: []any{string(v), int64(len(v))}, int64(len(k)): v},
		}}
		e, err := r.Render(rec)
		if err != nil {
			t.Fatalf("Render: %v", err)
		}
		msg, err := mail.ReadMessage(bytes.NewReader(e.Data))
		if err != nil {
			t.Fatalf("parse: %v", err)
		}
		var keys []string
		for h, vs := range msg.Header {
			for range vs {
				keys = append(keys, h)
			}
		}
		slices.Sort(keys)
		if diff := cmp.Diff(headerKeys(readable, true), keys); diff != "" {
			t.Fatalf("header set (-want +got):\n%s", diff)
		}
		for _, h := range []string{"To", "Cc"} {
			list, err := msg.Header.AddressList(h)
			if err != nil || len(list) != map[string]int{"To": 2, "Cc": 1}[h] {
				t.Fatalf("%s: %v %v", h, list, err)
			}
		}
		if diff := cmp.Diff([]string{"soc@corp.com", "oncall@corp.com", "jd@corp.com", "audit@corp.com"}, e.Recipients); diff != "" {
			t.Fatalf("Recipients (-want +got):\n%s", diff)
		}
		var dec mime.WordDecoder
		subject, err := dec.DecodeHeader(msg.Header.Get("Subject"))
		if err != nil || subject != r.RenderSubject(rec) {
			t.Fatalf("Subject %q (%v), want %q", subject, err, r.RenderSubject(rec))
		}
		p := parseEmail(t, e.Data)
		want, err := Payload(rec, cfg.JSONDateKey)
		if err != nil || !bytes.Equal(want, p.text) {
			t.Fatalf("text part %q, want %q (%v)", p.text, want, err)
		}
		if err := Verify(bytes.NewReader(e.Data), []byte(testSecret)); err != nil {
			t.Fatalf("Verify: %v", err)
		}
		checkLines(t, e.Data)
		if readable {
			checkReadable(t, p.html, p.text, r.RenderSubject(rec))
		}
	})
}

// FuzzReadableHTML renders records of arbitrary keys and values in the readable format and
// parses the HTML part as a browser would (golang.org/x/net/html): its text must show every
// value of the record where the format puts it, and no markup but the format's own.
func FuzzReadableHTML(f *testing.F) {
	f.Add("COMMAND_LINE", []byte(`C:\Windows\System32\cmd.exe /c "echo <b>&amp;</b>"`), "routing", int64(3), true)
	f.Add("<script>", []byte("</td></tr></table><script>alert(1)</script>"), "a\"b", int64(-1), false)
	f.Add("k\x00", []byte("\x00\r\n\r x \xff\xfe"), "\u202e", int64(0), true)
	f.Add("rtl", []byte("invoice\u202egpj.exe \u200b مرحبا"), "<!--", int64(1<<40), false)
	f.Add("", []byte(""), "", int64(0), false)
	f.Add("camelCaseKey.with-dots_and_UNDERSCORES", []byte("&lt;not markup&gt; ]]> <![CDATA[ x"), "x", int64(7), true)
	f.Fuzz(func(t *testing.T, k string, v []byte, k2 string, n int64, flag bool) {
		r := mustRenderer(t, withSubject(true, lit("S "), key(k), lit(" "), key("n", k2)))
		rec := Record{Tag: k2, Time: fixedTime, Fields: map[string]any{
			k:   v,
			"s": string(v),
			"n": map[any]any{k2: []any{string(v), n, flag, nil}, k: map[string]any{k2: v, "e": []any{}}},
			"l": []any{map[string]any{k: n}, v, []any{v, n}, map[any]any{}},
			"f": float64(n) / 7,
		}}
		e, err := r.Render(rec)
		if err != nil {
			t.Fatalf("Render: %v", err)
		}
		p := parseEmail(t, e.Data)
		checkReadable(t, p.html, p.text, r.RenderSubject(rec))
	})
}

// readableTags are the only elements a readable HTML part may hold.
var readableTags = map[string]bool{"html": true, "head": true, "meta": true, "title": true,
	"body": true, "div": true, "h1": true, "p": true, "table": true, "tbody": true, "tr": true,
	"th": true, "td": true, "span": true, "ul": true, "li": true, "wbr": true}

// checkReadable parses the HTML part doc as a browser would and checks it against the JSON
// payload: exactly the rows the payload must give, in order, no element from the data, and
// the subject as title and heading.
func checkReadable(t *testing.T, doc string, payload []byte, subject string) {
	t.Helper()
	got := parseReadable(t, doc)
	if diff := cmp.Diff(wantRows(t, payload), got.Rows); diff != "" {
		t.Fatalf("rows shown (-want +got):\n%s\n%s", diff, doc)
	}
	if got.More != "" {
		t.Fatalf("values left out of a small record: %q", got.More)
	}
	for _, tag := range got.Tags {
		if !readableTags[tag] {
			t.Fatalf("element <%s> in the HTML part:\n%s", tag, doc)
		}
	}
	want := shownString(subject)
	if got.Title != want || got.Heading != want {
		t.Fatalf("title %q and heading %q, want %q", got.Title, got.Heading, want)
	}
}
