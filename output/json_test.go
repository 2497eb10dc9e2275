package output

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

type stringer struct{ s string }

func (s stringer) String() string { return "stringer:" + s.s }

type panicker struct{}

func (panicker) String() string { panic("boom") }

type point struct {
	X, Y int
}

// TestPayloadValueTypes covers every value type Fluent Bit's decoder produces, and others.
func TestPayloadValueTypes(t *testing.T) {
	n := 7
	for _, tc := range []struct {
		name string
		v    any
		want string
	}{
		{"nil", nil, `null`},
		{"true", true, `true`},
		{"false", false, `false`},
		{"int64", int64(-9223372036854775808), `-9223372036854775808`},
		{"uint64", uint64(18446744073709551615), `18446744073709551615`},
		{"int", -1, `-1`},
		{"int8/16/32", []any{int8(-8), int16(-16), int32(-32)}, `[-8,-16,-32]`},
		{"uint/8/16/32", []any{uint(1), uint8(8), uint16(16), uint32(32)}, `[1,8,16,32]`},
		{"float64", 3.25, `3.25`},
		{"float64 integral", 2.0, `2`},
		{"float64 small", 1e-7, `1e-7`},
		{"float64 big", 1e21, `1e+21`},
		{"float32", float32(0.1), `0.1`},
		{"NaN", math.NaN(), `"NaN"`},
		{"+Inf", math.Inf(1), `"+Inf"`},
		{"-Inf float32", float32(math.Inf(-1)), `"-Inf"`},
		{"string", "héllo \"q\" \\ </>&", `"héllo \"q\" \\ </>&"`},
		{"control chars", "a\nb\r\tc\x00\x1f\b\f\x7f", `"a\nb\r\tc\u0000\u001f\b\f` + "\x7f" + `"`},
		{"U+2028/9", "a\u2028b\u2029", `"a\u2028b\u2029"`},
		{"invalid UTF-8", "a\xffb\xc3", `"a�b�"`},
		{"[]byte", []byte("bin\xfe"), `"bin�"`},
		{"empty []byte", []byte{}, `""`},
		{"time", time.Date(2026, 1, 2, 3, 4, 5, 600, time.FixedZone("CET", 3600)), `"2026-01-02T02:04:05.0000006Z"`},
		{"[]any", []any{int64(1), "a", nil, []any{}}, `[1,"a",null,[]]`},
		{"map[string]any sorted", map[string]any{"b": 1, "a": 2, "A": 3, "é": 4}, `{"A":3,"a":2,"b":1,"é":4}`},
		{"map[any]any keys stringified", map[any]any{int64(10): "x", "9": "y", true: 1, 1.5: 2, nil: 3},
			`{"1.5":2,"10":"x","9":"y","null":3,"true":1}`},
		{"nested map[any]any", map[any]any{"a": map[any]any{"c": []byte("d")}}, `{"a":{"c":"d"}}`},
		{"colliding keys: string wins", map[any]any{int64(1): "int", "1": "string"}, `{"1":"string"}`},
		{"colliding invalid keys", map[string]any{"a\xff": 1, "a\xfe": 2}, `{"a�":2}`},
		{"empty map", map[string]any{}, `{}`},
		{"nil map", map[string]any(nil), `{}`},
		{"fmt.Stringer", stringer{"x"}, `"stringer:x"`},
		{"panicking Stringer", panicker{}, `"%!v(PANIC=String method: boom)"`},
		{"struct", point{1, 2}, `"{1 2}"`},
		{"pointer", &n, `7`},
		{"nil pointer", (*int)(nil), `null`},
		{"[]string", []string{"a", "b"}, `["a","b"]`},
		{"map[string]string", map[string]string{"k": "v"}, `{"k":"v"}`},
		{"[2]int array", [2]int{1, 2}, `[1,2]`},
		{"named string", time.Month(3), `"March"`},
		{"error", errors.New("oops"), `"oops"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Payload(Record{Fields: map[string]any{"v": tc.v}}, "")
			if err != nil {
				t.Fatalf("Payload: %v", err)
			}
			if diff := cmp.Diff(`{"v":`+tc.want+`}`, string(got)); diff != "" {
				t.Errorf("Payload (-want +got):\n%s", diff)
			}
			if !json.Valid(got) {
				t.Errorf("invalid JSON: %s", got)
			}
			// Cross-check: encoding/json of Normalize gives the same bytes.
			if diff := cmp.Diff(string(got), stdJSON(t, Normalize(map[string]any{"v": tc.v}))); diff != "" {
				t.Errorf("encoding/json(Normalize) differs from Payload (-payload +std):\n%s", diff)
			}
		})
	}
}

// stdJSON marshals v with encoding/json, HTML escaping off, no trailing newline.
func stdJSON(t *testing.T, v any) string {
	t.Helper()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		t.Fatalf("encoding/json: %v", err)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// TestCollisionDeterministic renders maps whose keys collide many times: map iteration order
// must never change the result.
func TestCollisionDeterministic(t *testing.T) {
	m := map[any]any{int64(1): "a", uint64(1): "b", 1.0: "c", "1": "d", "1\xff": "e", "1\xfe": "f",
		math.NaN(): "n1", math.NaN(): "n2"}
	first, err := Payload(Record{Fields: map[string]any{"m": m}}, "")
	if err != nil {
		t.Fatal(err)
	}
	for range 200 {
		got, _ := Payload(Record{Fields: map[string]any{"m": m}}, "")
		if !bytes.Equal(first, got) {
			t.Fatalf("Payload changed between runs:\n%s\n%s", first, got)
		}
	}
	want := `{"m":{"1":"d","1�":"f","NaN":"n1"}}`
	if diff := cmp.Diff(want, string(first)); diff != "" {
		t.Errorf("Payload (-want +got):\n%s", diff)
	}
}

func TestNormalize(t *testing.T) {
	got := Normalize(map[string]any{
		"b":   []byte("x\xff"),
		"t":   time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		"nan": math.NaN(),
		"m":   map[any]any{int64(2): []any{[]byte("y")}},
	})
	want := map[string]any{
		"b":   "x\uFFFD",
		"t":   "2026-01-01T00:00:00Z",
		"nan": "NaN",
		"m":   map[string]any{"2": []any{"y"}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Normalize (-want +got):\n%s", diff)
	}
}

// FuzzAppendJSONString compares appendJSONString with the byte-at-a-time reference it
// replaced, for the string and the []byte form, on any bytes: controls, quotes, backslashes,
// U+2028, invalid and truncated UTF-8, at every alignment within an 8-byte block.
func FuzzAppendJSONString(f *testing.F) {
	f.Add([]byte("plain ascii text that runs past several blocks of eight"))
	f.Add([]byte("a\"b\\c\x00d\x1fe\x7ff\u2028g\u2029h\xffi\xe2\x80j检测🚨\n\r\t\b\f"))
	f.Add([]byte("12345678\"2345678\\2345678\x012345678\xc3\xa9"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, s []byte) {
		for off := range min(len(s), 8) + 1 {
			in := s[off:]
			want := refAppendJSONString([]byte("x"), in)
			if got := appendJSONString([]byte("x"), in); !bytes.Equal(got, want) {
				t.Fatalf("appendJSONString([]byte %q) = %q, want %q", in, got, want)
			}
			if got := appendJSONString([]byte("x"), string(in)); !bytes.Equal(got, want) {
				t.Fatalf("appendJSONString(string %q) = %q, want %q", in, got, want)
			}
		}
	})
}

// TestJSONSafe8 checks jsonSafe8 against a byte-by-byte rule for every byte value at every
// position of a block of otherwise safe bytes.
func TestJSONSafe8(t *testing.T) {
	for c := range 256 {
		want := c >= 0x20 && c < 0x80 && c != '"' && c != '\\'
		for pos := range 8 {
			block := []byte("abcdefgh")
			block[pos] = byte(c)
			if got := jsonSafe8(load8(block, 0)); got != want {
				t.Errorf("jsonSafe8(%q) = %v, want %v", block, got, want)
			}
			if got := jsonSafe8(load8(string(block), 0)); got != want {
				t.Errorf("jsonSafe8(string %q) = %v, want %v", block, got, want)
			}
		}
	}
}

// FuzzPayload builds records of any shape from the fuzz input (fuzzValue) and compares their
// payload with the encoder before issue 22 (refPayload): the same bytes, or the same error.
func FuzzPayload(f *testing.F) {
	f.Add([]byte("\x07\x05\x00\x03cat\x00\x0bSuspicious \"x\"\x07\x02\x02id\x02\x00\x00\x00\x00\x00\x00\x10\x00\x04ts\x04\x7f\xf8\x00\x00\x00\x00\x00\x01"), "date")
	f.Add([]byte("\x08\x04\x00\x01\xff\x06\x02\x01\x00\x03\x00\x01\xef\x00\x01a\x06\x05\x00\x01a\x00\x02\xc3\xa9"), "")
	f.Add([]byte("\x09\x04\x07\x02\x00\x04date\x00\x01x\x00\x01y\x00\x01\x00\x0a\x05\x01"), "date")
	f.Fuzz(func(t *testing.T, data []byte, dateKey string) {
		v, _ := fuzzValue(data, 0)
		fields, ok := v.(map[string]any)
		if !ok {
			fields = map[string]any{"v": v}
		}
		rec := Record{Tag: "t", Time: fixedTime, Fields: fields}
		want, wantErr := refPayload(rec, dateKey)
		got, err := Payload(rec, dateKey)
		if !errors.Is(err, wantErr) || !bytes.Equal(got, want) {
			t.Fatalf("Payload = %q, %v\nwant      %q, %v\nrecord %#v", got, err, want, wantErr, fields)
		}
	})
}

// fuzzValue decodes a value from data, returning it and the rest of data. The first byte
// chooses the kind: string, []byte, int64, uint64, float64 (NaN and infinities included),
// float32, bool, nil, time.Time, map[string]any, map[any]any (keys of several types, some
// stringifying alike) or []any; lengths and counts come from the next byte.
func fuzzValue(data []byte, depth int) (any, []byte) {
	next := func() byte {
		if len(data) == 0 {
			return 0
		}
		b := data[0]
		data = data[1:]
		return b
	}
	bytesN := func(n int) []byte {
		n = min(n, len(data))
		b := data[:n:n]
		data = data[n:]
		return b
	}
	u64 := func() uint64 {
		var x uint64
		for _, b := range bytesN(8) {
			x = x<<8 | uint64(b)
		}
		return x
	}
	kind := next()
	if depth > 6 {
		kind %= 7 // scalars only
	}
	switch kind % 13 {
	case 0:
		return string(bytesN(int(next() % 48))), data
	case 1:
		return bytes.Clone(bytesN(int(next() % 48))), data
	case 2:
		return int64(u64()), data
	case 3:
		return u64(), data
	case 4:
		return math.Float64frombits(u64()), data
	case 5:
		return math.Float32frombits(uint32(u64())), data
	case 6:
		return next()%2 == 0, data
	case 7:
		n := int(next() % 16)
		m := make(map[string]any, n)
		for range n {
			k := string(bytesN(int(next() % 12)))
			m[k], data = fuzzValue(data, depth+1)
		}
		return m, data
	case 8:
		n := int(next() % 8)
		m := make(map[any]any, n)
		for range n {
			var k any
			switch next() % 5 {
			case 0, 1:
				k = string(bytesN(int(next() % 6)))
			case 2:
				k = int64(int8(next()))
			case 3:
				k = next()%2 == 0
			default:
				k = float64(int8(next())) / 4
			}
			m[k], data = fuzzValue(data, depth+1)
		}
		return m, data
	case 9:
		n := int(next() % 6)
		a := make([]any, 0, n)
		for range n {
			var v any
			v, data = fuzzValue(data, depth+1)
			a = append(a, v)
		}
		return a, data
	case 10:
		return time.Unix(int64(int32(u64())), int64(next())*3906250).In(time.FixedZone("x", 3600)), data
	case 11:
		return int(int16(u64())), data
	}
	return nil, data
}

// TestKeyHelpers checks validKey against utf8.ValidString, plainKey against keys that JSON
// writes unchanged (short and ASCII) and keyLess against Go's string order, on keys around the 16-byte inline limit, empty keys, shared prefixes and non-ASCII.
func TestKeyHelpers(t *testing.T) {
	keys := []string{"", "a", "b", "ab", "a\x00", "aa", "\x00", "\x7f", "\xc3\xa9", "\xc3", "\xff",
		"detect", "detect_id", "detect_mtd", "event_time", "event_type",
		strings.Repeat("k", 15) + "\xff", strings.Repeat("k", 16), strings.Repeat("k", 16) + "\xff",
		strings.Repeat("k", 17), strings.Repeat("k", 15) + "é", "检测", "🚨", "\xed\xa0\x80", "a\"b", "a\\b", "a\nb", "\x1f", " ", "~"}
	for _, a := range keys {
		if got, want := validKey(a), utf8.ValidString(a); got != want {
			t.Errorf("validKey(%q) = %v, want %v", a, got, want)
		}
		ascii := utf8.ValidString(a) && utf8.RuneCountInString(a) == len(a)
		plain := len(a) <= 16 && ascii && string(appendJSONString(nil, a)) == `"`+a+`"`
		if got := plainKey(a); got != plain {
			t.Errorf("plainKey(%q) = %v, want %v", a, got, plain)
		}
		for _, b := range keys {
			if got, want := keyLess(a, b), a < b; got != want {
				t.Errorf("keyLess(%q, %q) = %v, want %v", a, b, got, want)
			}
		}
	}
}

// TestNormalizeInvalidRun pins the one place where Normalize and the payload differ: a run of
// invalid UTF-8 bytes is one U+FFFD in Normalize (strings.ToValidUTF8) and one per byte in the
// payload (as encoding/json replaces them, though it escapes U+FFFD and the payload does not).
func TestNormalizeInvalidRun(t *testing.T) {
	const v = "x\xff\xfey"
	if diff := cmp.Diff(map[string]any{"k": "x\uFFFDy"}, Normalize(map[string]any{"k": v})); diff != "" {
		t.Errorf("Normalize (-want +got):\n%s", diff)
	}
	got, err := Payload(Record{Fields: map[string]any{"k": v}}, "")
	if err != nil {
		t.Fatal(err)
	}
	want := "{\"k\":\"x\uFFFD\uFFFDy\"}" // each invalid byte replaced, unescaped
	if diff := cmp.Diff(want, string(got)); diff != "" {
		t.Errorf("Payload (-want +got):\n%s", diff)
	}
}
