package mailer

import (
	"bufio"
	"bytes"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestWriteInt: writeInt writes what strconv.Itoa makes, also when the writer's free space
// is too small for the number (it is then flushed or grown, never cut).
func TestWriteInt(t *testing.T) {
	for _, n := range []int{0, 7, 10, 2234, 65536, math.MaxInt64, -1, math.MinInt64} {
		for _, used := range []int{0, 10, 15, 16} {
			var out bytes.Buffer
			w := bufio.NewWriterSize(&out, 16)
			prefix := strings.Repeat("p", used)
			w.WriteString(prefix)
			writeInt(w, n)
			w.WriteString("\r\n")
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(prefix+strconv.Itoa(n)+"\r\n", out.String()); diff != "" {
				t.Errorf("writeInt(%d) after %d bytes (-want +got):\n%s", n, used, diff)
			}
		}
	}
}
