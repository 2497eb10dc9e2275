package pipeline

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/smtpout/smtpout/chunk"
	"github.com/smtpout/smtpout/internal/deadletter"
	"github.com/smtpout/smtpout/mailer"
	"github.com/smtpout/smtpout/output"
)

// deadDir returns a fresh directory and a Writer on it.
func deadDir(t *testing.T, limit int64) (string, *deadletter.Writer) {
	t.Helper()
	dir := t.TempDir()
	w, err := deadletter.Open(dir, limit)
	if err != nil {
		t.Fatal(err)
	}
	return dir, w
}

// dirFiles returns the file names in dir, sorted.
func dirFiles(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

func readReason(t *testing.T, path string) deadletter.Reason {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var r deadletter.Reason
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("%s is not JSON: %v\n%s", path, err, raw)
	}
	return r
}

// rejectingSender answers with reject[msg] for the record whose "msg" field is msg (see
// records) and delivers the rest, keeping every message it was handed by Message-ID.
func rejectingSender(reject map[string]mailer.Result) (*sender, map[string][]byte) {
	s := newSender()
	var mu sync.Mutex
	data := make(map[string][]byte)
	s.decide = func(m mailer.Message, _ int) mailer.Result {
		mu.Lock()
		data[m.ID] = m.Data
		mu.Unlock()
		// The payload's "msg" field names the record; find it in the body.
		for key, res := range reject {
			if bytes.Contains(m.Data, []byte(`"msg":"`+key+`"`)) {
				return res
			}
		}
		return mailer.Result{Outcome: mailer.Delivered}
	}
	return s, data
}

func TestDeadLettersForRejectedEmails(t *testing.T) {
	dir, w := deadDir(t, 1<<20)
	rcpt := mailer.Result{Outcome: mailer.Rejected,
		Err: &mailer.StepError{Step: mailer.StepRCPT, Addr: "soc@example.com", Code: 550, EnhancedCode: "5.1.1", Message: "no such user"},
		Rejected: []mailer.RecipientError{
			{Address: "soc@example.com", Code: 550, EnhancedCode: "5.1.1", Message: "no such user"},
		}}
	data := mailer.Result{Outcome: mailer.Rejected, Err: &mailer.StepError{
		Step: mailer.StepDATA, Addr: "127.0.0.1:465", Code: 554, EnhancedCode: "5.6.0", Message: "message refused"}}
	s, sent := rejectingSender(map[string]mailer.Result{"record 0": rcpt, "record 1": data})
	log := &recorder{Max: LevelInfo}
	in := newTestInstance(t, s, log, Options{DeadLetters: w})
	chunkData := records(3, nil)

	code, st := in.Flush("audit.login", chunkData)

	if code != FLBOK || st.Rejected != 2 || st.Delivered != 1 {
		t.Fatalf("Flush() = %d %+v, want FLBOK, 2 rejected, 1 delivered", code, st)
	}
	files := dirFiles(t, dir)
	if len(files) != 4 {
		t.Fatalf("dead letter files = %q, want 2 .eml and 2 .reason.json", files)
	}
	type want struct {
		time     time.Time
		code     int
		enhanced string
		reason   string
		rejected []deadletter.Recipient
	}
	wants := []want{
		{t0, 550, "5.1.1", "smtp RCPT soc@example.com: 550 5.1.1 no such user",
			[]deadletter.Recipient{{Address: "soc@example.com", Code: 550, EnhancedCode: "5.1.1", Message: "no such user"}}},
		{t0.Add(time.Millisecond), 554, "5.6.0", "smtp DATA 127.0.0.1:465: 554 5.6.0 message refused", []deadletter.Recipient{}},
	}
	emls := 0
	for _, name := range files {
		if !strings.HasSuffix(name, ".eml") {
			continue
		}
		emls++
		path := filepath.Join(dir, name)
		body, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		// The file is the exact message handed to the server, and it verifies.
		if err := output.Verify(bytes.NewReader(body), []byte(testConfig().SecretKey.Reveal())); err != nil {
			t.Errorf("%s: Verify: %v", name, err)
		}
		r := readReason(t, strings.TrimSuffix(path, ".eml")+deadletter.ReasonExt)
		if !bytes.Equal(body, sent[r.MessageID]) {
			t.Errorf("%s differs from the message sent with Message-ID %s", name, r.MessageID)
		}
		if !strings.Contains(string(body), "Message-ID: <"+r.MessageID+">") {
			t.Errorf("%s does not carry Message-ID <%s>", name, r.MessageID)
		}
		i := 0
		if strings.Contains(string(body), `"msg":"record 1"`) {
			i = 1
		}
		w := wants[i]
		wantName := w.time.Format("20060102T150405.000000000Z") + "-" + r.MessageID + ".eml"
		if name != wantName {
			t.Errorf("file %q, want %q", name, wantName)
		}
		got := want{mustTime(t, r.Time), r.Code, r.EnhancedCode, r.Reason, r.Rejected}
		if diff := cmp.Diff(w, got, cmp.AllowUnexported(want{})); diff != "" {
			t.Errorf("%s reason (-want +got):\n%s", name, diff)
		}
		if r.Tag != "audit.login" || r.File != name || r.Size != len(body) {
			t.Errorf("%s reason: tag %q file %q size %d", name, r.Tag, r.File, r.Size)
		}
	}
	if emls != 2 {
		t.Errorf("%d .eml files, want 2", emls)
	}
	// The [error] lines are written as without dead letters; one [ info] line per letter.
	errs := log.at(LevelError)
	if len(errs) != 2 {
		t.Errorf("error lines = %q, want one per rejected email", errs)
	}
	for _, e := range errs {
		if !strings.Contains(e, "message_id=<") || !strings.Contains(e, "payload_size=") {
			t.Errorf("error line %q lacks the Message-ID or payload size", e)
		}
	}
	infos := log.at(LevelInfo)
	if len(infos) != 2 || !strings.Contains(infos[0], "dead letter written: message_id=<") || !strings.Contains(infos[0], dir) {
		t.Errorf("info lines = %q, want two naming the dead letter files", infos)
	}

	// The chunk comes back (another record's retry): nothing is rejected or written twice.
	in.Flush("audit.login", chunkData)
	if got := dirFiles(t, dir); len(got) != 4 {
		t.Errorf("after a second flush: %q, want the same 4 files", got)
	}
}

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	tm, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("time %q: %v", s, err)
	}
	return tm
}

func TestDeadLettersForUnrenderableRecords(t *testing.T) {
	dir, w := deadDir(t, 1<<20)
	s := newSender()
	log := &recorder{Max: LevelDebug}
	in := newTestInstance(t, s, log, Options{DeadLetters: w})
	var e chunk.Encoder
	e.AppendV2(t0, nil, map[string]any{"msg": "made to fail", "fail": true}) // JSON is fine
	// Too big for an email (and for a JSON dead letter): described instead.
	e.AppendV2(t0.Add(time.Second), nil, map[string]any{"msg": "too big", "blob": strings.Repeat("x", output.MaxPayloadSize)})
	e.AppendV2(t0.Add(2*time.Second), nil, map[string]any{"msg": "fine"})
	chunkData := e.Bytes()

	code, st := in.Flush("app", chunkData)

	if code != FLBOK || st.Dropped != 2 || st.Delivered != 1 {
		t.Fatalf("Flush() = %d %+v, want FLBOK, 2 dropped, 1 delivered", code, st)
	}
	files := dirFiles(t, dir)
	var kinds []string
	for _, name := range files {
		kinds = append(kinds, filepath.Ext(name))
		path := filepath.Join(dir, name)
		switch filepath.Ext(name) {
		case ".json":
			if strings.HasSuffix(name, deadletter.ReasonExt) {
				r := readReason(t, path)
				if r.MessageID != "" || r.Tag != "app" || !strings.Contains(r.Reason, "render") {
					t.Errorf("%s: %+v, want no Message-ID, tag app, the render error", name, r)
				}
				continue
			}
			body, _ := os.ReadFile(path)
			want, err := output.Payload(output.Record{Tag: "app", Time: t0, Fields: map[string]any{"msg": "made to fail", "fail": true}}, "")
			if err != nil {
				t.Fatal(err)
			}
			if string(body) != string(want) || !strings.HasPrefix(name, "20261127T100000.123456789Z-record-") {
				t.Errorf("%s = %s, want the record's JSON %s", name, body, want)
			}
		case ".txt":
			body, _ := os.ReadFile(path)
			for _, w := range []string{`tag: "app"`, "time: 2026-11-27T10:00:01.123456789Z", output.ErrTooLarge.Error(), "fields: 2", `"blob"`, `"msg"`} {
				if !strings.Contains(string(body), w) {
					t.Errorf("%s lacks %q:\n%s", name, w, body)
				}
			}
		default:
			t.Errorf("unexpected file %s", name)
		}
	}
	sort.Strings(kinds)
	if diff := cmp.Diff([]string{".json", ".json", ".json", ".txt"}, kinds); diff != "" {
		t.Errorf("file kinds (-want +got):\n%s", diff)
	}

	// The same chunk again (Fluent Bit retried it for some other reason): no second copy.
	in.Flush("app", chunkData)
	if got := dirFiles(t, dir); len(got) != 4 {
		t.Errorf("after the same chunk again: %q, want the same 4 files", got)
	}
	if n := strings.Count(log.all(), "is already in"); n != 2 {
		t.Errorf("%d debug lines about letters already written, want 2:\n%s", n, log.all())
	}
}

func TestDeadLettersFull(t *testing.T) {
	dir, w := deadDir(t, 6000) // room for two or three letters of ~2 KB
	s := newSender()
	s.decide = func(m mailer.Message, _ int) mailer.Result {
		return mailer.Result{Outcome: mailer.Rejected, Err: &mailer.StepError{
			Step: mailer.StepDATA, Addr: "127.0.0.1:465", Code: 554, EnhancedCode: "5.6.0", Message: "refused"}}
	}
	log := &recorder{Max: LevelInfo}
	in := newTestInstance(t, s, log, Options{DeadLetters: w})

	code, st := in.Flush("app", records(8, nil))

	if code != FLBOK || st.Rejected != 8 {
		t.Fatalf("Flush() = %d %+v, want FLBOK and 8 rejected", code, st)
	}
	var total int64
	files := dirFiles(t, dir)
	for _, n := range files {
		fi, err := os.Stat(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		total += fi.Size()
	}
	if total > 6000 || len(files) == 0 || len(files) >= 16 {
		t.Errorf("%d files, %d bytes: want some letters and at most 6000 bytes", len(files), total)
	}
	errs := log.at(LevelError)
	var rejected, full int
	for _, e := range errs {
		switch {
		case strings.HasPrefix(e, "email rejected:"):
			rejected++
		case strings.HasPrefix(e, "dead letters are full:"):
			full++
			if !strings.Contains(e, dir) || !strings.Contains(e, "dead_letter_max_size") {
				t.Errorf("full line %q lacks the directory or the key", e)
			}
		default:
			t.Errorf("unexpected error line %q", e)
		}
	}
	if rejected != 8 || full != 1 {
		t.Errorf("%d rejection lines and %d 'full' lines, want 8 and 1 (held back while repeated):\n%s", rejected, full, log.all())
	}
}

func TestDeadLettersConcurrentFlushes(t *testing.T) {
	dir, w := deadDir(t, 1<<30)
	s := newSender()
	s.decide = func(m mailer.Message, _ int) mailer.Result {
		return mailer.Result{Outcome: mailer.Rejected, Rejected: []mailer.RecipientError{
			{Address: "soc@example.com", Code: 550, EnhancedCode: "5.1.1", Message: "no"}}}
	}
	in := newTestInstance(t, s, &recorder{Max: LevelInfo}, Options{DeadLetters: w})
	const flushes, per = 6, 10
	var wg sync.WaitGroup
	for f := range flushes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var e chunk.Encoder
			for i := range per {
				e.AppendV2(t0.Add(time.Duration(i)*time.Millisecond), nil, map[string]any{"flush": f, "i": i})
			}
			in.Flush(fmt.Sprintf("tag.%d", f), e.Bytes())
		}()
	}
	wg.Wait()
	files := dirFiles(t, dir)
	if len(files) != 2*flushes*per {
		t.Fatalf("%d files, want %d", len(files), 2*flushes*per)
	}
	for _, n := range files {
		if strings.HasPrefix(n, ".") {
			t.Errorf("temporary file left: %s", n)
		}
		if strings.HasSuffix(n, ".eml") {
			body, err := os.ReadFile(filepath.Join(dir, n))
			if err != nil {
				t.Fatal(err)
			}
			if err := output.Verify(bytes.NewReader(body), []byte(testConfig().SecretKey.Reveal())); err != nil {
				t.Errorf("%s: %v", n, err)
			}
		}
	}
}

func TestDeadLettersUnwritableDirectory(t *testing.T) {
	dir, w := deadDir(t, 1<<20)
	// Replace the directory by a file: nothing can be created in it, even as root.
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s := newSender()
	s.decide = func(m mailer.Message, _ int) mailer.Result {
		return mailer.Result{Outcome: mailer.Rejected, Rejected: []mailer.RecipientError{
			{Address: "soc@example.com", Code: 550, EnhancedCode: "5.1.1", Message: "no such user"}}}
	}
	log := &recorder{Max: LevelInfo}
	in := newTestInstance(t, s, log, Options{DeadLetters: w})

	code, st := in.Flush("app", records(2, map[int]map[string]any{1: {"fail": true}}))

	if code != FLBOK || st.Rejected != 1 || st.Dropped != 1 {
		t.Errorf("Flush() = %d %+v, want FLBOK, 1 rejected, 1 dropped", code, st)
	}
	errs := log.at(LevelError)
	want := []string{
		"dropping record 1 of tag \"app\"",
		"dead letter for record 1 of tag \"app\" not written: deadletter: ",
		"email rejected: address=soc@example.com message_id=<",
		"dead letter for message_id=<",
	}
	if len(errs) != len(want) {
		t.Fatalf("error lines:\n%s\nwant %d", strings.Join(errs, "\n"), len(want))
	}
	for i, w := range want {
		if !strings.HasPrefix(errs[i], w) {
			t.Errorf("error line %d = %q, want prefix %q", i, errs[i], w)
		}
	}
	if !strings.Contains(errs[3], "not written") || !strings.Contains(errs[3], dir) {
		t.Errorf("error line %q does not say the letter was not written, or where", errs[3])
	}
}

func TestOpenWithDeadLetters(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "old.eml"), make([]byte, 2048), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, size string
		wantLines  []string
	}{
		{"room", "1M", []string{`[ info] dead letters: dead_letter_dir="` + dir + `" dead_letter_max_size=1048576 used=2048`, "[ info] started:"}},
		{"already full", "1K", []string{"[ info] dead letters:", `[ warn] dead_letter_dir "` + dir + `" is already full (2048 of 1024 bytes)`, "[ info] started:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys := goodKeys()
			keys["dead_letter_dir"] = dir
			keys["dead_letter_max_size"] = tc.size
			log := &recorder{Max: LevelTrace}
			in := Open(keys, log, Options{})
			if in == nil {
				t.Fatalf("Open failed:\n%s", log.all())
			}
			defer in.Close()
			if in.dead == nil || in.dead.Dir() != dir {
				t.Errorf("instance has no dead letter writer for %s", dir)
			}
			lines := strings.Split(strings.TrimSuffix(log.all(), "\n"), "\n")
			if len(lines) != len(tc.wantLines) {
				t.Fatalf("log:\n%s\nwant %d lines", log.all(), len(tc.wantLines))
			}
			for i, w := range tc.wantLines {
				if !strings.HasPrefix(lines[i], w) {
					t.Errorf("line %d = %q, want prefix %q", i, lines[i], w)
				}
			}
		})
	}
	// Without the key there is no writer.
	in := Open(goodKeys(), &recorder{Max: LevelInfo}, Options{})
	if in == nil {
		t.Fatal("Open failed")
	}
	defer in.Close()
	if in.dead != nil {
		t.Errorf("dead letters on without dead_letter_dir")
	}
}
