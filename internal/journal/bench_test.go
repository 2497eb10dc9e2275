package journal

import (
	"syscall"
	"testing"
	"time"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSettle is the ledger's cost per email as the plugin pays it: one Append per email
// and one Sync (fdatasync) per flush of 100, on the file system of the test's temporary
// directory. It reports CPU µs per email (user + system) next to the wall time.
func BenchmarkSettle(b *testing.B) {
	j, _, err := Open(b.TempDir(), "bench", Options{MaxEntries: 10_000_000}, func(Entry) {})
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	now := time.Now().UnixNano()
	c0 := cpuTime()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := j.Append(Entry{Kind: Settled, Time: now, Key: key(i)}); err != nil {
			b.Fatal(err)
		}
		if i%100 == 99 {
			if err := j.Sync(); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(float64((cpuTime()-c0).Nanoseconds())/1e3/float64(b.N), "cpu-µs/email")
}
