package pipeline

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/smtpout/smtpout/chunk"
	"github.com/smtpout/smtpout/config"
	"github.com/smtpout/smtpout/mailer"
	"github.com/smtpout/smtpout/output"
)

var t0 = time.Date(2026, 11, 27, 10, 0, 0, 123456789, time.UTC)

// mixedChunk holds one record in each entry form Fluent Bit can hand over, group markers,
// and one malformed entry (a string timestamp) between valid ones: 6 records.
func mixedChunk() []byte {
	var e chunk.Encoder
	e.AppendGroupStart(map[string]any{"schema": "otel"}, nil)
	e.AppendV2(t0, map[string]any{"k": "v"}, map[string]any{"n": 1, "form": "v2"})
	e.AppendGroupEnd()
	e.AppendV1(t0, map[string]any{"n": 2, "form": "v1 eventtime"})
	e.AppendV1(uint64(1_800_000_000), map[string]any{"n": 3, "form": "v1 uint"})
	e.AppendV1("not a time", map[string]any{"n": 99, "form": "malformed"})
	e.AppendV1(int64(-86400), map[string]any{"n": 4, "form": "v1 negative int"})
	e.AppendV1(1_800_000_000.25, map[string]any{"n": 5, "form": "v1 float"})
	e.AppendV1(int8(7), map[string]any{"n": 6, "form": "v1 small int"})
	return e.Bytes()
}

// records builds a chunk of n v2 records with distinct payloads.
func records(n int, extra map[int]map[string]any) []byte {
	var e chunk.Encoder
	for i := range n {
		rec := map[string]any{"i": i, "msg": fmt.Sprintf("record %d", i)}
		for k, v := range extra[i] {
			rec[k] = v
		}
		e.AppendV2(t0.Add(time.Duration(i)*time.Millisecond), nil, rec)
	}
	return e.Bytes()
}

func newTestInstance(t testing.TB, s *sender, log *recorder, opt Options) *Instance {
	t.Helper()
	in := NewInstance(newRenderer(t), s, log, opt)
	t.Cleanup(func() { _ = in.Close() })
	return in
}

func TestFlushEveryEntryForm(t *testing.T) {
	s := newSender()
	log := &recorder{Max: LevelInfo}
	in := newTestInstance(t, s, log, Options{})

	code, st := in.Flush("app.mixed", mixedChunk())

	if code != FLBOK {
		t.Errorf("Flush() code = %d, want FLBOK", code)
	}
	want := Stats{Records: 6, Delivered: 6, Malformed: 1}
	st.Bytes = 0
	if diff := cmp.Diff(want, st); diff != "" {
		t.Errorf("Flush() stats (-want +got):\n%s", diff)
	}
	sends := s.sends()
	if len(sends) != 6 {
		t.Errorf("mailer got %d distinct emails, want 6: %v", len(sends), sends)
	}
	for id, n := range sends {
		if n != 1 {
			t.Errorf("Message-ID %s sent %d times, want 1", id, n)
		}
	}
	errs := log.at(LevelError)
	if len(errs) != 1 || !strings.Contains(errs[0], "malformed entry") || !strings.Contains(errs[0], `"app.mixed"`) {
		t.Errorf("error lines = %q, want one naming the malformed entry and the tag", errs)
	}
}

func TestFlushRetryThenSkipDelivered(t *testing.T) {
	s := newSender()
	var failID string
	s.decide = func(m mailer.Message, attempt int) mailer.Result {
		if failID == "" {
			failID = m.ID // the first email fails once
		}
		if m.ID == failID && attempt == 1 {
			return mailer.Result{Outcome: mailer.Retry, Err: errors.New("451 4.3.0 try again later")}
		}
		return mailer.Result{Outcome: mailer.Delivered}
	}
	log := &recorder{Max: LevelInfo}
	in := newTestInstance(t, s, log, Options{})
	data := records(5, nil)

	code1, st1 := in.Flush("app", data)
	code2, st2 := in.Flush("app", data) // Fluent Bit hands the same chunk back
	code3, st3 := in.Flush("app", data) // and a third time: nothing left to send

	got := []int{code1, code2, code3}
	if diff := cmp.Diff([]int{FLBRetry, FLBOK, FLBOK}, got); diff != "" {
		t.Errorf("codes (-want +got):\n%s", diff)
	}
	if st1.Delivered != 4 || st1.Retried != 1 {
		t.Errorf("first flush: delivered %d retried %d, want 4 and 1", st1.Delivered, st1.Retried)
	}
	if st2.Delivered != 1 || st2.Skipped != 4 {
		t.Errorf("second flush: delivered %d skipped %d, want 1 and 4", st2.Delivered, st2.Skipped)
	}
	if st3.Delivered != 0 || st3.Skipped != 5 {
		t.Errorf("third flush: delivered %d skipped %d, want 0 and 5", st3.Delivered, st3.Skipped)
	}
	for id, n := range s.sends() {
		want := 1
		if id == failID {
			want = 2
		}
		if n != want {
			t.Errorf("Message-ID %s sent %d times, want %d", id, n, want)
		}
	}
	warns := log.at(LevelWarn)
	if len(warns) != 1 || !strings.Contains(warns[0], "1 email(s) will be retried: 451 4.3.0") {
		t.Errorf("warn lines = %q, want one retry line with the reply", warns)
	}
	if in.ledger.InFlight() != 0 {
		t.Errorf("ledger has %d claims left after the flushes", in.ledger.InFlight())
	}
}

func TestFlushRejectedIsLoggedAndNotRetried(t *testing.T) {
	s := newSender()
	var rejectID string
	s.decide = func(m mailer.Message, _ int) mailer.Result {
		if rejectID == "" {
			rejectID = m.ID
			return mailer.Result{Outcome: mailer.Rejected, Rejected: []mailer.RecipientError{
				{Address: "soc@example.com", Code: 550, EnhancedCode: "5.1.1", Message: "no such user"},
			}}
		}
		return mailer.Result{Outcome: mailer.Delivered}
	}
	log := &recorder{Max: LevelInfo}
	in := newTestInstance(t, s, log, Options{})
	data := records(3, nil)

	code, st := in.Flush("audit", data)
	if code != FLBOK {
		t.Errorf("Flush() = %d, want FLBOK: a 5xx is not retried", code)
	}
	if st.Rejected != 1 || st.Delivered != 2 {
		t.Errorf("stats %+v, want 1 rejected and 2 delivered", st)
	}
	errs := log.at(LevelError)
	if len(errs) != 1 {
		t.Fatalf("error lines = %q, want 1", errs)
	}
	for _, want := range []string{"address=soc@example.com", "message_id=<" + rejectID + ">", "code=550", "enhanced_code=5.1.1", "payload_size=", "no such user"} {
		if !strings.Contains(errs[0], want) {
			t.Errorf("error line %q lacks %q", errs[0], want)
		}
	}
	// Another record's retry brings the chunk back: the rejected email is not sent again.
	in.Flush("audit", data)
	if n := s.sends()[rejectID]; n != 1 {
		t.Errorf("rejected email sent %d times, want 1", n)
	}
}

func TestFlushMessageRejectedWithError(t *testing.T) {
	s := newSender()
	s.decide = func(m mailer.Message, _ int) mailer.Result {
		return mailer.Result{Outcome: mailer.Rejected, Err: &mailer.StepError{
			Step: mailer.StepDATA, Addr: "127.0.0.1:465", Code: 554, EnhancedCode: "5.6.0", Message: "message refused"}}
	}
	log := &recorder{Max: LevelInfo}
	in := newTestInstance(t, s, log, Options{})

	in.Flush("app", records(1, nil))

	errs := log.at(LevelError)
	if len(errs) != 1 {
		t.Fatalf("error lines = %q, want 1", errs)
	}
	for _, want := range []string{"email rejected", "code=554", "enhanced_code=5.6.0", "message_id=<"} {
		if !strings.Contains(errs[0], want) {
			t.Errorf("error line %q lacks %q", errs[0], want)
		}
	}
}

func TestRecipientRejectedOnDeliveredEmail(t *testing.T) {
	s := newSender()
	s.decide = func(m mailer.Message, _ int) mailer.Result {
		return mailer.Result{Outcome: mailer.Delivered, Rejected: []mailer.RecipientError{
			{Address: "gone@example.com", Code: 550, EnhancedCode: "5.1.1", Message: "mailbox unavailable"},
		}}
	}
	log := &recorder{Max: LevelInfo}
	in := newTestInstance(t, s, log, Options{})

	code, st := in.Flush("app", records(2, nil))

	if code != FLBOK || st.Delivered != 2 || st.RecipientsRejected != 2 {
		t.Errorf("code %d stats %+v, want FLBOK, 2 delivered, 2 recipients rejected", code, st)
	}
	errs := log.at(LevelError)
	if len(errs) != 2 {
		t.Fatalf("error lines = %q, want one per email", errs)
	}
	for _, e := range errs {
		for _, want := range []string{"recipient rejected", "address=gone@example.com", "code=550", "enhanced_code=5.1.1", "message_id=<"} {
			if !strings.Contains(e, want) {
				t.Errorf("error line %q lacks %q", e, want)
			}
		}
	}
}

func TestFlushDropsUnrenderableRecordOnly(t *testing.T) {
	s := newSender()
	log := &recorder{Max: LevelInfo}
	in := newTestInstance(t, s, log, Options{})

	code, st := in.Flush("app", records(3, map[int]map[string]any{1: {"fail": true}}))

	if code != FLBOK || st.Dropped != 1 || st.Delivered != 2 {
		t.Errorf("code %d stats %+v, want FLBOK, 1 dropped, 2 delivered", code, st)
	}
	errs := log.at(LevelError)
	if len(errs) != 1 || !strings.Contains(errs[0], "dropping record 1 of tag \"app\"") {
		t.Errorf("error lines = %q, want one naming record 1", errs)
	}
}

func TestFlushIdenticalRecordsSendOnce(t *testing.T) {
	var e chunk.Encoder
	for range 3 {
		e.AppendV2(t0, nil, map[string]any{"msg": "same"})
	}
	s := newSender()
	in := newTestInstance(t, s, &recorder{Max: LevelInfo}, Options{})

	code, st := in.Flush("app", e.Bytes())

	if code != FLBOK || st.Delivered != 1 || st.Duplicates != 2 {
		t.Errorf("code %d stats %+v, want FLBOK, 1 delivered, 2 duplicates", code, st)
	}
}

func TestFlushTruncatedChunkKeepsEarlierRecords(t *testing.T) {
	data := records(3, nil)
	data = data[:len(data)-5] // cut inside the last record
	s := newSender()
	log := &recorder{Max: LevelInfo}
	in := newTestInstance(t, s, log, Options{})

	code, st := in.Flush("app", data)

	if code != FLBOK || st.Delivered != 2 || st.Malformed != 1 {
		t.Errorf("code %d stats %+v, want FLBOK, 2 delivered, 1 malformed", code, st)
	}
	errs := log.at(LevelError)
	if len(errs) != 1 || !strings.Contains(errs[0], "dropping the rest of the chunk") {
		t.Errorf("error lines = %q, want one saying what was dropped", errs)
	}
}

func TestConcurrentFlushesSameChunkSendOnce(t *testing.T) {
	s := newSender()
	s.block = make(chan struct{})
	s.entered = make(chan struct{}, 2)
	log := &recorder{Max: LevelInfo}
	in := newTestInstance(t, s, log, Options{})
	data := records(4, nil)

	codes := make(chan int, 2)
	go func() { c, _ := in.Flush("app", data); codes <- c }()
	<-s.entered // the first flush owns every record and is sending
	c2, st2 := in.Flush("app", data)
	close(s.block)
	c1 := <-codes

	if c1 != FLBOK || c2 != FLBRetry {
		t.Errorf("codes = %d, %d; want FLBOK for the sender and FLBRetry for the other", c1, c2)
	}
	if st2.Retried != 4 {
		t.Errorf("second flush retried %d, want 4", st2.Retried)
	}
	c3, st3 := in.Flush("app", data) // the retry: all delivered by now
	if c3 != FLBOK || st3.Skipped != 4 {
		t.Errorf("retry: code %d stats %+v, want FLBOK and 4 skipped", c3, st3)
	}
	for id, n := range s.sends() {
		if n != 1 {
			t.Errorf("Message-ID %s sent %d times, want 1", id, n)
		}
	}
}

func TestConcurrentFlushesDeliverEveryRecordOnce(t *testing.T) {
	s := newSender()
	in := newTestInstance(t, s, &recorder{Max: LevelInfo}, Options{})
	const workers, chunks, per = 4, 8, 25
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range chunks {
				var e chunk.Encoder
				for i := range per {
					e.AppendV2(t0, nil, map[string]any{"w": w, "c": c, "i": i})
				}
				for {
					if code, _ := in.Flush(fmt.Sprintf("w%d", w), e.Bytes()); code == FLBOK {
						break
					}
				}
			}
		}()
	}
	wg.Wait()
	sends := s.sends()
	if len(sends) != workers*chunks*per {
		t.Errorf("distinct emails = %d, want %d", len(sends), workers*chunks*per)
	}
	for id, n := range sends {
		if n != 1 {
			t.Errorf("Message-ID %s sent %d times", id, n)
		}
	}
	if got := in.Total().Delivered; got != workers*chunks*per {
		t.Errorf("Total().Delivered = %d, want %d", got, workers*chunks*per)
	}
}

func TestRetryLinesAreAggregatedAndRateLimited(t *testing.T) {
	s := newSender()
	s.decide = func(mailer.Message, int) mailer.Result {
		return mailer.Result{Outcome: mailer.Retry, Err: errors.New("dial tcp 127.0.0.1:465: connection refused")}
	}
	clock := &fakeClock{t: t0}
	log := &recorder{Max: LevelInfo}
	in := newTestInstance(t, s, log, Options{Now: clock.now, RepeatWindow: time.Minute})
	data := records(10, nil)

	in.Flush("app", data)
	in.Flush("app", data) // the same trouble again within the window: held back
	clock.advance(2 * time.Minute)
	in.Flush("app", data)

	want := []string{
		`tag "app": 10 email(s) will be retried: dial tcp 127.0.0.1:465: connection refused`,
		`tag "app": 10 email(s) will be retried: dial tcp 127.0.0.1:465: connection refused (repeated 1 more time(s) since last logged)`,
	}
	if diff := cmp.Diff(want, log.at(LevelWarn)); diff != "" {
		t.Errorf("warn lines (-want +got):\n%s", diff)
	}
}

// operatorErr is a retryable error an operator must fix.
type operatorErr struct{}

func (operatorErr) Error() string {
	return "535 5.7.8 authentication failed: check username and password"
}
func (operatorErr) Operator() bool { return true }

func TestOperatorProblemsAreErrors(t *testing.T) {
	s := newSender()
	s.decide = func(mailer.Message, int) mailer.Result {
		return mailer.Result{Outcome: mailer.Retry, Err: fmt.Errorf("auth: %w", operatorErr{})}
	}
	log := &recorder{Max: LevelInfo}
	in := newTestInstance(t, s, log, Options{})

	code, _ := in.Flush("app", records(3, nil))

	if code != FLBRetry {
		t.Errorf("Flush() = %d, want FLBRetry: nothing is lost", code)
	}
	errs := log.at(LevelError)
	if len(errs) != 1 || !strings.Contains(errs[0], "3 email(s) cannot be delivered until this is fixed") ||
		!strings.Contains(errs[0], "535 5.7.8") {
		t.Errorf("error lines = %q, want one aggregated operator line", errs)
	}
	if w := log.at(LevelWarn); len(w) != 0 {
		t.Errorf("warn lines = %q, want none", w)
	}
}

func TestAmbiguousDeliveryIsWarned(t *testing.T) {
	s := newSender()
	s.decide = func(m mailer.Message, attempt int) mailer.Result {
		if attempt == 1 {
			return mailer.Result{Outcome: mailer.Retry, Ambiguous: true, Err: errors.New("connection reset after DATA")}
		}
		return mailer.Result{Outcome: mailer.Delivered}
	}
	log := &recorder{Max: LevelInfo}
	in := newTestInstance(t, s, log, Options{})

	c1, _ := in.Flush("app", records(1, nil))
	c2, _ := in.Flush("app", records(1, nil))

	if c1 != FLBRetry || c2 != FLBOK {
		t.Errorf("codes %d, %d; want FLBRetry then FLBOK", c1, c2)
	}
	found := false
	for _, w := range log.at(LevelWarn) {
		if strings.Contains(w, "uncertain") && strings.Contains(w, "same Message-ID") {
			found = true
		}
	}
	if !found {
		t.Errorf("no warning about the uncertain delivery in:\n%s", log.all())
	}
}

func TestCloseAbandonsSendsAndRefusesFlushes(t *testing.T) {
	s := newSender()
	s.block = make(chan struct{}) // never released: only Close ends the send
	s.entered = make(chan struct{}, 1)
	log := &recorder{Max: LevelInfo}
	in := NewInstance(newRenderer(t), s, log, Options{})

	codes := make(chan int, 1)
	go func() { c, _ := in.Flush("app", records(2, nil)); codes <- c }()
	<-s.entered
	if err := in.Close(); err != nil {
		t.Errorf("Close() = %v", err)
	}
	if c := <-codes; c != FLBRetry {
		t.Errorf("flush during Close = %d, want FLBRetry", c)
	}
	if c, _ := in.Flush("app", records(1, nil)); c != FLBRetry {
		t.Errorf("flush after Close = %d, want FLBRetry", c)
	}
	if err := in.Close(); err != nil {
		t.Errorf("second Close() = %v", err)
	}
	if s.closed != 1 {
		t.Errorf("mailer closed %d times, want 1", s.closed)
	}
	infos := log.at(LevelInfo)
	if len(infos) != 1 || !strings.HasPrefix(infos[0], "stopped: records=2 delivered=0") {
		t.Errorf("info lines = %q, want one stopped line with the totals", infos)
	}
	if in.ledger.InFlight() != 0 {
		t.Errorf("claims left after Close: %d", in.ledger.InFlight())
	}
}

func TestFlushDebugSummary(t *testing.T) {
	log := &recorder{Max: LevelDebug}
	in := newTestInstance(t, newSender(), log, Options{})
	in.Flush("app", records(2, nil))
	d := log.at(LevelDebug)
	if len(d) != 1 || !strings.Contains(d[0], `flush tag="app"`) || !strings.Contains(d[0], "records=2 delivered=2") {
		t.Errorf("debug lines = %q, want one flush summary", d)
	}
}

const (
	password  = "pw-Never-Log-Me-1"
	secretKey = "sk-Never-Log-Me-0123456789"
)

func goodKeys() config.MapGetter {
	return config.MapGetter{
		"dest_host":  "127.0.0.1:2525",
		"dest_email": "SOC <soc@example.com>, oncall@example.com",
		"cc_email":   "boss@example.com",
		"bcc_email":  "audit@example.com",
		"from_email": "Fluent Bit <fb@example.com>",
		"username":   "fb",
		"password":   password,
		"secret_key": secretKey,
		"subject":    "Alert $TAG",
	}
}

func TestOpen(t *testing.T) {
	tests := []struct {
		name      string
		keys      config.MapGetter
		wantOK    bool
		wantLines []string // substrings, one per line, in order, as "[level] text"
	}{
		{
			name:   "valid",
			keys:   goodKeys(),
			wantOK: true,
			wantLines: []string{
				`[ info] started: dest_host=127.0.0.1:2525 tls=implicit`,
			},
		},
		{
			name: "short secret warns",
			keys: func() config.MapGetter {
				k := goodKeys()
				k["secret_key"] = "short"
				return k
			}(),
			wantOK:    true,
			wantLines: []string{"[ info] started:", "[ warn] secret_key is shorter than"},
		},
		{
			name: "every problem named",
			keys: func() config.MapGetter {
				k := goodKeys()
				k["dest_email"] = "not-an-address"
				k["is_readable"] = "maybe"
				delete(k, "from_email")
				return k
			}(),
			wantOK: false,
			wantLines: []string{
				"[error] configuration: is_readable:",
				"[error] configuration: dest_email:",
				"[error] configuration: from_email:",
				"[error] not started: 3 configuration problem(s)",
			},
		},
		{
			name: "password without username",
			keys: func() config.MapGetter {
				k := goodKeys()
				delete(k, "username")
				return k
			}(),
			wantOK:    false,
			wantLines: []string{"[error] configuration: username:", "[error] not started: 1 configuration problem(s)"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			log := &recorder{Max: LevelTrace}
			in := Open(tc.keys, log, Options{})
			if in != nil {
				defer in.Close()
			}
			if (in != nil) != tc.wantOK {
				t.Fatalf("Open() started = %v, want %v; log:\n%s", in != nil, tc.wantOK, log.all())
			}
			all := log.all()
			lines := strings.Split(strings.TrimSuffix(all, "\n"), "\n")
			if len(lines) != len(tc.wantLines) {
				t.Fatalf("got %d log lines, want %d:\n%s", len(lines), len(tc.wantLines), all)
			}
			for i, want := range tc.wantLines {
				if !strings.HasPrefix(lines[i], want) {
					t.Errorf("line %d = %q, want prefix %q", i, lines[i], want)
				}
			}
			for _, secret := range []string{password, secretKey} {
				if strings.Contains(all, secret) {
					t.Errorf("a secret appears in the log:\n%s", all)
				}
			}
		})
	}
}

func TestEffectiveConfig(t *testing.T) {
	cfg, err := config.Parse(goodKeys())
	if err != nil {
		t.Fatal(err)
	}
	got := cfg.Effective()
	for _, want := range []string{
		"dest_host=127.0.0.1:2525",
		"tls=implicit",
		"tls_verify=true",
		`from_email="\"Fluent Bit\" <fb@example.com>"`,
		`dest_email="\"SOC\" <soc@example.com>, <oncall@example.com>"`,
		`cc_email="<boss@example.com>"`,
		`bcc_email="<audit@example.com>"`,
		"auth=plain",
		"username=fb",
		"password=[redacted]",
		"secret_key=[redacted]",
		`subject="Alert $TAG"`,
		"max_connections=",
		"pipelining=true",
		"chunking=true",
		`dead_letter_dir=""`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("Effective() = %s\nlacks %s", got, want)
		}
	}
	if strings.Contains(got, password) || strings.Contains(got, secretKey) {
		t.Errorf("Effective() shows a secret: %s", got)
	}
	cfg.Password = ""
	cfg.Username = ""
	if got := cfg.Effective(); !strings.Contains(got, "auth=none") || !strings.Contains(got, "password=(unset)") {
		t.Errorf("Effective() without credentials = %s", got)
	}
}

func TestStderrLoggerFormat(t *testing.T) {
	var b strings.Builder
	l := &StderrLogger{W: &b, Name: "smtp.3", Max: LevelInfo, Now: func() time.Time {
		return time.Date(2026, 11, 27, 10, 0, 0, 123456789, time.Local)
	}}
	l.Log(LevelInfo, "hello\r\nworld")
	l.Log(LevelError, "bad")
	l.Log(LevelDebug, "hidden")
	want := "[2026/11/27 10:00:00.123456789] [ info] [output:smtp:smtp.3] hello world\n" +
		"[2026/11/27 10:00:00.123456789] [error] [output:smtp:smtp.3] bad\n"
	if diff := cmp.Diff(want, b.String()); diff != "" {
		t.Errorf("StderrLogger output (-want +got):\n%s", diff)
	}
}

func TestLevelString(t *testing.T) {
	var got []string
	for l := LevelError; l <= LevelTrace; l++ {
		got = append(got, "["+l.String()+"]")
	}
	want := []string{"[error]", "[ warn]", "[ info]", "[debug]", "[trace]"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("level names (-want +got):\n%s", diff)
	}
}

func TestSplitErrors(t *testing.T) {
	a, b, c := errors.New("a"), errors.New("b"), errors.New("c")
	got := splitErrors(errors.Join(a, errors.Join(b, c)))
	var texts []string
	for _, e := range got {
		texts = append(texts, e.Error())
	}
	sort.Strings(texts)
	if diff := cmp.Diff([]string{"a", "b", "c"}, texts); diff != "" {
		t.Errorf("splitErrors (-want +got):\n%s", diff)
	}
}

// BenchmarkFlush measures the plugin's own cost per chunk of 100 records (decode, render,
// ledger, classify) with a mailer that accepts everything instantly.
func BenchmarkFlush(b *testing.B) {
	s := newSender()
	in := NewInstance(newRenderer(b), s, &recorder{Max: LevelInfo}, Options{})
	defer in.Close()
	chunks := benchChunks(64)
	b.ReportAllocs()
	b.SetBytes(int64(len(chunks[0])))
	for i := 0; b.Loop(); i++ {
		if code, _ := in.Flush("bench", chunks[i%len(chunks)]); code != FLBOK {
			b.Fatalf("Flush() = %d", code)
		}
	}
}

// A message refused after DATA while one recipient was already refused at RCPT: the [error]
// lines must carry the message's own rejection (554), not only the refused recipient's 550,
// or the log says nothing of why the accepted recipients got nothing.
func TestFlushMessageRejectedAfterRecipientRefused(t *testing.T) {
	s := newSender()
	s.decide = func(m mailer.Message, _ int) mailer.Result {
		return mailer.Result{Outcome: mailer.Rejected,
			Err: &mailer.StepError{Step: mailer.StepDATA, Addr: "127.0.0.1:465", Code: 554, EnhancedCode: "5.6.0", Message: "content refused"},
			Rejected: []mailer.RecipientError{
				{Address: "gone@example.com", Code: 550, EnhancedCode: "5.1.1", Message: "no such user"},
			}}
	}
	log := &recorder{Max: LevelInfo}
	in := newTestInstance(t, s, log, Options{})

	code, st := in.Flush("app", records(1, nil))

	if code != FLBOK || st.Rejected != 1 {
		t.Errorf("code %d stats %+v, want FLBOK and 1 rejected", code, st)
	}
	errs := log.at(LevelError)
	var gotRcpt, gotMsg bool
	for _, e := range errs {
		if strings.Contains(e, "address=gone@example.com") && strings.Contains(e, "code=550") {
			gotRcpt = true
		}
		if strings.Contains(e, "code=554") && strings.Contains(e, "enhanced_code=5.6.0") &&
			strings.Contains(e, "message_id=<") && strings.Contains(e, "content refused") {
			gotMsg = true
		}
	}
	if !gotRcpt || !gotMsg {
		t.Errorf("error lines = %q; want the refused recipient's 550 line (%v) and the message's 554 5.6.0 line (%v)", errs, gotRcpt, gotMsg)
	}
}

// panicky renders like renderer but panics once on the record whose "i" is at.
type panicky struct {
	*renderer
	at    int
	armed atomic.Bool
}

func (p *panicky) Render(rec output.Record) (*output.Email, error) {
	if rec.Fields["i"] == int64(p.at) && p.armed.CompareAndSwap(true, false) {
		panic("render blew up")
	}
	return p.renderer.Render(rec)
}

// TestPanicReleasesClaims: a panic part-way through a flush (the plugin turns it into a logged
// FLB_ERROR) must not leave the records before it claimed; the next flush delivers them all.
func TestPanicReleasesClaims(t *testing.T) {
	s := newSender()
	r := &panicky{renderer: newRenderer(t), at: 3}
	r.armed.Store(true)
	in := NewInstance(r, s, &recorder{Max: LevelInfo}, Options{})
	t.Cleanup(func() { _ = in.Close() })
	data := records(5, nil)
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("the first flush did not panic")
			}
		}()
		in.Flush("app", data)
	}()
	code, st := in.Flush("app", data)
	if code != FLBOK || st.Delivered != 5 {
		t.Errorf("flush after the panic = %d with %+v, want FLBOK and 5 delivered", code, st)
	}
}

// TestDeferredRecipientRetriedAlone: a recipient refused with 4xx while others accepted the
// email (452 too many recipients, greylisting) is owed the email: the chunk is retried, and the
// retry goes to that recipient only; a 5xx recipient is logged and never retried.
func TestDeferredRecipientRetriedAlone(t *testing.T) {
	s := newSender()
	var retryTo [][]string
	s.decide = func(m mailer.Message, attempt int) mailer.Result {
		if attempt == 1 {
			return mailer.Result{Outcome: mailer.Delivered, Rejected: []mailer.RecipientError{
				{Address: "gone@example.com", Code: 550, EnhancedCode: "5.1.1", Message: "no such user"},
				{Address: "busy@example.com", Code: 452, EnhancedCode: "4.5.3", Message: "too many recipients"},
			}}
		}
		retryTo = append(retryTo, m.To)
		return mailer.Result{Outcome: mailer.Delivered}
	}
	log := &recorder{Max: LevelInfo}
	in := newTestInstance(t, s, log, Options{})
	data := records(2, nil)

	if code, st := in.Flush("app", data); code != FLBRetry || st.Delivered != 2 || st.RecipientsRejected != 2 {
		t.Fatalf("first flush: code %d stats %+v, want FLBRetry, 2 delivered, 2 recipients rejected (the 550s)", code, st)
	}
	if w := log.at(LevelWarn); len(w) != 2 || !strings.Contains(w[0], "recipient deferred: address=busy@example.com") || !strings.Contains(w[0], "code=452") {
		t.Errorf("warn lines = %q, want one 'recipient deferred' line per email", w)
	}
	if code, _ := in.Flush("app", data); code != FLBOK {
		t.Fatalf("second flush: code %d, want FLBOK", code)
	}
	if diff := cmp.Diff([][]string{{"busy@example.com"}, {"busy@example.com"}}, retryTo); diff != "" {
		t.Errorf("retry recipients (-want +got):\n%s", diff)
	}
	if code, st := in.Flush("app", data); code != FLBOK || st.Skipped != 2 {
		t.Errorf("third flush: code %d stats %+v, want FLBOK with both skipped", code, st)
	}
	for id, n := range s.sends() {
		if n != 2 {
			t.Errorf("Message-ID %s handed to the mailer %d times, want 2 (all, then the deferred recipient)", id, n)
		}
	}
}
