// Package chunk decodes the msgpack chunks Fluent Bit hands to an output plugin into
// records, and encodes such chunks for tests and tools.
//
// A chunk is a concatenation of entries, each one of
//
//	[ts, record]                  (Forward / Fluent Bit v1 form)
//	[[ts, metadata], record]      (Fluent Bit v2 form)
//
// where ts is an EventTime (ext type 0: big-endian uint32 seconds and uint32
// nanoseconds), an integer number of seconds (signed or unsigned) or a float number of
// seconds (year 1 to 9999), and metadata is a map or nil. Group start and end markers
// (entries whose EventTime seconds are 0xFFFFFFFF and 0xFFFFFFFE, int32 -1 and -2 as
// Fluent Bit reads them) are not records and are skipped.
//
// The decoder is written for untrusted input: it never panics, never allocates more than
// the bytes present justify, bounds nesting depth, and resynchronises after an entry that
// is well-formed msgpack but not a valid entry.
//
// Zero-copy strings: decoded strings (values and map keys) and []byte values point into
// the chunk passed to NewDecoder. The chunk must therefore outlive every decoded Entry
// that is still in use and must not be modified while they are. (The plugin copies the
// C buffer into a Go []byte once per flush, which satisfies both.)
package chunk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
	"unsafe"
)

// MaxDepth is the deepest nesting of maps and arrays accepted inside a record or its
// metadata (the record map itself is depth 1). A deeper entry yields an *EntryError
// wrapping ErrTooDeep and is skipped.
const MaxDepth = 64

// Group marker EventTime seconds, as written by Fluent Bit (int32 -1 and -2).
const (
	groupStartSeconds = 0xFFFFFFFF
	groupEndSeconds   = 0xFFFFFFFE
)

// Integer and float timestamps are accepted from year 1 to year 9999 (the range RFC 3339
// can write); outside it an entry yields ErrInvalidEntry.
const (
	minSeconds = -62135596800 // 0001-01-01T00:00:00Z
	maxSeconds = 253402300799 // 9999-12-31T23:59:59Z
)

// Limits on the capacity reserved up front from a length prefix; larger containers grow
// as their elements are actually decoded, so a lying prefix cannot force a large
// allocation.
const (
	maxMapHint   = 256
	maxArrayHint = 1024
)

// Sentinel errors wrapped by *EntryError; test with errors.Is.
var (
	// ErrTruncated: the chunk ends inside a msgpack object. Fatal.
	ErrTruncated = errors.New("truncated msgpack data")
	// ErrMalformed: a byte that is not a valid msgpack format (0xc1). Fatal.
	ErrMalformed = errors.New("malformed msgpack data")
	// ErrInvalidEntry: well-formed msgpack that is not a valid entry. The entry is skipped.
	ErrInvalidEntry = errors.New("invalid entry")
	// ErrTooDeep: nesting deeper than MaxDepth. The entry is skipped.
	ErrTooDeep = errors.New("nesting too deep")
)

// Entry is one record of a chunk.
type Entry struct {
	// Time is the record's timestamp, in UTC.
	Time time.Time
	// Metadata is the v2 entry metadata; nil for [ts, record] entries (and for v2
	// entries whose metadata is msgpack nil).
	Metadata map[string]any
	// Record is the record body.
	Record map[string]any
}

// EntryError reports an entry that could not be decoded.
type EntryError struct {
	// Index counts the top-level objects of the chunk from 0 (group markers included).
	Index int
	// Offset is the byte offset in the chunk where the entry starts.
	Offset int
	// Reason says what is wrong, in words.
	Reason string
	// Err is one of ErrTruncated, ErrMalformed, ErrInvalidEntry or ErrTooDeep.
	Err error
}

// Error implements error.
func (e *EntryError) Error() string {
	return fmt.Sprintf("chunk entry %d at byte %d: %s", e.Index, e.Offset, e.Reason)
}

// Unwrap returns the sentinel error classifying e.
func (e *EntryError) Unwrap() error { return e.Err }

// Fatal reports whether decoding cannot continue after e (truncated or malformed data):
// the next call to Next returns io.EOF. A non-fatal error concerns one entry only.
func (e *EntryError) Fatal() bool {
	return errors.Is(e.Err, ErrTruncated) || errors.Is(e.Err, ErrMalformed)
}

// Decoder reads the entries of one chunk. It is not safe for concurrent use.
type Decoder struct {
	slabs
	b       []byte
	p       int
	index   int
	skipped int
	done    bool
}

// NewDecoder returns a Decoder reading data. Decoded strings and byte slices alias
// data (see the package documentation): data must not be modified while they are used.
func NewDecoder(data []byte) *Decoder {
	return &Decoder{b: data}
}

// Skipped returns how many group start/end markers have been skipped so far.
func (d *Decoder) Skipped() int { return d.skipped }

// Offset returns the byte offset of the next entry to decode. After a fatal error it is
// the offset of the entry that could not be decoded, so len(chunk)-Offset() bytes were
// lost.
func (d *Decoder) Offset() int { return d.p }

// Next returns the next record entry, or io.EOF at the end of the chunk. Group markers
// are skipped (see Skipped). An entry that is well-formed msgpack but not a valid entry
// yields an *EntryError and the following call continues with the next entry. Truncated
// or malformed msgpack yields an *EntryError whose Fatal() is true, after which Next
// returns io.EOF.
func (d *Decoder) Next() (Entry, error) {
	for {
		if d.done || d.p >= len(d.b) {
			d.done = true
			return Entry{}, io.EOF
		}
		start, index := d.p, d.index
		d.index++
		e, marker, reason, err := d.entry()
		if err == nil {
			if marker {
				d.skipped++
				continue
			}
			return e, nil
		}
		eerr := &EntryError{Index: index, Offset: start, Reason: reason, Err: err}
		if eerr.Fatal() {
			d.done = true
			d.p = start
			if reason == "" {
				eerr.Reason = err.Error()
			}
			return Entry{}, eerr
		}
		// Well-formed so far: resynchronise on the end of the entry's object.
		end, serr := skip(d.b, start)
		if serr != nil {
			d.done = true
			d.p = start
			eerr.Err = serr
			eerr.Reason = reason + "; then " + serr.Error()
			return Entry{}, eerr
		}
		d.p = end
		return Entry{}, eerr
	}
}

// entry decodes the entry at d.p. marker reports a group marker (already skipped past).
// On error, reason describes it and err is a sentinel; d.p is then meaningless.
func (d *Decoder) entry() (e Entry, marker bool, reason string, err error) {
	start := d.p
	n, ok, err := d.arrayHeader()
	if err != nil {
		return e, false, "", err
	}
	if !ok {
		return e, false, "entry is not an array (found " + typeName(d.b[start]) + ")", ErrInvalidEntry
	}
	if n != 2 {
		return e, false, "entry is an array of " + strconv.Itoa(n) + " elements, want 2", ErrInvalidEntry
	}
	v2 := false
	if d.p < len(d.b) && isArray(d.b[d.p]) {
		hn, _, err := d.arrayHeader()
		if err != nil {
			return e, false, "", err
		}
		if hn != 2 {
			return e, false, "entry header is an array of " + strconv.Itoa(hn) + " elements, want 2", ErrInvalidEntry
		}
		v2 = true
	}
	t, marker, reason, err := d.timestamp()
	if err != nil {
		return e, false, reason, err
	}
	if marker {
		end, err := skip(d.b, start)
		if err != nil {
			return e, false, "", err
		}
		d.p = end
		return e, true, "", nil
	}
	e.Time = t
	if v2 {
		if d.p >= len(d.b) {
			return e, false, "", ErrTruncated
		}
		c := d.b[d.p]
		switch {
		case c == 0xc0:
			d.p++
		case isMap(c):
			m, err := d.mapValue(1)
			if err != nil {
				return e, false, "metadata: " + err.Error(), err
			}
			e.Metadata = m
		default:
			return e, false, "metadata is not a map (found " + typeName(c) + ")", ErrInvalidEntry
		}
	}
	if d.p >= len(d.b) {
		return e, false, "", ErrTruncated
	}
	if c := d.b[d.p]; !isMap(c) {
		return e, false, "record is not a map (found " + typeName(c) + ")", ErrInvalidEntry
	}
	m, err := d.mapValue(1)
	if err != nil {
		return e, false, "record: " + err.Error(), err
	}
	e.Record = m
	return e, false, "", nil
}

// timestamp decodes an entry timestamp at d.p.
func (d *Decoder) timestamp() (t time.Time, marker bool, reason string, err error) {
	if d.p >= len(d.b) {
		return t, false, "", ErrTruncated
	}
	c := d.b[d.p]
	switch {
	case c <= 0x7f || c >= 0xe0 || (c >= 0xcc && c <= 0xd3):
		v, err := d.value(0)
		if err != nil {
			return t, false, "", err
		}
		if s, ok := v.(int64); ok && s >= minSeconds && s <= maxSeconds {
			return time.Unix(s, 0).UTC(), false, "", nil
		}
		return t, false, fmt.Sprintf("timestamp %v seconds out of range", v), ErrInvalidEntry
	case c == 0xca || c == 0xcb:
		v, err := d.value(0)
		if err != nil {
			return t, false, "", err
		}
		f := v.(float64)
		bits := 64
		if c == 0xca {
			bits = 32
		}
		t, ok := floatTime(f, bits)
		if !ok {
			return t, false, "timestamp " + strconv.FormatFloat(f, 'g', -1, 64) + " seconds out of range", ErrInvalidEntry
		}
		return t, false, "", nil
	case (c >= 0xd4 && c <= 0xd8) || (c >= 0xc7 && c <= 0xc9):
		typ, data, err := d.ext()
		if err != nil {
			return t, false, "", err
		}
		if typ != 0 || len(data) != 8 {
			return t, false, fmt.Sprintf("unsupported timestamp: ext type %d of %d bytes, want EventTime (ext type 0, 8 bytes)", typ, len(data)), ErrInvalidEntry
		}
		sec := binary.BigEndian.Uint32(data)
		if sec == groupStartSeconds || sec == groupEndSeconds {
			return t, true, "", nil
		}
		return eventTime(data), false, "", nil
	default:
		return t, false, "unsupported timestamp type " + typeName(c), ErrInvalidEntry
	}
}

// eventTime converts the 8 bytes of an EventTime extension.
func eventTime(data []byte) time.Time {
	sec := binary.BigEndian.Uint32(data)
	nsec := binary.BigEndian.Uint32(data[4:])
	return time.Unix(int64(sec), int64(nsec)).UTC()
}

// floatTime converts float seconds to a time, taking the shortest decimal representation
// of f at its precision (bits 32 or 64) so that 1700000000.123 becomes exactly .123 s.
// Digits beyond nanoseconds are truncated.
func floatTime(f float64, bits int) (time.Time, bool) {
	if math.IsNaN(f) || math.IsInf(f, 0) || f < minSeconds || f >= maxSeconds+1 {
		return time.Time{}, false
	}
	var buf [64]byte
	s := string(strconv.AppendFloat(buf[:0], math.Abs(f), 'f', -1, bits))
	intPart, frac, _ := strings.Cut(s, ".")
	sec, err := strconv.ParseInt(intPart, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	var nsec int64
	for i := 0; i < 9; i++ {
		nsec *= 10
		if i < len(frac) {
			nsec += int64(frac[i] - '0')
		}
	}
	if f < 0 {
		sec, nsec = -sec, -nsec
	}
	return time.Unix(sec, nsec).UTC(), true
}

// arrayHeader reads an array header at d.p. ok is false (and d.p unchanged) when the
// object there is not an array.
func (d *Decoder) arrayHeader() (n int, ok bool, err error) {
	if d.p >= len(d.b) {
		return 0, false, ErrTruncated
	}
	c := d.b[d.p]
	switch {
	case c >= 0x90 && c <= 0x9f:
		d.p++
		return int(c & 0x0f), true, nil
	case c == 0xdc:
		n, err := d.uintN(2)
		return n, err == nil, err
	case c == 0xdd:
		n, err := d.uintN(4)
		return n, err == nil, err
	}
	return 0, false, nil
}

// uintN skips the format byte at d.p and reads a big-endian unsigned length of size
// bytes (1, 2 or 4).
func (d *Decoder) uintN(size int) (int, error) {
	if len(d.b)-d.p-1 < size {
		return 0, ErrTruncated
	}
	b := d.b[d.p+1 : d.p+1+size]
	d.p += 1 + size
	switch size {
	case 1:
		return int(b[0]), nil
	case 2:
		return int(binary.BigEndian.Uint16(b)), nil
	default:
		return int(binary.BigEndian.Uint32(b)), nil
	}
}

// take returns the next n bytes and advances.
func (d *Decoder) take(n int) ([]byte, error) {
	if n < 0 || n > len(d.b)-d.p {
		return nil, ErrTruncated
	}
	b := d.b[d.p : d.p+n : d.p+n]
	d.p += n
	return b, nil
}

// str returns n bytes at d.p as a string aliasing the chunk.
func (d *Decoder) str(n int) (string, error) {
	if n > len(d.b)-d.p {
		return "", ErrTruncated
	}
	if n == 0 {
		return "", nil
	}
	s := unsafe.String(&d.b[d.p], n)
	d.p += n
	return s, nil
}

// strValue returns n bytes at d.p as a boxed string aliasing the chunk.
func (d *Decoder) strValue(n int) (any, error) {
	s, err := d.str(n)
	if err != nil {
		return nil, err
	}
	return d.slabs.str(s), nil
}

// ext reads an ext object (fixext or ext8/16/32) at d.p.
func (d *Decoder) ext() (typ int8, data []byte, err error) {
	c := d.b[d.p]
	var n int
	switch c {
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8:
		n = 1 << (c - 0xd4)
		d.p++
	case 0xc7:
		n, err = d.uintN(1)
	case 0xc8:
		n, err = d.uintN(2)
	case 0xc9:
		n, err = d.uintN(4)
	}
	if err != nil {
		return 0, nil, err
	}
	if d.p >= len(d.b) {
		return 0, nil, ErrTruncated
	}
	typ = int8(d.b[d.p])
	d.p++
	data, err = d.take(n)
	return typ, data, err
}

// mapValue decodes the map at d.p (the caller checked the format byte is a map) at the
// given depth.
func (d *Decoder) mapValue(depth int) (map[string]any, error) {
	c := d.b[d.p]
	var n int
	var err error
	switch {
	case c >= 0x80 && c <= 0x8f:
		n = int(c & 0x0f)
		d.p++
	case c == 0xde:
		n, err = d.uintN(2)
	default:
		n, err = d.uintN(4)
	}
	if err != nil {
		return nil, err
	}
	return d.mapBody(n, depth)
}

func (d *Decoder) mapBody(n, depth int) (map[string]any, error) {
	if depth > MaxDepth {
		return nil, ErrTooDeep
	}
	// Every key and every value takes at least one byte.
	if n > (len(d.b)-d.p)/2 {
		return nil, ErrTruncated
	}
	m := make(map[string]any, min(n, maxMapHint))
	for i := 0; i < n; i++ {
		k, err := d.key(depth)
		if err != nil {
			return nil, err
		}
		v, err := d.value(depth)
		if err != nil {
			return nil, err
		}
		m[k] = v
	}
	return m, nil
}

func (d *Decoder) arrayBody(n, depth int) ([]any, error) {
	if depth > MaxDepth {
		return nil, ErrTooDeep
	}
	if n > len(d.b)-d.p {
		return nil, ErrTruncated
	}
	a := make([]any, 0, min(n, maxArrayHint))
	for i := 0; i < n; i++ {
		v, err := d.value(depth)
		if err != nil {
			return nil, err
		}
		a = append(a, v)
	}
	return a, nil
}

// key decodes a map key inside a container at depth; non-string keys are stringified.
func (d *Decoder) key(depth int) (string, error) {
	if d.p >= len(d.b) {
		return "", ErrTruncated
	}
	c := d.b[d.p]
	var n int
	var err error
	switch {
	case c >= 0xa0 && c <= 0xbf:
		d.p++
		return d.str(int(c & 0x1f))
	case c == 0xd9:
		n, err = d.uintN(1)
	case c == 0xda:
		n, err = d.uintN(2)
	case c == 0xdb:
		n, err = d.uintN(4)
	default:
		v, err := d.value(depth)
		if err != nil {
			return "", err
		}
		return keyString(v), nil
	}
	if err != nil {
		return "", err
	}
	return d.str(n)
}

// keyString formats a non-string map key: integers in decimal, floats as %v does, bin
// as its bytes, anything else as fmt.Sprint does.
func keyString(v any) string {
	switch k := v.(type) {
	case string:
		return k
	case []byte:
		return string(k)
	case int64:
		return strconv.FormatInt(k, 10)
	case uint64:
		return strconv.FormatUint(k, 10)
	case float64:
		return strconv.FormatFloat(k, 'g', -1, 64)
	case bool:
		return strconv.FormatBool(k)
	case time.Time:
		return k.Format(time.RFC3339Nano)
	}
	return fmt.Sprint(v)
}

// value decodes the object at d.p, which sits inside a container at depth (0 for a
// top-level scalar).
func (d *Decoder) value(depth int) (any, error) {
	if d.p >= len(d.b) {
		return nil, ErrTruncated
	}
	c := d.b[d.p]
	switch {
	case c <= 0x7f:
		d.p++
		return int64(c), nil
	case c >= 0xe0:
		d.p++
		return d.int(int64(int8(c))), nil
	case c <= 0x8f:
		d.p++
		return d.mapBody(int(c&0x0f), depth+1)
	case c <= 0x9f:
		d.p++
		return d.arrayBody(int(c&0x0f), depth+1)
	case c <= 0xbf:
		d.p++
		return d.strValue(int(c & 0x1f))
	}
	switch c {
	case 0xc0:
		d.p++
		return nil, nil
	case 0xc2:
		d.p++
		return false, nil
	case 0xc3:
		d.p++
		return true, nil
	case 0xc4, 0xc5, 0xc6:
		n, err := d.uintN(1 << (c - 0xc4))
		if err != nil {
			return nil, err
		}
		return d.take(n)
	case 0xc7, 0xc8, 0xc9, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8:
		typ, data, err := d.ext()
		if err != nil {
			return nil, err
		}
		if typ == 0 && len(data) == 8 {
			return eventTime(data), nil
		}
		return map[string]any{"ext_type": int64(typ), "data": data}, nil
	case 0xca:
		b, err := d.fixed(4)
		if err != nil {
			return nil, err
		}
		return d.float(float64(math.Float32frombits(binary.BigEndian.Uint32(b)))), nil
	case 0xcb:
		b, err := d.fixed(8)
		if err != nil {
			return nil, err
		}
		return d.float(math.Float64frombits(binary.BigEndian.Uint64(b))), nil
	case 0xcc:
		b, err := d.fixed(1)
		if err != nil {
			return nil, err
		}
		return int64(b[0]), nil
	case 0xcd:
		b, err := d.fixed(2)
		if err != nil {
			return nil, err
		}
		return d.int(int64(binary.BigEndian.Uint16(b))), nil
	case 0xce:
		b, err := d.fixed(4)
		if err != nil {
			return nil, err
		}
		return d.int(int64(binary.BigEndian.Uint32(b))), nil
	case 0xcf:
		b, err := d.fixed(8)
		if err != nil {
			return nil, err
		}
		u := binary.BigEndian.Uint64(b)
		if u > math.MaxInt64 {
			return u, nil
		}
		return d.int(int64(u)), nil
	case 0xd0:
		b, err := d.fixed(1)
		if err != nil {
			return nil, err
		}
		return d.int(int64(int8(b[0]))), nil
	case 0xd1:
		b, err := d.fixed(2)
		if err != nil {
			return nil, err
		}
		return d.int(int64(int16(binary.BigEndian.Uint16(b)))), nil
	case 0xd2:
		b, err := d.fixed(4)
		if err != nil {
			return nil, err
		}
		return d.int(int64(int32(binary.BigEndian.Uint32(b)))), nil
	case 0xd3:
		b, err := d.fixed(8)
		if err != nil {
			return nil, err
		}
		return d.int(int64(binary.BigEndian.Uint64(b))), nil
	case 0xd9, 0xda, 0xdb:
		n, err := d.uintN(1 << (c - 0xd9))
		if err != nil {
			return nil, err
		}
		return d.strValue(n)
	case 0xdc, 0xdd:
		n, err := d.uintN(2 << (c - 0xdc))
		if err != nil {
			return nil, err
		}
		return d.arrayBody(n, depth+1)
	case 0xde, 0xdf:
		n, err := d.uintN(2 << (c - 0xde))
		if err != nil {
			return nil, err
		}
		return d.mapBody(n, depth+1)
	}
	return nil, ErrMalformed // 0xc1
}

// fixed skips the format byte at d.p and returns the n payload bytes after it.
func (d *Decoder) fixed(n int) ([]byte, error) {
	if len(d.b)-d.p-1 < n {
		return nil, ErrTruncated
	}
	b := d.b[d.p+1 : d.p+1+n]
	d.p += 1 + n
	return b, nil
}

func isArray(c byte) bool { return (c >= 0x90 && c <= 0x9f) || c == 0xdc || c == 0xdd }

func isMap(c byte) bool { return (c >= 0x80 && c <= 0x8f) || c == 0xde || c == 0xdf }

// typeName names the msgpack type introduced by format byte c, for error messages.
func typeName(c byte) string {
	switch {
	case c <= 0x7f || c >= 0xe0 || (c >= 0xcc && c <= 0xd3):
		return "integer"
	case isMap(c):
		return "map"
	case isArray(c):
		return "array"
	case (c >= 0xa0 && c <= 0xbf) || (c >= 0xd9 && c <= 0xdb):
		return "string"
	}
	switch c {
	case 0xc0:
		return "nil"
	case 0xc2, 0xc3:
		return "boolean"
	case 0xc4, 0xc5, 0xc6:
		return "binary"
	case 0xc7, 0xc8, 0xc9, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8:
		return "ext"
	case 0xca, 0xcb:
		return "float"
	}
	return "invalid format byte 0xc1"
}
