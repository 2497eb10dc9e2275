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
	})
}
