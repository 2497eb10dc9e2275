package output

import (
	"bytes"
	"io"
	"math/rand/v2"
	"mime/quotedprintable"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestAppendQP(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	random := make([]byte, 5000)
	for i := range random {
		random[i] = byte(rng.IntN(256))
	}
	spaces := []byte(strings.Repeat("a ", 100) + " ")
	for _, tc := range []struct {
		name string
		src  []byte
		text bool
		want string // "" when only the round trip is checked
	}{
		{"empty", nil, false, "=\r\n"},
		{"plain", []byte(`{"a":"b"}`), false, "{\"a\":\"b\"}=\r\n"},
		{"escapes", []byte("a=b\r\n\té\x00"), false, "a=3Db=0D=0A=09=C3=A9=00=\r\n"},
		{"trailing space", []byte("a "), false, "a=20=\r\n"},
		{"exactly 75", []byte(strings.Repeat("x", 75)), false, strings.Repeat("x", 75) + "=\r\n"},
		{"76 folds", []byte(strings.Repeat("x", 76)), false, strings.Repeat("x", 75) + "=\r\nx=\r\n"},
		{"escape not split", []byte(strings.Repeat("x", 73) + "="), false, strings.Repeat("x", 73) + "=\r\n=3D=\r\n"},
		{"text hard breaks", []byte("line one \nline two\n"), true, "line one=20\r\nline two\r\n=\r\n"},
		{"random bytes", random, false, ""},
		{"random text", random, true, ""},
		{"spaces", spaces, false, ""},
		{"space ends a block before LF", []byte("1234567 \nabcdefgh "), true, "1234567=20\r\nabcdefgh=20=\r\n"},
		{"space ends a block at the end", []byte("12345678abcdefg "), false, "12345678abcdefg=20=\r\n"},
		{"blocks and escapes", []byte("abcdefgh=ijklmnop\tq~~~~~~~~ rstuvwxy"), false, "abcdefgh=3Dijklmnop=09q~~~~~~~~ rstuvwxy=\r\n"},
		{"blocks fold at 75", []byte(strings.Repeat("abcd efg", 12)), false, strings.Repeat("abcd efg", 9) + "abc=\r\nd efgabcd efgabcd efg=\r\n"},
		{"random printable text", randomFrom(rng, 20000, "ab =\n\t~é"), true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := appendQP(nil, tc.src, tc.text)
			if tc.want != "" {
				if diff := cmp.Diff(tc.want, string(got)); diff != "" {
					t.Errorf("appendQP (-want +got):\n%s", diff)
				}
			}
			for _, line := range strings.Split(string(got), "\r\n") {
				if len(line) > 76 {
					t.Errorf("line of %d octets", len(line))
				}
				if strings.HasSuffix(line, " ") || strings.HasSuffix(line, "\t") {
					t.Errorf("line ends in whitespace: %q", line)
				}
				if strings.ContainsAny(line, "\r\n") {
					t.Errorf("bare CR or LF in %q", line)
				}
			}
			dec, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(got)))
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			want := tc.src
			if tc.text {
				want = bytes.ReplaceAll(tc.src, []byte("\n"), []byte("\r\n"))
			}
			if !bytes.Equal(dec, want) && !(len(dec) == 0 && len(want) == 0) {
				t.Errorf("round trip differs: got %d bytes, want %d", len(dec), len(want))
			}
		})
	}
}

// randomFrom returns n bytes drawn from the bytes of alphabet.
func randomFrom(rng *rand.Rand, n int, alphabet string) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[rng.IntN(len(alphabet))]
	}
	return b
}

// TestAppendQPBlocks compares appendQP, which copies runs 8 bytes at a time, with the same
// encoder written one byte at a time (qpRef), on random inputs of several alphabets.
func TestAppendQPBlocks(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, alphabet := range []string{"ab ", "a \n", "xy=\n ", "abcdefgh", "a\x00\xff \t\r\n=~", "é €"} {
		for range 200 {
			src := randomFrom(rng, rng.IntN(400), alphabet)
			for _, text := range []bool{false, true} {
				if got, want := appendQP(nil, src, text), qpRef(src, text); !bytes.Equal(got, want) {
					t.Fatalf("appendQP(%q, %v) =\n%q\nwant\n%q", src, text, got, want)
				}
			}
		}
	}
}

// qpRef is appendQP one byte at a time.
func qpRef(src []byte, text bool) []byte {
	var dst []byte
	lineLen := 0
	for i, c := range src {
		if text && c == '\n' {
			dst = append(dst, '\r', '\n')
			lineLen = 0
			continue
		}
		plain := qpSafe[c] && !(c == ' ' && (i+1 == len(src) || text && src[i+1] == '\n'))
		n := 1
		if !plain {
			n = 3
		}
		if lineLen+n > qpMaxLine {
			dst = append(dst, '=', '\r', '\n')
			lineLen = 0
		}
		if plain {
			dst = append(dst, c)
		} else {
			dst = append(dst, '=', upperHex[c>>4], upperHex[c&0xF])
		}
		lineLen += n
	}
	return append(dst, '=', '\r', '\n')
}
