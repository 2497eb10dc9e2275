package spool

import (
	"bytes"
	"os"
	"testing"
	"time"

	"github.com/smtpout/smtpout/testsupport/proc"
)

func cpuTime(b *testing.B) time.Duration {
	d, err := proc.CPU(os.Getpid())
	if err != nil {
		b.Fatal(err)
	}
	return d
}

// BenchmarkAddSync is the spool's cost per record taken into a digest, as the plugin pays it
// for a flush of one 2 KB record: one Add and one Sync (fdatasync) on the file system of the
// test's temporary directory, and one Done per 100 records (a digest). It reports CPU µs per
// record (user + system) next to the wall time.
func BenchmarkAddSync(b *testing.B) {
	benchAdd(b, 1)
}

// BenchmarkAddSync100 is the same with one Sync per 100 records (a flush of a chunk of 100).
func BenchmarkAddSync100(b *testing.B) {
	benchAdd(b, 100)
}

func benchAdd(b *testing.B, perSync int) {
	s, _, err := Open(b.TempDir(), "bench", Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	r := rec(1, "host=web-1")
	r.Payload = bytes.Repeat([]byte("p"), 2048)
	seqs := make([]uint64, 0, 100)
	c0 := cpuTime(b)
	b.SetBytes(int64(len(r.Payload)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		seq, err := s.Add(r)
		if err != nil {
			b.Fatal(err)
		}
		seqs = append(seqs, seq)
		if i%perSync == perSync-1 {
			if err := s.Sync(); err != nil {
				b.Fatal(err)
			}
		}
		if len(seqs) == 100 {
			if err := s.Done(seqs...); err != nil {
				b.Fatal(err)
			}
			seqs = seqs[:0]
		}
	}
	b.StopTimer()
	b.ReportMetric(float64((cpuTime(b)-c0).Nanoseconds())/1e3/float64(b.N), "cpu-µs/record")
}

// BenchmarkOpen is a restart with 10,000 records of 2 KB waiting (20 MiB): Open reads the
// file back, checks every frame and hands the records over.
func BenchmarkOpen(b *testing.B) {
	dir := b.TempDir()
	s, _, err := Open(dir, "bench", Options{})
	if err != nil {
		b.Fatal(err)
	}
	r := rec(1, "host=web-1")
	r.Payload = bytes.Repeat([]byte("p"), 2048)
	for range 10_000 {
		if _, err := s.Add(r); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s, st, err := Open(dir, "bench", Options{})
		if err != nil || len(st.Waiting) != 10_000 {
			b.Fatalf("Open: %d waiting, %v", len(st.Waiting), err)
		}
		s.Close()
	}
}
