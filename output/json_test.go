package output

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

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
