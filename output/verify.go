package output

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"net/textproto"
	"strconv"
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

// Errors returned by VerifyEmail for a digest (wrapped with detail).
var (
	// ErrNoDigestPart means a message with an X-Smtpout-Records header has no
	// application/x-ndjson part.
	ErrNoDigestPart = errors.New("no " + NDJSONType + " part")
	// ErrMalformedRecords means the X-Smtpout-Records header is not one decimal count.
	ErrMalformedRecords = errors.New("malformed " + RecordsHeader + " header")
	// ErrRecordsMismatch means X-Smtpout-Records differs from the number of NDJSON lines.
	ErrRecordsMismatch = errors.New(RecordsHeader + " differs from the number of records")
	// ErrDigestLine means an NDJSON line is not a JSON object, or the part does not end with
	// a line break.
	ErrDigestLine = errors.New("digest line is not a JSON object")
)

// maxMIMEDepth bounds the nesting of multipart bodies Verify walks.
const maxMIMEDepth = 8

// Verify checks the signature of an email: it parses the message, takes the first text/plain
// part (walking nested multiparts), undoes its Content-Transfer-Encoding and compares the
// HMAC-SHA256 of those bytes under secret with the X-Smtpout-Signature header, in constant
// time. It returns nil only when they match. A digest (an email with X-Smtpout-Records) is
// checked as VerifyEmail checks it.
func Verify(message io.Reader, secret []byte) error {
	_, err := VerifyEmail(message, secret)
	return err
}

// Verification is what VerifyEmail found in an email whose signature matched.
type Verification struct {
	// Digest reports whether the email is a digest.
	Digest bool
	// Lines are a digest's records in order, one per NDJSON line; nil for a single email.
	Lines []DigestLine
}

// DigestLine is one record of a verified digest.
type DigestLine struct {
	// Payload is the line without its line break: the JSON payload the record's single
	// email carries.
	Payload []byte
	// Signature is Sign(Payload): the X-Smtpout-Signature its single email carried, when one
	// was sent, so a line can be matched to that email.
	Signature string
}

// VerifyEmail checks an email as Verify does and says what it verified. A digest (an email
// with an X-Smtpout-Records header) is checked over its application/x-ndjson part instead of
// a text/plain part: the signature over the part's decoded bytes, X-Smtpout-Records equal to
// its number of lines, and each line a JSON object; its lines come back with their single
// emails' signatures.
func VerifyEmail(message io.Reader, secret []byte) (*Verification, error) {
	msg, err := mail.ReadMessage(message)
	if err != nil {
		return nil, fmt.Errorf("verify: parse message: %w", err)
	}
	sigs := msg.Header[textproto.CanonicalMIMEHeaderKey(SignatureHeader)]
	if len(sigs) == 0 {
		return nil, fmt.Errorf("verify: %w", ErrNoSignature)
	}
	if len(sigs) > 1 {
		return nil, fmt.Errorf("verify: %w: %d headers", ErrMalformedSignature, len(sigs))
	}
	hexSig, ok := strings.CutPrefix(strings.TrimSpace(sigs[0]), "sha256=")
	want, herr := hex.DecodeString(hexSig)
	if !ok || herr != nil || len(want) != sha256.Size {
		return nil, fmt.Errorf("verify: %w: want sha256=<64 hex digits>", ErrMalformedSignature)
	}
	counts := msg.Header[textproto.CanonicalMIMEHeaderKey(RecordsHeader)]
	digest := len(counts) > 0
	spec := textSpec
	if digest {
		spec = ndjsonSpec
	}
	payload, err := findPart(textproto.MIMEHeader(msg.Header), msg.Body, spec, 0)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	m := hmac.New(sha256.New, secret)
	m.Write(payload)
	if !hmac.Equal(m.Sum(nil), want) {
		return nil, fmt.Errorf("verify: %w (%d payload bytes)", ErrMismatch, len(payload))
	}
	if !digest {
		return &Verification{}, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(counts[0]))
	if len(counts) > 1 || err != nil || n < 0 {
		return nil, fmt.Errorf("verify: %w: want one count", ErrMalformedRecords)
	}
	lines, err := digestLines(payload, secret)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	if len(lines) != n {
		return nil, fmt.Errorf("verify: %w: header says %d, the part holds %d", ErrRecordsMismatch, n, len(lines))
	}
	return &Verification{Digest: true, Lines: lines}, nil
}

// digestLines splits a digest's NDJSON content into its lines, each checked to be a JSON
// object, with their signatures.
func digestLines(ndjson, secret []byte) ([]DigestLine, error) {
	if len(ndjson) == 0 {
		return nil, fmt.Errorf("%w: the part holds no records", ErrDigestLine)
	}
	if ndjson[len(ndjson)-1] != '\n' {
		return nil, fmt.Errorf("%w: the part does not end with a line break", ErrDigestLine)
	}
	var lines []DigestLine
	for len(ndjson) > 0 {
		i := bytes.IndexByte(ndjson, '\n')
		line := ndjson[:i]
		ndjson = ndjson[i+1:]
		if len(line) == 0 || line[0] != '{' || !json.Valid(line) {
			return nil, fmt.Errorf("%w: line %d", ErrDigestLine, len(lines)+1)
		}
		lines = append(lines, DigestLine{Payload: line, Signature: Sign(line, secret)})
	}
	return lines, nil
}

// partSpec says which part findPart looks for: its media type, the error when the message
// has none, and the most it decodes.
type partSpec struct {
	mediaType string
	missing   error
	limit     int
}

var (
	// textSpec finds a single email's payload: the first text/plain part.
	textSpec = partSpec{"text/plain", ErrNoTextPart, MaxPayloadSize}
	// ndjsonSpec finds a digest's records: the first application/x-ndjson part.
	ndjsonSpec = partSpec{NDJSONType, ErrNoDigestPart, maxDigestDecoded}
)

// maxDigestDecoded bounds the decoded NDJSON part Verify reads: a digest of one record of
// MaxPayloadSize is that record and its line break.
const maxDigestDecoded = max(MaxDigestPayload, MaxPayloadSize+1)

// findPart returns the decoded content of the first entity of spec's media type in body
// (walking nested multiparts); an entity without Content-Type is text/plain.
func findPart(h textproto.MIMEHeader, body io.Reader, spec partSpec, depth int) ([]byte, error) {
	ct := h.Get("Content-Type")
	mediaType, params := "text/plain", map[string]string(nil)
	if ct != "" {
		var err error
		if mediaType, params, err = mime.ParseMediaType(ct); err != nil {
			return nil, fmt.Errorf("parse Content-Type %q: %w", ct, err)
		}
	}
	switch {
	case mediaType == spec.mediaType:
		return decodePart(h.Get("Content-Transfer-Encoding"), body, spec.mediaType, spec.limit)
	case strings.HasPrefix(mediaType, "multipart/"):
		if depth >= maxMIMEDepth {
			return nil, fmt.Errorf("%w: multipart nested deeper than %d", spec.missing, maxMIMEDepth)
		}
		boundary := params["boundary"]
		if boundary == "" {
			return nil, fmt.Errorf("%s without boundary", mediaType)
		}
		mr := multipart.NewReader(body, boundary)
		for {
			p, err := mr.NextRawPart()
			if err == io.EOF {
				return nil, spec.missing
			}
			if err != nil {
				return nil, fmt.Errorf("read %s part: %w", mediaType, err)
			}
			got, err := findPart(p.Header, p, spec, depth+1)
			if errors.Is(err, spec.missing) {
				continue
			}
			return got, err
		}
	}
	return nil, spec.missing
}

// decodePart reads body, the content of a part of media type mt, undoing the
// Content-Transfer-Encoding cte, up to limit bytes.
func decodePart(cte string, body io.Reader, mt string, limit int) ([]byte, error) {
	var r io.Reader
	switch enc := strings.ToLower(strings.TrimSpace(cte)); enc {
	case "quoted-printable":
		r = quotedprintable.NewReader(body)
	case "base64":
		r = base64.NewDecoder(base64.StdEncoding, body)
	case "", "7bit", "8bit", "binary":
		r = body
	default:
		return nil, fmt.Errorf("%s part: unknown Content-Transfer-Encoding %q", mt, cte)
	}
	var buf bytes.Buffer
	n, err := buf.ReadFrom(io.LimitReader(r, int64(limit)+1))
	if err != nil {
		return nil, fmt.Errorf("decode %s part (%s): %w", mt, cte, err)
	}
	if n > int64(limit) {
		return nil, fmt.Errorf("%s part exceeds %d bytes", mt, limit)
	}
	return buf.Bytes(), nil
}
