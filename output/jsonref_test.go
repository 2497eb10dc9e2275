package output

// The payload encoder as it was before issue 22's work on its speed, kept here only as the
// reference the fuzz targets compare the encoder with: every payload's bytes (and so every
// Message-ID and signature) must stay the same.

import (
	"math"
	"slices"
	"time"
	"unicode/utf8"
)

// refEncoder is the encoder before issue 22.
type refEncoder struct {
	buf   []byte
	limit int
	keys  [][]string // one slice of sorted keys per depth
}

// refPayload is Payload as the encoder wrote it before issue 22 (keys sorted as a []string,
// each value looked up again, strings escaped byte by byte).
func refPayload(rec Record, dateKey string) ([]byte, error) {
	e := &refEncoder{limit: MaxPayloadSize}
	var extra *time.Time
	if dateKey != "" {
		if _, ok := rec.Fields[dateKey]; !ok {
			extra = &rec.Time
		}
	}
	if err := e.stringMap(rec.Fields, 0, dateKey, extra); err != nil {
		return nil, err
	}
	return e.buf, nil
}

// value appends the JSON form of v.
func (e *refEncoder) value(v any, depth int) error {
	switch x := v.(type) {
	case nil:
		e.buf = append(e.buf, "null"...)
	case string:
		return e.str(x)
	case []byte:
		return e.bytesStr(x)
	case bool, int64, uint64, int, int32, int16, int8, uint, uint32, uint16, uint8:
		e.buf = appendBoolOrInt(e.buf, x)
	case float64:
		e.float(x, 64)
	case float32:
		e.float(float64(x), 32)
	case time.Time:
		e.buf = append(e.buf, '"')
		e.buf = x.UTC().AppendFormat(e.buf, time.RFC3339Nano)
		e.buf = append(e.buf, '"')
	case map[string]any:
		return e.stringMap(x, depth+1, "", nil)
	case map[any]any:
		return e.anyMap(x, depth+1)
	case []any:
		if depth+1 > MaxDepth {
			return ErrTooDeep
		}
		e.buf = append(e.buf, '[')
		for i, el := range x {
			if i > 0 {
				e.buf = append(e.buf, ',')
			}
			if err := e.value(el, depth+1); err != nil {
				return err
			}
		}
		e.buf = append(e.buf, ']')
	default:
		return e.value(fallback(v), depth)
	}
	if len(e.buf) > e.limit {
		return ErrTooLarge
	}
	return nil
}

// float appends f as encoding/json does, or as a string when JSON cannot hold it.
func (e *refEncoder) float(f float64, bits int) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		e.buf = append(e.buf, '"')
		e.buf = appendNonFinite(e.buf, f)
		e.buf = append(e.buf, '"')
		return
	}
	e.buf = appendFloat(e.buf, f, bits)
}

// str appends s as a JSON string, replacing invalid UTF-8 by U+FFFD.
func (e *refEncoder) str(s string) error {
	if len(e.buf)+len(s) > e.limit {
		return ErrTooLarge
	}
	e.buf = refAppendJSONString(e.buf, s)
	return nil
}

// bytesStr appends b as a JSON string, replacing invalid UTF-8 by U+FFFD.
func (e *refEncoder) bytesStr(b []byte) error {
	if len(e.buf)+len(b) > e.limit {
		return ErrTooLarge
	}
	e.buf = refAppendJSONString(e.buf, b)
	return nil
}

// refAppendJSONString is appendJSONString before issue 22: it appends s quoted and escaped
// as encoding/json does with HTML escaping off.
func refAppendJSONString[S string | []byte](b []byte, s S) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(string(s[i:min(i+utf8.UTFMax, len(s))]))
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, "\uFFFD"...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// keysAt returns a reusable key slice for depth.
func (e *refEncoder) keysAt(depth int) []string {
	for len(e.keys) <= depth {
		e.keys = append(e.keys, nil)
	}
	return e.keys[depth][:0]
}

// stringMap appends m as a JSON object with sorted keys; when extra is not nil, extraKey is
// added with the RFC 3339 UTC form of *extra (the caller checked m has no such key).
func (e *refEncoder) stringMap(m map[string]any, depth int, extraKey string, extra *time.Time) error {
	if depth > MaxDepth {
		return ErrTooDeep
	}
	keys := e.keysAt(depth)
	valid := true
	for k := range m {
		keys = append(keys, k)
		if valid && !utf8.ValidString(k) {
			valid = false
		}
	}
	if extra != nil {
		keys = append(keys, extraKey)
	}
	e.keys[depth] = keys
	if !valid {
		// Some keys change when made valid UTF-8 and may then collide: take the slow path.
		am := make(map[any]any, len(m)+1)
		for k, v := range m {
			am[k] = v
		}
		if extra != nil {
			am[extraKey] = *extra
		}
		return e.anyMap(am, depth)
	}
	slices.Sort(keys)
	e.buf = append(e.buf, '{')
	for i, k := range keys {
		if i > 0 {
			e.buf = append(e.buf, ',')
		}
		if err := e.str(k); err != nil {
			return err
		}
		e.buf = append(e.buf, ':')
		if extra != nil && k == extraKey {
			// As value writes a time.Time, without boxing *extra into an interface.
			e.buf = append(e.buf, '"')
			e.buf = extra.UTC().AppendFormat(e.buf, time.RFC3339Nano)
			e.buf = append(e.buf, '"')
			if len(e.buf) > e.limit {
				return ErrTooLarge
			}
			continue
		}
		if err := e.value(m[k], depth); err != nil {
			return err
		}
	}
	e.buf = append(e.buf, '}')
	return nil
}

// anyMap appends m as a JSON object whose keys are the stringified keys of m, sorted. When
// two keys stringify alike, one of them wins deterministically (see sortedEntries).
func (e *refEncoder) anyMap(m map[any]any, depth int) error {
	if depth > MaxDepth {
		return ErrTooDeep
	}
	// Fast path: every key a valid UTF-8 string, as Fluent Bit's decoder gives them.
	keys := e.keysAt(depth)
	for k := range m {
		s, ok := k.(string)
		if !ok || !utf8.ValidString(s) {
			keys = nil
			break
		}
		keys = append(keys, s)
	}
	if keys != nil || len(m) == 0 {
		e.keys[depth] = keys
		slices.Sort(keys)
		e.buf = append(e.buf, '{')
		for i, k := range keys {
			if i > 0 {
				e.buf = append(e.buf, ',')
			}
			if err := e.str(k); err != nil {
				return err
			}
			e.buf = append(e.buf, ':')
			if err := e.value(m[k], depth); err != nil {
				return err
			}
		}
		e.buf = append(e.buf, '}')
		return nil
	}
	ents := sortedEntries(m, depth)
	e.buf = append(e.buf, '{')
	for i, en := range ents {
		if i > 0 {
			e.buf = append(e.buf, ',')
		}
		if err := e.str(en.key); err != nil {
			return err
		}
		e.buf = append(e.buf, ':')
		if err := e.value(en.val, depth); err != nil {
			return err
		}
	}
	e.buf = append(e.buf, '}')
	return nil
}
