package main

import (
	"strconv"
	"testing"

	"github.com/smtpout/smtpout/config"
	"github.com/smtpout/smtpout/internal/pipeline"
	"github.com/smtpout/smtpout/testsupport/testcert"
)

// quietLogger drops every line (the benchmark checks the return codes instead).
type quietLogger struct{}

func (quietLogger) Enabled(pipeline.Level) bool { return false }
func (quietLogger) Log(pipeline.Level, string)  {}

// BenchmarkFlushToSink is the engine's flush path in one process, for profiling
// (-cpuprofile, -memprofile): chunks of 100 2 KB records decoded, rendered, signed and
// delivered over reused implicit-TLS connections to the in-process sink, whose own CPU and
// allocations are counted too (so ns/email and allocs/email are upper bounds; the engine
// measures the plugin alone). Each iteration flushes one chunk under a new tag, so no
// record is skipped by the ledger.
func BenchmarkFlushToSink(b *testing.B) {
	for _, tc := range []struct {
		name string
		keys map[string]string
	}{
		{"machine", nil},
		{"machine-lockstep", map[string]string{"pipelining": "off"}},
		{"readable", map[string]string{"is_readable": "true"}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			cert := testcert.New(b)
			sink, err := StartSink(cert.ServerTLS(), false, benchUser, benchPass)
			if err != nil {
				b.Fatal(err)
			}
			defer sink.Close()
			keys := config.MapGetter{
				"dest_host": sink.Addr(), "dest_email": benchTo, "from_email": benchFrom,
				"username": benchUser, "password": benchPass, "secret_key": benchSecret,
				"tls_ca_file": cert.CAFile, "tls_server_name": "localhost", "helo_name": "bench.local",
			}
			for k, v := range tc.keys {
				keys[k] = v
			}
			in := pipeline.Open(keys, quietLogger{}, pipeline.Options{})
			if in == nil {
				b.Fatal("pipeline.Open failed")
			}
			defer in.Close()
			const perFlush = 100
			data, _, err := buildChunk(perFlush, 2048)
			if err != nil {
				b.Fatal(err)
			}
			flush := func(tag string) {
				if code, st := in.Flush(tag, data); code != pipeline.FLBOK || st.Delivered != perFlush {
					b.Fatalf("Flush(%s) = %d, %+v", tag, code, st)
				}
			}
			flush("warm")
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				flush("bench." + strconv.Itoa(i))
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*perFlush), "ns/email")
			if got, want := sink.Messages(), int64((b.N+1)*perFlush); got != want {
				b.Errorf("sink accepted %d messages, want %d", got, want)
			}
		})
	}
}
