package chunk

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"math"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// hx decodes hex written with optional spaces, so test chunks can be written byte by
// byte from the msgpack spec, independently of the Encoder.
func hx(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

// Bytes shared by the hand-written chunks below.
const (
	// EventTime 1700000000.123456789 as fixext8.
	evFix = "d7 00 6553f100 075bcd15"
	// The same as ext8 with length 8.
	evExt8 = "c7 08 00 6553f100 075bcd15"
	// {"k": "v"} as a fixmap.
	recKV = "81 a1 6b a1 76"
	// A good v1 entry: [EventTime, {"k": "v"}].
	goodV1 = "92 " + evFix + " " + recKV
)

var (
	ev     = time.Unix(1700000000, 123456789).UTC()
	kv     = map[string]any{"k": "v"}
	goodE  = Entry{Time: ev, Record: kv}
	cmpOpt = cmp.Options{cmpopts.EquateErrors(), cmpopts.IgnoreFields(errView{}, "Reason")}
)

// step is one result of Decoder.Next: an entry or an error.
type step struct {
	Entry Entry
	Err   *errView
}

// errView is an *EntryError as plain data, so go-cmp compares its fields (Err with
// errors.Is) rather than the error as a whole.
type errView struct {
	Index, Offset int
	Err           error
	Fatal         bool
	Reason        string
}

// decodeAll drains a Decoder, checking the error protocol on the way: only *EntryError
// errors, io.EOF after a fatal one, io.EOF forever once returned, and progress on every
// call. It returns the steps and the number of skipped markers.
func decodeAll(t testing.TB, data []byte) ([]step, int) {
	t.Helper()
	d := NewDecoder(data)
	var steps []step
	fatal := false
	for calls := 0; ; calls++ {
		if calls > len(data)+1 {
			t.Fatalf("Next called %d times on %d bytes without io.EOF", calls, len(data))
		}
		before := d.Offset()
		e, err := d.Next()
		if err == io.EOF {
			if _, err2 := d.Next(); err2 != io.EOF {
				t.Fatalf("Next after io.EOF = %v, want io.EOF", err2)
			}
			return steps, d.Skipped()
		}
		if fatal {
			t.Fatalf("Next after a fatal error = %v, want io.EOF", err)
		}
		if err != nil {
			var ee *EntryError
			if !errors.As(err, &ee) {
				t.Fatalf("Next error %T %v, want *EntryError", err, err)
			}
			if ee.Reason == "" || !strings.Contains(ee.Error(), ee.Reason) {
				t.Fatalf("EntryError %#v: empty reason or not in Error()", ee)
			}
			fatal = ee.Fatal()
			if !fatal && d.Offset() <= before {
				t.Fatalf("non-fatal error %v made no progress (offset %d)", err, before)
			}
			if fatal && (d.Offset() != ee.Offset || ee.Offset < before) {
				t.Fatalf("after fatal error %v: Offset() = %d, want the entry offset %d (>= %d)", err, d.Offset(), ee.Offset, before)
			}
			steps = append(steps, step{Err: &errView{Index: ee.Index, Offset: ee.Offset, Err: ee.Err, Fatal: fatal, Reason: ee.Reason}})
			continue
		}
		if d.Offset() <= before || d.Offset() > len(data) {
			t.Fatalf("entry moved offset from %d to %d (len %d)", before, d.Offset(), len(data))
		}
		steps = append(steps, step{Entry: e})
	}
}

func TestDecodeEntryForms(t *testing.T) {
	tests := []struct {
		name        string
		chunk       string
		want        []step
		wantSkipped int
	}{
		{
			name:  "v1 EventTime fixext8",
			chunk: goodV1,
			want:  []step{{Entry: goodE}},
		},
		{
			name:  "v1 EventTime ext8",
			chunk: "92 " + evExt8 + " " + recKV,
			want:  []step{{Entry: goodE}},
		},
		{
			name:  "v1 positive fixint seconds",
			chunk: "92 05 80",
			want:  []step{{Entry: Entry{Time: time.Unix(5, 0).UTC(), Record: map[string]any{}}}},
		},
		{
			name:  "v1 uint32 seconds",
			chunk: "92 ce 6553f100 " + recKV,
			want:  []step{{Entry: Entry{Time: time.Unix(1700000000, 0).UTC(), Record: kv}}},
		},
		{
			name:  "v1 uint64 seconds",
			chunk: "92 cf 00000000 6553f100 " + recKV,
			want:  []step{{Entry: Entry{Time: time.Unix(1700000000, 0).UTC(), Record: kv}}},
		},
		{
			name:  "v1 int64 seconds",
			chunk: "92 d3 00000000 6553f100 " + recKV,
			want:  []step{{Entry: Entry{Time: time.Unix(1700000000, 0).UTC(), Record: kv}}},
		},
		{
			name:  "v1 negative int32 seconds",
			chunk: "92 d2 ffffff9c " + recKV,
			want:  []step{{Entry: Entry{Time: time.Unix(-100, 0).UTC(), Record: kv}}},
		},
		{
			name:  "v1 negative fixint seconds",
			chunk: "92 ff " + recKV,
			want:  []step{{Entry: Entry{Time: time.Unix(-1, 0).UTC(), Record: kv}}},
		},
		{
			name:  "v1 float64 seconds",
			chunk: "92 cb 41d954fc40200000 " + recKV,
			want:  []step{{Entry: Entry{Time: time.Unix(1700000000, 500000000).UTC(), Record: kv}}},
		},
		{
			name:  "v1 float64 seconds keep their decimal digits",
			chunk: "92 cb 41d954fc4007df3b " + recKV, // 1700000000.123
			want:  []step{{Entry: Entry{Time: time.Unix(1700000000, 123000000).UTC(), Record: kv}}},
		},
		{
			name:  "v1 negative float64 seconds",
			chunk: "92 cb bff4000000000000 " + recKV, // -1.25
			want:  []step{{Entry: Entry{Time: time.Unix(-2, 750000000).UTC(), Record: kv}}},
		},
		{
			name:  "v1 float32 seconds",
			chunk: "92 ca 4ecaa7e2 " + recKV, // 1.7e9
			want:  []step{{Entry: Entry{Time: time.Unix(1700000000, 0).UTC(), Record: kv}}},
		},
		{
			name:  "v1 float32 fraction at float32 precision",
			chunk: "92 ca 3dcccccd " + recKV, // 0.1f
			want:  []step{{Entry: Entry{Time: time.Unix(0, 100000000).UTC(), Record: kv}}},
		},
		{
			name: "v2 as Fluent Bit writes it (array32, map32)",
			chunk: "dd 00000002 dd 00000002 " + evFix +
				" df 00000001 a1 6d a1 78" + // {"m": "x"}
				" df 00000001 a1 6b a1 76",
			want: []step{{Entry: Entry{Time: ev, Metadata: map[string]any{"m": "x"}, Record: kv}}},
		},
		{
			name:  "v2 compact headers, ext8 EventTime, empty metadata",
			chunk: "92 92 " + evExt8 + " 80 " + recKV,
			want:  []step{{Entry: Entry{Time: ev, Metadata: map[string]any{}, Record: kv}}},
		},
		{
			name:  "v2 nil metadata",
			chunk: "92 92 " + evFix + " c0 " + recKV,
			want:  []step{{Entry: goodE}},
		},
		{
			name:  "v2 integer timestamp",
			chunk: "92 92 ce 6553f100 80 " + recKV,
			want:  []step{{Entry: Entry{Time: time.Unix(1700000000, 0).UTC(), Metadata: map[string]any{}, Record: kv}}},
		},
		{
			name: "group markers skipped",
			chunk: "dd 00000002 dd 00000002 d7 00 ffffffff 00000000 df 00000001 a1 67 01 df 00000001 a1 61 02 " +
				goodV1 +
				" dd 00000002 dd 00000002 d7 00 fffffffe 00000000 df 00000000 df 00000000 " +
				goodV1,
			want:        []step{{Entry: goodE}, {Entry: goodE}},
			wantSkipped: 2,
		},
		{
			name:        "group marker in compact v2 form with a non-map body",
			chunk:       "92 92 d7 00 ffffffff 00000000 80 c0 " + goodV1,
			want:        []step{{Entry: goodE}},
			wantSkipped: 1,
		},
		{
			name:  "int64 seconds at year 9999",
			chunk: "92 d3 0000003afff4417f 80",
			want:  []step{{Entry: Entry{Time: time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC), Record: map[string]any{}}}},
		},
		{
			name:  "int64 seconds at year 1",
			chunk: "92 d3 fffffff1886e0900 80",
			want:  []step{{Entry: Entry{Time: time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), Record: map[string]any{}}}},
		},
		{
			name:  "EventTime seconds above int32 are dates, not markers",
			chunk: "92 d7 00 fffffffd 00000000 80",
			want:  []step{{Entry: Entry{Time: time.Unix(0xfffffffd, 0).UTC(), Record: map[string]any{}}}},
		},
		{
			name:  "empty chunk",
			chunk: "",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, skipped := decodeAll(t, hx(t, tc.chunk))
			if diff := cmp.Diff(tc.want, got, cmpOpt); diff != "" {
				t.Errorf("entries (-want +got):\n%s", diff)
			}
			if skipped != tc.wantSkipped {
				t.Errorf("Skipped() = %d, want %d", skipped, tc.wantSkipped)
			}
		})
	}
}

// TestDecodeInvalidEntry puts each bad entry between two good ones: both good ones come
// back, with one non-fatal EntryError between them.
func TestDecodeInvalidEntry(t *testing.T) {
	deep := func(levels int) string { // record holding `levels` nested arrays around 1
		return "92 00 81 a1 76 " + strings.Repeat("91 ", levels) + "01"
	}
	tests := []struct {
		name       string
		bad        string
		wantErr    error
		wantReason string
	}{
		{"record is an array", "92 " + evFix + " 93 01 02 03", ErrInvalidEntry, "record is not a map (found array)"},
		{"record is nil", "92 " + evFix + " c0", ErrInvalidEntry, "record is not a map (found nil)"},
		{"entry is a string", "a3 61 62 63", ErrInvalidEntry, "entry is not an array (found string)"},
		{"entry is a map", recKV, ErrInvalidEntry, "entry is not an array (found map)"},
		{"entry of 3 elements", "93 00 80 80", ErrInvalidEntry, "array of 3 elements"},
		{"entry of 1 element", "91 00", ErrInvalidEntry, "array of 1 elements"},
		{"header of 3 elements", "92 93 00 80 80 80", ErrInvalidEntry, "header is an array of 3"},
		{"string timestamp", "92 a1 78 80", ErrInvalidEntry, "unsupported timestamp type string"},
		{"nil timestamp", "92 c0 80", ErrInvalidEntry, "unsupported timestamp type nil"},
		{"map timestamp in header", "92 92 80 80 80", ErrInvalidEntry, "unsupported timestamp type map"},
		{"ext type 1 timestamp", "92 d7 01 6553f100 075bcd15 80", ErrInvalidEntry, "ext type 1 of 8 bytes"},
		{"ext 0 of 4 bytes timestamp", "92 d6 00 6553f100 80", ErrInvalidEntry, "ext type 0 of 4 bytes"},
		{"msgpack timestamp ext -1", "92 d6 ff 6553f100 80", ErrInvalidEntry, "ext type -1"},
		{"uint64 timestamp above MaxInt64", "92 cf ffffffffffffffff 80", ErrInvalidEntry, "18446744073709551615 seconds out of range"},
		{"int64 timestamp after year 9999", "92 d3 0000003afff44180 80", ErrInvalidEntry, "253402300800 seconds out of range"},
		{"int64 timestamp before year 1", "92 d3 fffffff1886e08ff 80", ErrInvalidEntry, "-62135596801 seconds out of range"},
		{"max int64 timestamp", "92 d3 7fffffffffffffff 80", ErrInvalidEntry, "out of range"},
		{"float timestamp 1e12 after year 9999", "92 cb 426d1a94a2000000 80", ErrInvalidEntry, "out of range"},
		{"NaN timestamp", "92 cb 7ff8000000000001 80", ErrInvalidEntry, "NaN seconds out of range"},
		{"+Inf timestamp", "92 ca 7f800000 80", ErrInvalidEntry, "+Inf seconds out of range"},
		{"huge float timestamp", "92 cb 7fefffffffffffff 80", ErrInvalidEntry, "out of range"},
		{"metadata is an int", "92 92 " + evFix + " 01 80", ErrInvalidEntry, "metadata is not a map (found integer)"},
		{"nesting one level too deep", deep(MaxDepth), ErrTooDeep, "record: nesting too deep"},
		{"nesting far too deep", deep(100000), ErrTooDeep, "nesting too deep"},
		{"metadata too deep", "92 92 00 81 a1 76 " + strings.Repeat("81 a0 ", 70) + "01 80", ErrTooDeep, "metadata: nesting too deep"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			good := hx(t, goodV1)
			bad := hx(t, tc.bad)
			data := append(append(append([]byte{}, good...), bad...), good...)
			got, _ := decodeAll(t, data)
			want := []step{
				{Entry: goodE},
				{Err: &errView{Index: 1, Offset: len(good), Err: tc.wantErr}},
				{Entry: goodE},
			}
			if diff := cmp.Diff(want, got, cmpOpt); diff != "" {
				t.Fatalf("steps (-want +got):\n%s", diff)
			}
			if r := got[1].Err.Reason; !strings.Contains(r, tc.wantReason) {
				t.Errorf("Reason = %q, want it to contain %q", r, tc.wantReason)
			}
		})
	}
}

func TestDecodeDepthLimit(t *testing.T) {
	// The record map is level 1: MaxDepth-1 nested arrays inside it are accepted.
	okChunk := "92 00 81 a1 76 " + strings.Repeat("91 ", MaxDepth-1) + "01"
	got, _ := decodeAll(t, hx(t, okChunk))
	if len(got) != 1 || got[0].Err != nil {
		t.Fatalf("depth %d: got %+v, want one entry", MaxDepth, got)
	}
	var v any = got[0].Entry.Record["v"]
	levels := 0
	for {
		a, ok := v.([]any)
		if !ok {
			break
		}
		levels++
		v = a[0]
	}
	if levels != MaxDepth-1 || v != int64(1) {
		t.Errorf("decoded %d nested arrays around %v, want %d around 1", levels, v, MaxDepth-1)
	}
}

func TestDecodeFatal(t *testing.T) {
	tests := []struct {
		name    string
		tail    string
		wantErr error
	}{
		{"bad format byte 0xc1 in record", "92 00 81 a1 76 c1", ErrMalformed},
		{"bad format byte as entry", "c1", ErrMalformed},
		{"bad format byte after a non-map record", "92 00 91 c1", ErrMalformed},
		{"bad byte deep inside an invalid entry", "92 a1 78 " + strings.Repeat("91 ", 500) + "c1", ErrMalformed},
		{"truncated EventTime", "92 d7 00 6553f1", ErrTruncated},
		{"truncated string", "92 00 81 a1 76 a5 61 62", ErrTruncated},
		{"record header only", "92 00 81", ErrTruncated},
		{"entry header only", "92", ErrTruncated},
		{"truncated invalid entry", "92 a1 78 81 a1", ErrTruncated},
		{"truncated group marker", "92 92 d7 00 ffffffff 00000000 80", ErrTruncated},
		{"huge map32 record", "92 00 df ffffffff 01 01", ErrTruncated},
		{"huge array32 value", "92 00 81 a1 76 dd ffffffff 00 00 00", ErrTruncated},
		{"huge str32 value", "92 00 81 a1 76 db ffffffff 61 62", ErrTruncated},
		{"huge str32 key", "92 00 81 db ffffffff 61 62", ErrTruncated},
		{"huge bin32 value", "92 00 81 a1 76 c6 ffffffff 61 62", ErrTruncated},
		{"huge ext32 value", "92 00 81 a1 76 c9 ffffffff 05 61 62", ErrTruncated},
		{"huge map32 metadata", "92 92 00 df 7fffffff 01", ErrTruncated},
		{"huge entry array32 claiming 2", "dd 00000002 dd 00000002", ErrTruncated},
		{"huge array in an invalid entry", "92 a1 78 dd ffffffff 00", ErrTruncated},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			good := hx(t, goodV1)
			data := append(append([]byte{}, good...), hx(t, tc.tail)...)
			got, _ := decodeAll(t, data)
			want := []step{
				{Entry: goodE},
				{Err: &errView{Index: 1, Offset: len(good), Err: tc.wantErr, Fatal: true}},
			}
			if diff := cmp.Diff(want, got, cmpOpt); diff != "" {
				t.Fatalf("steps (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDecodeTruncatedTail cuts a valid chunk at every byte: every entry wholly before the
// cut is returned, then (unless the cut falls between entries) one fatal error naming
// the partial entry, then io.EOF.
func TestDecodeTruncatedTail(t *testing.T) {
	var enc Encoder
	var ends []int
	var want []Entry
	add := func(e Entry) {
		want = append(want, e)
		ends = append(ends, enc.Len())
	}
	enc.AppendV2(ev, map[string]any{"m": 1}, map[string]any{"a": "b", "n": []any{1, 2.5, nil}})
	add(Entry{Time: ev, Metadata: map[string]any{"m": int64(1)}, Record: map[string]any{"a": "b", "n": []any{int64(1), 2.5, nil}}})
	enc.AppendV1(uint64(7), map[string]any{"x": []byte("yz")})
	add(Entry{Time: time.Unix(7, 0).UTC(), Record: map[string]any{"x": []byte("yz")}})
	enc.AppendV1(ev, map[string]any{"k": "v"})
	add(goodE)
	data := enc.Bytes()
	for cut := 0; cut <= len(data); cut++ {
		var wantSteps []step
		start := 0
		for i, end := range ends {
			if end > cut {
				if cut > start {
					wantSteps = append(wantSteps, step{Err: &errView{Index: i, Offset: start, Err: ErrTruncated, Fatal: true}})
				}
				break
			}
			wantSteps = append(wantSteps, step{Entry: want[i]})
			start = end
		}
		got, _ := decodeAll(t, data[:cut:cut])
		if diff := cmp.Diff(wantSteps, got, cmpOpt); diff != "" {
			t.Fatalf("cut at %d of %d (-want +got):\n%s", cut, len(data), diff)
		}
	}
}

func TestDecodeValues(t *testing.T) {
	tests := []struct {
		name  string
		value string // msgpack of the value of key "v"
		want  any
	}{
		{"nil", "c0", nil},
		{"false", "c2", false},
		{"true", "c3", true},
		{"positive fixint", "7f", int64(127)},
		{"zero", "00", int64(0)},
		{"negative fixint", "e0", int64(-32)},
		{"uint8", "cc ff", int64(255)},
		{"uint16", "cd ffff", int64(65535)},
		{"uint32", "ce ffffffff", int64(4294967295)},
		{"uint64 at MaxInt64", "cf 7fffffffffffffff", int64(math.MaxInt64)},
		{"uint64 above MaxInt64", "cf 8000000000000000", uint64(1 << 63)},
		{"uint64 max", "cf ffffffffffffffff", uint64(math.MaxUint64)},
		{"int8", "d0 80", int64(-128)},
		{"int16", "d1 8000", int64(-32768)},
		{"int32", "d2 80000000", int64(math.MinInt32)},
		{"int64", "d3 8000000000000000", int64(math.MinInt64)},
		{"positive int64", "d3 0000000000000005", int64(5)},
		{"float32 widened", "ca 3fc00000", float64(1.5)},
		{"float32 0.1 widened exactly", "ca 3dcccccd", float64(float32(0.1))},
		{"float64", "cb bff4000000000000", -1.25},
		{"empty fixstr", "a0", ""},
		{"fixstr", "a3 616263", "abc"},
		{"str8", "d9 03 616263", "abc"},
		{"str16", "da 0003 616263", "abc"},
		{"str32", "db 00000003 616263", "abc"},
		{"utf-8 string", "a6 e697a5e69cac", "日本"},
		{"bin8", "c4 02 0102", []byte{1, 2}},
		{"bin16", "c5 0002 0102", []byte{1, 2}},
		{"bin32", "c6 00000002 0102", []byte{1, 2}},
		{"empty bin", "c4 00", []byte{}},
		{"empty fixarray", "90", []any{}},
		{"fixarray", "93 01 a1 78 c0", []any{int64(1), "x", nil}},
		{"array16", "dc 0002 01 02", []any{int64(1), int64(2)}},
		{"array32", "dd 00000002 01 02", []any{int64(1), int64(2)}},
		{"empty fixmap", "80", map[string]any{}},
		{"fixmap", "82 a1 61 01 a1 62 92 c3 c2", map[string]any{"a": int64(1), "b": []any{true, false}}},
		{"map16", "de 0001 a1 61 01", map[string]any{"a": int64(1)}},
		{"map32", "df 00000001 a1 61 01", map[string]any{"a": int64(1)}},
		{"str8 key", "81 d9 01 61 01", map[string]any{"a": int64(1)}},
		{"str16 key", "81 da 0001 61 01", map[string]any{"a": int64(1)}},
		{"str32 key", "81 db 00000001 61 01", map[string]any{"a": int64(1)}},
		{"duplicate keys: last wins", "82 a1 61 01 a1 61 02", map[string]any{"a": int64(2)}},
		{
			name: "non-string keys stringified",
			value: "8a 01 a1 61 ff a1 62 c3 a1 63 cb 3ff8000000000000 a1 64 c0 a1 65 c4 02 6869 a1 66" +
				" 92 01 02 a1 67 cf ffffffffffffffff a1 68 ca 3fc00000 a1 69 " + evFix + " a1 6a",
			want: map[string]any{
				"1": "a", "-1": "b", "true": "c", "<nil>": "e", "hi": "f", "[1 2]": "g",
				"18446744073709551615":           "h",
				"1.5":                            "i", // float32 1.5 collides with float64 1.5 ("d"): the later wins
				"2023-11-14T22:13:20.123456789Z": "j",
			},
		},
		{"EventTime fixext8 in a record", evFix, ev},
		{"EventTime ext8 in a record", evExt8, ev},
		{"fixext1", "d4 05 aa", map[string]any{"ext_type": int64(5), "data": []byte{0xaa}}},
		{"fixext2", "d5 05 aabb", map[string]any{"ext_type": int64(5), "data": []byte{0xaa, 0xbb}}},
		{"fixext4 type 0 is not an EventTime", "d6 00 01020304", map[string]any{"ext_type": int64(0), "data": []byte{1, 2, 3, 4}}},
		{"fixext8 type 1", "d7 01 0102030405060708", map[string]any{"ext_type": int64(1), "data": []byte{1, 2, 3, 4, 5, 6, 7, 8}}},
		{"fixext16", "d8 7f " + strings.Repeat("00", 16), map[string]any{"ext_type": int64(127), "data": make([]byte, 16)}},
		{"ext8 negative type", "c7 03 ff 010203", map[string]any{"ext_type": int64(-1), "data": []byte{1, 2, 3}}},
		{"ext16", "c8 0001 02 09", map[string]any{"ext_type": int64(2), "data": []byte{9}}},
		{"ext32", "c9 00000000 02", map[string]any{"ext_type": int64(2), "data": []byte{}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			chunk := hx(t, "92 00 81 a1 76 "+tc.value)
			got, _ := decodeAll(t, chunk)
			wantSteps := []step{{Entry: Entry{Time: time.Unix(0, 0).UTC(), Record: map[string]any{"v": tc.want}}}}
			if diff := cmp.Diff(wantSteps, got, cmpOpt); diff != "" {
				t.Errorf("decoded (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDecodeStringsAliasChunk documents the zero-copy contract: strings and []byte
// values point into the chunk, and a []byte value cannot be appended over the chunk.
func TestDecodeStringsAliasChunk(t *testing.T) {
	chunk := hx(t, "92 00 82 a1 73 a3 616263 a1 62 c4 02 6465 01")
	e, err := NewDecoder(chunk).Next()
	if err != nil {
		t.Fatal(err)
	}
	b := e.Record["b"].([]byte)
	if cap(b) != len(b) {
		t.Errorf("[]byte value has cap %d > len %d: an append would overwrite the chunk", cap(b), len(b))
	}
	_ = append(b, 'X')
	if chunk[len(chunk)-1] != 0x01 {
		t.Errorf("appending to a []byte value modified the chunk")
	}
	s := e.Record["s"].(string)
	copy(chunk[6:9], "xyz") // mutating the chunk is visible: the string aliases it
	if s != "xyz" {
		t.Errorf("string value = %q after mutating the chunk, want %q (zero-copy)", s, "xyz")
	}
}

// TestDecodeHugePrefixesAllocateLittle nests 64 containers whose length prefixes claim
// as many elements as the remaining bytes could hold, before a bad byte. Reserving what
// the prefixes claim would allocate about a gigabyte.
func TestDecodeHugePrefixesAllocateLittle(t *testing.T) {
	var chunk bytes.Buffer
	chunk.Write(hx(t, "92 00"))
	for i := 0; i < MaxDepth/2; i++ {
		chunk.Write(hx(t, "df 00060000 a1 6b")) // map of 393216 pairs, first key "k"
		chunk.Write(hx(t, "dd 000c0000"))       // array of 786432 elements
	}
	chunk.Write(hx(t, "c1"))
	chunk.Write(make([]byte, 1<<20))
	data := chunk.Bytes()

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := NewDecoder(data).Next()
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrMalformed) {
		t.Fatalf("Next() error = %v, want ErrMalformed", err)
	}
	const limit = 8 << 20
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > limit {
		t.Errorf("decoding allocated %d bytes, want at most %d", alloc, limit)
	}
}

func TestEntryErrorFatal(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{ErrTruncated, true},
		{ErrMalformed, true},
		{ErrInvalidEntry, false},
		{ErrTooDeep, false},
	}
	for _, tc := range tests {
		e := &EntryError{Index: 3, Offset: 42, Reason: "why", Err: tc.err}
		if got := e.Fatal(); got != tc.want {
			t.Errorf("Fatal() with %v = %v, want %v", tc.err, got, tc.want)
		}
		if !errors.Is(e, tc.err) {
			t.Errorf("errors.Is(%v, %v) = false", e, tc.err)
		}
		if got, want := e.Error(), "chunk entry 3 at byte 42: why"; got != want {
			t.Errorf("Error() = %q, want %q", got, want)
		}
	}
}
