package output

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"net/textproto"
	"strings"
)

// Errors returned by Verify (wrapped with detail).
var (
	// ErrNoSignature means the message has no X-Smtpout-Signature header.
	ErrNoSignature = errors.New("no " + SignatureHeader + " header")
	// ErrMalformedSignature means the signature header is not "sha256=" and 64 hex digits, or
	// appears more than once.
	ErrMalformedSignature = errors.New("malformed " + SignatureHeader + " header")
	// ErrNoTextPart means the message has no text/plain part to verify.
	ErrNoTextPart = errors.New("no text/plain part")
	// ErrMismatch means the signature does not match the text/plain part.
	ErrMismatch = errors.New("signature does not match the payload")
)

// maxMIMEDepth bounds the nesting of multipart bodies Verify walks.
const maxMIMEDepth = 8

// Verify checks the signature of an email: it parses the message, takes the first text/plain
// part (walking nested multiparts), undoes its Content-Transfer-Encoding and compares the
// HMAC-SHA256 of those bytes under secret with the X-Smtpout-Signature header, in constant
// time. It returns nil only when they match.
func Verify(message io.Reader, secret []byte) error {
	msg, err := mail.ReadMessage(message)
	if err != nil {
		return fmt.Errorf("verify: parse message: %w", err)
	}
	sigs := msg.Header[textproto.CanonicalMIMEHeaderKey(SignatureHeader)]
	if len(sigs) == 0 {
		return fmt.Errorf("verify: %w", ErrNoSignature)
	}
	if len(sigs) > 1 {
		return fmt.Errorf("verify: %w: %d headers", ErrMalformedSignature, len(sigs))
	}
	hexSig, ok := strings.CutPrefix(strings.TrimSpace(sigs[0]), "sha256=")
	want, herr := hex.DecodeString(hexSig)
	if !ok || herr != nil || len(want) != sha256.Size {
		return fmt.Errorf("verify: %w: want sha256=<64 hex digits>", ErrMalformedSignature)
	}
	payload, err := textPlain(textproto.MIMEHeader(msg.Header), msg.Body, 0)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	m := hmac.New(sha256.New, secret)
	m.Write(payload)
	if !hmac.Equal(m.Sum(nil), want) {
		return fmt.Errorf("verify: %w (%d payload bytes)", ErrMismatch, len(payload))
	}
	return nil
}

// textPlain returns the decoded content of the first text/plain entity in body.
func textPlain(h textproto.MIMEHeader, body io.Reader, depth int) ([]byte, error) {
	ct := h.Get("Content-Type")
	mediaType, params := "text/plain", map[string]string(nil)
	if ct != "" {
		var err error
		if mediaType, params, err = mime.ParseMediaType(ct); err != nil {
			return nil, fmt.Errorf("parse Content-Type %q: %w", ct, err)
		}
	}
	switch {
	case mediaType == "text/plain":
		return decodeBody(h.Get("Content-Transfer-Encoding"), body)
	case strings.HasPrefix(mediaType, "multipart/"):
		if depth >= maxMIMEDepth {
			return nil, fmt.Errorf("%w: multipart nested deeper than %d", ErrNoTextPart, maxMIMEDepth)
		}
		boundary := params["boundary"]
		if boundary == "" {
			return nil, fmt.Errorf("%s without boundary", mediaType)
		}
		mr := multipart.NewReader(body, boundary)
		for {
			p, err := mr.NextRawPart()
			if err == io.EOF {
				return nil, ErrNoTextPart
			}
			if err != nil {
				return nil, fmt.Errorf("read %s part: %w", mediaType, err)
			}
			got, err := textPlain(p.Header, p, depth+1)
			if errors.Is(err, ErrNoTextPart) {
				continue
			}
			return got, err
		}
	}
	return nil, ErrNoTextPart
}

// decodeBody reads body, undoing the Content-Transfer-Encoding cte, up to MaxPayloadSize.
func decodeBody(cte string, body io.Reader) ([]byte, error) {
	var r io.Reader
	switch enc := strings.ToLower(strings.TrimSpace(cte)); enc {
	case "quoted-printable":
		r = quotedprintable.NewReader(body)
	case "base64":
		r = base64.NewDecoder(base64.StdEncoding, body)
	case "", "7bit", "8bit", "binary":
		r = body
	default:
		return nil, fmt.Errorf("text/plain part: unknown Content-Transfer-Encoding %q", cte)
	}
	var buf bytes.Buffer
	n, err := buf.ReadFrom(io.LimitReader(r, MaxPayloadSize+1))
	if err != nil {
		return nil, fmt.Errorf("decode text/plain part (%s): %w", cte, err)
	}
	if n > MaxPayloadSize {
		return nil, fmt.Errorf("text/plain part exceeds %d bytes", MaxPayloadSize)
	}
	return buf.Bytes(), nil
}
