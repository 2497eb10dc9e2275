package chunk

import (
	"fmt"
	"runtime"
	"strings"
	"syscall"
	"testing"
)

// detection returns a detection-like record of about 2 KB (a LimaCharlie-style alert:
// routing metadata, the triggering event with a process tree, and a few arrays).
func detection(i int) map[string]any {
	return map[string]any{
		"cat":       "00285-WIN-Suspicious_PowerShell_Encoded",
		"detect_id": fmt.Sprintf("8f3a2c1e-5b7d-4e9f-a1c3-%012d", i),
		"source":    "dr-general",
		"priority":  3,
		"ts":        1700000000123 + int64(i),
		"link":      fmt.Sprintf("https://app.limacharlie.io/orgs/3b0c5e8a/sensors/a1b2c3d4/timeline?time=%d", 1700000000+i),
		"namespace": "general",
		"gen_time":  1700000000456 + int64(i),
		"detect_mtd": map[string]any{
			"description": "Detects PowerShell launched with an encoded command line, a common obfuscation technique.",
			"references":  []any{"https://attack.mitre.org/techniques/T1059/001/", "https://attack.mitre.org/techniques/T1027/"},
			"tags":        []any{"attack.execution", "attack.t1059.001", "attack.defense_evasion"},
			"level":       "high",
			"falsepositives": []any{
				"Administrative scripts that use encoded commands legitimately",
			},
		},
		"routing": map[string]any{
			"oid":              "3b0c5e8a-1f2d-4c6b-9e7a-5d4c3b2a1f0e",
			"sid":              "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d",
			"hostname":         fmt.Sprintf("win-workstation-%03d.corp.example.com", i%1000),
			"event_type":       "NEW_PROCESS",
			"event_time":       1700000000000 + int64(i),
			"event_id":         fmt.Sprintf("c0ffee00-1234-4abc-8def-%012d", i),
			"ext_ip":           "203.0.113.45",
			"int_ip":           "10.20.30.40",
			"plat":             268435456,
			"arch":             2,
			"moduleid":         2,
			"this":             "5c1e0a3f9b8d7c6e5f4a3b2c1d0e9f8a",
			"parent":           "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d",
			"tags":             []any{"workstation", "finance", "windows-11"},
			"investigation_id": "",
		},
		"detect": map[string]any{
			"event": map[string]any{
				"COMMAND_LINE":      "powershell.exe -NoProfile -ExecutionPolicy Bypass -EncodedCommand " + strings.Repeat("SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoAZQBjAHQAIABOAGUAdAAuAFcAZQBiAEMAbABpAGUAbgB0ACkA", 3),
				"FILE_PATH":         "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
				"HASH":              "de96a6e69944335375dc1ac238336066889d9ffc7d73628ef4fe1b1b160ab32c",
				"MEMORY_USAGE":      52436992,
				"PARENT_PROCESS_ID": 4312,
				"PROCESS_ID":        7788 + i,
				"THREADS":           14,
				"USER_NAME":         "CORP\\jdoe",
				"PARENT": map[string]any{
					"COMMAND_LINE": "\"C:\\Program Files\\Microsoft Office\\root\\Office16\\WINWORD.EXE\" /n \"C:\\Users\\jdoe\\Downloads\\invoice.docm\"",
					"FILE_PATH":    "C:\\Program Files\\Microsoft Office\\root\\Office16\\WINWORD.EXE",
					"PROCESS_ID":   4312,
					"HASH":         "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0",
				},
				"SIGNATURE": map[string]any{"FILE_IS_SIGNED": 1, "ISSUER": "Microsoft Windows Production PCA 2011", "VERIFIED": true},
			},
			"routing": map[string]any{"event_type": "NEW_PROCESS", "hostname": "win-workstation", "score": 87.5},
		},
	}
}

// BenchmarkDecode decodes a chunk of 100 detection-like 2 KB records in Fluent Bit's v2
// form and reports ns and allocations per record. In "repeating" most values recur from
// record to record, as a chunk of one source's events does; in "unique" every string and
// every integer above 255 differs from every other one in the chunk (the worst case for
// the decoder's boxing cache).
func BenchmarkDecode(b *testing.B) {
	for _, bc := range []struct {
		name   string
		record func(i int) map[string]any
	}{
		{"repeating", detection},
		{"unique", func(i int) map[string]any { return uniqueValues(detection(i), i).(map[string]any) }},
	} {
		b.Run(bc.name, func(b *testing.B) { benchDecode(b, bc.record) })
	}
}

func benchDecode(b *testing.B, record func(i int) map[string]any) {
	const records = 100
	var e Encoder
	for i := range records {
		e.AppendV2(ev, map[string]any{}, record(i))
	}
	data := e.Bytes()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	cpu0 := cpuTime()
	for b.Loop() {
		d := NewDecoder(data)
		n := 0
		for {
			_, err := d.Next()
			if err != nil {
				break
			}
			n++
		}
		if n != records {
			b.Fatalf("decoded %d records, want %d", n, records)
		}
	}
	cpu := cpuTime() - cpu0
	runtime.ReadMemStats(&after)
	perRecord := float64(b.N) * records
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/perRecord, "ns/record")
	b.ReportMetric(float64(cpu)/perRecord, "cpu-ns/record")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/perRecord, "allocs/record")
	b.ReportMetric(float64(len(data))/records, "msgpack-bytes/record")
}

// uniqueValues returns v with record number i written into every string and added, times
// a large odd number, to every integer, so no value repeats between records.
func uniqueValues(v any, i int) any {
	switch x := v.(type) {
	case string:
		return fmt.Sprintf("%s#%d", x, i)
	case int:
		return int64(x) + int64(i)*1000003 + 256
	case int64:
		return x + int64(i)*1000003 + 256
	case []any:
		out := make([]any, len(x))
		for j, el := range x {
			out[j] = uniqueValues(el, i)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, el := range x {
			out[k] = uniqueValues(el, i)
		}
		return out
	}
	return v
}

// cpuTime returns the CPU time the process has used (every thread: the garbage collector's
// work counts), in nanoseconds.
func cpuTime() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// TestDetectionSize keeps the benchmark honest about its record size.
func TestDetectionSize(t *testing.T) {
	var e Encoder
	e.AppendV2(ev, map[string]any{}, detection(1))
	if n := e.Len(); n < 1800 || n > 2600 {
		t.Errorf("detection record encodes to %d bytes, want about 2 KB", n)
	}
}
