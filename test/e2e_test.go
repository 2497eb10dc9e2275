package e2e

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/smtpout/smtpout/chunk"
	"github.com/smtpout/smtpout/output"
)

const (
	testSecretKey = "e2e-Secret-Key-Never-Logged-42"
	testPassword  = "e2e-Password-Never-Logged-17"
)

var t0 = time.Date(2026, 11, 27, 10, 0, 0, 123456789, time.UTC)

// baseKeys is a valid configuration for srv (no credentials: the test server needs none).
func baseKeys(srv *server, to string) map[string]string {
	keys := map[string]string{
		"dest_email": to,
		"from_email": "Fluent Bit <fluent-bit@example.com>",
		"secret_key": testSecretKey,
		"subject":    "Alert $TAG: $msg",
		"timeout":    "20s",
	}
	for k, v := range srv.keys() {
		keys[k] = v
	}
	return keys
}

// mixedChunk holds one record in every entry form Fluent Bit hands to an output, group
// markers around a v2 record, and one malformed entry between valid ones: records n=1..6.
func mixedChunk() []byte {
	var e chunk.Encoder
	e.AppendGroupStart(map[string]any{"schema": "otlp"}, map[string]any{"resource": "r"})
	e.AppendV2(t0, map[string]any{"otlp": "meta"}, map[string]any{"n": 1, "msg": "v2 EventTime"})
	e.AppendGroupEnd()
	e.AppendV1(t0.Add(time.Second), map[string]any{"n": 2, "msg": "v1 EventTime"})
	e.AppendV1(uint32(1_800_000_000), map[string]any{"n": 3, "msg": "v1 unsigned"})
	e.AppendV1("yesterday", map[string]any{"n": 99, "msg": "malformed: string timestamp"})
	e.AppendV1(int64(-1), map[string]any{"n": 4, "msg": "v1 signed"})
	e.AppendV1(1_800_000_000.5, map[string]any{"n": 5, "msg": "v1 float"})
	e.AppendV2(t0.Add(2*time.Second), nil, map[string]any{"n": 6, "msg": "v2 nested", "user": map[string]any{"name": "alice", "roles": []any{"admin"}}})
	return e.Bytes()
}

// numbered builds a chunk of v2 records whose "n" runs from first to first+count-1.
func numbered(first, count int) []byte {
	var e chunk.Encoder
	for n := first; n < first+count; n++ {
		e.AppendV2(t0.Add(time.Duration(n)*time.Millisecond), nil, map[string]any{"n": n, "msg": fmt.Sprintf("record %d", n)})
	}
	return e.Bytes()
}

// payloadN returns the "n" field of the JSON payload in a message's text part.
func payloadN(t testing.TB, m message) int {
	t.Helper()
	var p struct {
		N int `json:"n"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(m.Text)), &p); err != nil {
		t.Fatalf("message %s: text part is not the JSON payload: %v\n%s", m.MessageID, err, m.Text)
	}
	return p.N
}

func TestEveryEntryFormBecomesOneEmail(t *testing.T) {
	srv := startServer(t)
	h := StartHost(t)
	h.Configure(0, baseKeys(srv, "SOC <soc@example.com>"))
	if rc := h.Init(0); rc != flbOK {
		t.Fatalf("init = %d, want FLB_OK; log:\n%s", rc, h.Log())
	}
	data := mixedChunk()

	if rc := h.Flush(0, "app.security", data); rc != flbOK {
		t.Fatalf("flush = %d, want FLB_OK; log:\n%s", rc, h.Log())
	}
	msgs := srv.waitMessages(t, 6)

	var ns []int
	ids := make(map[string]bool)
	for _, m := range msgs {
		ns = append(ns, payloadN(t, m))
		ids[m.MessageID] = true
		if diff := cmp.Diff([]string{"soc@example.com"}, m.To); diff != "" {
			t.Errorf("message %s To (-want +got):\n%s", m.MessageID, diff)
		}
		if !strings.HasPrefix(m.Subject, "Alert app.security: v") {
			t.Errorf("message %s subject %q, want the rendered template", m.MessageID, m.Subject)
		}
		if err := output.Verify(strings.NewReader(srv.raw(t, m.ID)), []byte(testSecretKey)); err != nil {
			t.Errorf("message %s: signature does not verify: %v", m.MessageID, err)
		}
	}
	sort.Ints(ns)
	if diff := cmp.Diff([]int{1, 2, 3, 4, 5, 6}, ns); diff != "" {
		t.Errorf("records delivered (-want +got):\n%s", diff)
	}
	if len(ids) != 6 {
		t.Errorf("%d distinct Message-IDs, want 6", len(ids))
	}
	if got := h.LogLines("[error] [output:smtp:smtp.0]", "malformed entry", `"app.security"`); len(got) != 1 {
		t.Errorf("want one error line for the malformed entry, got %q\nlog:\n%s", got, h.Log())
	}

	// Fluent Bit hands the chunk back (e.g. after a retry): nobody is emailed twice.
	if rc := h.Flush(0, "app.security", data); rc != flbOK {
		t.Errorf("second flush = %d, want FLB_OK", rc)
	}
	if n := len(srv.messages(t)); n != 6 {
		t.Errorf("after flushing the chunk again the server holds %d messages, want 6", n)
	}

	if rc := h.Exit(0); rc != flbOK {
		t.Errorf("exit = %d, want FLB_OK", rc)
	}
	if got := h.LogLines("[ info] [output:smtp:smtp.0] stopped: records=12 delivered=6"); len(got) != 1 {
		t.Errorf("want one stopped line with the totals; log:\n%s", h.Log())
	}
	h.Expect("unregister", "unregister -> ok")
}

func TestTwoInstancesDeliverOnlyTheirOwn(t *testing.T) {
	srv := startServer(t)
	h := StartHost(t)
	h.Configure(0, baseKeys(srv, "red@example.com"))
	h.Configure(1, baseKeys(srv, "blue@example.com, Blue Two <blue2@example.com>"))
	// Fluent Bit shares one plugin struct between instances and rewrites it before each Init:
	// each instance must have read its own keys during its own Init.
	if rc := h.Init(0); rc != flbOK {
		t.Fatalf("init 0 = %d; log:\n%s", rc, h.Log())
	}
	if rc := h.Init(1); rc != flbOK {
		t.Fatalf("init 1 = %d; log:\n%s", rc, h.Log())
	}

	if rc := h.Flush(0, "red.app", numbered(100, 3)); rc != flbOK {
		t.Errorf("flush 0 = %d", rc)
	}
	if rc := h.Flush(1, "blue.app", numbered(200, 2)); rc != flbOK {
		t.Errorf("flush 1 = %d", rc)
	}
	msgs := srv.waitMessages(t, 5)

	got := make(map[string][]int) // To list -> record numbers
	for _, m := range msgs {
		key := strings.Join(m.To, ",")
		got[key] = append(got[key], payloadN(t, m))
		wantTag := "blue.app"
		if key == "red@example.com" {
			wantTag = "red.app"
		}
		if !strings.HasPrefix(m.Subject, "Alert "+wantTag+":") {
			t.Errorf("message to %v has subject %q, want tag %s", m.To, m.Subject, wantTag)
		}
	}
	for _, v := range got {
		sort.Ints(v)
	}
	want := map[string][]int{
		"red@example.com":                    {100, 101, 102},
		"blue@example.com,blue2@example.com": {200, 201},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("records per recipient list (-want +got):\n%s", diff)
	}
	for i := range 2 {
		if l := h.LogLines(fmt.Sprintf("[ info] [output:smtp:smtp.%d] started:", i)); len(l) != 1 {
			t.Errorf("instance %d: want one started line, got %q", i, l)
		}
	}
	if l := h.LogLines("[output:smtp:smtp.1] started:", "red@example.com"); len(l) != 0 {
		t.Errorf("instance 1 started with instance 0's recipients: %q", l)
	}
	h.Expect("exit 0", "exit 0 -> 1")
	h.Expect("exit 1", "exit 1 -> 1")
}

func TestBadConfigFailsInitNamingTheKeys(t *testing.T) {
	h := StartHost(t)
	h.Configure(0, map[string]string{
		"dest_host":   "mail.example.com:notaport",
		"dest_email":  "soc@example.com, not an address",
		"is_starttls": "perhaps",
		"password":    testPassword, // without username
		"secret_key":  testSecretKey,
	})
	if rc := h.Init(0); rc != flbError {
		t.Fatalf("init = %d, want FLB_ERROR; log:\n%s", rc, h.Log())
	}
	for _, key := range []string{"dest_host", "dest_email", "is_starttls", "from_email", "username"} {
		if l := h.LogLines("[error] [output:smtp:smtp.0] configuration: " + key + ":"); len(l) != 1 {
			t.Errorf("want one [error] line naming %s, got %q", key, l)
		}
	}
	if l := h.LogLines("[error] [output:smtp:smtp.0] not started: 5 configuration problem(s)"); len(l) != 1 {
		t.Errorf("want one summary line; log:\n%s", h.Log())
	}
	if strings.Contains(h.Log(), testPassword) || strings.Contains(h.Log(), testSecretKey) {
		t.Errorf("a secret appears in the log:\n%s", h.Log())
	}

	// Fluent Bit never flushes an instance whose Init failed; if a host did, the chunk is
	// refused with FLB_ERROR and an error line saying what was dropped, not a crash.
	if rc := h.Flush(0, "app", numbered(0, 1)); rc != flbError {
		t.Errorf("flush without a context = %d, want FLB_ERROR", rc)
	}
	if l := h.LogLines("[error] [output:smtp:smtp] dropping a chunk of", `tag "app"`, "unknown plugin context"); len(l) != 1 {
		t.Errorf("want one error line for the refused chunk; log:\n%s", h.Log())
	}

	// A second, valid instance still starts: the failure is per instance.
	h.Configure(1, map[string]string{
		"dest_host":  "127.0.0.1:2525",
		"dest_email": "soc@example.com",
		"from_email": "fb@example.com",
		"secret_key": testSecretKey,
	})
	if rc := h.Init(1); rc != flbOK {
		t.Errorf("init 1 = %d, want FLB_OK; log:\n%s", rc, h.Log())
	}
}

func TestConcurrentFlushesDeliverEveryRecordOnce(t *testing.T) {
	srv := startServer(t)
	h := StartHost(t)
	keys := baseKeys(srv, "soc@example.com")
	keys["max_connections"] = "4"
	h.Configure(0, keys)
	if rc := h.Init(0); rc != flbOK {
		t.Fatalf("init = %d; log:\n%s", rc, h.Log())
	}
	chunks := map[string][]byte{
		"a": numbered(0, 20),
		"b": numbered(100, 20),
		"c": numbered(200, 20),
	}
	// Four threads released at once: a, b and c, and a again (as when Fluent Bit retries a
	// chunk while another worker still sends it).
	plan := []string{"a", "b", "c", "a"}
	h.Expect("hold", "ok")
	jobs := make(map[int]string)
	for _, name := range plan {
		jobs[h.Start(0, "app."+name, chunks[name])] = name
	}
	h.Expect("release", "ok")
	codes := h.JoinAll()
	if len(codes) != len(plan) {
		t.Fatalf("joinall returned %d jobs, want %d", len(codes), len(plan))
	}
	for j, rc := range codes {
		switch rc {
		case flbOK:
		case flbRetry: // Fluent Bit would hand the chunk back: do so until it is delivered
			for try := 0; try < 5 && rc == flbRetry; try++ {
				rc = h.Flush(0, "app."+jobs[j], chunks[jobs[j]])
			}
			if rc != flbOK {
				t.Errorf("chunk %s still not delivered after retries: %d", jobs[j], rc)
			}
		default:
			t.Errorf("job %d (chunk %s) = %d", j, jobs[j], rc)
		}
	}
	msgs := srv.waitMessages(t, 60)
	seen := make(map[int]int)
	for _, m := range msgs {
		seen[payloadN(t, m)]++
	}
	for _, base := range []int{0, 100, 200} {
		for n := base; n < base+20; n++ {
			if seen[n] != 1 {
				t.Errorf("record %d delivered %d times, want 1", n, seen[n])
			}
		}
	}
	if len(seen) != 60 {
		t.Errorf("%d distinct records delivered, want 60", len(seen))
	}
}

func TestLogHonoursLevelAndHidesSecrets(t *testing.T) {
	h := StartHost(t)
	keys := map[string]string{
		"dest_host":  "127.0.0.1:1", // never dialled by Init
		"dest_email": "soc@example.com",
		"from_email": "fb@example.com",
		"username":   "fluent",
		"password":   testPassword,
		"secret_key": testSecretKey,
	}
	h.Configure(0, keys)
	h.Expect("loglevel 0 trace", "ok")
	h.Configure(1, keys)
	h.Expect("loglevel 1 warn", "ok")
	if rc := h.Init(0); rc != flbOK {
		t.Fatalf("init 0 = %d; log:\n%s", rc, h.Log())
	}
	if rc := h.Init(1); rc != flbOK {
		t.Fatalf("init 1 = %d; log:\n%s", rc, h.Log())
	}

	started := h.LogLines("[ info] [output:smtp:smtp.0] started:")
	if len(started) != 1 {
		t.Fatalf("want one effective-configuration line; log:\n%s", h.Log())
	}
	for _, want := range []string{"dest_host=127.0.0.1:1", "username=fluent", "password=[redacted]", "secret_key=[redacted]", "auth=plain"} {
		if !strings.Contains(started[0], want) {
			t.Errorf("started line %q lacks %q", started[0], want)
		}
	}
	if l := h.LogLines("[output:smtp:smtp.1]", "[ info]"); len(l) != 0 {
		t.Errorf("instance 1 has log_level warn but logged info lines: %q", l)
	}

	// A flush that cannot connect: retried, logged, and still no secret at trace level.
	if rc := h.Flush(0, "app", numbered(0, 2)); rc != flbRetry {
		t.Errorf("flush to a closed port = %d, want FLB_RETRY", rc)
	}
	if l := h.LogLines("[output:smtp:smtp.0]", "2 email(s)"); len(l) != 1 {
		t.Errorf("want one line about the 2 emails to retry, got %q\nlog:\n%s", l, h.Log())
	}
	if l := h.LogLines("[debug] [output:smtp:smtp.0] flush tag=\"app\""); len(l) != 1 {
		t.Errorf("want one debug flush summary at log_level trace, got %q", l)
	}
	h.Exit(0)
	h.Exit(1)
	log := h.Log()
	for _, secret := range []string{testPassword, testSecretKey} {
		if strings.Contains(log, secret) {
			t.Errorf("secret %q appears in the log:\n%s", secret[:6]+"...", log)
		}
	}
}
