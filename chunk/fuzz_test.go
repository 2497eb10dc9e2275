package chunk

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

var updateSeeds = flag.Bool("update-fuzz-seeds", false, "rewrite testdata/fuzz/FuzzDecode from fuzzSeeds")

const seedDir = "testdata/fuzz/FuzzDecode"

// fuzzSeeds returns the committed seed corpus of FuzzDecode by file name: valid
// multi-entry chunks in every entry form, and damaged variants of them.
func fuzzSeeds() map[string][]byte {
	seeds := map[string][]byte{}
	var e Encoder

	e.AppendGroupStart(map[string]any{"schema": "otlp"}, map[string]any{"resource": map[string]any{"host": "h1"}})
	for i := range 3 {
		e.AppendV2(ev.Add(time.Duration(i)*time.Second), map[string]any{"seq": i}, detection(i))
	}
	e.AppendGroupEnd()
	fluentBit := append([]byte{}, e.Bytes()...)
	seeds["fluent-bit-v2-group"] = fluentBit

	e.Reset()
	e.AppendV1(ev, map[string]any{"msg": "eventtime"})
	e.AppendV1(uint64(1700000000), map[string]any{"msg": "uint"})
	e.AppendV1(int64(-5), map[string]any{"msg": "negative"})
	e.AppendV1(float32(1.5), map[string]any{"msg": "float32"})
	e.AppendV1(1700000000.123, map[string]any{"msg": "float64"})
	e.AppendRaw([]byte{0x92, 0xc7, 0x08, 0x00, 0x65, 0x53, 0xf1, 0x00, 0, 0, 0, 1, 0x81, 0xa1, 'e', 0xa1, '8'}) // ext8 EventTime
	e.AppendV2(ev, nil, map[string]any{"msg": "v2"})
	forward := append([]byte{}, e.Bytes()...)
	seeds["forward-mixed"] = forward

	e.Reset()
	values := allValues()
	values["long"] = strings.Repeat("z", 300)
	e.AppendV1(ev, values)
	e.AppendV1(ev, map[string]any{"k": Raw{0x84, 0x01, 0xa1, 'a', 0xc3, 0xa1, 'b', 0xc0, 0xa1, 'c', 0x92, 0x01, 0x02, 0xa1, 'd'}})
	seeds["all-values"] = append([]byte{}, e.Bytes()...)

	e.Reset()
	e.AppendV1(ev, map[string]any{"n": 1})
	e.AppendRaw([]byte{0x92, 0x00, 0x93, 0x01, 0x02, 0x03}) // record not a map
	e.AppendRaw([]byte{0x92, 0xa1, 'x', 0x80})              // string timestamp
	e.AppendRaw([]byte{0x93, 0x00, 0x80, 0x80})             // three elements
	e.AppendV1(ev, map[string]any{"n": 2})
	seeds["invalid-between-good"] = append([]byte{}, e.Bytes()...)

	seeds["truncated-tail"] = fluentBit[:len(fluentBit)-40]
	seeds["malformed-c1"] = append(append([]byte{}, forward[:40]...), 0xc1, 0x00)

	e.Reset()
	e.AppendRaw([]byte{0x92, 0x00, 0x81, 0xa1, 'v'})
	e.AppendRaw([]byte(strings.Repeat("\x91", 70)))
	e.AppendRaw([]byte{0x01})
	e.AppendV1(ev, map[string]any{"after": "deep"})
	seeds["too-deep"] = append([]byte{}, e.Bytes()...)

	seeds["huge-prefixes"] = []byte("\x92\x00\xdf\x7f\xff\xff\xff\xa1k\xdd\xff\xff\xff\xff\xdb\xff\xff\xff\xff")
	seeds["empty"] = []byte{}

	// Deterministic byte mutations of the valid chunks.
	for i, off := range []int{0, 5, 11, 20, 33, 64, 100} {
		for _, src := range []struct {
			name string
			b    []byte
		}{{"fluent-bit", fluentBit}, {"forward", forward}} {
			if off >= len(src.b) {
				continue
			}
			m := append([]byte{}, src.b...)
			m[off] ^= byte(0x5a + 17*i)
			seeds[fmt.Sprintf("mutated-%s-%d", src.name, off)] = m
		}
	}
	return seeds
}

// TestFuzzSeedsCommitted checks that the committed corpus holds every seed of fuzzSeeds
// (run with -update-fuzz-seeds to rewrite it).
func TestFuzzSeedsCommitted(t *testing.T) {
	seeds := fuzzSeeds()
	if *updateSeeds {
		if err := os.MkdirAll(seedDir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, b := range seeds {
			body := "go test fuzz v1\n[]byte(" + strconv.Quote(string(b)) + ")\n"
			if err := os.WriteFile(filepath.Join(seedDir, name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for name, b := range seeds {
		got, err := os.ReadFile(filepath.Join(seedDir, name))
		if err != nil {
			t.Errorf("seed %s: %v (run go test -run TestFuzzSeedsCommitted -update-fuzz-seeds)", name, err)
			continue
		}
		want := "go test fuzz v1\n[]byte(" + strconv.Quote(string(b)) + ")\n"
		if string(got) != want {
			t.Errorf("seed %s differs from fuzzSeeds (run with -update-fuzz-seeds)", name)
		}
	}
}

// sameValue reports whether two decoded values are equal, NaN included; times that an
// EventTime cannot carry (seconds beyond uint32, from normalised nanoseconds) are not
// compared. The fuzz target uses it instead of go-cmp, whose slice diffing takes time
// exponential in the nesting depth that fuzzed chunks reach.
func sameValue(a, b any) bool {
	switch x := a.(type) {
	case float64:
		y, ok := b.(float64)
		return ok && (math.Float64bits(x) == math.Float64bits(y) || (math.IsNaN(x) && math.IsNaN(y)))
	case time.Time:
		y, ok := b.(time.Time)
		return ok && (x.Equal(y) || x.Unix() > math.MaxUint32 || y.Unix() > math.MaxUint32)
	case []byte:
		y, ok := b.([]byte)
		return ok && bytes.Equal(x, y) && (x == nil) == (y == nil)
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) || (x == nil) != (y == nil) {
			return false
		}
		for i := range x {
			if !sameValue(x[i], y[i]) {
				return false
			}
		}
		return true
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) || (x == nil) != (y == nil) {
			return false
		}
		for k, v := range x {
			w, ok := y[k]
			if !ok || !sameValue(v, w) {
				return false
			}
		}
		return true
	case nil, bool, int64, uint64, string:
		return a == b
	}
	panic(fmt.Sprintf("sameValue: unexpected decoded type %T", a))
}

// sameSteps compares decodeAll results with sameValue.
func sameSteps(a, b []step) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if (x.Err == nil) != (y.Err == nil) {
			return false
		}
		if x.Err != nil {
			if x.Err.Index != y.Err.Index || x.Err.Offset != y.Err.Offset || x.Err.Fatal != y.Err.Fatal ||
				x.Err.Reason != y.Err.Reason || !errors.Is(x.Err.Err, y.Err.Err) {
				return false
			}
			continue
		}
		if !x.Entry.Time.Equal(y.Entry.Time) || !sameValue(x.Entry.Record, y.Entry.Record) ||
			(x.Entry.Metadata == nil) != (y.Entry.Metadata == nil) ||
			(x.Entry.Metadata != nil && !sameValue(x.Entry.Metadata, y.Entry.Metadata)) {
			return false
		}
	}
	return true
}

func TestSameValue(t *testing.T) {
	tests := []struct {
		a, b any
		want bool
	}{
		{math.NaN(), math.NaN(), true},
		{0.0, math.Copysign(0, -1), false},
		{1.5, 1.5, true},
		{int64(1), uint64(1), false},
		{[]byte{}, []byte(nil), false},
		{[]any{"a", map[string]any{"b": nil}}, []any{"a", map[string]any{"b": nil}}, true},
		{[]any{"a", map[string]any{"b": nil}}, []any{"a", map[string]any{"c": nil}}, false},
		{map[string]any{"k": []any{}}, map[string]any{"k": []any{int64(1)}}, false},
		{ev, ev.Add(1), false},
		{ev, ev.In(time.FixedZone("x", 3600)), true},
	}
	for _, tc := range tests {
		if got := sameValue(tc.a, tc.b); got != tc.want {
			t.Errorf("sameValue(%#v, %#v) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

// FuzzDecode feeds any bytes to the Decoder. Properties: no panic and a consistent
// error protocol (decodeAll); every decoded record and metadata map survives an
// Encoder round trip; and decoding is context-free: after a valid prefix, the prefix's
// entries come back unchanged and the fuzz bytes decode exactly as they do alone.
func FuzzDecode(f *testing.F) {
	var e Encoder
	e.AppendGroupStart(map[string]any{"g": 1}, nil)
	e.AppendV2(ev, map[string]any{"m": "x"}, map[string]any{"k": "v", "n": []any{1, 2.5}})
	e.AppendV1(uint64(1700000000), map[string]any{"k": "w"})
	prefix := e.Bytes()
	prefixSteps, prefixSkipped := decodeAll(f, prefix)
	if len(prefixSteps) != 2 || prefixSkipped != 1 {
		f.Fatalf("prefix decodes to %d steps and %d markers, want 2 and 1", len(prefixSteps), prefixSkipped)
	}
	prefixObjects := len(prefixSteps) + prefixSkipped

	f.Fuzz(func(t *testing.T, data []byte) {
		alone, skipped := decodeAll(t, data)

		for _, s := range alone {
			if s.Err != nil {
				continue
			}
			var re Encoder
			re.AppendV2(ev, s.Entry.Metadata, s.Entry.Record)
			again, _ := decodeAll(t, re.Bytes())
			if len(again) != 1 || again[0].Err != nil {
				t.Fatalf("re-encoded entry decodes to %+v", again)
			}
			if !sameValue(s.Entry.Record, again[0].Entry.Record) {
				t.Fatalf("record round trip:\nfirst  %#v\nsecond %#v", s.Entry.Record, again[0].Entry.Record)
			}
			meta := s.Entry.Metadata
			if meta == nil {
				meta = map[string]any{} // the Encoder writes nil metadata as {}
			}
			if !sameValue(meta, again[0].Entry.Metadata) {
				t.Fatalf("metadata round trip:\nfirst  %#v\nsecond %#v", meta, again[0].Entry.Metadata)
			}
		}

		joined := append(append([]byte{}, prefix...), data...)
		got, gotSkipped := decodeAll(t, joined)
		want := append([]step{}, prefixSteps...)
		for _, s := range alone {
			if s.Err != nil {
				v := *s.Err
				v.Index += prefixObjects
				v.Offset += len(prefix)
				s.Err = &v
			}
			want = append(want, s)
		}
		if !sameSteps(want, got) {
			t.Fatalf("valid prefix + data:\nwant %+v\ngot  %+v", want, got)
		}
		if gotSkipped != prefixSkipped+skipped {
			t.Fatalf("Skipped() = %d, want %d", gotSkipped, prefixSkipped+skipped)
		}
	})
}
