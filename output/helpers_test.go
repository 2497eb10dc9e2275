package output

import (
	"bytes"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/smtpout/smtpout/config"
)

// testSecret is the secret_key of every test configuration.
const testSecret = "this-is-my-secret-shared-key"

// fixedTime is the record time of the golden emails.
var fixedTime = time.Date(2026, 11, 27, 10, 0, 0, 123456789, time.UTC)

// testConfig is a hand-built configuration like the seed's example.
func testConfig(readable bool) config.Config {
	return config.Config{
		Host:        "smtp.corp.com",
		Port:        465,
		To:          []mail.Address{{Name: "SOC", Address: "soc@corp.com"}, {Address: "oncall@corp.com"}},
		Cc:          []mail.Address{{Name: "Doe, John", Address: "jd@corp.com"}},
		Bcc:         []mail.Address{{Address: "audit@corp.com"}},
		From:        mail.Address{Name: "LimaCharlie", Address: "lc@Corp.com"},
		SecretKey:   testSecret,
		Readable:    readable,
		JSONDateKey: config.DefaultJSONDateKey,
		Subject: config.Template{Raw: "LC Detection - $cat on $detect['routing']['hostname']", Tokens: []config.Token{
			{Kind: config.Literal, Text: "LC Detection - "},
			{Kind: config.KeyToken, Path: []string{"cat"}},
			{Kind: config.Literal, Text: " on "},
			{Kind: config.KeyToken, Path: []string{"detect", "routing", "hostname"}},
		}},
	}
}

// detection is the nested detection record of issue 3, with values as Fluent Bit decodes them
// ([]byte strings, map[any]any nested maps).
func detection() Record {
	return Record{
		Tag:  "lc.detections",
		Time: fixedTime,
		Fields: map[string]any{
			"cat": []byte("Suspicious Shell"),
			"detect": map[any]any{
				"event":   map[any]any{"FILE_PATH": []byte("/bin/sh")},
				"routing": map[any]any{"hostname": []byte("web-1")},
			},
		},
	}
}

// detectionJSON is the payload detection() must give, written by hand.
const detectionJSON = `{"cat":"Suspicious Shell","date":"2026-11-27T10:00:00.123456789Z",` +
	`"detect":{"event":{"FILE_PATH":"/bin/sh"},"routing":{"hostname":"web-1"}}}`

// mustRenderer builds a Renderer or fails the test.
func mustRenderer(t testing.TB, cfg config.Config) *Renderer {
	t.Helper()
	r, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return r
}

// mustRender renders rec or fails the test.
func mustRender(t testing.TB, r *Renderer, rec Record) *Email {
	t.Helper()
	e, err := r.Render(rec)
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	return e
}

// parsed is an email taken apart with the standard library only.
type parsed struct {
	header  mail.Header
	keys    []string // canonical header names, sorted, duplicates kept
	subject string   // decoded
	text    []byte   // decoded text/plain content
	html    string   // decoded text/html content ("" in machine format)
	parts   []string // media types of the parts
}

// parseEmail parses data with net/mail and mime/multipart, independently of Verify.
func parseEmail(t testing.TB, data []byte) parsed {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("mail.ReadMessage: %v", err)
	}
	p := parsed{header: msg.Header}
	for k, vs := range msg.Header {
		for range vs {
			p.keys = append(p.keys, k)
		}
	}
	slices.Sort(p.keys)
	var dec mime.WordDecoder
	if p.subject, err = dec.DecodeHeader(msg.Header.Get("Subject")); err != nil {
		t.Fatalf("decode Subject %q: %v", msg.Header.Get("Subject"), err)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		t.Fatalf("Content-Type: %v", err)
	}
	if mt == "text/plain" {
		p.parts = []string{mt}
		p.text = decodeQP(t, msg.Header.Get("Content-Transfer-Encoding"), msg.Body)
		return p
	}
	if mt != "multipart/alternative" {
		t.Fatalf("Content-Type %q, want text/plain or multipart/alternative", mt)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		part, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("NextRawPart: %v", err)
		}
		pmt, _, err := mime.ParseMediaType(part.Header.Get("Content-Type"))
		if err != nil {
			t.Fatalf("part Content-Type: %v", err)
		}
		p.parts = append(p.parts, pmt)
		body := decodeQP(t, part.Header.Get("Content-Transfer-Encoding"), part)
		switch pmt {
		case "text/plain":
			p.text = body
		case "text/html":
			p.html = string(body)
		}
	}
	return p
}

// decodeQP reads a quoted-printable body.
func decodeQP(t testing.TB, cte string, r io.Reader) []byte {
	t.Helper()
	if cte != "quoted-printable" {
		t.Fatalf("Content-Transfer-Encoding %q, want quoted-printable", cte)
	}
	b, err := io.ReadAll(quotedprintable.NewReader(r))
	if err != nil {
		t.Fatalf("quoted-printable: %v", err)
	}
	return b
}

// checkLines fails when a line of data does not end in CRLF, or exceeds 998 octets (78 for
// header lines unless allowLong), or the message does not end in CRLF.
func checkLines(t testing.TB, data []byte) {
	t.Helper()
	if !bytes.HasSuffix(data, []byte("\r\n")) {
		t.Errorf("message does not end in CRLF")
	}
	inHeader := true
	for i, line := range strings.Split(strings.TrimSuffix(string(data), "\r\n"), "\r\n") {
		if strings.ContainsAny(line, "\r\n") {
			t.Errorf("line %d has a bare CR or LF: %q", i+1, line)
		}
		if line == "" {
			inHeader = false
		}
		limit := 998
		if !inHeader {
			limit = 76
		}
		if len(line) > limit {
			t.Errorf("line %d is %d octets (limit %d): %.80q...", i+1, len(line), limit, line)
		}
	}
}

// headerKeys is the exact header set of an email in each format, sorted.
func headerKeys(readable, cc bool) []string {
	keys := []string{"Content-Type", "Date", "From", "Message-Id", "Mime-Version", "Subject",
		"To", "X-Fluent-Tag", "X-Smtpout-Signature"}
	if !readable {
		keys = append(keys, "Content-Transfer-Encoding")
	}
	if cc {
		keys = append(keys, "Cc")
	}
	slices.Sort(keys)
	return keys
}
