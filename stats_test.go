package main

import (
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// parseStats reads "k=v k=v" into a map, failing the test on anything else.
func parseStats(t *testing.T, text string) map[string]uint64 {
	t.Helper()
	out := make(map[string]uint64)
	for _, f := range strings.Fields(text) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			t.Fatalf("stats field %q in %q is not k=v", f, text)
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("stats field %q: %v", f, err)
		}
		out[k] = n
	}
	return out
}

var sink [][]byte

func TestFormatRuntimeStats(t *testing.T) {
	runtime.GC()
	before := parseStats(t, string(formatRuntimeStats(nil)))
	var keys []string
	for k := range before {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	want := []string{"alloc_bytes", "allocs", "gc_cycles", "goroutines", "heap_bytes", "total_bytes"}
	if diff := cmp.Diff(want, keys); diff != "" {
		t.Fatalf("stats keys (-want +got):\n%s", diff)
	}
	done := make(chan struct{})
	started := make(chan struct{})
	go func() { close(started); <-done }()
	<-started
	for range 1000 {
		sink = append(sink, make([]byte, 64))
	}
	// Allocation counts sit in per-P caches until they are flushed; a GC flushes them all.
	runtime.GC()
	after := parseStats(t, string(formatRuntimeStats(nil)))
	close(done)
	sink = nil
	if got := after["allocs"] - before["allocs"]; got < 1000 {
		t.Errorf("allocs grew by %d after 1000 allocations, want >= 1000", got)
	}
	if got := after["alloc_bytes"] - before["alloc_bytes"]; got < 64*1000 {
		t.Errorf("alloc_bytes grew by %d after 64,000 bytes, want >= 64000", got)
	}
	// The runtime's own goroutines count too, so the figure is at least NumGoroutine.
	if after["goroutines"] < uint64(runtime.NumGoroutine()) {
		t.Errorf("goroutines = %d with %d running", after["goroutines"], runtime.NumGoroutine())
	}
	if after["heap_bytes"] == 0 || after["total_bytes"] < after["heap_bytes"] {
		t.Errorf("heap_bytes = %d, total_bytes = %d", after["heap_bytes"], after["total_bytes"])
	}
}

func TestCopyCString(t *testing.T) {
	tests := []struct {
		name    string
		bufLen  int
		text    string
		want    string // the buffer up to its NUL
		wantRet int
	}{
		{"fits", 16, "allocs=5", "allocs=5", 8},
		{"exactly", 9, "allocs=5", "allocs=5", 8},
		{"cut", 5, "allocs=5", "allo", 8},
		{"one byte", 1, "allocs=5", "", 8},
		{"empty buffer", 0, "allocs=5", "", 8},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			buf := []byte(strings.Repeat("#", tc.bufLen))
			got := copyCString(buf, []byte(tc.text))
			if got != tc.wantRet {
				t.Errorf("copyCString() = %d, want %d", got, tc.wantRet)
			}
			s := string(buf)
			if i := strings.IndexByte(s, 0); i >= 0 {
				s = s[:i]
			} else if tc.bufLen > 0 {
				t.Fatalf("no NUL in %q", buf)
			}
			if diff := cmp.Diff(tc.want, s); diff != "" {
				t.Errorf("buffer (-want +got):\n%s", diff)
			}
		})
	}
}
