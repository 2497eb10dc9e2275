package main

/*
#include <stddef.h>
*/
import "C"

import (
	"runtime/metrics"
	"strconv"
	"unsafe"
)

// runtimeStat names one figure of SmtpoutRuntimeStats: the key written and the runtime/metrics
// samples summed into it.
type runtimeStat struct {
	key     string
	metrics []string
}

// runtimeStats are the figures SmtpoutRuntimeStats writes, in this order. allocs counts heap
// allocations as testing's allocs/op and runtime.MemStats.Mallocs do (tiny allocations
// included), so a per-email figure compares with the micro-benchmarks.
var runtimeStats = []runtimeStat{
	{"allocs", []string{"/gc/heap/allocs:objects", "/gc/heap/tiny/allocs:objects"}},
	{"alloc_bytes", []string{"/gc/heap/allocs:bytes"}},
	{"goroutines", []string{"/sched/goroutines:goroutines"}},
	{"heap_bytes", []string{"/memory/classes/heap/objects:bytes"}},
	{"total_bytes", []string{"/memory/classes/total:bytes"}},
	{"gc_cycles", []string{"/gc/cycles/total:gc-cycles"}},
}

// statSamples is the runtime/metrics request of runtimeStats, flattened.
var statSamples = func() []string {
	var names []string
	for _, s := range runtimeStats {
		names = append(names, s.metrics...)
	}
	return names
}()

// formatRuntimeStats appends the current figures to dst as space-separated "key=value" pairs:
// "allocs=123 alloc_bytes=4567 goroutines=9 heap_bytes=... total_bytes=... gc_cycles=...".
func formatRuntimeStats(dst []byte) []byte {
	samples := make([]metrics.Sample, len(statSamples))
	for i, name := range statSamples {
		samples[i].Name = name
	}
	metrics.Read(samples)
	i := 0
	for n, s := range runtimeStats {
		var sum uint64
		for range s.metrics {
			if samples[i].Value.Kind() == metrics.KindUint64 {
				sum += samples[i].Value.Uint64()
			}
			i++
		}
		if n > 0 {
			dst = append(dst, ' ')
		}
		dst = append(dst, s.key...)
		dst = append(dst, '=')
		dst = strconv.AppendUint(dst, sum, 10)
	}
	return dst
}

// copyCString copies text into buf as a NUL-terminated string, truncated to len(buf)-1 bytes,
// and returns len(text), as snprintf does: a result >= len(buf) means the text was cut.
func copyCString(buf []byte, text []byte) int {
	if len(buf) > 0 {
		n := copy(buf[:len(buf)-1], text)
		buf[n] = 0
	}
	return len(text)
}

// SmtpoutRuntimeStats writes the Go runtime's figures of this process (heap allocations,
// goroutines, heap bytes; see formatRuntimeStats) into buf, at most n bytes including the
// terminating NUL, and returns the length of the whole text (snprintf's convention), or -1
// when buf is NULL or n is negative. Fluent Bit ignores this extra export; the bench tool's
// C host and soak tests call it through dlsym.
//
//export SmtpoutRuntimeStats
func SmtpoutRuntimeStats(buf *C.char, n C.int) C.int {
	if buf == nil || n < 0 {
		return -1
	}
	text := formatRuntimeStats(make([]byte, 0, 160))
	return C.int(copyCString(unsafe.Slice((*byte)(unsafe.Pointer(buf)), int(n)), text))
}
