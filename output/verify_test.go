package output

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

// TestVerifyRoundTrip: every rendered email verifies; changing one byte of the payload or of
// the signature header makes it fail.
func TestVerifyRoundTrip(t *testing.T) {
	recs := []Record{detection(), {Tag: "t", Time: fixedTime, Fields: map[string]any{
		"unicode": "检测 é 🚨", "long": strings.Repeat("0123456789", 50), "ctl": "a\r\nb\t=c ",
	}}}
	for _, readable := range []bool{false, true} {
		for _, rec := range recs {
			e := mustRender(t, mustRenderer(t, testConfig(readable)), rec)
			if err := Verify(bytes.NewReader(e.Data), []byte(testSecret)); err != nil {
				t.Fatalf("readable=%v: Verify: %v", readable, err)
			}
			if err := Verify(bytes.NewReader(e.Data), []byte(testSecret+"x")); !errors.Is(err, ErrMismatch) {
				t.Errorf("wrong secret: %v, want ErrMismatch", err)
			}
			// Tamper with every byte of the encoded payload, one at a time.
			start, end := payloadSpan(t, e.Data)
			tampered := 0
			for i := start; i < end; i++ {
				c := e.Data[i]
				if c == '=' || c == '\r' || c == '\n' {
					continue // QP syntax: changing it may give an undecodable body, tested below
				}
				d := bytes.Clone(e.Data)
				d[i] = flip(c)
				if err := Verify(bytes.NewReader(d), []byte(testSecret)); err == nil {
					t.Fatalf("readable=%v: Verify passed with byte %d changed from %q to %q", readable, i, c, d[i])
				}
				tampered++
			}
			if tampered < 50 {
				t.Errorf("only %d payload bytes tampered", tampered)
			}
			// Tamper with every hex digit of the signature.
			sigAt := bytes.Index(e.Data, []byte("X-Smtpout-Signature: sha256=")) + len("X-Smtpout-Signature: sha256=")
			for i := sigAt; i < sigAt+64; i++ {
				d := bytes.Clone(e.Data)
				if d[i] == '0' {
					d[i] = '1'
				} else {
					d[i] = '0'
				}
				if err := Verify(bytes.NewReader(d), []byte(testSecret)); !errors.Is(err, ErrMismatch) {
					t.Fatalf("signature digit %d changed: %v, want ErrMismatch", i-sigAt, err)
				}
			}
		}
	}
}

// payloadSpan returns the byte range of the QP-encoded text/plain content in data.
func payloadSpan(t *testing.T, data []byte) (int, int) {
	t.Helper()
	marker := []byte("Content-Transfer-Encoding: quoted-printable\r\n")
	i := bytes.Index(data, marker)
	if i < 0 {
		t.Fatal("no quoted-printable part")
	}
	j := bytes.Index(data[i:], []byte("\r\n\r\n"))
	start := i + j + 4
	end := bytes.Index(data[start:], []byte("=\r\n\r\n--"))
	if end < 0 {
		return start, len(data)
	}
	return start, start + end
}

// flip returns a different byte, also for a hex digit of a QP escape.
func flip(c byte) byte {
	if c == '0' {
		return '1'
	}
	return '0'
}

func TestVerifyErrors(t *testing.T) {
	e := mustRender(t, mustRenderer(t, testConfig(false)), detection())
	good := string(e.Data)
	head, body, _ := strings.Cut(good, "\r\n\r\n")
	sigLine := "X-Smtpout-Signature: " + e.Signature + "\r\n"
	noSig := strings.Replace(good, sigLine, "", 1)
	b64 := strings.Replace(head, "Content-Transfer-Encoding: quoted-printable", "Content-Transfer-Encoding: base64", 1) +
		"\r\n\r\n" + wrap(base64.StdEncoding.EncodeToString([]byte(detectionJSON)), 76)
	plain7 := strings.Replace(head, "Content-Transfer-Encoding: quoted-printable", "Content-Transfer-Encoding: 7bit", 1) +
		"\r\n\r\n" + detectionJSON
	noCT := strings.Replace(strings.Replace(plain7, "Content-Type: text/plain; charset=UTF-8\r\n", "", 1),
		"Content-Transfer-Encoding: 7bit\r\n", "", 1)
	nested := "Subject: x\r\n" + sigLine + "MIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=outer\r\n\r\n" +
		"--outer\r\nContent-Type: application/octet-stream\r\n\r\nzz\r\n" +
		"--outer\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n" +
		"--inner\r\nContent-Type: text/html\r\n\r\n<p>x</p>\r\n" +
		"--inner\r\nContent-Type: text/plain; charset=UTF-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" +
		body + "\r\n--inner--\r\n--outer--\r\n"
	onlyHTML := "Subject: x\r\n" + sigLine + "Content-Type: text/html\r\n\r\n<p>x</p>\r\n"
	for _, tc := range []struct {
		name    string
		msg     string
		wantErr error // nil: must verify
		wantMsg string
	}{
		{"good", good, nil, ""},
		{"base64 part", b64, nil, ""},
		{"7bit part", plain7, nil, ""},
		{"no Content-Type is text/plain", noCT, nil, ""},
		{"nested multipart", nested, nil, ""},
		{"no signature", noSig, ErrNoSignature, "no X-Smtpout-Signature header"},
		{"two signatures", strings.Replace(good, sigLine, sigLine+sigLine, 1), ErrMalformedSignature, "2 headers"},
		{"not sha256", strings.Replace(good, "sha256=", "sha1=", 1), ErrMalformedSignature, "64 hex"},
		{"short hex", strings.Replace(good, e.Signature, e.Signature[:20], 1), ErrMalformedSignature, ""},
		{"no text/plain part", onlyHTML, ErrNoTextPart, "no text/plain part"},
		{"unknown encoding", strings.Replace(good, "quoted-printable", "x-uuencode", 1), nil, "unknown Content-Transfer-Encoding"},
		{"mismatch", head + "\r\n\r\n" + strings.Replace(body, "Suspicious", "Harmless", 1), ErrMismatch, "does not match"},
		{"not a message", "garbage without headers", nil, "parse message"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Verify(strings.NewReader(tc.msg), []byte(testSecret))
			if tc.wantErr == nil && tc.wantMsg == "" {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Verify passed")
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("Verify = %v, want %v", err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("Verify = %q, want it to mention %q", err, tc.wantMsg)
			}
			if strings.Contains(err.Error(), testSecret) {
				t.Errorf("error leaks the secret")
			}
		})
	}
}

// wrap splits s into CRLF-terminated lines of n characters.
func wrap(s string, n int) string {
	var b strings.Builder
	for len(s) > n {
		b.WriteString(s[:n] + "\r\n")
		s = s[n:]
	}
	return b.String() + s + "\r\n"
}

// TestSignMatchesHeader: Sign is the header value Render writes.
func TestSignMatchesHeader(t *testing.T) {
	e := mustRender(t, mustRenderer(t, testConfig(false)), detection())
	if got := Sign([]byte(detectionJSON), []byte(testSecret)); got != e.Signature {
		t.Errorf("Sign = %q, header %q", got, e.Signature)
	}
	if got, want := Sign([]byte(detectionJSON), []byte(testSecret)), "sha256="+hmacHex(testSecret, detectionJSON); got != want {
		t.Errorf("Sign = %q, want %q", got, want)
	}
}
