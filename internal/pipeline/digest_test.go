package pipeline

import (
	"context"
	"fmt"
	"runtime"
	"slices"
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

const testWindow = 10 * time.Minute

// digestSetup is an instance with digests on, a fake clock, a fake sender and the renderer
// that remembers the digests it rendered.
type digestSetup struct {
	in  *Instance
	clk *fakeClock
	s   *sender
	r   *renderer
	log *recorder
}

// digestOptions turns digests on with window, digest_by accessors by and the clock clk.
func digestOptions(t *testing.T, clk *fakeClock, window time.Duration, maxRecords int, by ...string) Options {
	t.Helper()
	var tmpl []config.Template
	for _, b := range by {
		tp, err := config.ParseTemplate(b)
		if err != nil {
			t.Fatal(err)
		}
		tmpl = append(tmpl, tp)
	}
	opt := Options{Digests: config.Digests{DigestWindow: window, DigestBy: tmpl, DigestMaxRecords: maxRecords}}
	if clk != nil {
		opt.Now = clk.now
	}
	return opt
}

func newDigestSetup(t *testing.T, opt Options, clk *fakeClock) *digestSetup {
	t.Helper()
	ds := &digestSetup{clk: clk, s: newSender(), r: newRenderer(t), log: &recorder{Max: LevelInfo}}
	ds.in = NewInstance(ds.r, ds.s, ds.log, opt)
	t.Cleanup(func() { _ = ds.in.Close() })
	return ds
}

// answerDigests makes the sender answer each digest with digest(m, attempt); single emails
// are delivered.
func (ds *digestSetup) answerDigests(digest func(m mailer.Message, attempt int) mailer.Result) {
	ds.s.decide = func(m mailer.Message, attempt int) mailer.Result {
		if _, ok := ds.r.digest(m.ID); ok {
			return digest(m, attempt)
		}
		return mailer.Result{Outcome: mailer.Delivered}
	}
}

// withDeadLetters adds a dead letter directory to opt and returns it.
func withDeadLetters(t *testing.T, opt *Options) string {
	t.Helper()
	dir, w := deadDir(t, 1<<20)
	opt.DeadLetters = w
	return dir
}

// wantOneDigest checks that the totals count one digest delivered, of records records.
func (ds *digestSetup) wantOneDigest(t *testing.T, records int) {
	t.Helper()
	if tot := ds.in.Total(); tot.DigestsSent != 1 || tot.DigestRecords != records {
		t.Errorf("totals %+v, want 1 digest of %d records", tot, records)
	}
}

// waitBackoff lets the first back-off of the digest id pass, checking that it is not sent
// again a second before its end, and runs the loop's pass at its end.
func (ds *digestSetup) waitBackoff(t *testing.T, id string) {
	t.Helper()
	ds.clk.advance(digestRetryMin - time.Second)
	ds.tick()
	if n := ds.s.sends()[id]; n != 1 {
		t.Fatalf("digest sent %d times before its back-off ended, want 1", n)
	}
	ds.clk.advance(time.Second)
	ds.tick()
}

// tick runs one pass of the loop at the fake clock's time.
func (ds *digestSetup) tick() { ds.in.sendDigests(context.Background(), false) }

// sentMail is one email the sender got: a single, or a digest with its members.
type sentMail struct {
	id      string
	digest  bool
	members []string // digests: the members' Message-IDs, in order
	root    string   // the thread root the digest was rendered with
	data    string
}

// mails returns what the sender got, in order (the last send of each Message-ID).
func (ds *digestSetup) mails() []sentMail {
	ds.s.mu.Lock()
	order := slices.Clone(ds.s.order)
	data := make(map[string][]byte, len(ds.s.data))
	for k, v := range ds.s.data {
		data[k] = v
	}
	ds.s.mu.Unlock()
	var out []sentMail
	seen := make(map[string]bool)
	for _, id := range order {
		if seen[id] {
			continue
		}
		seen[id] = true
		m := sentMail{id: id, data: string(data[id])}
		if d, ok := ds.r.digest(id); ok {
			m.digest, m.root = true, d.ThreadRoot
			for _, mb := range d.Members {
				m.members = append(m.members, mb.MessageID)
			}
		}
		out = append(out, m)
	}
	return out
}

// kinds sums up mails as "single" and "digest(N)".
func kinds(mails []sentMail) []string {
	var out []string
	for _, m := range mails {
		if m.digest {
			out = append(out, fmt.Sprintf("digest(%d)", len(m.members)))
		} else {
			out = append(out, "single")
		}
	}
	return out
}

func testClock() *fakeClock { return &fakeClock{t: time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)} }

// hostRecords is a chunk of records, one per host given, in order; seq makes them distinct.
func hostRecords(seq int, hosts ...string) []byte {
	var e chunk.Encoder
	for i, h := range hosts {
		e.AppendV2(t0.Add(time.Duration(seq*1000+i)*time.Millisecond), nil, map[string]any{"host": h, "i": seq*1000 + i})
	}
	return e.Bytes()
}

// TestDigestQuietGroupSendsAtOnce: one record per window is one single email each, at once;
// no digest ever goes out.
func TestDigestQuietGroupSendsAtOnce(t *testing.T) {
	clk := testClock()
	ds := newDigestSetup(t, digestOptions(t, clk, testWindow, 1000), clk)
	for i := range 3 {
		if code, st := ds.in.Flush("app", hostRecords(i, "web-1")); code != FLBOK || st.Delivered != 1 || st.Digested != 0 {
			t.Fatalf("flush %d: code %d stats %+v, want OK with 1 delivered", i, code, st)
		}
		clk.advance(testWindow)
		ds.tick()
	}
	if diff := cmp.Diff([]string{"single", "single", "single"}, kinds(ds.mails())); diff != "" {
		t.Errorf("emails (-want +got):\n%s", diff)
	}
}

// TestDigestBurstIsOneSingleAndOneDigest: 100 records of one group in one chunk are the first
// record at once and the other 99 in one digest once the window has passed, in order, threaded
// under the first email, each record in exactly one email.
func TestDigestBurstIsOneSingleAndOneDigest(t *testing.T) {
	clk := testClock()
	opt := digestOptions(t, clk, testWindow, 1000)
	var told atomic.Int32
	opt.OnDigests = func() { told.Add(1) }
	ds := newDigestSetup(t, opt, clk)
	code, st := ds.in.Flush("app", records(100, nil))
	if code != FLBOK || st.Delivered != 1 || st.Digested != 99 || st.Records != 100 {
		t.Fatalf("flush: code %d stats %+v, want OK with 1 delivered and 99 digested", code, st)
	}
	ds.tick()
	clk.advance(testWindow - time.Millisecond)
	ds.tick()
	if got := kinds(ds.mails()); len(got) != 1 {
		t.Fatalf("before the window has passed: %v, want the single only", got)
	}
	clk.advance(time.Millisecond)
	ds.tick()
	mails := ds.mails()
	if diff := cmp.Diff([]string{"single", "digest(99)"}, kinds(mails)); diff != "" {
		t.Fatalf("emails (-want +got):\n%s", diff)
	}
	root, dg := mails[0].id, mails[1]
	if dg.root != root || !strings.Contains(dg.data, "In-Reply-To: <"+root+">") || !strings.Contains(dg.data, "References: <"+root+">") {
		t.Errorf("digest thread root %q, want the single %q; data:\n%.300s", dg.root, root, dg.data)
	}
	if !strings.Contains(dg.data, "X-Smtpout-Records: 99\r\n") {
		t.Errorf("digest has no X-Smtpout-Records: 99 header:\n%.300s", dg.data)
	}
	d, _ := ds.r.digest(dg.id)
	for i, m := range d.Members {
		if want := t0.Add(time.Duration(i+1) * time.Millisecond); !m.Time.Equal(want) {
			t.Fatalf("member %d has time %v, want %v (arrival order)", i, m.Time, want)
		}
	}
	if slices.Contains(dg.members, root) {
		t.Errorf("the single's record is in the digest too")
	}
	tot := ds.in.Total()
	if tot.DigestsSent != 1 || tot.DigestRecords != 99 || tot.Digested != 99 {
		t.Errorf("totals %+v, want 1 digest of 99 records", tot)
	}
	if n := told.Load(); n != 1 {
		t.Errorf("OnDigests called %d times, want once (after the digest)", n)
	}
}

// TestDigestThreeGroupsThreeThreads: digest_by $host with three hosts gives three roots, each
// group's digest threads under its own root, a later single of a group too, and the next UTC
// day opens new threads.
func TestDigestThreeGroupsThreeThreads(t *testing.T) {
	clk := testClock()
	ds := newDigestSetup(t, digestOptions(t, clk, testWindow, 1000, "$host"), clk)
	if _, st := ds.in.Flush("app", hostRecords(0, "a", "b", "c", "a", "b", "c", "a")); st.Delivered != 3 || st.Digested != 4 {
		t.Fatalf("flush: stats %+v, want 3 delivered (one per host) and 4 digested", st)
	}
	clk.advance(testWindow)
	ds.tick()
	mails := ds.mails()
	if diff := cmp.Diff([]string{"single", "single", "single", "digest(2)", "digest(1)", "digest(1)"}, sortedKinds(mails)); diff != "" {
		t.Fatalf("emails (-want +got):\n%s", diff)
	}
	roots := map[string]string{} // host -> root
	for _, m := range mails[:3] {
		roots[hostOf(t, m.data)] = m.id
	}
	for _, m := range mails[3:] {
		host := digestHost(t, ds, m.id)
		if m.root != roots[host] || !strings.Contains(m.data, "In-Reply-To: <"+roots[host]+">") {
			t.Errorf("digest of host %s threads under %q, want %q", host, m.root, roots[host])
		}
	}
	// Quiet again: a later single of host b is threaded under b's root.
	clk.advance(testWindow)
	ds.in.Flush("app", hostRecords(1, "b"))
	later := ds.mails()[6]
	if later.digest || !strings.Contains(later.data, "In-Reply-To: <"+roots["b"]+">\r\nReferences: <"+roots["b"]+">\r\n") {
		t.Errorf("later single of host b is not threaded under %q:\n%.300s", roots["b"], later.data)
	}
	// The next UTC day: a new thread.
	clk.advance(24 * time.Hour)
	ds.in.Flush("app", hostRecords(2, "b"))
	next := ds.mails()[7]
	if strings.Contains(next.data, "In-Reply-To:") {
		t.Errorf("the first email of the next day is threaded:\n%.300s", next.data)
	}
}

func sortedKinds(mails []sentMail) []string {
	k := kinds(mails)
	slices.SortStableFunc(k, func(a, b string) int { return strings.Compare(b, a) }) // singles first, then bigger digests
	return k
}

// hostOf reads the host field of a single email's JSON.
func hostOf(t *testing.T, data string) string {
	t.Helper()
	for _, h := range []string{"a", "b", "c"} {
		if strings.Contains(data, `"host":"`+h+`"`) {
			return h
		}
	}
	t.Fatalf("no host in:\n%.400s", data)
	return ""
}

// digestHost is the host of a digest's group.
func digestHost(t *testing.T, ds *digestSetup, id string) string {
	t.Helper()
	d, _ := ds.r.digest(id)
	if len(d.Group) != 1 || d.Group[0].Key != "$host" {
		t.Fatalf("digest %s has group %+v, want one $host value", id, d.Group)
	}
	return d.Group[0].Value
}

// TestDigestMaxRecordsSplits: digest_max_records 30 gives 99 waiting records as digests of
// 30, 30, 30 and 9, in order, all in the group's thread.
func TestDigestMaxRecordsSplits(t *testing.T) {
	clk := testClock()
	ds := newDigestSetup(t, digestOptions(t, clk, testWindow, 30), clk)
	ds.in.Flush("app", records(100, nil))
	clk.advance(testWindow)
	ds.tick()
	mails := ds.mails()
	if diff := cmp.Diff([]string{"single", "digest(30)", "digest(30)", "digest(30)", "digest(9)"}, kinds(mails)); diff != "" {
		t.Fatalf("emails (-want +got):\n%s", diff)
	}
	var all []string
	for _, m := range mails[1:] {
		if m.root != mails[0].id {
			t.Errorf("digest %s threads under %q, want %q", m.id, m.root, mails[0].id)
		}
		all = append(all, m.members...)
	}
	if len(all) != 99 || len(uniq(all)) != 99 {
		t.Errorf("digests carry %d records (%d distinct), want 99", len(all), len(uniq(all)))
	}
}

func uniq(s []string) map[string]bool {
	out := make(map[string]bool)
	for _, x := range s {
		out[x] = true
	}
	return out
}

// TestSplitDigestBySize: the size bound (output.MaxDigestPayload) splits too, and each part
// is the same records, Seq and all, in order.
func TestSplitDigestBySize(t *testing.T) {
	half := output.MaxDigestPayload / 2
	recs := []spoolRecord{{Seq: 1, Payload: make([]byte, half)}, {Seq: 2, Payload: make([]byte, half)}, {Seq: 3, Payload: []byte("{}")}, {Seq: 4, Payload: []byte("{}")}}
	var got [][]uint64
	for _, p := range splitDigest(recs, 2) {
		var seqs []uint64
		for _, r := range p {
			seqs = append(seqs, r.Seq)
		}
		got = append(got, seqs)
	}
	if diff := cmp.Diff([][]uint64{{1}, {2, 3}, {4}}, got); diff != "" {
		t.Errorf("parts (-want +got):\n%s", diff)
	}
}

// TestDigestRetryKeepsRecords: a digest that fails for now keeps its records and is tried
// again after the back-off, not before; every record is delivered once.
func TestDigestRetryKeepsRecords(t *testing.T) {
	clk := testClock()
	ds := newDigestSetup(t, digestOptions(t, clk, testWindow, 1000), clk)
	ds.answerDigests(func(_ mailer.Message, attempt int) mailer.Result {
		if attempt == 1 {
			return mailer.Result{Outcome: mailer.Retry, Err: fmt.Errorf("421 4.3.0 try later")}
		}
		return mailer.Result{Outcome: mailer.Delivered}
	})
	ds.in.Flush("app", records(20, nil))
	clk.advance(testWindow)
	ds.tick()
	mails := ds.mails()
	if len(mails) != 2 || !mails[1].digest {
		t.Fatalf("emails %v, want a single and a digest", kinds(mails))
	}
	id := mails[1].id
	if got := ds.in.Total().DigestsSent; got != 0 {
		t.Fatalf("%d digests counted as sent after a retryable failure", got)
	}
	if w := ds.log.at(LevelWarn); len(w) != 1 || !strings.Contains(w[0], "digest message_id=<"+id+"> of 19 record(s) will be retried in 5s: 421 4.3.0 try later") {
		t.Errorf("warnings %q", w)
	}
	ds.waitBackoff(t, id)
	if n := ds.s.sends()[id]; n != 2 {
		t.Fatalf("digest sent %d times after its back-off, want 2 (the same digest again)", n)
	}
	ds.wantOneDigest(t, 19)
}

// TestDigestRejectedIsDeadLettered: a permanent rejection of a digest writes it to
// dead_letter_dir with an [error] line naming its Message-ID and record count.
func TestDigestRejectedIsDeadLettered(t *testing.T) {
	clk := testClock()
	opt := digestOptions(t, clk, testWindow, 1000)
	dir := withDeadLetters(t, &opt)
	ds := newDigestSetup(t, opt, clk)
	ds.answerDigests(func(mailer.Message, int) mailer.Result {
		return mailer.Result{Outcome: mailer.Rejected, Err: &mailer.StepError{Step: mailer.StepDATA, Code: 552, EnhancedCode: "5.3.4", Message: "message too big"}}
	})
	ds.in.Flush("app", records(5, nil))
	clk.advance(testWindow)
	ds.tick()
	mails := ds.mails()
	if len(mails) != 2 {
		t.Fatalf("emails %v", kinds(mails))
	}
	errs := strings.Join(ds.log.at(LevelError), "\n")
	if !strings.Contains(errs, "digest rejected: message_id=<"+mails[1].id+"> records=4 code=552 enhanced_code=5.3.4") {
		t.Errorf("no [error] line for the rejected digest:\n%s", ds.log.all())
	}
	if files := dirFiles(t, dir); len(files) != 2 || !strings.HasSuffix(files[0], ".eml") {
		t.Errorf("dead letters %q, want the digest's .eml and its reason", files)
	}
	ds.tick()
	if n := ds.s.sends()[mails[1].id]; n != 1 {
		t.Errorf("rejected digest sent %d times, want 1", n)
	}
}

// TestDigestStopSignalSendsAtOnce: on a stop signal every waiting digest goes out at once,
// though its window has not passed (the fake clock stands still).
func TestDigestStopSignalSendsAtOnce(t *testing.T) {
	clk := testClock()
	stop := make(chan struct{})
	var stopAt sync.Map
	opt := digestOptions(t, clk, testWindow, 1000, "$host")
	opt.Stopping = stop
	opt.StopSignalled = func() time.Time {
		if v, ok := stopAt.Load("t"); ok {
			return v.(time.Time)
		}
		return time.Time{}
	}
	ds := newDigestSetup(t, opt, clk)
	ds.in.Flush("app", hostRecords(0, "a", "b", "a", "b", "a"))
	ds.tick()
	if got := kinds(ds.mails()); len(got) != 2 {
		t.Fatalf("before the signal: %v, want the two singles", got)
	}
	stopAt.Store("t", time.Now())
	close(stop)
	waitFor(t, func() bool { return len(ds.mails()) == 4 })
	if diff := cmp.Diff([]string{"single", "single", "digest(2)", "digest(1)"}, sortedKinds(ds.mails())); diff != "" {
		t.Errorf("emails after the signal (-want +got):\n%s", diff)
	}
	// After the signal a busy group's new record goes out at once too.
	ds.in.Flush("app", hostRecords(1, "a"))
	waitFor(t, func() bool { return len(ds.mails()) == 5 })
}

// waitFor polls cond for up to 20 s (the loop runs on its own goroutine).
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not met within 20 s")
}

// TestDigestCloseWithoutLedgerDeadLetters: Close sends what waits; when the server does not
// take it and there is no ledger_dir, the records go to dead_letter_dir and one [error] line
// gives their count.
func TestDigestCloseWithoutLedgerDeadLetters(t *testing.T) {
	clk := testClock()
	opt := digestOptions(t, clk, testWindow, 1000)
	dir := withDeadLetters(t, &opt)
	opt.FlushTimeout = 200 * time.Millisecond
	ds := newDigestSetup(t, opt, clk)
	ds.answerDigests(func(mailer.Message, int) mailer.Result {
		return mailer.Result{Outcome: mailer.Retry, Err: fmt.Errorf("dial tcp: connection refused")}
	})
	ds.in.Flush("app", records(10, nil))
	if err := ds.in.Close(); err != nil {
		t.Fatal(err)
	}
	mails := ds.mails()
	if diff := cmp.Diff([]string{"single", "digest(9)"}, kinds(mails)); diff != "" {
		t.Errorf("emails tried at Close (-want +got):\n%s", diff)
	}
	errs := ds.log.at(LevelError)
	if len(errs) != 1 || !strings.Contains(errs[0], "digest: 9 record(s) waiting for their digest could not be delivered before the stop and are lost (no ledger_dir); 9 of them written to dead_letter_dir") {
		t.Errorf("[error] lines %q, want one with the count", errs)
	}
	json := 0
	for _, f := range dirFiles(t, dir) {
		if strings.HasSuffix(f, ".json") && !strings.HasSuffix(f, ".reason.json") {
			json++
		}
	}
	if json != 9 {
		t.Errorf("%d records dead-lettered, want 9: %q", json, dirFiles(t, dir))
	}
	if info := strings.Join(ds.log.at(LevelInfo), "\n"); !strings.Contains(info, "digested=9 digests=0 digest_records=0") {
		t.Errorf("stopped line lacks the digest counts:\n%s", info)
	}
}

// TestDigestChunkRetryAddsNothingTwice: a record taken into a digest is settled, so Fluent
// Bit's retry of the chunk (its first record failed) skips it; the digest has each record once.
func TestDigestChunkRetryAddsNothingTwice(t *testing.T) {
	clk := testClock()
	ds := newDigestSetup(t, digestOptions(t, clk, testWindow, 1000), clk)
	first := true
	ds.s.decide = func(m mailer.Message, attempt int) mailer.Result {
		if first {
			first = false
			return mailer.Result{Outcome: mailer.Retry, Err: fmt.Errorf("421 busy")}
		}
		return mailer.Result{Outcome: mailer.Delivered}
	}
	data := records(10, nil)
	if code, st := ds.in.Flush("app", data); code != FLBRetry || st.Retried != 1 || st.Digested != 9 {
		t.Fatalf("first flush: code %d stats %+v, want RETRY with 1 retried and 9 digested", code, st)
	}
	code, st := ds.in.Flush("app", data)
	if code != FLBOK || st.Skipped != 9 || st.Digested != 1 || st.Delivered != 0 {
		t.Fatalf("retry of the chunk: code %d stats %+v, want OK with 9 skipped and the failed one digested", code, st)
	}
	clk.advance(testWindow)
	ds.tick()
	mails := ds.mails()
	if diff := cmp.Diff([]string{"single", "digest(10)"}, kinds(mails)); diff != "" {
		t.Fatalf("emails (-want +got):\n%s", diff)
	}
	if len(uniq(mails[1].members)) != 10 {
		t.Errorf("digest members not distinct: %q", mails[1].members)
	}
}

// memStore is a digest store in memory that outlives an instance, standing in for the spool
// file in ledger_dir: snapshot gives what a crash leaves.
type memStore struct {
	mu      sync.Mutex
	next    uint64
	waiting map[uint64]spoolRecord
	roots   map[string]spoolRoot
	closed  bool
}

func newMemStore() *memStore {
	return &memStore{waiting: make(map[uint64]spoolRecord), roots: make(map[string]spoolRoot)}
}

func (m *memStore) Add(r spoolRecord) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.next++
	r.Seq = m.next
	m.waiting[r.Seq] = r
	return r.Seq, nil
}

func (m *memStore) Done(seqs ...uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range seqs {
		delete(m.waiting, s)
	}
	return nil
}

func (m *memStore) SetRoot(r spoolRoot) error {
	m.mu.Lock()
	m.roots[r.Group] = r
	m.mu.Unlock()
	return nil
}

func (m *memStore) Sync() error { return nil }

func (m *memStore) Close() error {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	return nil
}

// state is what a new instance would load: the waiting records in Seq order and the roots.
func (m *memStore) state() ([]spoolRecord, []spoolRoot) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var w []spoolRecord
	for _, r := range m.waiting {
		w = append(w, r)
	}
	slices.SortFunc(w, func(a, b spoolRecord) int { return int(a.Seq) - int(b.Seq) })
	var roots []spoolRoot
	for _, r := range m.roots {
		roots = append(roots, r)
	}
	return w, roots
}

// TestDigestRestartSendsWaitingRecords: records taken into custody are in the store; after a
// crash (the instance is dropped without Close) the next instance sends every one of them in
// the group's thread, on its loop's first turn, and a replay of the chunk adds none again.
func TestDigestRestartSendsWaitingRecords(t *testing.T) {
	clk := testClock()
	store := newMemStore()
	opt := digestOptions(t, clk, testWindow, 1000, "$host")
	ds1 := newDigestSetup(t, opt, clk)
	ds1.in.restoreDigests(store, "mem", nil, nil)
	data := hostRecords(0, "a", "b", "a", "b", "a")
	ds1.in.Flush("app", data)
	singles := ds1.mails()
	waiting, roots := store.state()
	if len(waiting) != 3 || len(roots) != 2 {
		t.Fatalf("store holds %d records and %d roots, want 3 and 2", len(waiting), len(roots))
	}

	// The crash: a new instance on what the store holds; the old one never sends again.
	ds1.s.decide = func(mailer.Message, int) mailer.Result {
		return mailer.Result{Outcome: mailer.Retry, Err: fmt.Errorf("dead")}
	}
	ds2 := newDigestSetup(t, opt, clk)
	ds2.in.restoreDigests(store, "mem", waiting, roots)
	waitFor(t, func() bool { return len(ds2.mails()) == 2 }) // the loop's first turn, no window
	if code, st := ds2.in.Flush("app", data); code != FLBOK || st.Skipped != 3 || st.Digested != 2 {
		// The waiting three are settled. The two singles are not in ds2's ledger (no journal
		// here, unlike ledger_dir): taken again, for the groups' next digests.
		t.Errorf("replayed chunk: code %d stats %+v, want 3 skipped and 2 digested", code, st)
	}
	var got []string
	rootOf := map[string]string{}
	for _, s := range singles {
		rootOf[hostOf(t, s.data)] = s.id
	}
	for _, m := range ds2.mails()[:2] {
		if !m.digest {
			t.Fatalf("after the restart %s is not a digest", m.id)
		}
		if host := digestHost(t, ds2, m.id); m.root != rootOf[host] {
			t.Errorf("restored digest of %s threads under %q, want %q", host, m.root, rootOf[host])
		}
		got = append(got, m.members...)
	}
	var want []string
	for _, r := range waiting {
		want = append(want, r.MessageID)
	}
	slices.Sort(got)
	slices.Sort(want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("records delivered after the restart (-want +got):\n%s", diff)
	}
	left, _ := store.state()
	for _, r := range left {
		if slices.Contains(want, r.MessageID) {
			t.Errorf("record %s still waiting in the store after its digest was delivered", r.MessageID)
		}
	}
}

// TestDigestLoopRealClock: with the real clock, the loop's own timer sends the digest once
// the window has passed.
func TestDigestLoopRealClock(t *testing.T) {
	ds := newDigestSetup(t, digestOptions(t, nil, 50*time.Millisecond, 1000), nil)
	ds.in.Flush("app", records(5, nil))
	waitFor(t, func() bool { return len(ds.mails()) == 2 })
	if diff := cmp.Diff([]string{"single", "digest(4)"}, kinds(ds.mails())); diff != "" {
		t.Errorf("emails (-want +got):\n%s", diff)
	}
}

// TestDigestNoGoroutineLeak: Open and Close over and over leave no goroutine behind.
func TestDigestNoGoroutineLeak(t *testing.T) {
	clk := testClock()
	run := func() {
		in := NewInstance(newRenderer(t), newSender(), &recorder{}, digestOptions(t, clk, testWindow, 1000))
		in.Flush("app", records(3, nil))
		_ = in.Close()
	}
	run()
	before := runtime.NumGoroutine()
	for range 50 {
		run()
	}
	var after int
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if after = runtime.NumGoroutine(); after <= before {
			return
		}
	}
	t.Errorf("%d goroutines after 50 Open/Close, %d before", after, before)
}

// TestDigestNoCustodyAfterTheStopBudget: once flush_timeout has passed since the stop signal
// nothing could send a digest any more, so a busy group's records go back to Fluent Bit
// (RETRY) with the rest instead of being taken into custody.
func TestDigestNoCustodyAfterTheStopBudget(t *testing.T) {
	clk := testClock()
	stop := make(chan struct{})
	close(stop)
	opt := digestOptions(t, clk, testWindow, 1000)
	opt.Stopping = stop
	opt.StopSignalled = func() time.Time { return time.Now().Add(-time.Minute) }
	ds := newDigestSetup(t, opt, clk)
	code, st := ds.in.Flush("app", records(5, nil))
	if code != FLBRetry || st.Retried != 5 || st.Digested != 0 {
		t.Errorf("flush after the stop budget: code %d stats %+v, want RETRY with all 5 retried", code, st)
	}
}

// BenchmarkDigestPerRecord prints the CPU per record of a storm: sent as single emails (off),
// or taken into custody and then carried by digests of 1,000 records (on: the flushes and
// the digests' rendering and sending, with a fake sender).
func BenchmarkDigestPerRecord(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "singles"
		if on {
			name = "digests"
		}
		b.Run(name, func(b *testing.B) {
			clk := testClock()
			opt := Options{Now: clk.now}
			if on {
				opt.Digests = config.Digests{DigestWindow: time.Hour, DigestMaxRecords: 1000}
			}
			s := newSender()
			in := NewInstance(newRenderer(b), s, &recorder{Max: LevelInfo}, opt)
			defer in.Close()
			chunks := benchChunks(b.N)
			cpu := startCPU()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				in.Flush("bench", chunks[i])
			}
			if on {
				clk.advance(time.Hour)
				in.sendDigests(context.Background(), false)
			}
			b.StopTimer()
			used := cpu()
			t := in.Total()
			if got := t.Delivered + t.DigestRecords; got != 100*b.N {
				b.Fatalf("%d records delivered, want %d (%+v)", got, 100*b.N, t)
			}
			b.ReportMetric(float64(used)/1e3/float64(100*b.N), "cpu-µs/record")
			b.ReportMetric(float64(t.Delivered+t.DigestsSent)*10_000/float64(100*b.N), "emails/10k-records")
		})
	}
}

// TestDigestQuietGroupsAreForgotten: a group with nothing waiting whose thread root is from
// an earlier day is forgotten on the loop's next turn, so many distinct digest_by values do
// not pile up; today's groups are kept for their thread.
func TestDigestQuietGroupsAreForgotten(t *testing.T) {
	clk := testClock()
	ds := newDigestSetup(t, digestOptions(t, clk, testWindow, 1000, "$host"), clk)
	ds.in.Flush("app", hostRecords(0, "a", "b", "c", "a"))
	clk.advance(testWindow)
	ds.tick()
	count := func() int {
		ds.in.dig.mu.Lock()
		defer ds.in.dig.mu.Unlock()
		return len(ds.in.dig.groups)
	}
	if n := count(); n != 3 {
		t.Fatalf("%d groups the same day, want 3", n)
	}
	clk.advance(24 * time.Hour)
	ds.tick()
	if n := count(); n != 0 {
		t.Errorf("%d groups kept the next day, want 0", n)
	}
}

// TestDigestConcurrentFlushes: flushes of several workers at once share the groups: one
// single for the group, every other record in the digest, none twice.
func TestDigestConcurrentFlushes(t *testing.T) {
	clk := testClock()
	ds := newDigestSetup(t, digestOptions(t, clk, testWindow, 1000), clk)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range 5 {
				ds.in.Flush("app", hostRecords(w*10+c, "a", "b", "c", "d", "e"))
			}
		}()
	}
	wg.Wait()
	clk.advance(testWindow)
	ds.tick()
	mails := ds.mails()
	if diff := cmp.Diff([]string{"single", "digest(99)"}, kinds(mails)); diff != "" {
		t.Fatalf("emails (-want +got):\n%s", diff)
	}
	if n := len(uniq(append(mails[1].members, mails[0].id))); n != 100 {
		t.Errorf("%d distinct records delivered, want 100", n)
	}
}

// TestDigestQuotaReplyPausesAndKeeps: a digest that gets a provider's quota reply is kept,
// not dead-lettered; the instance pauses (quota_pause) and the digest goes out once the
// pause is over and the provider's window has rolled.
func TestDigestQuotaReplyPausesAndKeeps(t *testing.T) {
	clk := testClock()
	opt := digestOptions(t, clk, testWindow, 1000)
	dir := withDeadLetters(t, &opt)
	opt.QuotaPause = time.Minute
	ds := newDigestSetup(t, opt, clk)
	q := &quotaServer{budget: 1}
	ds.s.decide = q.decide
	ds.in.Flush("app", records(10, nil))
	clk.advance(testWindow)
	ds.tick() // the digest gets 554 5.2.0
	id := ds.mails()[1].id
	if errs := strings.Join(ds.log.at(LevelError), "\n"); !strings.Contains(errs, "quota reply from the mail provider: Exchange Online") {
		t.Errorf("no [error] line for the quota reply:\n%s", ds.log.all())
	}
	q.roll(10)
	clk.advance(30 * time.Second)
	ds.tick() // paused: nothing dialled
	if n := ds.s.sends()[id]; n != 1 {
		t.Fatalf("digest sent %d times during the pause, want 1", n)
	}
	clk.advance(30 * time.Second)
	ds.tick()
	if n := ds.s.sends()[id]; n != 2 {
		t.Fatalf("digest sent %d times after the pause, want 2", n)
	}
	ds.wantOneDigest(t, 9)
	if files := dirFiles(t, dir); len(files) != 0 {
		t.Errorf("dead letters after a quota reply: %q", files)
	}
}

// TestDigestStormGuardApplies: max_emails_per_minute counts digests too: a digest over the
// budget waits, and goes out once the minute has room.
func TestDigestStormGuardApplies(t *testing.T) {
	clk := testClock()
	opt := digestOptions(t, clk, 10*time.Second, 1000)
	opt.MaxEmailsPerMinute = 1
	ds := newDigestSetup(t, opt, clk)
	ds.in.Flush("app", records(10, nil))
	clk.advance(10 * time.Second)
	ds.tick()
	if got := kinds(ds.mails()); len(got) != 1 {
		t.Fatalf("emails %v within the minute of the single, want the single only", got)
	}
	clk.advance(50 * time.Second)
	ds.tick()
	if diff := cmp.Diff([]string{"single", "digest(9)"}, kinds(ds.mails())); diff != "" {
		t.Errorf("emails once the minute has room (-want +got):\n%s", diff)
	}
}

// TestOpenDigests: Open turns digests on from digest_window and says at start-up where the
// waiting records are kept.
func TestOpenDigests(t *testing.T) {
	for _, disk := range []bool{false, true} {
		keys := config.MapGetter{"dest_host": "127.0.0.1:1", "dest_email": "soc@example.com", "from_email": "fb@example.com",
			"secret_key": "a-long-enough-test-secret-key", "digest_window": "10s", "digest_by": "$host"}
		want := "kept in memory only (no ledger_dir): a crash or kill -9 loses the records waiting for a digest"
		if disk {
			keys["ledger_dir"] = t.TempDir()
			want = "kept in ledger_dir, synced before each flush returns: a crash loses none"
		}
		log := &recorder{Max: LevelInfo}
		in := Open(keys, log, Options{})
		if in == nil {
			t.Fatalf("Open failed:\n%s", log.all())
		}
		if in.dig == nil || in.dig.window != 10*time.Second || len(in.dig.by) != 1 {
			t.Errorf("digests not on as configured: %+v", in.dig)
		}
		if info := strings.Join(log.at(LevelInfo), "\n"); !strings.Contains(info, "digests on: ") || !strings.Contains(info, want) {
			t.Errorf("start-up lines lack %q:\n%s", want, info)
		}
		if err := in.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDigestPartlyRefused: a digest accepted for one recipient is delivered (counted once);
// a recipient that refused it for good gets an [error] line, one that refused it for now gets
// the same digest again, alone, after the back-off.
func TestDigestPartlyRefused(t *testing.T) {
	clk := testClock()
	ds := newDigestSetup(t, digestOptions(t, clk, testWindow, 1000), clk)
	var tos [][]string
	ds.answerDigests(func(m mailer.Message, attempt int) mailer.Result {
		res := mailer.Result{Outcome: mailer.Delivered}
		tos = append(tos, m.To)
		if attempt == 1 {
			res.Rejected = []mailer.RecipientError{
				{Address: "full@example.com", Code: 452, EnhancedCode: "4.2.2", Message: "mailbox full"},
				{Address: "gone@example.com", Code: 550, EnhancedCode: "5.1.1", Message: "no such user"},
			}
		}
		return res
	})
	ds.in.Flush("app", records(3, nil))
	clk.advance(testWindow)
	ds.tick()
	id := ds.mails()[1].id
	if errs := ds.log.at(LevelError); len(errs) != 1 || !strings.HasPrefix(errs[0], "digest recipient refused: address=gone@example.com message_id=<"+id+"> records=2 code=550 enhanced_code=5.1.1: no such user") {
		t.Errorf("[error] lines %q", errs)
	}
	if w := ds.log.at(LevelWarn); len(w) != 1 || !strings.HasPrefix(w[0], "digest recipient deferred: address=full@example.com message_id=<"+id+"> records=2 code=452") {
		t.Errorf("[ warn] lines %q", w)
	}
	ds.waitBackoff(t, id)
	clk.advance(time.Hour)
	ds.tick()
	if diff := cmp.Diff([][]string{{"soc@example.com"}, {"full@example.com"}}, tos); diff != "" {
		t.Errorf("digest envelopes (-want +got):\n%s", diff)
	}
	ds.wantOneDigest(t, 2)
}

// TestDigestOwedAtClose: a digest still owed to a recipient that keeps refusing it for now is
// tried once more at Close, then written to dead_letter_dir with an [error] line.
func TestDigestOwedAtClose(t *testing.T) {
	clk := testClock()
	opt := digestOptions(t, clk, testWindow, 1000)
	dir := withDeadLetters(t, &opt)
	opt.FlushTimeout = 200 * time.Millisecond
	ds := newDigestSetup(t, opt, clk)
	ds.answerDigests(func(mailer.Message, int) mailer.Result {
		return mailer.Result{Outcome: mailer.Delivered, Rejected: []mailer.RecipientError{{Address: "full@example.com", Code: 452, EnhancedCode: "4.2.2", Message: "mailbox full"}}}
	})
	ds.in.Flush("app", records(3, nil))
	clk.advance(testWindow)
	ds.tick()
	id := ds.mails()[1].id
	if err := ds.in.Close(); err != nil {
		t.Fatal(err)
	}
	if n := ds.s.sends()[id]; n != 2 {
		t.Errorf("digest sent %d times, want 2 (once more at Close)", n)
	}
	if errs := ds.log.at(LevelError); len(errs) != 1 || !strings.HasPrefix(errs[0], "digest message_id=<"+id+"> of 2 record(s) could not be sent again to full@example.com (refused for now) before the stop") {
		t.Errorf("[error] lines %q", errs)
	}
	if files := dirFiles(t, dir); len(files) != 2 || !strings.HasSuffix(files[0], ".eml") {
		t.Errorf("dead letters %q, want the digest's .eml and its reason", files)
	}
}

// TestGroupKeyRoundTrip: the group key kept in the spool gives back the group's keys and
// values, whatever they hold; an unreadable key gives no values.
func TestGroupKeyRoundTrip(t *testing.T) {
	for _, values := range [][]output.GroupValue{
		nil,
		{{Key: "$host", Value: "web-1"}},
		{{Key: "$detect['cat']", Value: `a "quoted", comma=value`}, {Key: "$TAG[1]", Value: ""}, {Key: "$u", Value: "ünïcode\x00"}},
	} {
		if diff := cmp.Diff(values, groupValues(groupKey(values))); diff != "" {
			t.Errorf("groupValues(groupKey(%q)) (-want +got):\n%s", values, diff)
		}
	}
	if got := groupValues(`"$host"=web-1`); got != nil {
		t.Errorf("unreadable key gave %q", got)
	}
}
