package output

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// referenceID is the Message-ID as DESIGN.md defines it, computed without the renderer's
// scratch space: the first 16 bytes of SHA-256(tag, NUL, Unix nanoseconds, NUL, payload) in
// lowercase hex, "@", the domain.
func referenceID(rec Record, payload []byte, domain string) string {
	h := sha256.New()
	h.Write([]byte(rec.Tag + "\x00" + strconv.FormatInt(rec.Time.UnixNano(), 10) + "\x00"))
	h.Write(payload)
	return hex.EncodeToString(h.Sum(nil)[:16]) + "@" + domain
}

// checkFields compares e's MessageID, Signature, Payload, PayloadSize, From and Recipients with
// values computed independently of Render, and e's Data with want (nil: not compared).
func checkFields(t *testing.T, r *Renderer, rec Record, e *Email, withPayload bool) {
	t.Helper()
	payload, err := Payload(rec, r.dateKey)
	if err != nil {
		t.Fatalf("Payload: %v", err)
	}
	wantPayload := payload
	if !withPayload {
		wantPayload = nil
	}
	type fields struct {
		MessageID, Signature, From string
		Recipients                 []string
		PayloadSize                int
		Payload                    []byte
	}
	want := fields{
		MessageID:   referenceID(rec, payload, "corp.com"),
		Signature:   Sign(payload, []byte(testSecret)),
		From:        "lc@Corp.com",
		Recipients:  []string{"soc@corp.com", "oncall@corp.com", "jd@corp.com", "audit@corp.com"},
		PayloadSize: len(payload),
		Payload:     wantPayload,
	}
	got := fields{e.MessageID, e.Signature, e.From, e.Recipients, e.PayloadSize, e.Payload}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("Email fields (-want +got):\n%s", diff)
	}
}

// FuzzRenderFields: the Email's fields (the Message-ID and signature share one string, the
// recipients one slice, the message and payload one buffer) equal what DESIGN.md defines,
// computed apart; a Renderer WithoutPayload gives the same bytes, with no Payload.
func FuzzRenderFields(f *testing.F) {
	f.Add("lc.detections", "cat", []byte("Suspicious Shell"), int64(0), false)
	f.Add("a.b", "x", []byte("x\r\n.\r\nBcc: evil@attacker.example"), int64(-1), true)
	f.Add("t\x00\xff", "\xff\xfe", []byte("\xff\xfe\x00\u2028=?UTF-8?q?x?="), int64(1<<62), true)
	f.Add("", "", []byte{}, int64(123456789), false)
	f.Add("t", "k", bytes.Repeat([]byte("word= "), 400), int64(7), false)
	f.Fuzz(func(t *testing.T, tag, k string, v []byte, ns int64, readable bool) {
		cfg := testConfig(readable)
		full := mustRenderer(t, cfg)
		lean, err := New(cfg, WithoutPayload())
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		rec := Record{Tag: tag, Time: time.Unix(0, ns).UTC(), Fields: map[string]any{
			"k": string(v), k: v, "n": map[any]any{k: []any{string(v), int64(len(v))}},
		}}
		e := mustRender(t, full, rec)
		checkFields(t, full, rec, e, true)
		e2 := mustRender(t, lean, rec)
		checkFields(t, lean, rec, e2, false)
		if !bytes.Equal(e.Data, e2.Data) {
			t.Fatalf("WithoutPayload changed the email:\n%q\nwant\n%q", e2.Data, e.Data)
		}
		if err := Verify(bytes.NewReader(e2.Data), []byte(testSecret)); err != nil {
			t.Fatalf("Verify: %v", err)
		}
	})
}

// TestRenderRecipientsShared: every email gets the renderer's recipient slice, so an email
// whose recipients are appended to (or replaced, as the pipeline does for deferred
// recipients) must not change the next email's.
func TestRenderRecipientsShared(t *testing.T) {
	r := mustRenderer(t, testConfig(false))
	want := []string{"soc@corp.com", "oncall@corp.com", "jd@corp.com", "audit@corp.com"}
	e1 := mustRender(t, r, detection())
	e1.Recipients = append(e1.Recipients, "extra@corp.com")
	e1.Recipients[0] = "changed@corp.com" // the appended copy, not the shared slice
	e2 := mustRender(t, r, detection())
	if diff := cmp.Diff(want, e2.Recipients); diff != "" {
		t.Errorf("second email's recipients (-want +got):\n%s", diff)
	}
}

// TestRenderAllocations: Render makes three allocations per email (the Email, one string for
// the Message-ID and signature, one buffer for the message and payload), with or without the
// payload. The count is exact, not timed.
func TestRenderAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop objects at random: allocation counts mean nothing")
	}
	for _, tc := range []struct {
		name     string
		readable bool
		opts     []Option
	}{
		{"machine", false, nil},
		{"machine without payload", false, []Option{WithoutPayload()}},
		{"readable", true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := New(testConfig(tc.readable), tc.opts...)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			rec := benchRecord()
			mustRender(t, r, rec) // warm the pool
			got := testing.AllocsPerRun(100, func() {
				if _, err := r.Render(rec); err != nil {
					t.Fatal(err)
				}
			})
			if got > 3 {
				t.Errorf("Render: %v allocations per email, want at most 3", got)
			}
		})
	}
}

// BenchmarkRenderMachineWithoutPayload is BenchmarkRenderMachine from a Renderer made
// WithoutPayload, as the plugin renders when digests are off.
func BenchmarkRenderMachineWithoutPayload(b *testing.B) {
	r, err := New(testConfig(false), WithoutPayload())
	if err != nil {
		b.Fatal(err)
	}
	rec := benchRecord()
	b.ReportAllocs()
	cpu0 := cpuTime()
	ops := 0
	for b.Loop() {
		if _, err := r.Render(rec); err != nil {
			b.Fatal(err)
		}
		ops++
	}
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(ops), "cpu-ns/op")
}
