package pipeline

import (
	"context"
	"errors"
	"fmt"
	"net/mail"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/smtpout/smtpout/chunk"
	"github.com/smtpout/smtpout/config"
	"github.com/smtpout/smtpout/mailer"
	"github.com/smtpout/smtpout/output"
)

// testConfig is a valid configuration built by hand (no config.Parse).
func testConfig() config.Config {
	return config.Config{
		Host:           "127.0.0.1",
		Port:           465,
		To:             []mail.Address{{Address: "soc@example.com"}},
		From:           mail.Address{Name: "Fluent Bit", Address: "fb@example.com"},
		SecretKey:      "a-long-enough-test-secret-key",
		Subject:        config.Template{Raw: "Alert $TAG", Tokens: []config.Token{{Kind: config.Literal, Text: "Alert "}, {Kind: config.TagToken}}},
		TLSVerify:      true,
		TLSServerName:  "127.0.0.1",
		Timeout:        5 * time.Second,
		JSONDateKey:    "date",
		MaxConnections: 2,
	}
}

// renderer is the real renderer, failing on purpose for records that have a "fail" field.
type renderer struct {
	r       *output.Renderer
	mu      sync.Mutex
	digests map[string]output.Digest // Message-ID -> what RenderDigest was given
}

func newRenderer(t testing.TB) *renderer {
	t.Helper()
	r, err := output.New(testConfig())
	if err != nil {
		t.Fatalf("output.New: %v", err)
	}
	return &renderer{r: r}
}

func (r *renderer) Render(rec output.Record) (*output.Email, error) {
	if _, ok := rec.Fields["fail"]; ok {
		return nil, errors.New("render: this record is made to fail")
	}
	return r.r.Render(rec)
}

// GroupValues is the real renderer's.
func (r *renderer) GroupValues(rec output.Record, by []config.Template) []output.GroupValue {
	return r.r.GroupValues(rec, by)
}

// RenderDigest is the real renderer's and remembers every digest it rendered.
func (r *renderer) RenderDigest(d output.Digest) (*output.Email, error) {
	e, err := r.r.RenderDigest(d)
	if err == nil {
		r.mu.Lock()
		if r.digests == nil {
			r.digests = make(map[string]output.Digest)
		}
		r.digests[e.MessageID] = d
		r.mu.Unlock()
	}
	return e, err
}

// digest returns the digest rendered as the email id, and whether there was one.
func (r *renderer) digest(id string) (output.Digest, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	d, ok := r.digests[id]
	return d, ok
}

// sender is a fake mailer: decide chooses each message's result (Delivered when nil); block,
// when set, makes Send wait until it is closed or the context ends (then every message is a
// Retry, as a real mailer reports an abandoned send).
type sender struct {
	mu      sync.Mutex
	decide  func(m mailer.Message, attempt int) mailer.Result
	sent    map[string]int    // Message-ID -> sends
	data    map[string][]byte // Message-ID -> the message last sent
	order   []string
	calls   int
	closed  int
	block   chan struct{}
	entered chan struct{} // receives once per Send call, when set
}

func newSender() *sender { return &sender{sent: make(map[string]int), data: make(map[string][]byte)} }

func (s *sender) Send(ctx context.Context, msgs []mailer.Message) []mailer.Result {
	s.mu.Lock()
	s.calls++
	block, entered := s.block, s.entered
	s.mu.Unlock()
	if entered != nil {
		entered <- struct{}{}
	}
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			out := make([]mailer.Result, len(msgs))
			for i := range out {
				out[i] = mailer.Result{Outcome: mailer.Retry, Err: ctx.Err()}
			}
			return out
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]mailer.Result, len(msgs))
	for i, m := range msgs {
		s.sent[m.ID]++
		s.data[m.ID] = m.Data
		s.order = append(s.order, m.ID)
		if s.decide != nil {
			out[i] = s.decide(m, s.sent[m.ID])
		} else {
			out[i] = mailer.Result{Outcome: mailer.Delivered}
		}
		if m.Done != nil { // as the mailer does: each outcome as soon as it is known
			m.Done(out[i])
		}
	}
	return out
}

func (s *sender) Close() error {
	s.mu.Lock()
	s.closed++
	s.mu.Unlock()
	return nil
}

// sends returns how often each Message-ID was handed to the mailer.
func (s *sender) sends() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.sent))
	for k, v := range s.sent {
		out[k] = v
	}
	return out
}

// line is one log line a recorder received.
type line struct {
	Level Level
	Msg   string
}

// recorder is a Logger keeping every line at or above Max.
type recorder struct {
	Max   Level
	mu    sync.Mutex
	lines []line
}

func (r *recorder) Enabled(l Level) bool { return l <= r.Max }

func (r *recorder) Log(l Level, msg string) {
	if !r.Enabled(l) {
		return
	}
	r.mu.Lock()
	r.lines = append(r.lines, line{l, msg})
	r.mu.Unlock()
}

// at returns the lines at exactly level l.
func (r *recorder) at(l Level) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, ln := range r.lines {
		if ln.Level == l {
			out = append(out, ln.Msg)
		}
	}
	return out
}

// all returns every line as "[level] msg".
func (r *recorder) all() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, ln := range r.lines {
		fmt.Fprintf(&b, "[%s] %s\n", ln.Level, ln.Msg)
	}
	return b.String()
}

// fakeClock is a settable clock for the repeat window.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// benchChunks returns n chunks of 100 distinct detections each, as the flush
// benchmarks send them.
func benchChunks(n int) [][]byte {
	chunks := make([][]byte, n)
	for c := range chunks {
		var e chunk.Encoder
		for i := range 100 {
			e.AppendV2(t0.Add(time.Duration(c*100+i)), nil, map[string]any{
				"host": "web-1", "level": "warning", "msg": "failed login for user admin from 203.0.113.9", "i": i,
			})
		}
		chunks[c] = e.Bytes()
	}
	return chunks
}

// startCPU returns a function giving the CPU time (user and system) this process used since
// startCPU was called, in nanoseconds.
func startCPU() func() int64 {
	var ru0 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	return func() int64 {
		var ru1 syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
		return ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano()
	}
}
