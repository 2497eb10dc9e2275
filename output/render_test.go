package output

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"math"
	"mime"
	"net/mail"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/smtpout/smtpout/config"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// TestGolden compares both formats with testdata/*.eml and checks each file independently:
// headers, addresses, Message-ID, signature and decoded body.
func TestGolden(t *testing.T) {
	for _, tc := range []struct {
		file     string
		readable bool
	}{
		{"machine.eml", false},
		{"readable.eml", true},
	} {
		t.Run(tc.file, func(t *testing.T) {
			r := mustRenderer(t, testConfig(tc.readable))
			e := mustRender(t, r, detection())
			path := filepath.Join("testdata", tc.file)
			if *update {
				if err := os.WriteFile(path, e.Data, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			golden, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./output -run TestGolden -update)", err)
			}
			if diff := cmp.Diff(string(golden), string(e.Data)); diff != "" {
				t.Errorf("Render() differs from %s (-golden +got):\n%s", path, diff)
			}
			// Independent checks of the golden file itself.
			checkLines(t, golden)
			p := parseEmail(t, golden)
			if diff := cmp.Diff(headerKeys(tc.readable, true), p.keys); diff != "" {
				t.Errorf("header set (-want +got):\n%s", diff)
			}
			h := p.header
			date, err := h.Date()
			if err != nil || !date.Equal(fixedTime.Truncate(time.Second)) {
				t.Errorf("Date = %v, %v; want %v", date, err, fixedTime.Truncate(time.Second))
			}
			want := map[string]string{
				"Date":                      "Fri, 27 Nov 2026 10:00:00 +0000",
				"Mime-Version":              "1.0",
				"X-Fluent-Tag":              "lc.detections",
				"X-Smtpout-Signature":       "sha256=" + hmacHex(testSecret, detectionJSON),
				"Content-Transfer-Encoding": "",
			}
			if !tc.readable {
				want["Content-Type"] = "text/plain; charset=UTF-8"
				want["Content-Transfer-Encoding"] = "quoted-printable"
			}
			for k, v := range want {
				if got := h.Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			if p.subject != "LC Detection - Suspicious Shell on web-1" {
				t.Errorf("Subject = %q", p.subject)
			}
			addrs := func(key string) []string {
				list, err := h.AddressList(key)
				if err != nil {
					t.Fatalf("%s: %v", key, err)
				}
				var out []string
				for _, a := range list {
					out = append(out, a.Name+" <"+a.Address+">")
				}
				return out
			}
			if diff := cmp.Diff([]string{"LimaCharlie <lc@Corp.com>"}, addrs("From")); diff != "" {
				t.Errorf("From (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]string{"SOC <soc@corp.com>", " <oncall@corp.com>"}, addrs("To")); diff != "" {
				t.Errorf("To (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]string{"Doe, John <jd@corp.com>"}, addrs("Cc")); diff != "" {
				t.Errorf("Cc (-want +got):\n%s", diff)
			}
			if bytes.Contains(bytes.ToLower(golden), []byte("audit@corp.com")) {
				t.Errorf("the Bcc address appears in the message")
			}
			sum := sha256.Sum256([]byte("lc.detections\x00" + fmt.Sprint(fixedTime.UnixNano()) + "\x00" + detectionJSON))
			wantID := hex.EncodeToString(sum[:16]) + "@corp.com"
			if got := h.Get("Message-Id"); got != "<"+wantID+">" {
				t.Errorf("Message-ID = %q, want <%s>", got, wantID)
			}
			if diff := cmp.Diff(detectionJSON, string(p.text)); diff != "" {
				t.Errorf("text/plain content (-want +got):\n%s", diff)
			}
			if tc.readable {
				if diff := cmp.Diff([]string{"text/plain", "text/html"}, p.parts); diff != "" {
					t.Errorf("parts (-want +got):\n%s", diff)
				}
				h := parseReadable(t, p.html)
				wantRows := []shownRow{
					{Key: "cat", Values: []string{"Suspicious Shell"}},
					{Key: "date", Values: []string{"2026-11-27T10:00:00.123456789Z"}},
					{Title: "detect › event", Key: "FILE_PATH", Values: []string{"/bin/sh"}},
					{Title: "detect › routing", Key: "hostname", Values: []string{"web-1"}},
				}
				if diff := cmp.Diff(wantRows, h.Rows); diff != "" {
					t.Errorf("HTML rows (-want +got):\n%s", diff)
				}
				if h.Title != p.subject || h.Heading != p.subject {
					t.Errorf("HTML title %q and heading %q, want %q", h.Title, h.Heading, p.subject)
				}
				if !strings.Contains(p.html, ">Tag lc.detections &middot; 2026-11-27T10:00:00.123456789Z<") {
					t.Errorf("HTML part lacks the tag and time")
				}
				if strings.Contains(p.html, "<style") || strings.Contains(p.html, "<script") {
					t.Errorf("HTML part has a <style> or <script> element")
				}
			}
			// The Email fields agree with the message.
			if e.MessageID != wantID || e.From != "lc@Corp.com" || e.PayloadSize != len(detectionJSON) ||
				e.Signature != h.Get("X-Smtpout-Signature") {
				t.Errorf("Email = {%q %q %d %q}", e.MessageID, e.From, e.PayloadSize, e.Signature)
			}
			if diff := cmp.Diff([]string{"soc@corp.com", "oncall@corp.com", "jd@corp.com", "audit@corp.com"}, e.Recipients); diff != "" {
				t.Errorf("Recipients (-want +got):\n%s", diff)
			}
			if err := Verify(bytes.NewReader(golden), []byte(testSecret)); err != nil {
				t.Errorf("Verify: %v", err)
			}
		})
	}
}

// hmacHex is the signature computed independently of the package.
func hmacHex(secret, payload string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(payload))
	return hex.EncodeToString(m.Sum(nil))
}

// withSubject returns the test configuration with a subject of the given tokens.
func withSubject(readable bool, toks ...config.Token) config.Config {
	cfg := testConfig(readable)
	cfg.Subject = config.Template{Raw: "test", Tokens: toks}
	return cfg
}

func lit(s string) config.Token     { return config.Token{Kind: config.Literal, Text: s} }
func key(p ...string) config.Token  { return config.Token{Kind: config.KeyToken, Path: p} }
func tagPartTok(n int) config.Token { return config.Token{Kind: config.TagPartToken, Index: n} }
func tagTok() config.Token          { return config.Token{Kind: config.TagToken} }

func TestSubject(t *testing.T) {
	fields := map[string]any{
		"cat":   []byte("Shell"),
		"str":   "plain",
		"n":     int64(-42),
		"u":     uint64(18446744073709551615),
		"f":     1.5,
		"big":   1e21,
		"nan":   math.NaN(),
		"yes":   true,
		"nil":   nil,
		"when":  time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("X", 3600)),
		"arr":   []any{int64(1), []byte("two"), map[string]any{"z": 1, "a": 2}},
		"obj":   map[any]any{"b": []byte("x"), "a": int64(1), int64(7): "seven"},
		"html":  "<b>&amp;</b>",
		"empty": "",
		"detect": map[any]any{
			"routing": map[any]any{"hostname": []byte("web-1")},
			"list":    []any{"first", "second"},
			"s":       map[string]any{"k": "v"},
			int64(3):  "three",
		},
	}
	for _, tc := range []struct {
		name string
		toks []config.Token
		tag  string
		want string
	}{
		{"default", nil, "lc.det", "Fluent Bit: lc.det"},
		{"literal only", []config.Token{lit("Alert")}, "t", "Alert"},
		{"$TAG", []config.Token{lit("["), tagTok(), lit("]")}, "a.b.c", "[a.b.c]"},
		{"$TAG[0]", []config.Token{tagPartTok(0)}, "a.b.c", "a"},
		{"$TAG[2]", []config.Token{tagPartTok(2)}, "a.b.c", "c"},
		{"$TAG[3] out of range", []config.Token{lit("x"), tagPartTok(3), lit("y")}, "a.b.c", "xy"},
		{"$TAG[-1]", []config.Token{lit("x"), tagPartTok(-1)}, "a.b.c", "x"},
		{"$TAG[1] empty part", []config.Token{lit("<"), tagPartTok(1), lit(">")}, "a..c", "<>"},
		{"[]byte value", []config.Token{key("cat")}, "t", "Shell"},
		{"string value", []config.Token{key("str")}, "t", "plain"},
		{"int64", []config.Token{key("n")}, "t", "-42"},
		{"uint64", []config.Token{key("u")}, "t", "18446744073709551615"},
		{"float", []config.Token{key("f"), lit(" "), key("big")}, "t", "1.5 1e+21"},
		{"NaN", []config.Token{key("nan")}, "t", "NaN"},
		{"bool", []config.Token{key("yes")}, "t", "true"},
		{"nil value", []config.Token{lit("a"), key("nil"), lit("b")}, "t", "ab"},
		{"time", []config.Token{key("when")}, "t", "2026-01-02T02:04:05.000000006Z"},
		{"array as compact JSON", []config.Token{key("arr")}, "t", `[1,"two",{"a":2,"z":1}]`},
		{"map as sorted JSON", []config.Token{key("obj")}, "t", `{"7":"seven","a":1,"b":"x"}`},
		{"no HTML escaping", []config.Token{key("html")}, "t", "<b>&amp;</b>"},
		{"nested map[any]any", []config.Token{key("detect", "routing", "hostname")}, "t", "web-1"},
		{"nested map[string]any", []config.Token{key("detect", "s", "k")}, "t", "v"},
		{"array index", []config.Token{key("detect", "list", "1")}, "t", "second"},
		{"array index out of range", []config.Token{lit("x"), key("detect", "list", "9")}, "t", "x"},
		{"integer map key", []config.Token{key("detect", "3")}, "t", "three"},
		{"missing key", []config.Token{lit("["), key("nope"), lit("]")}, "t", "[]"},
		{"missing nested key", []config.Token{lit("["), key("detect", "nope", "x"), lit("]")}, "t", "[]"},
		{"path through a scalar", []config.Token{lit("["), key("str", "x"), lit("]")}, "t", "[]"},
		{"empty result", []config.Token{key("empty")}, "t", ""},
		{"surrounding spaces trimmed", []config.Token{lit("  a  b  ")}, "t", "a  b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(false)
			cfg.Subject = config.Template{Tokens: tc.toks}
			r := mustRenderer(t, cfg)
			rec := Record{Tag: tc.tag, Time: fixedTime, Fields: fields}
			if diff := cmp.Diff(tc.want, r.RenderSubject(rec)); diff != "" {
				t.Errorf("RenderSubject (-want +got):\n%s", diff)
			}
			p := parseEmail(t, mustRender(t, r, rec).Data)
			if diff := cmp.Diff(tc.want, p.subject); diff != "" {
				t.Errorf("decoded Subject header (-want +got):\n%s", diff)
			}
		})
	}
}

// TestSubjectInjection puts CR, LF, TAB and other control characters in record values used in
// the subject: the message must keep exactly our headers and recipients.
func TestSubjectInjection(t *testing.T) {
	for _, tc := range []struct {
		name  string
		value any
		tag   string
		want  string
	}{
		{"CRLF header", "x\r\nBcc: evil@attacker.example\r\nX-Evil: 1", "t", "x  Bcc: evil@attacker.example  X-Evil: 1"},
		{"LF only", []byte("x\nTo: evil@attacker.example"), "t", "x To: evil@attacker.example"},
		{"CR only", "x\rCc: evil@attacker.example", "t", "x Cc: evil@attacker.example"},
		{"blank line starts body", "x\r\n\r\nbody", "t", "x    body"},
		{"TAB and NUL", "a\tb\x00c", "t", "a b c"},
		{"other C0, DEL, C1", "a\x01\x1b[31mb\x7fc\u0085d\u009be", "t", "a  [31mb c d e"},
		{"U+2028 and U+2029", "a\u2028b\u2029c", "t", "a b c"},
		{"bidi overrides", "a\u202eb\u2066c\u2069d", "t", "a b c d"},
		{"invalid UTF-8", "a\xffb", "t", "a\uFFFDb"},
		{"encoded-word lookalike", "=?UTF-8?q?=0D=0AX-Evil:_1?=", "t", "=?UTF-8?q?=0D=0AX-Evil:_1?="},
		{"control chars in tag", "v", "lc.\r\nBcc: evil@attacker.example", "v"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, readable := range []bool{false, true} {
				r := mustRenderer(t, withSubject(readable, lit("S "), key("v"), lit(" "), tagTok()))
				rec := Record{Tag: tc.tag, Time: fixedTime, Fields: map[string]any{"v": tc.value}}
				e := mustRender(t, r, rec)
				checkLines(t, e.Data)
				p := parseEmail(t, e.Data)
				if diff := cmp.Diff(headerKeys(readable, true), p.keys); diff != "" {
					t.Errorf("header set (-want +got):\n%s", diff)
				}
				wantTag := string(sanitize(nil, tc.tag, MaxSubjectRunes))
				if diff := cmp.Diff("S "+tc.want+" "+wantTag, p.subject); diff != "" {
					t.Errorf("Subject (-want +got):\n%s", diff)
				}
				tag, err := new(mimeDecoder).DecodeHeader(p.header.Get("X-Fluent-Tag"))
				if err != nil || tag != wantTag {
					t.Errorf("X-Fluent-Tag = %q, %v; want %q", tag, err, wantTag)
				}
				if bytes.Contains(e.Data, []byte("evil@attacker.example>")) {
					t.Errorf("an attacker address became an address")
				}
				for _, k := range []string{"To", "Cc"} {
					list, err := p.header.AddressList(k)
					if err != nil {
						t.Fatal(err)
					}
					for _, a := range list {
						if strings.Contains(a.Address, "attacker") {
							t.Errorf("%s has %q", k, a.Address)
						}
					}
				}
				if diff := cmp.Diff([]string{"soc@corp.com", "oncall@corp.com", "jd@corp.com", "audit@corp.com"}, e.Recipients); diff != "" {
					t.Errorf("Recipients (-want +got):\n%s", diff)
				}
				if err := Verify(bytes.NewReader(e.Data), []byte(testSecret)); err != nil {
					t.Errorf("Verify: %v", err)
				}
			}
		})
	}
}

func TestSubjectUnicodeAndLength(t *testing.T) {
	long := strings.Repeat("Détection sur l'hôte web-1 ", 20) // > 255 runes, non-ASCII
	for _, tc := range []struct {
		name    string
		value   string
		want    string
		encoded bool
	}{
		{"accents", "Détection: hôte «web-1»", "Détection: hôte «web-1»", true},
		{"CJK and emoji", "检测到可疑 shell 🚨", "检测到可疑 shell 🚨", true},
		{"capped at 255 runes", long, strings.TrimRight(string([]rune(long)[:255]), " "), true},
		{"long ASCII folded", strings.Repeat("word ", 60), strings.TrimSpace(strings.Repeat("word ", 51)), false},
		{"long ASCII capped, no fold point: encoded", strings.Repeat("x", 400), strings.Repeat("x", 255), true},
		{"double spaces kept: encoded", strings.Repeat("ab  ", 40), strings.TrimSpace(strings.Repeat("ab  ", 40)), true},
		{"ASCII at 78", strings.Repeat("y", 78-len("Subject: ")), strings.Repeat("y", 78-len("Subject: ")), false},
		{"ASCII at 79", strings.Repeat("y", 79-len("Subject: ")), strings.Repeat("y", 79-len("Subject: ")), true},
		{"4-byte runes at the cap", strings.Repeat("🚨", 300), strings.Repeat("🚨", 255), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := mustRenderer(t, withSubject(false, key("v")))
			e := mustRender(t, r, Record{Tag: "t", Time: fixedTime, Fields: map[string]any{"v": tc.value}})
			checkLines(t, e.Data)
			p := parseEmail(t, e.Data)
			if diff := cmp.Diff(tc.want, p.subject); diff != "" {
				t.Errorf("decoded Subject (-want +got):\n%s", diff)
			}
			if !utf8.ValidString(p.subject) || utf8.RuneCountInString(p.subject) > MaxSubjectRunes {
				t.Errorf("Subject has %d runes or invalid UTF-8", utf8.RuneCountInString(p.subject))
			}
			raw := rawHeader(e.Data, "Subject")
			if got := strings.Contains(raw, "=?UTF-8?q?"); got != tc.encoded {
				t.Errorf("Subject encoded = %v, want %v: %q", got, tc.encoded, raw)
			}
			for _, line := range strings.Split(raw, "\r\n") {
				if len(line) > 78 {
					t.Errorf("Subject line of %d octets: %q", len(line), line)
				}
			}
		})
	}
}

// rawHeader returns the raw (folded) lines of header name, without its final CRLF.
func rawHeader(data []byte, name string) string {
	head, _, _ := strings.Cut(string(data), "\r\n\r\n")
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `: [^\r\n]*(\r\n[ \t][^\r\n]*)*`)
	return re.FindString(head)
}

func TestFoldedRecipients(t *testing.T) {
	cfg := testConfig(false)
	cfg.To = nil
	for i := range 40 {
		cfg.To = append(cfg.To, mail.Address{Name: fmt.Sprintf("Analyst %d", i), Address: fmt.Sprintf("analyst%d@corp.com", i)})
	}
	cfg.To = append(cfg.To, mail.Address{Name: "Jürgen Müller", Address: "jm@corp.com"})
	e := mustRender(t, mustRenderer(t, cfg), detection())
	checkLines(t, e.Data)
	raw := rawHeader(e.Data, "To")
	for _, line := range strings.Split(raw, "\r\n") {
		if len(line) > 78 {
			t.Errorf("To line of %d octets: %q", len(line), line)
		}
	}
	list, err := parseEmail(t, e.Data).header.AddressList("To")
	if err != nil {
		t.Fatal(err)
	}
	var got []mail.Address
	for _, a := range list {
		got = append(got, *a)
	}
	if diff := cmp.Diff(cfg.To, got); diff != "" {
		t.Errorf("To (-want +got):\n%s", diff)
	}
}

func TestNewErrors(t *testing.T) {
	cfg := testConfig(false)
	cfg.From = mail.Address{}
	cfg.To = nil
	cfg.SecretKey = ""
	_, err := New(cfg)
	if err == nil {
		t.Fatal("New accepted a config without from, to and secret")
	}
	for _, k := range []string{"from_email", "dest_email", "secret_key"} {
		if !strings.Contains(err.Error(), k) {
			t.Errorf("error %q does not name %s", err, k)
		}
	}
	long := testConfig(false)
	long.Cc = []mail.Address{{Name: strings.Repeat("n", 1000), Address: "x@corp.com"}}
	if _, err := New(long); err == nil || !strings.Contains(err.Error(), "cc_email") {
		t.Errorf("New with a 1000-char name: %v, want an error naming cc_email", err)
	}
	leak := testConfig(false)
	leak.SecretKey = "super-secret-value"
	leak.To = nil
	if _, err := New(leak); err == nil || strings.Contains(err.Error(), "super-secret-value") {
		t.Errorf("New error %v (must exist and not contain the secret)", err)
	}
}

func TestMessageIDDomain(t *testing.T) {
	for _, tc := range []struct{ from, want string }{
		{"lc@corp.com", "corp.com"},
		{"lc@Mail.Corp.COM", "mail.corp.com"},
		{"lc@bücher.example", fallbackDomain},
		{"lc@[192.0.2.1]", fallbackDomain},
		{"lc@", fallbackDomain},
		{"noat", fallbackDomain},
	} {
		if got := msgIDDomain(tc.from); got != tc.want {
			t.Errorf("msgIDDomain(%q) = %q, want %q", tc.from, got, tc.want)
		}
	}
}

func TestDeterministic(t *testing.T) {
	r := mustRenderer(t, testConfig(true))
	a := mustRender(t, r, detection())
	b := mustRender(t, r, detection())
	if !bytes.Equal(a.Data, b.Data) {
		t.Errorf("rendering the same record twice gave different bytes")
	}
	other := detection()
	other.Time = other.Time.Add(time.Nanosecond)
	c := mustRender(t, r, other)
	if c.MessageID == a.MessageID {
		t.Errorf("records 1ns apart share Message-ID %s", a.MessageID)
	}
	other = detection()
	other.Tag = "lc.other"
	if d := mustRender(t, r, other); d.MessageID == a.MessageID {
		t.Errorf("records with different tags share Message-ID %s", a.MessageID)
	}
}

func TestHTMLEscaping(t *testing.T) {
	r := mustRenderer(t, withSubject(true, lit("<script>alert('s')</script> "), key("x")))
	rec := Record{Tag: "t<script>", Time: fixedTime, Fields: map[string]any{
		"x":                            "<script>alert(1)</script>",
		"<img src=x onerror=alert(2)>": "k",
		"nested":                       map[string]any{"a\"b": []any{"<i>&amp;</i>", nil}},
		"file":                         "invoice\u202Egpj.exe",
		"nul":                          "a\x00b\rc",
	}}
	e := mustRender(t, r, rec)
	p := parseEmail(t, e.Data)
	if strings.Contains(p.html, "<script") || strings.Contains(p.html, "<img") || strings.Contains(p.html, "<i>") {
		t.Errorf("unescaped markup in HTML:\n%s", p.html)
	}
	for _, s := range []string{"&lt;script&gt;alert(1)&lt;/script&gt;", "&lt;img src=x onerror=alert(2)&gt;",
		"&lt;i&gt;&amp;amp;&lt;/i&gt;", "t&lt;script&gt;", "<title>&lt;script&gt;alert('s')&lt;/script&gt; &lt;script&gt;alert(1)&lt;/script&gt;</title>"} {
		if !strings.Contains(p.html, s) {
			t.Errorf("HTML lacks %q", s)
		}
	}
	// As a browser reads it: every key and value as text, the bidi override shown, not obeyed.
	want := []shownRow{
		{Key: "<img src=x onerror=alert(2)>", Values: []string{"k"}},
		{Key: "date", Values: []string{"2026-11-27T10:00:00.123456789Z"}},
		{Key: "file", Values: []string{"invoice[U+202E]gpj.exe"}},
		{Key: "nul", Values: []string{"a\uFFFDb\rc"}},
		{Key: "x", Values: []string{"<script>alert(1)</script>"}},
		{Title: "nested", Key: `a"b`, Values: []string{"<i>&amp;</i>", "null"}},
	}
	if diff := cmp.Diff(want, parseReadable(t, p.html).Rows); diff != "" {
		t.Errorf("HTML rows (-want +got):\n%s", diff)
	}
	if !strings.Contains(string(p.text), `"x":"<script>alert(1)</script>"`) {
		t.Errorf("JSON part HTML-escaped: %s", p.text)
	}
}

func TestLargeField(t *testing.T) {
	big := strings.Repeat("A long line of log output, é and all; ", 200<<10/40)
	for _, readable := range []bool{false, true} {
		r := mustRenderer(t, testConfig(readable))
		e := mustRender(t, r, Record{Tag: "t", Time: fixedTime, Fields: map[string]any{"cat": "big", "blob": big}})
		checkLines(t, e.Data)
		p := parseEmail(t, e.Data)
		want, err := Payload(Record{Time: fixedTime, Fields: map[string]any{"cat": "big", "blob": big}}, "date")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(want, p.text) || !bytes.Contains(p.text, []byte(big)) {
			t.Errorf("readable=%v: JSON part is not the whole payload (%d bytes, want %d)", readable, len(p.text), len(want))
		}
		if readable {
			marker := fmt.Sprintf("… (truncated, %d bytes total)", len(big))
			if !strings.Contains(p.html, marker) {
				t.Errorf("HTML lacks the marker %q", marker)
			}
			if len(p.html) > 64<<10 {
				t.Errorf("HTML part is %d bytes; a big value should be shortened", len(p.html))
			}
		}
		if err := Verify(bytes.NewReader(e.Data), []byte(testSecret)); err != nil {
			t.Errorf("Verify: %v", err)
		}
	}
}

func TestTooLargeOrDeep(t *testing.T) {
	r := mustRenderer(t, testConfig(false))
	huge := strings.Repeat("x", MaxPayloadSize)
	_, err := r.Render(Record{Tag: "big.tag", Time: fixedTime, Fields: map[string]any{"a": huge}})
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), `"big.tag"`) ||
		!strings.Contains(err.Error(), "2026-11-27T10:00:00.123456789Z") {
		t.Errorf("Render(huge) error = %v, want ErrTooLarge naming tag and time", err)
	}
	if err != nil && len(err.Error()) > 200 {
		t.Errorf("error carries record data: %d bytes", len(err.Error()))
	}
	// Many small values that add up.
	many := make([]any, MaxPayloadSize/8)
	for i := range many {
		many[i] = "\x01\x02"
	}
	if _, err := r.Render(Record{Tag: "t", Time: fixedTime, Fields: map[string]any{"a": many}}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Render(many) error = %v, want ErrTooLarge", err)
	}
	var deep any = "leaf"
	for range MaxDepth + 1 {
		deep = map[string]any{"d": deep}
	}
	if _, err := r.Render(Record{Tag: "t", Time: fixedTime, Fields: map[string]any{"a": deep}}); !errors.Is(err, ErrTooDeep) {
		t.Errorf("Render(deep) error = %v, want ErrTooDeep", err)
	}
	cyclic := map[string]any{}
	cyclic["self"] = cyclic
	if _, err := r.Render(Record{Tag: "t", Time: fixedTime, Fields: cyclic}); !errors.Is(err, ErrTooDeep) {
		t.Errorf("Render(cyclic) error = %v, want ErrTooDeep", err)
	}
}

// TestOwnDateKey: a record's own date key is kept; the key name is configurable or off.
func TestOwnDateKey(t *testing.T) {
	for _, tc := range []struct {
		name, dateKey string
		fields        map[string]any
		want          string
	}{
		{"own date kept", "date", map[string]any{"date": "yesterday"}, `{"date":"yesterday"}`},
		{"own []byte date kept", "date", map[string]any{"date": []byte("d")}, `{"date":"d"}`},
		{"added", "date", map[string]any{"a": 1}, `{"a":1,"date":"2026-11-27T10:00:00.123456789Z"}`},
		{"custom key", "@timestamp", map[string]any{"date": 1}, `{"@timestamp":"2026-11-27T10:00:00.123456789Z","date":1}`},
		{"off", "", map[string]any{"a": 1}, `{"a":1}`},
		{"empty record", "date", map[string]any{}, `{"date":"2026-11-27T10:00:00.123456789Z"}`},
		{"nil record", "", nil, `{}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(false)
			cfg.JSONDateKey = tc.dateKey
			e := mustRender(t, mustRenderer(t, cfg), Record{Tag: "t", Time: fixedTime, Fields: tc.fields})
			if diff := cmp.Diff(tc.want, string(parseEmail(t, e.Data).text)); diff != "" {
				t.Errorf("payload (-want +got):\n%s", diff)
			}
		})
	}
}

// TestConcurrentRender renders from many goroutines (run with -race).
func TestConcurrentRender(t *testing.T) {
	for _, readable := range []bool{false, true} {
		r := mustRenderer(t, testConfig(readable))
		want := mustRender(t, r, detection()).Data
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 50 {
					rec := detection()
					if i%2 == 1 {
						rec.Fields = map[string]any{"g": g, "i": i, "s": strings.Repeat("z", i*100)}
					}
					e, err := r.Render(rec)
					if err != nil {
						errs <- err
						return
					}
					if i%2 == 0 && !bytes.Equal(e.Data, want) {
						errs <- fmt.Errorf("goroutine %d render %d differs", g, i)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	}
}

// mimeDecoder decodes RFC 2047 words.
type mimeDecoder = mime.WordDecoder

// TestSeedConfig renders with a configuration parsed by config.Parse from the seed's example.
func TestSeedConfig(t *testing.T) {
	cfg, err := config.Parse(config.MapGetter{
		"dest_host":   "smtp.gmail.com",
		"dest_email":  "soc@corp.com, oncall@corp.com",
		"cc_email":    "manager@corp.com",
		"bcc_email":   "audit@corp.com",
		"from_email":  "lc@corp.com",
		"secret_key":  "this-is-my-secret-shared-key",
		"is_readable": "true",
		"subject":     "LC Detection- $cat [$TAG[1]]",
	})
	if err != nil {
		t.Fatalf("config.Parse: %v", err)
	}
	r := mustRenderer(t, cfg)
	e := mustRender(t, r, detection())
	p := parseEmail(t, e.Data)
	if p.subject != "LC Detection- Suspicious Shell [detections]" {
		t.Errorf("Subject = %q", p.subject)
	}
	if diff := cmp.Diff([]string{"soc@corp.com", "oncall@corp.com", "manager@corp.com", "audit@corp.com"}, e.Recipients); diff != "" {
		t.Errorf("Recipients (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(headerKeys(true, true), p.keys); diff != "" {
		t.Errorf("header set (-want +got):\n%s", diff)
	}
	if string(p.text) != detectionJSON {
		t.Errorf("payload %s", p.text)
	}
	// Raw-only and empty templates are parsed here too.
	for raw, want := range map[string]string{"": "Fluent Bit: lc.detections", "x $TAG[0]": "x lc"} {
		c := testConfig(false)
		c.Subject = config.Template{Raw: raw}
		if got := mustRenderer(t, c).RenderSubject(detection()); got != want {
			t.Errorf("Template{Raw: %q}: subject %q, want %q", raw, got, want)
		}
	}
	bad := testConfig(false)
	bad.Subject = config.Template{Raw: "$"}
	if _, err := New(bad); err == nil || !strings.Contains(err.Error(), "subject") {
		t.Errorf("New with a bad raw template: %v, want an error naming subject", err)
	}
}

// TestHTMLBounded: the HTML table is bounded in values and bytes whatever the record's shape,
// the values shown are a prefix of the record's with one closing row counting the rest, and the
// JSON part keeps every field. A long key over a long array used to repeat the key on every
// row: a 40 KB record rendered about 80 MB of HTML.
func TestHTMLBounded(t *testing.T) {
	longKey := strings.Repeat("k", 20<<10)
	arr := make([]any, 2000)
	for i := range arr {
		arr[i] = int64(i)
	}
	many := map[string]any{}
	for i := range 5000 {
		many[fmt.Sprintf("f%05d", i)] = "v"
	}
	sections := map[string]any{}
	for i := range 2000 {
		sections[fmt.Sprintf("m%04d", i)] = map[string]any{"x": int64(i)}
	}
	bigs := make([]any, 300)
	for i := range bigs {
		bigs[i] = strings.Repeat(string(rune('a'+i%26)), MaxHTMLValueSize)
	}
	deep := map[string]any{"leaf": "end"}
	for i := range 90 {
		deep = map[string]any{fmt.Sprintf("%03d", i) + strings.Repeat("p", 97): deep}
	}
	tests := []struct {
		name     string
		fields   map[string]any
		rows     int    // rows shown
		lastKey  string // the key of the last row shown
		lastLen  int    // the number of values in the last row shown
		omitted  int    // values counted in the closing row
		titleLen int    // the longest section title is at least this long (0: no check)
	}{
		// date, then the long key's list: 999 items reach 1,000 values.
		{"long key over an array", map[string]any{longKey: arr}, 2, longKey[:MaxHTMLValueSize] + "…", MaxHTMLRows - 1, 2000 - (MaxHTMLRows - 1), 0},
		{"many fields", many, MaxHTMLRows, "f00998", 1, 5001 - MaxHTMLRows, 0},
		// date, then a title and a row per section: 499 sections and a title with no room left.
		{"many sections", sections, 1 + (MaxHTMLRows-1)/2, "x", 1, 2000 - (MaxHTMLRows-1)/2, 0},
		// 4 KB items until 256 KB of values.
		{"big items", map[string]any{"l": bigs}, 2, "l", MaxHTMLTableSize/MaxHTMLValueSize - 1, 300 - (MaxHTMLTableSize/MaxHTMLValueSize - 1), 0},
		{"deep path", map[string]any{"d": deep}, 2, "leaf", 1, 0, MaxHTMLValueSize},
	}
	r := mustRenderer(t, withSubject(true, lit("bounded")))
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := Record{Tag: "t", Time: fixedTime, Fields: tc.fields}
			e := mustRender(t, r, rec)
			p := parseEmail(t, e.Data)
			if len(p.html) > MaxHTMLTableSize+200<<10 {
				t.Fatalf("HTML part is %d bytes for a %d-byte payload", len(p.html), e.PayloadSize)
			}
			got := parseReadable(t, p.html)
			want := wantRows(t, p.text)
			if len(got.Rows) != tc.rows {
				t.Fatalf("%d rows shown, want %d", len(got.Rows), tc.rows)
			}
			// The rows shown are the record's first rows, the last one cut short.
			last := len(got.Rows) - 1
			if diff := cmp.Diff(want[:last], got.Rows[:last]); diff != "" {
				t.Errorf("rows shown are not the record's first (-want +got):\n%s", diff)
			}
			lr := got.Rows[last]
			if lr.Key != tc.lastKey || len(lr.Values) != tc.lastLen ||
				!slices.Equal(lr.Values, want[last].Values[:len(lr.Values)]) || lr.Title != want[last].Title {
				t.Errorf("last row %.60q %.60q with %d values, want %.60q with %d values of %.60q",
					lr.Title, lr.Key, len(lr.Values), tc.lastKey, tc.lastLen, want[last].Key)
			}
			if tc.omitted > 0 {
				if marker := fmt.Sprintf("%d more values not shown: the JSON part holds the whole record", tc.omitted); got.More != marker {
					t.Errorf("closing row %q, want %q", got.More, marker)
				}
			} else if got.More != "" {
				t.Errorf("closing row %q, want none", got.More)
			}
			for _, s := range got.Sections {
				if len(s) > MaxHTMLValueSize+len("…") {
					t.Errorf("a section title is %d bytes, over %d", len(s), MaxHTMLValueSize)
				}
				if tc.titleLen > 0 && (len(s) < tc.titleLen || !strings.Contains(s, "…") ||
					!strings.HasPrefix(s, "d › 089p") || !strings.HasSuffix(s, "000"+strings.Repeat("p", 97))) {
					t.Errorf("long section title %.40q…%.40q (%d bytes): want its start, …, and its end", s, s[len(s)-40:], len(s))
				}
			}
			wantJSON, err := Payload(rec, "date")
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(wantJSON, p.text) {
				t.Errorf("JSON part is not the whole payload (%d bytes, want %d)", len(p.text), len(wantJSON))
			}
			if err := Verify(bytes.NewReader(e.Data), []byte(testSecret)); err != nil {
				t.Errorf("Verify: %v", err)
			}
		})
	}
}
