package main

import (
	"math"
	"runtime/debug"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestTuneGC: without GOGC and GOMEMLIMIT the plugin sets its own GC percent and memory
// limit; either variable set by the user leaves the runtime's settings as they were.
func TestTuneGC(t *testing.T) {
	type settings struct{ Percent, Limit int64 }
	const untouchedPercent, untouchedLimit = 77, math.MaxInt64 - 1
	tests := []struct {
		name string
		env  map[string]string
		want settings
	}{
		{"no environment", nil, settings{200, 512 << 20}},
		{"GOGC set", map[string]string{"GOGC": "100"}, settings{untouchedPercent, untouchedLimit}},
		{"GOMEMLIMIT set", map[string]string{"GOMEMLIMIT": "1GiB"}, settings{untouchedPercent, untouchedLimit}},
		{"GOGC off", map[string]string{"GOGC": "off"}, settings{untouchedPercent, untouchedLimit}},
	}
	oldPercent := debug.SetGCPercent(untouchedPercent)
	oldLimit := debug.SetMemoryLimit(untouchedLimit)
	defer func() {
		debug.SetGCPercent(oldPercent)
		debug.SetMemoryLimit(oldLimit)
	}()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			debug.SetGCPercent(untouchedPercent)
			debug.SetMemoryLimit(untouchedLimit)
			tuneGC(func(k string) string { return tt.env[k] })
			got := settings{Percent: int64(debug.SetGCPercent(untouchedPercent)), Limit: debug.SetMemoryLimit(-1)}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("after tuneGC (-want +got):\n%s", diff)
			}
		})
	}
}
