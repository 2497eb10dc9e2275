package chunk

import (
	"encoding/hex"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestEncoderBytes checks the Encoder against bytes written by hand from the msgpack
// spec and Fluent Bit's log event encoder (array32/map32 headers, fixext8 EventTime).
func TestEncoderBytes(t *testing.T) {
	tests := []struct {
		name  string
		build func(e *Encoder)
		want  string
	}{
		{
			name:  "v2 as Fluent Bit",
			build: func(e *Encoder) { e.AppendV2(ev, map[string]any{"m": "x"}, map[string]any{"k": "v"}) },
			want:  "dd00000002 dd00000002 " + evFix + " df00000001 a16d a178 df00000001 a16b a176",
		},
		{
			name:  "v2 nil metadata written as {}",
			build: func(e *Encoder) { e.AppendV2(ev, nil, map[string]any{}) },
			want:  "dd00000002 dd00000002 " + evFix + " df00000000 df00000000",
		},
		{
			name:  "v1 EventTime",
			build: func(e *Encoder) { e.AppendV1(ev, map[string]any{"k": "v"}) },
			want:  goodV1,
		},
		{
			name:  "v1 uint64 seconds",
			build: func(e *Encoder) { e.AppendV1(uint64(1700000000), map[string]any{}) },
			want:  "92 ce6553f100 80",
		},
		{
			name:  "v1 negative int64 seconds",
			build: func(e *Encoder) { e.AppendV1(int64(-100), map[string]any{}) },
			want:  "92 d09c 80",
		},
		{
			name:  "v1 float64 seconds",
			build: func(e *Encoder) { e.AppendV1(1700000000.5, map[string]any{}) },
			want:  "92 cb41d954fc40200000 80",
		},
		{
			name:  "v1 float32 seconds",
			build: func(e *Encoder) { e.AppendV1(float32(1.5), map[string]any{}) },
			want:  "92 ca3fc00000 80",
		},
		{
			name:  "group start",
			build: func(e *Encoder) { e.AppendGroupStart(map[string]any{"g": 1}, map[string]any{"a": 2}) },
			want:  "dd00000002 dd00000002 d700ffffffff00000000 df00000001 a16701 df00000001 a16102",
		},
		{
			name:  "group end",
			build: func(e *Encoder) { e.AppendGroupEnd() },
			want:  "dd00000002 dd00000002 d700fffffffe00000000 df00000000 df00000000",
		},
		{
			name:  "raw",
			build: func(e *Encoder) { e.AppendRaw([]byte{0xc1, 0x00}) },
			want:  "c100",
		},
		{
			name:  "keys sorted",
			build: func(e *Encoder) { e.AppendValue(map[string]any{"b": 1, "a": 2, "c": 3}) },
			want:  "83 a161 02 a162 01 a163 03",
		},
		{
			name: "smallest integer formats",
			build: func(e *Encoder) {
				e.AppendValue([]any{0, 127, 128, 255, 256, 65535, 65536, uint64(math.MaxUint32), uint64(math.MaxUint32) + 1,
					-1, -32, -33, -128, -129, -32768, -32769, int64(math.MinInt32), int64(math.MinInt32) - 1,
					int8(1), int16(1), int32(1), uint(1), uint8(1), uint16(1), uint32(1)})
			},
			want: "dc0019 00 7f cc80 ccff cd0100 cdffff ce00010000 ceffffffff cf0000000100000000" +
				" ff e0 d0df d080 d1ff7f d18000 d2ffff7fff d280000000 d3ffffffff7fffffff" +
				" 01 01 01 01 01 01 01",
		},
		{
			name: "scalars, strings and containers",
			build: func(e *Encoder) {
				e.AppendValue([]any{nil, true, false, "", strings.Repeat("x", 32), []byte{1}, []string{"a"},
					map[string]string{"k": "v"}, Ext{Type: 5, Data: []byte{1, 2, 3}}, Ext{Type: -1, Data: []byte{1, 2, 3, 4}},
					Raw{0xc0}, ev, float32(1.5)})
			},
			want: "9d c0 c3 c2 a0 d920" + strings.Repeat("78", 32) + " c40101 91a161 81a16ba176 c70305010203 d6ff01020304" +
				" c0 " + evFix + " ca3fc00000",
		},
		{
			name:  "long string, bin, array and map headers",
			build: func(e *Encoder) { e.AppendValue([]any{strings.Repeat("y", 256), make([]byte, 256), make([]any, 16)}) },
			want: "93 da0100" + strings.Repeat("79", 256) + " c50100" + strings.Repeat("00", 256) +
				" dc0010" + strings.Repeat("c0", 16),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var e Encoder
			tc.build(&e)
			got := hex.EncodeToString(e.Bytes())
			want := strings.ReplaceAll(tc.want, " ", "")
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("bytes (-want +got):\n%s", diff)
			}
			if e.Len() != len(e.Bytes()) {
				t.Errorf("Len() = %d, want %d", e.Len(), len(e.Bytes()))
			}
			e.Reset()
			if e.Len() != 0 {
				t.Errorf("Len() after Reset = %d", e.Len())
			}
		})
	}
}

func TestEncoderPanicsOnUnsupportedType(t *testing.T) {
	defer func() {
		r := recover()
		if r == nil || !strings.Contains(r.(string), "struct {}") {
			t.Errorf("recover() = %v, want a panic naming the type", r)
		}
	}()
	var e Encoder
	e.AppendValue(struct{}{})
}

// allValues is a record holding every value type, as the Encoder takes them.
func allValues() map[string]any {
	return map[string]any{
		"nil": nil, "t": true, "f": false,
		"int": -5, "i64min": int64(math.MinInt64), "u64max": uint64(math.MaxUint64), "u32": uint32(70000),
		"f32": float32(0.5), "f64": 3.25, "str": "héllo", "long": strings.Repeat("z", 70000),
		"bin": []byte{0, 1, 2}, "time": ev, "ext": Ext{Type: 9, Data: []byte{7}},
		"arr":    []any{1, "two", []any{3.5}, map[string]any{"x": nil}},
		"strs":   []string{"a", "b"},
		"nested": map[string]any{"a": map[string]any{"b": map[string]any{"c": "deep"}}},
		"smap":   map[string]string{"k": "v"},
	}
}

// allValuesDecoded is allValues as the Decoder returns it.
func allValuesDecoded() map[string]any {
	return map[string]any{
		"nil": nil, "t": true, "f": false,
		"int": int64(-5), "i64min": int64(math.MinInt64), "u64max": uint64(math.MaxUint64), "u32": int64(70000),
		"f32": 0.5, "f64": 3.25, "str": "héllo", "long": strings.Repeat("z", 70000),
		"bin": []byte{0, 1, 2}, "time": ev, "ext": map[string]any{"ext_type": int64(9), "data": []byte{7}},
		"arr":    []any{int64(1), "two", []any{3.5}, map[string]any{"x": nil}},
		"strs":   []any{"a", "b"},
		"nested": map[string]any{"a": map[string]any{"b": map[string]any{"c": "deep"}}},
		"smap":   map[string]any{"k": "v"},
	}
}

func TestEncoderWideHeaders(t *testing.T) {
	var e Encoder
	e.AppendValue(make([]any, 70000))
	e.AppendValue(map[string]any{})
	b := e.Bytes()
	if diff := cmp.Diff("dd00011170", hex.EncodeToString(b[:5])); diff != "" {
		t.Errorf("array32 header (-want +got):\n%s", diff)
	}
	if len(b) != 5+70000+1 || b[len(b)-2] != 0xc0 || b[len(b)-1] != 0x80 {
		t.Errorf("encoded %d bytes ending % x, want %d ending c0 80", len(b), b[len(b)-2:], 5+70000+1)
	}
	e.Reset()
	e.AppendValue(make([]byte, 70000))
	if diff := cmp.Diff("c600011170", hex.EncodeToString(e.Bytes()[:5])); diff != "" || e.Len() != 5+70000 {
		t.Errorf("bin32 header (-want +got):\n%s (len %d)", diff, e.Len())
	}
	big := make(map[string]any, 70000)
	for i := range 70000 {
		big[strings.Repeat("k", i%7)+string(rune('a'+i%26))+hex.EncodeToString([]byte{byte(i >> 16), byte(i >> 8), byte(i)})] = i
	}
	e.Reset()
	e.AppendV1(ev, big)
	got, _ := decodeAll(t, e.Bytes())
	if len(got) != 1 || got[0].Err != nil || len(got[0].Entry.Record) != len(big) {
		t.Fatalf("decoded %d steps, want one record of %d keys", len(got), len(big))
	}
	if b := e.Bytes(); b[11] != 0xdf {
		t.Errorf("record header byte = %#x, want map32 0xdf", b[11])
	}
}

func TestRoundTrip(t *testing.T) {
	var e Encoder
	meta := map[string]any{"otlp": map[string]any{"trace_id": "abc"}}
	e.AppendGroupStart(map[string]any{"schema": "otlp"}, map[string]any{"resource": "x"})
	e.AppendV2(ev, meta, allValues())
	e.AppendV2(ev, nil, map[string]any{"a": 1})
	e.AppendGroupEnd()
	e.AppendV1(ev, allValues())
	e.AppendV1(uint64(1700000000), map[string]any{"u": 1})
	e.AppendV1(int64(-3), map[string]any{"i": 1})
	e.AppendV1(1700000000.25, map[string]any{"f": 1})
	e.AppendV1(float32(2.5), map[string]any{"f32": 1})
	rawAt := e.Len()
	e.AppendRaw([]byte{0x92, 0x00, 0x90}) // a non-map record
	e.AppendV1(ev, map[string]any{"last": true})

	got, skipped := decodeAll(t, e.Bytes())
	want := []step{
		{Entry: Entry{Time: ev, Metadata: map[string]any{"otlp": map[string]any{"trace_id": "abc"}}, Record: allValuesDecoded()}},
		{Entry: Entry{Time: ev, Metadata: map[string]any{}, Record: map[string]any{"a": int64(1)}}},
		{Entry: Entry{Time: ev, Record: allValuesDecoded()}},
		{Entry: Entry{Time: time.Unix(1700000000, 0).UTC(), Record: map[string]any{"u": int64(1)}}},
		{Entry: Entry{Time: time.Unix(-3, 0).UTC(), Record: map[string]any{"i": int64(1)}}},
		{Entry: Entry{Time: time.Unix(1700000000, 250000000).UTC(), Record: map[string]any{"f": int64(1)}}},
		{Entry: Entry{Time: time.Unix(2, 500000000).UTC(), Record: map[string]any{"f32": int64(1)}}},
		{Err: &errView{Index: 9, Offset: rawAt, Err: ErrInvalidEntry}},
		{Entry: Entry{Time: ev, Record: map[string]any{"last": true}}},
	}
	if diff := cmp.Diff(want, got, cmpOpt); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	if skipped != 2 {
		t.Errorf("Skipped() = %d, want 2", skipped)
	}
}
