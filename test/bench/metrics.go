package main

import "runtime/metrics"

// readAllocs returns this process's heap allocations so far, tiny ones included (what
// runtime.MemStats.Mallocs and testing's allocs/op count), as the plugin's
// SmtpoutRuntimeStats does.
func readAllocs() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:objects"}, {Name: "/gc/heap/tiny/allocs:objects"}}
	metrics.Read(s)
	var n uint64
	for _, x := range s {
		if x.Value.Kind() == metrics.KindUint64 {
			n += x.Value.Uint64()
		}
	}
	return n
}

// readGoroutines returns this process's live goroutines (the runtime's own included).
func readGoroutines() uint64 {
	s := []metrics.Sample{{Name: "/sched/goroutines:goroutines"}}
	metrics.Read(s)
	if s[0].Value.Kind() == metrics.KindUint64 {
		return s[0].Value.Uint64()
	}
	return 0
}
