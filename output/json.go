package output

import (
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// encoder writes normalised records as JSON: keys sorted at every depth, no HTML escaping,
// invalid UTF-8 replaced by U+FFFD, NaN and infinities as strings. It appends to buf and stops
// with ErrTooLarge once buf would exceed limit. Its field slices are reused between records.
type encoder struct {
	buf    []byte
	limit  int
	fields [][]mapField // one slice of a map's entries per depth, emptied after use
}

// mapField is one map entry with a string key: sorted with its value, a map is written without
// looking each value up again.
type mapField struct {
	key string
	val any
}

// encodePayload writes rec's JSON payload into st.payload.
func (st *state) encodePayload(rec Record, dateKey string) error {
	e := &st.enc
	e.buf = e.buf[:0]
	e.limit = MaxPayloadSize
	var extra *time.Time
	if dateKey != "" {
		if _, ok := rec.Fields[dateKey]; !ok {
			extra = &rec.Time
		}
	}
	if err := e.stringMap(rec.Fields, 0, dateKey, extra); err != nil {
		st.payload = nil
		return err
	}
	st.payload = e.buf
	return nil
}

// value appends the JSON form of v.
func (e *encoder) value(v any, depth int) error {
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

// appendBoolOrInt appends a boolean or an integer of any width as JSON writes it (and the
// readable format shows it); any other value appends nothing.
func appendBoolOrInt(b []byte, v any) []byte {
	switch x := v.(type) {
	case bool:
		return strconv.AppendBool(b, x)
	case int64:
		return strconv.AppendInt(b, x, 10)
	case uint64:
		return strconv.AppendUint(b, x, 10)
	case int:
		return strconv.AppendInt(b, int64(x), 10)
	case int32:
		return strconv.AppendInt(b, int64(x), 10)
	case int16:
		return strconv.AppendInt(b, int64(x), 10)
	case int8:
		return strconv.AppendInt(b, int64(x), 10)
	case uint:
		return strconv.AppendUint(b, uint64(x), 10)
	case uint32:
		return strconv.AppendUint(b, uint64(x), 10)
	case uint16:
		return strconv.AppendUint(b, uint64(x), 10)
	case uint8:
		return strconv.AppendUint(b, uint64(x), 10)
	}
	return b
}

// fallback converts a value of any other type into one value understands: errors and
// fmt.Stringers become their text (a panicking String method is caught by fmt), pointers are
// followed, slices and arrays become []any, maps map[any]any, other named kinds their
// underlying value, anything else its fmt form.
func fallback(v any) any {
	switch v.(type) {
	case error, fmt.Stringer:
		return fmt.Sprint(v)
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer, reflect.Interface:
		if rv.IsNil() {
			return nil
		}
		return rv.Elem().Interface()
	case reflect.Slice, reflect.Array:
		if rv.Kind() == reflect.Slice && rv.IsNil() {
			return nil
		}
		out := make([]any, rv.Len())
		for i := range out {
			out[i] = rv.Index(i).Interface()
		}
		return out
	case reflect.Map:
		if rv.IsNil() {
			return nil
		}
		out := make(map[any]any, rv.Len())
		it := rv.MapRange()
		for it.Next() {
			out[it.Key().Interface()] = it.Value().Interface()
		}
		return out
	case reflect.String:
		return rv.String()
	case reflect.Bool:
		return rv.Bool()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return rv.Int()
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return rv.Uint()
	case reflect.Float32:
		return float32(rv.Float())
	case reflect.Float64:
		return rv.Float()
	}
	return fmt.Sprint(v)
}

// float appends f as encoding/json does, or as a string when JSON cannot hold it.
func (e *encoder) float(f float64, bits int) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		e.buf = append(e.buf, '"')
		e.buf = appendNonFinite(e.buf, f)
		e.buf = append(e.buf, '"')
		return
	}
	e.buf = appendFloat(e.buf, f, bits)
}

// appendNonFinite appends "NaN", "+Inf" or "-Inf".
func appendNonFinite(b []byte, f float64) []byte {
	switch {
	case math.IsNaN(f):
		return append(b, "NaN"...)
	case f > 0:
		return append(b, "+Inf"...)
	}
	return append(b, "-Inf"...)
}

// appendFloat appends a finite float in encoding/json's (ES6) format.
func appendFloat(b []byte, f float64, bits int) []byte {
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 {
		if bits == 64 && (abs < 1e-6 || abs >= 1e21) || bits == 32 && (float32(abs) < 1e-6 || float32(abs) >= 1e21) {
			format = 'e'
		}
	}
	b = strconv.AppendFloat(b, f, format, -1, bits)
	if format == 'e' {
		n := len(b)
		if n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

const hexDigits = "0123456789abcdef"

// str appends s as a JSON string, replacing invalid UTF-8 by U+FFFD.
func (e *encoder) str(s string) error {
	if len(e.buf)+len(s) > e.limit {
		return ErrTooLarge
	}
	e.buf = appendJSONString(e.buf, s)
	return nil
}

// bytesStr appends b as a JSON string, replacing invalid UTF-8 by U+FFFD.
func (e *encoder) bytesStr(b []byte) error {
	if len(e.buf)+len(b) > e.limit {
		return ErrTooLarge
	}
	e.buf = appendJSONString(e.buf, b)
	return nil
}

// jsonSafe8 reports whether the 8 bytes packed in x are all ASCII that a JSON string holds
// as is: no control character (below 0x20), no '"', no '\\', nothing from 0x80 up.
func jsonSafe8(x uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	ctl := (x - ones*0x20) &^ x // a high bit set where a byte is below 0x20 (or above 0x7f)
	q := x ^ (ones * '"')
	isQ := (q - ones) &^ q // a high bit set where a byte is '"'
	bs := x ^ (ones * '\\')
	isBS := (bs - ones) &^ bs // a high bit set where a byte is '\\'
	return (ctl|isQ|isBS|x)&highs == 0
}

// load8 returns the 8 bytes of s from i on, little-endian (the caller checked i+8 <= len(s)).
func load8[S string | []byte](s S, i int) uint64 {
	s = s[i : i+8]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// appendJSONString appends s quoted and escaped as encoding/json does with HTML escaping off.
// Runs of plain ASCII are skipped 8 bytes at a time.
func appendJSONString[S string | []byte](b []byte, s S) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if i+8 <= len(s) && jsonSafe8(load8(s, i)) {
			i += 8
			continue
		}
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

// fieldsAt returns the reusable, empty field slice for depth.
func (e *encoder) fieldsAt(depth int) []mapField {
	for len(e.fields) <= depth {
		e.fields = append(e.fields, nil)
	}
	return e.fields[depth][:0]
}

// sortFields sorts fs by key; keys are distinct.
func sortFields(fs []mapField) {
	if len(fs) <= 12 {
		for i := 1; i < len(fs); i++ {
			for j := i; j > 0 && keyLess(fs[j].key, fs[j-1].key); j-- {
				fs[j], fs[j-1] = fs[j-1], fs[j]
			}
		}
		return
	}
	slices.SortFunc(fs, func(a, b mapField) int { return strings.Compare(a.key, b.key) })
}

// validKey reports whether k is valid UTF-8, looking at short ASCII keys (most keys) inline.
func validKey(k string) bool {
	if len(k) <= 16 {
		var or byte
		for i := 0; i < len(k); i++ {
			or |= k[i]
		}
		if or < utf8.RuneSelf {
			return true
		}
	}
	return utf8.ValidString(k)
}

// plainKey reports whether k is at most 16 bytes of ASCII that a JSON string holds as is.
func plainKey(k string) bool {
	if len(k) > 16 {
		return false
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// keyLess reports whether a sorts before b, deciding on the first byte inline when it
// differs (as it mostly does between the keys of one map).
func keyLess(a, b string) bool {
	if len(a) > 0 && len(b) > 0 && a[0] != b[0] {
		return a[0] < b[0]
	}
	return a < b
}

// writeFields appends fs, sorted, as a JSON object; the field whose key is extraKey (when
// extra is not nil) gets the RFC 3339 UTC form of *extra.
func (e *encoder) writeFields(fs []mapField, depth int, extraKey string, extra *time.Time) error {
	e.buf = append(e.buf, '{')
	for i := range fs {
		if i > 0 {
			e.buf = append(e.buf, ',')
		}
		k := fs[i].key
		if plainKey(k) && len(e.buf)+len(k) <= e.limit {
			e.buf = append(e.buf, '"')
			e.buf = append(e.buf, k...)
			e.buf = append(e.buf, '"', ':')
		} else {
			if err := e.str(k); err != nil {
				return err
			}
			e.buf = append(e.buf, ':')
		}
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
		if err := e.value(fs[i].val, depth); err != nil {
			return err
		}
	}
	e.buf = append(e.buf, '}')
	return nil
}

// stringMap appends m as a JSON object with sorted keys; when extra is not nil, extraKey is
// added with the RFC 3339 UTC form of *extra (the caller checked m has no such key).
func (e *encoder) stringMap(m map[string]any, depth int, extraKey string, extra *time.Time) error {
	if depth > MaxDepth {
		return ErrTooDeep
	}
	fs := e.fieldsAt(depth)
	valid := true
	for k, v := range m {
		fs = append(fs, mapField{k, v})
		if valid && !validKey(k) {
			valid = false
		}
	}
	if extra != nil {
		fs = append(fs, mapField{key: extraKey})
	}
	e.fields[depth] = fs
	defer clear(fs) // keep no reference to the record once written
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
	sortFields(fs)
	return e.writeFields(fs, depth, extraKey, extra)
}

// anyMap appends m as a JSON object whose keys are the stringified keys of m, sorted. When
// two keys stringify alike, one of them wins deterministically (see sortedEntries).
func (e *encoder) anyMap(m map[any]any, depth int) error {
	if depth > MaxDepth {
		return ErrTooDeep
	}
	// Fast path: every key a valid UTF-8 string, as Fluent Bit's decoder gives them.
	fs := e.fieldsAt(depth)
	fast := true
	for k, v := range m {
		s, ok := k.(string)
		if !ok || !validKey(s) {
			fast = false
			break
		}
		fs = append(fs, mapField{s, v})
	}
	e.fields[depth] = fs
	defer clear(fs) // keep no reference to the record once written
	if fast {
		sortFields(fs)
		return e.writeFields(fs, depth, "", nil)
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

// entry is one map entry with its key stringified.
type entry struct {
	key  string // the JSON key: valid UTF-8
	rank int    // 0 for a string key that was valid UTF-8, 1 for a repaired one, 2 otherwise
	raw  string // the key's own form, to order colliding keys
	val  any
}

// sortedEntries returns the entries of m sorted by JSON key, one entry per JSON key. Among keys
// that stringify alike, the lowest (rank, raw form, JSON of the value) wins, so the choice
// never depends on map order.
func sortedEntries(m map[any]any, depth int) []entry {
	ents := make([]entry, 0, len(m))
	for k, v := range m {
		ents = append(ents, entry{key: keyString(k), rank: keyRank(k), raw: rawKey(k), val: v})
	}
	slices.SortFunc(ents, func(a, b entry) int {
		if c := strings.Compare(a.key, b.key); c != 0 {
			return c
		}
		if a.rank != b.rank {
			return a.rank - b.rank
		}
		if c := strings.Compare(a.raw, b.raw); c != 0 {
			return c
		}
		return strings.Compare(jsonOf(a.val, depth), jsonOf(b.val, depth))
	})
	out := ents[:0]
	for i, en := range ents {
		if i > 0 && en.key == ents[i-1].key {
			continue
		}
		out = append(out, en)
	}
	return out
}

// jsonOf returns the JSON of v, or "" when it cannot be encoded; used only to order values.
func jsonOf(v any, depth int) string {
	e := encoder{limit: MaxPayloadSize}
	if e.value(v, depth) != nil {
		return ""
	}
	return string(e.buf)
}

// keyRank orders colliding keys: valid strings first, then repaired strings, then the rest.
func keyRank(k any) int {
	switch x := k.(type) {
	case string:
		if utf8.ValidString(x) {
			return 0
		}
		return 1
	}
	return 2
}

// rawKey is a key's own form, used only to order keys that stringify alike.
func rawKey(k any) string {
	if s, ok := k.(string); ok {
		return s
	}
	return fmt.Sprintf("%T:%v", k, k)
}

// keyString returns the JSON object key for a map key of any type.
func keyString(k any) string {
	switch x := k.(type) {
	case string:
		return strings.ToValidUTF8(x, "\uFFFD")
	case nil:
		return "null"
	}
	return scalarString(k)
}

// scalarString renders a value the way the subject and the HTML table show it: strings and
// []byte as text (invalid UTF-8 repaired), numbers and booleans plainly, times in RFC 3339 UTC,
// nil as "", maps and arrays as compact sorted JSON, anything else via fmt.
func scalarString(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return strings.ToValidUTF8(x, "\uFFFD")
	case []byte:
		return strings.ToValidUTF8(string(x), "\uFFFD")
	case bool:
		return strconv.FormatBool(x)
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return string(appendNonFinite(nil, x))
		}
		return string(appendFloat(nil, x, 64))
	case float32:
		f := float64(x)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return string(appendNonFinite(nil, f))
		}
		return string(appendFloat(nil, f, 32))
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		return fmt.Sprint(x)
	case map[string]any, map[any]any, []any:
		e := encoder{limit: MaxPayloadSize}
		if err := e.value(x, 0); err != nil {
			return ""
		}
		return string(e.buf)
	}
	fb := fallback(v)
	switch fb.(type) {
	case string:
		return strings.ToValidUTF8(fb.(string), "\uFFFD")
	}
	return scalarString(fb)
}

// Normalize returns v as plain JSON-ready data: map[string]any with valid UTF-8 keys (colliding
// keys resolved as the payload resolves them), []any, string (valid UTF-8), bool, the integer
// and float types unchanged, nil. []byte becomes a string, time.Time its RFC 3339 UTC form,
// NaN and infinities the strings "NaN", "+Inf", "-Inf", other types their fmt form. Marshalled
// with encoding/json (sorted keys, HTML escaping off) it gives the same bytes as the payload
// for valid UTF-8; a run of invalid bytes becomes one U+FFFD here (strings.ToValidUTF8) but
// one U+FFFD per byte in the payload.
func Normalize(v any) any {
	return normalize(v, 0)
}

func normalize(v any, depth int) any {
	if depth > MaxDepth {
		return nil
	}
	switch x := v.(type) {
	case nil, bool, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		return x
	case string:
		return strings.ToValidUTF8(x, "\uFFFD")
	case []byte:
		return strings.ToValidUTF8(string(x), "\uFFFD")
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return string(appendNonFinite(nil, x))
		}
		return x
	case float32:
		if f := float64(x); math.IsNaN(f) || math.IsInf(f, 0) {
			return string(appendNonFinite(nil, f))
		}
		return x
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	case map[string]any:
		am := make(map[any]any, len(x))
		for k, v := range x {
			am[k] = v
		}
		return normalize(am, depth)
	case map[any]any:
		out := make(map[string]any, len(x))
		for _, en := range sortedEntries(x, depth+1) {
			out[en.key] = normalize(en.val, depth+1)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, el := range x {
			out[i] = normalize(el, depth+1)
		}
		return out
	}
	fb := fallback(v)
	if s, ok := fb.(string); ok {
		return strings.ToValidUTF8(s, "\uFFFD")
	}
	return normalize(fb, depth)
}
