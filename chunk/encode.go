package chunk

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"time"
)

// Raw is msgpack that an Encoder writes verbatim where a value is expected, e.g. to build
// a map with non-string keys or a deliberately broken value in a test.
type Raw []byte

// Ext is a msgpack extension value for the Encoder (Type 0 with 8 bytes of Data is an
// EventTime).
type Ext struct {
	Type int8
	Data []byte
}

// Encoder builds chunks as Fluent Bit does, for tests and tools. The zero value is an
// empty chunk ready to use. Map keys are written in sorted order, so the output is
// deterministic.
//
// The value types it encodes are: nil, bool, every int and uint type, float32, float64,
// string, []byte (bin), time.Time (EventTime), Ext, Raw, []any, []string, map[string]any
// and map[string]string. Any other type is a programming error and panics.
type Encoder struct {
	buf []byte
}

// Bytes returns the chunk built so far; it aliases the Encoder's buffer.
func (e *Encoder) Bytes() []byte { return e.buf }

// Len returns the size of the chunk built so far in bytes.
func (e *Encoder) Len() int { return len(e.buf) }

// Reset empties the chunk, keeping the buffer for reuse.
func (e *Encoder) Reset() { e.buf = e.buf[:0] }

// AppendRaw appends b verbatim (garbage, a non-map record... for fault tests).
func (e *Encoder) AppendRaw(b []byte) { e.buf = append(e.buf, b...) }

// AppendV1 appends a [ts, record] entry the way a Forward client writes it (compact
// headers). ts is normally a time.Time (EventTime), an int or uint type (seconds), or a
// float32 or float64 (seconds); it is written as AppendValue writes it, so any other
// value (a string, Raw...) can be used to build a faulty entry.
func (e *Encoder) AppendV1(ts any, record map[string]any) {
	e.buf = append(e.buf, 0x92)
	e.AppendValue(ts)
	e.appendMap(record, false)
}

// AppendV2 appends a [[EventTime, metadata], record] entry exactly as Fluent Bit's log
// event encoder does: array32 headers for the entry and its header, a fixext8 EventTime,
// and map32 headers for metadata and record (a nil metadata map is written as {}).
func (e *Encoder) AppendV2(ts time.Time, metadata, record map[string]any) {
	e.appendV2Header()
	e.appendEventTime(ts)
	e.appendMap(metadata, true)
	e.appendMap(record, true)
}

// AppendGroupStart appends a group start marker carrying the group's metadata and
// attributes, as Fluent Bit does (EventTime seconds 0xFFFFFFFF, i.e. int32 -1).
func (e *Encoder) AppendGroupStart(meta, attrs map[string]any) {
	e.appendV2Header()
	e.appendEventTimeRaw(groupStartSeconds, 0)
	e.appendMap(meta, true)
	e.appendMap(attrs, true)
}

// AppendGroupEnd appends a group end marker (EventTime seconds 0xFFFFFFFE, i.e. int32
// -2) with empty metadata and body.
func (e *Encoder) AppendGroupEnd() {
	e.appendV2Header()
	e.appendEventTimeRaw(groupEndSeconds, 0)
	e.appendMap(nil, true)
	e.appendMap(nil, true)
}

// appendV2Header writes the array32 headers of the entry and of its [ts, metadata] header.
func (e *Encoder) appendV2Header() {
	e.buf = append(e.buf, 0xdd, 0, 0, 0, 2, 0xdd, 0, 0, 0, 2)
}

// appendEventTime writes t as an EventTime; seconds are truncated to uint32 as Fluent
// Bit does.
func (e *Encoder) appendEventTime(t time.Time) {
	e.appendEventTimeRaw(uint32(t.Unix()), uint32(t.Nanosecond()))
}

func (e *Encoder) appendEventTimeRaw(sec, nsec uint32) {
	e.buf = append(e.buf, 0xd7, 0x00)
	e.buf = binary.BigEndian.AppendUint32(e.buf, sec)
	e.buf = binary.BigEndian.AppendUint32(e.buf, nsec)
}

// appendMap writes m with sorted keys; wide forces a map32 header as Fluent Bit's
// encoder writes for metadata and bodies.
func (e *Encoder) appendMap(m map[string]any, wide bool) {
	if wide {
		e.buf = append(e.buf, 0xdf)
		e.buf = binary.BigEndian.AppendUint32(e.buf, uint32(len(m)))
	} else {
		e.appendMapHeader(len(m))
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		e.appendString(k)
		e.AppendValue(m[k])
	}
}

// AppendValue appends one msgpack value (see Encoder for the types accepted), using the
// smallest format for each, as msgpack-c does.
func (e *Encoder) AppendValue(v any) {
	switch x := v.(type) {
	case nil:
		e.buf = append(e.buf, 0xc0)
	case bool:
		if x {
			e.buf = append(e.buf, 0xc3)
		} else {
			e.buf = append(e.buf, 0xc2)
		}
	case int:
		e.appendInt(int64(x))
	case int8:
		e.appendInt(int64(x))
	case int16:
		e.appendInt(int64(x))
	case int32:
		e.appendInt(int64(x))
	case int64:
		e.appendInt(x)
	case uint:
		e.appendUint(uint64(x))
	case uint8:
		e.appendUint(uint64(x))
	case uint16:
		e.appendUint(uint64(x))
	case uint32:
		e.appendUint(uint64(x))
	case uint64:
		e.appendUint(x)
	case float32:
		e.buf = append(e.buf, 0xca)
		e.buf = binary.BigEndian.AppendUint32(e.buf, math.Float32bits(x))
	case float64:
		e.buf = append(e.buf, 0xcb)
		e.buf = binary.BigEndian.AppendUint64(e.buf, math.Float64bits(x))
	case string:
		e.appendString(x)
	case []byte:
		e.appendBin(x)
	case time.Time:
		e.appendEventTime(x)
	case Ext:
		e.appendExt(x)
	case Raw:
		e.buf = append(e.buf, x...)
	case []any:
		e.appendArrayHeader(len(x))
		for _, el := range x {
			e.AppendValue(el)
		}
	case []string:
		e.appendArrayHeader(len(x))
		for _, el := range x {
			e.appendString(el)
		}
	case map[string]any:
		e.appendMap(x, false)
	case map[string]string:
		m := make(map[string]any, len(x))
		for k, s := range x {
			m[k] = s
		}
		e.appendMap(m, false)
	default:
		panic(fmt.Sprintf("chunk.Encoder: cannot encode a value of type %T", v))
	}
}

func (e *Encoder) appendInt(i int64) {
	switch {
	case i >= 0:
		e.appendUint(uint64(i))
	case i >= -32:
		e.buf = append(e.buf, byte(int8(i)))
	case i >= math.MinInt8:
		e.buf = append(e.buf, 0xd0, byte(int8(i)))
	case i >= math.MinInt16:
		e.buf = append(e.buf, 0xd1)
		e.buf = binary.BigEndian.AppendUint16(e.buf, uint16(int16(i)))
	case i >= math.MinInt32:
		e.buf = append(e.buf, 0xd2)
		e.buf = binary.BigEndian.AppendUint32(e.buf, uint32(int32(i)))
	default:
		e.buf = append(e.buf, 0xd3)
		e.buf = binary.BigEndian.AppendUint64(e.buf, uint64(i))
	}
}

func (e *Encoder) appendUint(u uint64) {
	switch {
	case u <= 0x7f:
		e.buf = append(e.buf, byte(u))
	case u <= math.MaxUint8:
		e.buf = append(e.buf, 0xcc, byte(u))
	case u <= math.MaxUint16:
		e.buf = append(e.buf, 0xcd)
		e.buf = binary.BigEndian.AppendUint16(e.buf, uint16(u))
	case u <= math.MaxUint32:
		e.buf = append(e.buf, 0xce)
		e.buf = binary.BigEndian.AppendUint32(e.buf, uint32(u))
	default:
		e.buf = append(e.buf, 0xcf)
		e.buf = binary.BigEndian.AppendUint64(e.buf, u)
	}
}

func (e *Encoder) appendString(s string) {
	n := len(s)
	switch {
	case n <= 31:
		e.buf = append(e.buf, 0xa0|byte(n))
	case n <= math.MaxUint8:
		e.buf = append(e.buf, 0xd9, byte(n))
	case n <= math.MaxUint16:
		e.buf = append(e.buf, 0xda)
		e.buf = binary.BigEndian.AppendUint16(e.buf, uint16(n))
	default:
		e.buf = append(e.buf, 0xdb)
		e.buf = binary.BigEndian.AppendUint32(e.buf, uint32(n))
	}
	e.buf = append(e.buf, s...)
}

func (e *Encoder) appendBin(b []byte) {
	n := len(b)
	switch {
	case n <= math.MaxUint8:
		e.buf = append(e.buf, 0xc4, byte(n))
	case n <= math.MaxUint16:
		e.buf = append(e.buf, 0xc5)
		e.buf = binary.BigEndian.AppendUint16(e.buf, uint16(n))
	default:
		e.buf = append(e.buf, 0xc6)
		e.buf = binary.BigEndian.AppendUint32(e.buf, uint32(n))
	}
	e.buf = append(e.buf, b...)
}

func (e *Encoder) appendExt(x Ext) {
	n := len(x.Data)
	switch n {
	case 1, 2, 4, 8, 16:
		e.buf = append(e.buf, 0xd4+byte(bits.TrailingZeros(uint(n)))) // fixext 1..16
	default:
		switch {
		case n <= math.MaxUint8:
			e.buf = append(e.buf, 0xc7, byte(n))
		case n <= math.MaxUint16:
			e.buf = append(e.buf, 0xc8)
			e.buf = binary.BigEndian.AppendUint16(e.buf, uint16(n))
		default:
			e.buf = append(e.buf, 0xc9)
			e.buf = binary.BigEndian.AppendUint32(e.buf, uint32(n))
		}
	}
	e.buf = append(e.buf, byte(x.Type))
	e.buf = append(e.buf, x.Data...)
}

func (e *Encoder) appendArrayHeader(n int) {
	switch {
	case n <= 15:
		e.buf = append(e.buf, 0x90|byte(n))
	case n <= math.MaxUint16:
		e.buf = append(e.buf, 0xdc)
		e.buf = binary.BigEndian.AppendUint16(e.buf, uint16(n))
	default:
		e.buf = append(e.buf, 0xdd)
		e.buf = binary.BigEndian.AppendUint32(e.buf, uint32(n))
	}
}

func (e *Encoder) appendMapHeader(n int) {
	switch {
	case n <= 15:
		e.buf = append(e.buf, 0x80|byte(n))
	case n <= math.MaxUint16:
		e.buf = append(e.buf, 0xde)
		e.buf = binary.BigEndian.AppendUint16(e.buf, uint16(n))
	default:
		e.buf = append(e.buf, 0xdf)
		e.buf = binary.BigEndian.AppendUint32(e.buf, uint32(n))
	}
}
