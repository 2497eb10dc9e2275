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
