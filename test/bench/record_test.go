package main

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/smtpout/smtpout/chunk"
	"github.com/smtpout/smtpout/output"
)

func TestBuildChunk(t *testing.T) {
	for _, size := range []int{2048, 8192} {
		data, got, err := buildChunk(10, size)
		if err != nil {
			t.Fatal(err)
		}
		if got < size-50 || got > size+50 {
			t.Errorf("buildChunk(10, %d): record size %d, want about %d", size, got, size)
		}
		d := chunk.NewDecoder(data)
		ids := make(map[string]bool)
		n := 0
		for {
			e, err := d.Next()
			if err != nil {
				break
			}
			n++
			p, err := output.Payload(output.Record{Tag: "t", Time: e.Time, Fields: e.Record}, "date")
			if err != nil {
				t.Fatal(err)
			}
			if len(p) < size-50 || len(p) > size+50 {
				t.Errorf("record %d: payload %d bytes, want about %d", n, len(p), size)
			}
			ids[e.Record["detect_id"].(string)] = true
		}
		if n != 10 || len(ids) != 10 {
			t.Errorf("buildChunk(10, %d): %d records, %d distinct detect_id, want 10 and 10", size, n, len(ids))
		}
	}
}

func TestSegments(t *testing.T) {
	tests := []struct {
		records     int
		checkpoints string
		want        []int
		wantErr     bool
	}{
		{100_000, "10000", []int{100, 900}, false},
		{100_000, "10000,50000", []int{100, 400, 500}, false},
		{5_000, "", []int{50}, false},
		{5_000, "10000", []int{50}, false},       // past the end: ignored
		{5_000, "50,2000", []int{20, 30}, false}, // under one flush: ignored
		{5_000, "x", nil, true},
	}
	for _, tc := range tests {
		o := options{records: tc.records, perFlush: 100, checkpoints: tc.checkpoints}
		got, err := o.segments()
		if (err != nil) != tc.wantErr {
			t.Errorf("segments(%d, %q) error %v, want error %v", tc.records, tc.checkpoints, err, tc.wantErr)
			continue
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("segments(%d, %q) (-want +got):\n%s", tc.records, tc.checkpoints, diff)
		}
	}
}
