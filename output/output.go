// Package output renders one Fluent Bit record as one signed RFC 5322 email: a JSON payload with
// sorted keys, an HMAC-SHA256 signature over it, a deterministic Message-ID, and either a
// single quoted-printable text/plain part (machine format) or a multipart/alternative message
// with an HTML table for people (readable format). RenderDigest renders many records' payloads
// as one signed digest email (an NDJSON part, and an HTML digest built for a phone), and
// SplitDigest bounds what one digest carries. Verify and VerifyEmail check either kind's
// signature.
//
// The package holds no cgo, does no I/O besides what Verify reads, and never logs.
package output

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"net/mail"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/smtpout/smtpout/config"
)

// MaxPayloadSize is the largest JSON payload, in bytes, that Render accepts. A bigger record is
// an error naming the record, so one oversized record can never exhaust memory.
const MaxPayloadSize = 10 << 20

// MaxDepth is the deepest nesting of maps and arrays a record may have.
const MaxDepth = 100

// MaxSubjectRunes caps the rendered subject (and the X-Fluent-Tag value), in runes.
const MaxSubjectRunes = 255

// MaxHTMLValueSize is the size in bytes above which a value is shortened in the HTML table
// (the JSON part is never shortened).
const MaxHTMLValueSize = 4096

// MaxHTMLRows and MaxHTMLTableSize bound the HTML table: at most MaxHTMLRows values (a row,
// an item of a list, a section title), showing about MaxHTMLTableSize bytes of keys, titles and
// values in all (a key or title, like a value, is shortened above MaxHTMLValueSize). A bigger
// record ends the table with one row counting the values left out; the JSON part always holds
// the whole record. Without these bounds a record of a few kilobytes (a long key over a long
// array, deep paths) could render an HTML part thousands of times its size.
const (
	MaxHTMLRows      = 1000
	MaxHTMLTableSize = 256 << 10
)

// SignatureHeader is the header that carries the signature of the payload.
const SignatureHeader = "X-Smtpout-Signature"

// TagHeader is the header that carries the record's Fluent Bit tag.
const TagHeader = "X-Fluent-Tag"

// dateLayout is the RFC 5322 date-time format of the Date header.
const dateLayout = "Mon, 02 Jan 2006 15:04:05 -0700"

// fallbackDomain is the Message-ID domain used when from_email's domain cannot appear in a
// msg-id as is (an internationalised or otherwise unusual domain).
const fallbackDomain = "smtpout.invalid"

// Errors returned by Render (wrapped with the record's tag and time).
var (
	// ErrTooLarge means the record's JSON payload exceeds MaxPayloadSize.
	ErrTooLarge = errors.New("record JSON exceeds the size limit")
	// ErrTooDeep means the record nests maps or arrays deeper than MaxDepth.
	ErrTooDeep = errors.New("record nests deeper than the depth limit")
)

// Record is one decoded Fluent Bit record.
type Record struct {
	Tag  string
	Time time.Time
	// Fields holds the record's values: nil, bool, int64, uint64, int, float64, float32, string,
	// []byte, []any, map[string]any, map[any]any, time.Time; anything else is rendered via fmt.
	Fields map[string]any
}

// Email is one rendered, signed message ready for SMTP.
type Email struct {
	// MessageID is "<32 hex>@<from domain>" without the angle brackets.
	MessageID string
	// From is the envelope sender: the bare address of from_email.
	From string
	// Recipients are the envelope recipients: To, Cc and Bcc, deduplicated. Render hands every
	// email the same slice (its capacity is its length, so an append copies it): replace it,
	// never write into it.
	Recipients []string
	// Data is the whole RFC 5322 message with CRLF line endings, not dot-stuffed.
	Data []byte
	// Signature is the X-Smtpout-Signature value, "sha256=<hex>".
	Signature string
	// PayloadSize is the size in bytes of the JSON payload.
	PayloadSize int
	// Payload is the JSON payload the signature covers (what a digest carries as one line);
	// nil from a Renderer made WithoutPayload.
	Payload []byte
}

// Renderer turns records into signed emails for one output instance. Build it once with New;
// it is safe for concurrent use.
type Renderer struct {
	readable   bool
	from       string
	recipients []string
	domain     string
	dateKey    string
	subject    []config.Token
	// subjectHasKeys reports whether subject holds a record key (a digest's subject then
	// needs its first record decoded).
	subjectHasKeys bool
	// headers holds the From, To and Cc lines, CRLF-terminated, written after Date.
	headers []byte
	key     []byte
	// noPayload: Render leaves Email.Payload nil (WithoutPayload).
	noPayload bool
	pool      sync.Pool // *state
}

// Option changes what a Renderer does.
type Option func(*Renderer)

// WithoutPayload makes Render leave Email.Payload nil, for a caller that never reads it (no
// digests): the email then takes one copy of the payload less, about 2 KB per email of
// fresh memory for a 2 KB record. The email's bytes (Data) are the same.
func WithoutPayload() Option { return func(r *Renderer) { r.noPayload = true } }

// state is the per-render scratch space, recycled through Renderer.pool.
type state struct {
	enc     encoder
	payload []byte     // the JSON payload (aliases enc.buf)
	subj    []byte     // the rendered subject
	out     []byte     // the message being assembled
	html    []byte     // the HTML part (aliases hw.b)
	hw      htmlWriter // writes the HTML part
	mac     hash.Hash
	sha     hash.Hash
	sum     [sha256.Size]byte
	scratch [64]byte
}

// New validates the parts of cfg the email depends on and precomputes everything that is the
// same for every record: the From/To/Cc header lines, the HMAC key and the Message-ID domain.
func New(cfg config.Config, opts ...Option) (*Renderer, error) {
	var errs []error
	if cfg.From.Address == "" {
		errs = append(errs, errors.New("from_email: no address"))
	}
	if len(cfg.To) == 0 {
		errs = append(errs, errors.New("dest_email: no address"))
	}
	if cfg.SecretKey == "" {
		errs = append(errs, errors.New("secret_key: empty"))
	}
	r := &Renderer{
		readable:   cfg.Readable,
		from:       cfg.From.Address,
		recipients: cfg.Recipients(),
		domain:     msgIDDomain(cfg.From.Address),
		dateKey:    cfg.JSONDateKey,
		key:        []byte(cfg.SecretKey.Reveal()),
	}
	var hdr []byte
	var err error
	if r.subject, err = subjectTokens(cfg.Subject); err != nil {
		errs = append(errs, err)
	}
	if hdr, err = appendAddressHeader(hdr, "From", "from_email", []mail.Address{cfg.From}); err != nil {
		errs = append(errs, err)
	}
	if hdr, err = appendAddressHeader(hdr, "To", "dest_email", cfg.To); err != nil {
		errs = append(errs, err)
	}
	if len(cfg.Cc) > 0 {
		if hdr, err = appendAddressHeader(hdr, "Cc", "cc_email", cfg.Cc); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("output: %w", errors.Join(errs...))
	}
	r.headers = hdr
	for _, o := range opts {
		o(r)
	}
	for _, t := range r.subject {
		r.subjectHasKeys = r.subjectHasKeys || t.Kind == config.KeyToken
	}
	r.pool.New = func() any {
		return &state{mac: hmac.New(sha256.New, r.key), sha: sha256.New()}
	}
	return r, nil
}

// subjectTokens returns the template's tokens; a template with only Raw set is parsed, an
// empty one is config.DefaultSubject.
func subjectTokens(t config.Template) ([]config.Token, error) {
	if len(t.Tokens) > 0 {
		return t.Tokens, nil
	}
	raw := t.Raw
	if raw == "" {
		raw = config.DefaultSubject
	}
	p, err := config.ParseTemplate(raw)
	if err != nil {
		return nil, fmt.Errorf("subject: %w", err)
	}
	return p.Tokens, nil
}

// msgIDDomain returns the domain of addr when it can stand in a msg-id, else fallbackDomain.
func msgIDDomain(addr string) string {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 || at == len(addr)-1 {
		return fallbackDomain
	}
	d := addr[at+1:]
	for i := 0; i < len(d); i++ {
		c := d[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' {
			continue
		}
		return fallbackDomain
	}
	if d[0] == '.' || d[len(d)-1] == '.' || strings.Contains(d, "..") {
		return fallbackDomain
	}
	return strings.ToLower(d)
}

// Render turns rec into a signed email. The error names the record (tag and time) and what
// went wrong, never the record's contents.
func (r *Renderer) Render(rec Record) (e *Email, err error) {
	defer func() {
		if p := recover(); p != nil {
			e, err = nil, fmt.Errorf("render record tag %q time %s: panic: %v",
				rec.Tag, rec.Time.UTC().Format(time.RFC3339Nano), p)
		}
	}()
	st := r.pool.Get().(*state)
	defer r.put(st)
	if err := st.encodePayload(rec, r.dateKey); err != nil {
		return nil, fmt.Errorf("render record tag %q time %s: %w",
			rec.Tag, rec.Time.UTC().Format(time.RFC3339Nano), err)
	}
	payload := st.payload

	// Message-ID: SHA-256 over tag, NUL, time in Unix nanoseconds, NUL, payload.
	st.sha.Reset()
	b := append(st.scratch[:0], rec.Tag...)
	st.sha.Write(b)
	b = append(st.scratch[:0], 0)
	b = strconv.AppendInt(b, rec.Time.UnixNano(), 10)
	b = append(b, 0)
	st.sha.Write(b)
	st.sha.Write(payload)
	sum := st.sha.Sum(st.sum[:0])
	var idb [32 + 1 + 253 + 7 + 64]byte // the ID, and room for the signature after it (below)
	id := hex.AppendEncode(idb[:0], sum[:16])
	id = append(id, '@')
	id = append(id, r.domain...)

	// Signature: HMAC-SHA256 over the payload.
	st.mac.Reset()
	st.mac.Write(payload)
	mac := st.mac.Sum(st.sum[:0])
	var sigb [7 + 64]byte
	sig := append(sigb[:0], "sha256="...)
	sig = hex.AppendEncode(sig, mac)

	st.subj = r.appendSubject(st.subj[:0], rec, &st.enc)

	out := appendHead(st.out[:0], rec.Time, r.headers, st.subj, id)
	if r.readable {
		var bb [len(boundaryPrefix) + 32]byte
		boundary := appendBoundary(bb[:0], id[:32]) // on the stack: no string per email
		out = append(out, "Content-Type: multipart/alternative; boundary=\""...)
		out = append(out, boundary...)
		out = append(out, "\"\r\n"...)
		out = appendTextHeader(out, TagHeader, sanitize(st.scratch[:0], rec.Tag, MaxSubjectRunes))
		out = append(out, SignatureHeader+": "...)
		out = append(out, sig...)
		out = append(out, "\r\n\r\n"...)
		r.renderHTML(st, rec, st.subj)
		out = appendAlternative(out, boundary, payload, false, st.html)
	} else {
		out = append(out, textPartHeader...)
		out = appendTextHeader(out, TagHeader, sanitize(st.scratch[:0], rec.Tag, MaxSubjectRunes))
		out = append(out, SignatureHeader+": "...)
		out = append(out, sig...)
		out = append(out, "\r\n\r\n"...)
		out = appendQP(out, payload, false)
	}
	st.out = out

	// Three allocations: the Email, one string for the Message-ID and the signature, one
	// buffer for the message and (unless WithoutPayload) the payload. Recipients are shared.
	var buf []byte
	e = &Email{From: r.from, Recipients: r.recipients[:len(r.recipients):len(r.recipients)], PayloadSize: len(payload)}
	if r.noPayload {
		buf = append(make([]byte, 0, len(out)), out...)
	} else {
		buf = make([]byte, 0, len(out)+len(payload))
		buf = append(append(buf, out...), payload...)
		e.Payload = buf[len(out):]
	}
	e.Data = buf[:len(out):len(out)]
	idSig := string(append(id, sig...)) // on the stack: idb has room for both
	e.MessageID, e.Signature = idSig[:len(id)], idSig[len(id):]
	return e, nil
}

// appendHead appends the headers every email starts with: Date (date in UTC), the address
// lines, Subject (subject sanitised), Message-ID (id) and MIME-Version.
func appendHead[S string | []byte](out []byte, date time.Time, addresses, subject []byte, id S) []byte {
	out = append(out, "Date: "...)
	out = date.UTC().AppendFormat(out, dateLayout)
	out = append(out, "\r\n"...)
	out = append(out, addresses...)
	out = appendTextHeader(out, "Subject", subject)
	out = append(out, "Message-ID: <"...)
	out = append(out, id...)
	return append(out, ">\r\nMIME-Version: 1.0\r\n"...)
}

// Headers of the quoted-printable parts, each line CRLF-terminated.
const (
	textPartHeader = "Content-Type: text/plain; charset=UTF-8\r\nContent-Transfer-Encoding: quoted-printable\r\n"
	htmlPartHeader = "Content-Type: text/html; charset=UTF-8\r\nContent-Transfer-Encoding: quoted-printable\r\n"
)

// appendPart appends one part of a multipart body: the delimiter line of boundary, the part's
// header (CRLF-terminated lines), a blank line, content quoted-printable (text mode: a LF is
// a line break) and CRLF.
func appendPart[S string | []byte](out []byte, boundary S, header string, content []byte, text bool) []byte {
	out = append(out, "--"...)
	out = append(out, boundary...)
	out = append(out, "\r\n"...)
	out = append(out, header...)
	out = append(out, "\r\n"...)
	out = appendQP(out, content, text)
	return append(out, "\r\n"...)
}

// appendAlternative appends the body of a multipart/alternative entity with boundary: plain,
// quoted-printable in text mode when text is set, then html, then the close delimiter.
func appendAlternative[S string | []byte](out []byte, boundary S, plain []byte, text bool, html []byte) []byte {
	out = appendPart(out, boundary, textPartHeader, plain, text)
	out = appendPart(out, boundary, htmlPartHeader, html, true)
	out = append(out, "--"...)
	out = append(out, boundary...)
	return append(out, "--\r\n"...)
}

// put returns st to the pool unless one of its buffers grew too big to keep.
func (r *Renderer) put(st *state) {
	const keep = 256 << 10
	if cap(st.enc.buf) > keep || cap(st.out) > 2*keep || cap(st.hw.b) > 2*keep {
		return
	}
	r.pool.Put(st)
}

// boundaryFor derives the MIME boundary from the Message-ID's hash. It contains "=_", which
// quoted-printable content can never contain, so no part can end early.
func boundaryFor(hexID []byte) string {
	return boundaryPrefix + string(hexID)
}

// boundaryPrefix starts every MIME boundary (boundaryFor).
const boundaryPrefix = "=_smtpout_"

// appendBoundary appends boundaryFor(hexID) to b.
func appendBoundary(b, hexID []byte) []byte {
	return append(append(b, boundaryPrefix...), hexID...)
}

// Sign returns the X-Smtpout-Signature value for payload: "sha256=" and the lowercase hex
// HMAC-SHA256 of payload under secret.
func Sign(payload, secret []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(payload)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Payload returns the JSON payload of rec: its fields normalised, keys sorted at every depth,
// plus the record time under dateKey ("" leaves it out) unless the record has that key.
func Payload(rec Record, dateKey string) ([]byte, error) {
	var st state
	if err := st.encodePayload(rec, dateKey); err != nil {
		return nil, err
	}
	return st.payload, nil
}
