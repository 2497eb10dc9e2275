package output

import (
	"fmt"
	"net/mail"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/smtpout/smtpout/config"
)

// maxRawSubject bounds how much of the record is copied while a subject is rendered; the
// result is capped at MaxSubjectRunes anyway.
const maxRawSubject = 16 << 10

// RenderSubject returns the subject of rec: the template's tokens rendered, control characters
// replaced by spaces, surrounding spaces trimmed, capped at MaxSubjectRunes runes. It is the
// decoded text of the Subject header Render writes.
func (r *Renderer) RenderSubject(rec Record) string {
	var e encoder
	return string(r.appendSubject(nil, rec, &e))
}

// appendSubject appends the sanitised subject of rec to dst, using e's buffer as scratch.
func (r *Renderer) appendSubject(dst []byte, rec Record, e *encoder) []byte {
	return appendTemplate(dst, r.subject, rec, e)
}

// appendTemplate appends tokens rendered against rec to dst, sanitised and capped at
// MaxSubjectRunes runes, using e's buffer as scratch.
func appendTemplate(dst []byte, tokens []config.Token, rec Record, e *encoder) []byte {
	raw := e.buf[len(e.buf):] // scratch after the payload, which stays intact
	for _, t := range tokens {
		if len(raw) >= maxRawSubject {
			break
		}
		switch t.Kind {
		case config.Literal:
			raw = append(raw, t.Text...)
		case config.TagToken:
			raw = append(raw, rec.Tag...)
		case config.TagPartToken:
			raw = append(raw, tagPart(rec.Tag, t.Index)...)
		case config.KeyToken:
			raw = appendValueText(raw, lookup(rec.Fields, t.Path))
		}
	}
	if len(raw) > maxRawSubject {
		raw = raw[:maxRawSubject]
	}
	return sanitize(dst, raw, MaxSubjectRunes)
}

// tagPart returns part n (from 0) of tag split on dots, "" when out of range.
func tagPart(tag string, n int) string {
	if n < 0 {
		return ""
	}
	for i := 0; i < n; i++ {
		dot := strings.IndexByte(tag, '.')
		if dot < 0 {
			return ""
		}
		tag = tag[dot+1:]
	}
	if dot := strings.IndexByte(tag, '.'); dot >= 0 {
		return tag[:dot]
	}
	return tag
}

// lookup follows path through nested maps (and arrays, for numeric path elements); it returns
// nil when any step is missing.
func lookup(fields map[string]any, path []string) any {
	if len(path) == 0 {
		return nil
	}
	v, ok := fields[path[0]]
	if !ok {
		return nil
	}
	for _, k := range path[1:] {
		switch m := v.(type) {
		case map[string]any:
			v = m[k]
		case map[any]any:
			if x, ok := m[k]; ok {
				v = x
			} else if n, err := strconv.ParseInt(k, 10, 64); err == nil {
				v = m[n] // msgpack integer keys decode as int64
			} else {
				v = nil
			}
		case []any:
			n, err := strconv.Atoi(k)
			if err != nil || n < 0 || n >= len(m) {
				return nil
			}
			v = m[n]
		default:
			return nil
		}
		if v == nil {
			return nil
		}
	}
	return v
}

// appendValueText appends the subject form of v: strings and []byte as they are, other values
// as scalarString renders them.
func appendValueText(dst []byte, v any) []byte {
	switch x := v.(type) {
	case nil:
		return dst
	case string:
		return append(dst, x[:min(len(x), maxRawSubject)]...)
	case []byte:
		return append(dst, x[:min(len(x), maxRawSubject)]...)
	case int64:
		return strconv.AppendInt(dst, x, 10)
	case uint64:
		return strconv.AppendUint(dst, x, 10)
	case bool:
		return strconv.AppendBool(dst, x)
	}
	s := scalarString(v)
	return append(dst, s[:min(len(s), maxRawSubject)]...)
}

// isControl reports whether r is replaced by a space in headers: C0, DEL, C1, U+2028, U+2029,
// Bidirectional embedding, override and isolate characters (U+202A-202E, U+2066-2069) count
// as control characters too: in a subject they could make a record's text display reversed.
func isControl(r rune) bool {
	return r < 0x20 || r >= 0x7f && r <= 0x9f || r == '\u2028' || r == '\u2029' ||
		r >= '\u202a' && r <= '\u202e' || r >= '\u2066' && r <= '\u2069'
}

// sanitize appends s to dst with invalid UTF-8 replaced by U+FFFD, control characters by
// spaces, leading and trailing spaces trimmed, and at most maxRunes runes.
func sanitize[S string | []byte](dst []byte, s S, maxRunes int) []byte {
	start := len(dst)
	n := 0
	for i := 0; i < len(s) && n < maxRunes; {
		c := s[i]
		if c >= 0x20 && c < 0x7f {
			if c == ' ' && len(dst) == start {
				i++
				continue // leading space
			}
			dst = append(dst, c)
			i++
			n++
			continue
		}
		var r rune
		var size int
		if c < utf8.RuneSelf {
			r, size = rune(c), 1
		} else {
			r, size = utf8.DecodeRuneInString(string(s[i:min(i+utf8.UTFMax, len(s))]))
		}
		i += size
		switch {
		case isControl(r):
			if len(dst) == start {
				continue
			}
			dst = append(dst, ' ')
		default:
			dst = utf8.AppendRune(dst, r) // RuneError for invalid bytes: U+FFFD
		}
		n++
	}
	for len(dst) > start && dst[len(dst)-1] == ' ' {
		dst = dst[:len(dst)-1]
	}
	return dst
}

// needsEncoding reports whether a header value must be written as RFC 2047 encoded words:
// it is not printable ASCII, or it contains "=?" that a reader could take for an encoded word.
func needsEncoding(v []byte) bool {
	for i, c := range v {
		if c < 0x20 || c >= 0x7f {
			return true
		}
		if c == '=' && i+1 < len(v) && v[i+1] == '?' {
			return true
		}
	}
	return false
}

// foldAt is the line length headers are folded at when they can be.
const foldAt = 78

// appendTextHeader appends "name: value" and CRLF for an unstructured header. value must be
// sanitised. Printable ASCII is folded at single spaces; anything else (or ASCII that cannot be
// folded to 78 characters a line) becomes RFC 2047 Q-encoded words of at most 75 characters.
func appendTextHeader(dst []byte, name string, value []byte) []byte {
	dst = append(dst, name...)
	dst = append(dst, ": "...)
	lineLen := len(name) + 2
	if needsEncoding(value) {
		dst = appendEncodedWords(dst, lineLen, value)
		return append(dst, "\r\n"...)
	}
	// Fold points: a single space between two non-spaces, so unfolding gives back the value.
	// A value that cannot be folded to foldAt that way is encoded instead.
	start, headerStart := len(dst), len(dst)-lineLen
	segStart := 0
	for i := 1; i <= len(value); i++ {
		if i < len(value) && !(value[i] == ' ' && value[i-1] != ' ' && i+1 < len(value) && value[i+1] != ' ') {
			continue
		}
		seg := value[segStart:i]
		if segStart > 0 && lineLen+len(seg) > foldAt {
			dst = append(dst, "\r\n"...)
			lineLen = 0
		}
		if lineLen+len(seg) > foldAt {
			dst = appendEncodedWords(dst[:start], start-headerStart, value)
			return append(dst, "\r\n"...)
		}
		dst = append(dst, seg...)
		lineLen += len(seg)
		segStart = i
	}
	return append(dst, "\r\n"...)
}

// appendEncodedWords appends value as Q-encoded UTF-8 words, never splitting a character,
// keeping every line at most 76 characters.
func appendEncodedWords(dst []byte, lineLen int, value []byte) []byte {
	const open, end = "=?UTF-8?q?", "?="
	budget := 76 - lineLen
	if budget < 24 {
		budget = 75
		dst = append(dst, "\r\n "...)
	}
	dst = append(dst, open...)
	wordLen := len(open) + len(end)
	for i := 0; i < len(value); {
		_, size := utf8.DecodeRune(value[i:])
		n := 0
		for _, c := range value[i : i+size] {
			n += qLen(c)
		}
		if wordLen+n > budget && wordLen > len(open)+len(end) {
			dst = append(dst, end+"\r\n "+open...)
			wordLen = len(open) + len(end)
			budget = 75
		}
		for _, c := range value[i : i+size] {
			switch {
			case c == ' ':
				dst = append(dst, '_')
			case qLen(c) == 1:
				dst = append(dst, c)
			default:
				dst = append(dst, '=', upperHex[c>>4], upperHex[c&0xF])
			}
		}
		wordLen += n
		i += size
	}
	return append(dst, end...)
}

const upperHex = "0123456789ABCDEF"

// qLen is the encoded length of c in an RFC 2047 Q word (the conservative set of rule 5(3)).
func qLen(c byte) int {
	if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '!' || c == '*' || c == '+' || c == '-' || c == '/' || c == ' ' {
		return 1
	}
	return 3
}

// appendAddressHeader appends "name: a1, a2, ..." folded between addresses. Each address is
// formatted by net/mail; key names the configuration key in errors.
func appendAddressHeader(dst []byte, name, key string, list []mail.Address) ([]byte, error) {
	dst = append(dst, name...)
	dst = append(dst, ": "...)
	lineLen := len(name) + 2
	for i := range list {
		s := list[i].String()
		if strings.ContainsAny(s, "\r\n\x00") {
			return dst, fmt.Errorf("%s: address %d contains a line break", key, i+1)
		}
		if i > 0 {
			if lineLen+2+len(s) > foldAt {
				dst = append(dst, ",\r\n "...)
				lineLen = 1
			} else {
				dst = append(dst, ", "...)
				lineLen += 2
			}
		}
		if lineLen+len(s)+1 > 998 {
			return dst, fmt.Errorf("%s: address %q is too long for a header line", key, list[i].Address)
		}
		dst = append(dst, s...)
		lineLen += len(s)
	}
	return append(dst, "\r\n"...), nil
}
