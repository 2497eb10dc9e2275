package output

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// readmeText returns ../README.md when it has a ```python block, else testdata/README-verify.md.
func readmeText(t *testing.T) (string, string) {
	t.Helper()
	for _, path := range []string{filepath.Join("..", "README.md"), filepath.Join("testdata", "README-verify.md")} {
		b, err := os.ReadFile(path)
		if err == nil && strings.Contains(string(b), "```python\n") {
			return path, string(b)
		}
	}
	t.Fatal("no README with a ```python block")
	return "", ""
}

// codeBlocks returns the fenced blocks of the given language.
func codeBlocks(text, lang string) []string {
	re := regexp.MustCompile("(?s)```" + lang + "\n(.*?)```")
	var out []string
	for _, m := range re.FindAllStringSubmatch(text, -1) {
		out = append(out, m[1])
	}
	return out
}

// TestReadmePython runs the README's Python snippet against emails this suite wrote: it must
// accept them and reject tampered copies.
func TestReadmePython(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not found: the README's Python snippet is not checked")
	}
	path, text := readmeText(t)
	blocks := codeBlocks(text, "python")
	if len(blocks) != 1 {
		t.Fatalf("%s has %d python blocks, want 1", path, len(blocks))
	}
	dir := t.TempDir()
	script := filepath.Join(dir, "verify.py")
	if err := os.WriteFile(script, []byte(blocks[0]), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(name string, data []byte) error {
		eml := filepath.Join(dir, name)
		if err := os.WriteFile(eml, data, 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(python, script, eml)
		cmd.Env = append(os.Environ(), "SMTPOUT_SECRET_KEY="+testSecret)
		out, err := cmd.CombinedOutput()
		if err != nil && !strings.Contains(string(out), "INVALID") {
			t.Errorf("%s: python failed unexpectedly: %v\n%s", name, err, out)
		}
		return err
	}
	recs := map[string]Record{"detection": detection(), "unicode": {Tag: "t", Time: fixedTime, Fields: map[string]any{
		"v": "检测 é 🚨 " + strings.Repeat("x=y ", 40), "ctl": "a\r\nb\t", "html": "<script>",
	}}}
	for _, readable := range []bool{false, true} {
		r := mustRenderer(t, testConfig(readable))
		for name, rec := range recs {
			e := mustRender(t, r, rec)
			if err := run(name+".eml", e.Data); err != nil {
				t.Errorf("readable=%v %s: python rejected a good email: %v", readable, name, err)
			}
			start, _ := payloadSpan(t, e.Data)
			bad := bytes.Clone(e.Data)
			bad[start+1] = flip(bad[start+1])
			if run(name+"-tampered.eml", bad) == nil {
				t.Errorf("readable=%v %s: python accepted a tampered payload", readable, name)
			}
			badSig := bytes.Replace(e.Data, []byte(e.Signature), []byte(Sign([]byte("{}"), []byte(testSecret))), 1)
			if run(name+"-badsig.eml", badSig) == nil {
				t.Errorf("readable=%v %s: python accepted a wrong signature", readable, name)
			}
		}
		good, bad := readmeDigests(t, readable)
		if err := run("digest.eml", good); err != nil {
			t.Errorf("readable=%v: python rejected a good digest: %v", readable, err)
		}
		if run("digest-tampered.eml", bad) == nil {
			t.Errorf("readable=%v: python accepted a tampered digest", readable)
		}
	}
}

// TestReadmeGo checks the README's standard-library Go verifier is verifyEmail below, and that
// verifyEmail accepts good emails and rejects tampered ones.
func TestReadmeGo(t *testing.T) {
	path, text := readmeText(t)
	src, err := os.ReadFile("readme_test.go")
	if err != nil {
		t.Fatal(err)
	}
	_, after, _ := strings.Cut(string(src), "// README:BEGIN\n")
	fn, _, _ := strings.Cut(after, "// README:END\n")
	found := false
	for _, b := range codeBlocks(text, "go") {
		if strings.TrimSpace(b) == strings.TrimSpace(fn) {
			found = true
		}
	}
	if !found {
		t.Errorf("%s has no ```go block equal to verifyEmail in readme_test.go:\n%s", path, fn)
	}
	for _, readable := range []bool{false, true} {
		e := mustRender(t, mustRenderer(t, testConfig(readable)), detection())
		if ok, err := verifyEmail(bytes.NewReader(e.Data), []byte(testSecret)); !ok || err != nil {
			t.Errorf("readable=%v: verifyEmail = %v, %v", readable, ok, err)
		}
		start, _ := payloadSpan(t, e.Data)
		bad := bytes.Clone(e.Data)
		bad[start+1] = flip(bad[start+1])
		if ok, _ := verifyEmail(bytes.NewReader(bad), []byte(testSecret)); ok {
			t.Errorf("readable=%v: verifyEmail accepted a tampered payload", readable)
		}
		good, bad := readmeDigests(t, readable)
		if ok, err := verifyEmail(bytes.NewReader(good), []byte(testSecret)); !ok || err != nil {
			t.Errorf("readable=%v: verifyEmail of a digest = %v, %v", readable, ok, err)
		}
		if ok, _ := verifyEmail(bytes.NewReader(bad), []byte(testSecret)); ok {
			t.Errorf("readable=%v: verifyEmail accepted a tampered digest", readable)
		}
	}
}

// readmeDigests returns a digest of three records and a copy with one byte of its NDJSON
// part changed.
func readmeDigests(t *testing.T, readable bool) (good, bad []byte) {
	t.Helper()
	r := mustRenderer(t, testConfig(readable))
	members, _, _ := digestMembers(t, r, 3, []string{"web-1"}, fixedTime)
	e, err := r.RenderDigest(Digest{Members: members})
	if err != nil {
		t.Fatal(err)
	}
	at := bytes.Index(e.Data, []byte("Content-Type: "+NDJSONType))
	at += bytes.Index(e.Data[at:], []byte("\r\n\r\n")) + 4
	bad = bytes.Clone(e.Data)
	bad[at+1] = flip(bad[at+1]) // after the opening brace
	return e.Data, bad
}

// README:BEGIN
// verifyEmail reports whether raw, one RFC 5322 message, carries a valid X-Smtpout-Signature.
func verifyEmail(raw io.Reader, secret []byte) (bool, error) {
	msg, err := mail.ReadMessage(raw)
	if err != nil {
		return false, err
	}
	sig, ok := strings.CutPrefix(msg.Header.Get("X-Smtpout-Signature"), "sha256=")
	want, err := hex.DecodeString(sig)
	if !ok || err != nil {
		return false, errors.New("no valid X-Smtpout-Signature header")
	}
	mediaType, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		return false, err
	}
	signed := "text/plain" // the payload: the body, or the readable format's first part
	if msg.Header.Get("X-Smtpout-Records") != "" {
		signed = "application/x-ndjson" // a digest: its records' part
	}
	body, cte := io.Reader(msg.Body), msg.Header.Get("Content-Transfer-Encoding")
	if strings.HasPrefix(mediaType, "multipart/") {
		parts := multipart.NewReader(body, params["boundary"])
		for {
			part, err := parts.NextRawPart()
			if err != nil {
				return false, err
			}
			if mt, _, _ := mime.ParseMediaType(part.Header.Get("Content-Type")); mt == signed {
				body, cte = part, part.Header.Get("Content-Transfer-Encoding")
				break
			}
		}
	}
	if strings.EqualFold(cte, "quoted-printable") {
		body = quotedprintable.NewReader(body)
	}
	payload, err := io.ReadAll(body)
	if err != nil {
		return false, err
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(payload)
	return hmac.Equal(mac.Sum(nil), want), nil
}

// README:END
