package pipeline

import (
	"bytes"
	"context"
	"crypto/sha256"
	"strings"
	"testing"
	"time"

	"github.com/smtpout/smtpout/chunk"
	"github.com/smtpout/smtpout/config"
	"github.com/smtpout/smtpout/mailer"
	"github.com/smtpout/smtpout/output"
)

// keySink keeps the compiler from dropping keyOf calls in TestKeyOf.
var keySink ledgerKey

// TestKeyOf: keyOf is the first 16 bytes of the SHA-256 of the Message-ID for every length
// (the copy on the stack up to 288 bytes, the conversion beyond), and allocates nothing for
// the longest ID Render makes (32 hex, "@", a 253-byte domain).
func TestKeyOf(t *testing.T) {
	for n := 0; n <= 600; n++ {
		id := strings.Repeat("0123456789abcdef@example.com", n/28+1)[:n]
		sum := sha256.Sum256([]byte(id))
		if got := keyOf(id); !bytes.Equal(got[:], sum[:16]) {
			t.Fatalf("keyOf(%d bytes) = %x, want %x", n, got, sum[:16])
		}
	}
	longest := "0123456789abcdef0123456789abcdef@" + strings.Repeat("d", 253)
	if a := testing.AllocsPerRun(100, func() { keySink = keyOf(longest) }); a != 0 {
		t.Errorf("keyOf(%d-byte ID): %v allocations, want 0", len(longest), a)
	}
}

// nullSender accepts every message at once (timed, as the mailer reports them) and
// allocates only its results.
type nullSender struct{}

func (nullSender) Send(_ context.Context, msgs []mailer.Message) []mailer.Result {
	out := make([]mailer.Result, len(msgs))
	for i := range msgs {
		out[i] = mailer.Result{Outcome: mailer.Delivered, Elapsed: time.Millisecond}
		if msgs[i].Done != nil {
			msgs[i].Done(out[i])
		}
	}
	return out
}

func (nullSender) Close() error { return nil }

// TestFlushAllocationsPerEmail: what a flush allocates per email besides decoding and
// rendering (the chunk's and the output's share, measured here on the same records) stays
// near one (the mailer's Done callback); the ledger key is computed once per email and
// hashing it allocates nothing. Allocation counts are exact, not timed.
func TestFlushAllocationsPerEmail(t *testing.T) {
	const runs, perChunk = 20, 100
	chunks := benchChunks(runs + 1) // fresh records for every flush (AllocsPerRun runs once more)
	r := newRenderer(t)
	in := NewInstance(r, nullSender{}, &recorder{Max: LevelInfo}, Options{})
	defer in.Close()

	base := testing.AllocsPerRun(runs, func() {
		dec := chunk.NewDecoder(chunks[0])
		for {
			e, err := dec.Next()
			if err != nil {
				break
			}
			if _, err := r.Render(output.Record{Tag: "bench", Time: e.Time, Fields: e.Record}); err != nil {
				t.Fatal(err)
			}
		}
	})
	next := 0
	flush := testing.AllocsPerRun(runs, func() {
		code, st := in.Flush("bench", chunks[next])
		next++
		if code != FLBOK || st.Delivered != perChunk {
			t.Fatalf("Flush() = %d, %+v; want FLBOK and %d delivered", code, st, perChunk)
		}
	})
	if per := (flush - base) / perChunk; per > 2 {
		t.Errorf("a flush allocates %.2f times per email beyond decoding and rendering (%v per chunk, %v for decode+render), want at most 2",
			per, flush, base)
	} else {
		t.Logf("%.2f allocations per email beyond decoding and rendering (%v per chunk, %v for decode+render)", per, flush, base)
	}
}

// TestOpenKeepsPayloadForDigestsOnly: the renderer Open builds leaves Email.Payload out unless
// digests are on (their records are the payloads), and the email's bytes are the same.
func TestOpenKeepsPayloadForDigestsOnly(t *testing.T) {
	rec := output.Record{Tag: "app", Time: t0, Fields: map[string]any{"host": "web-1", "msg": "x"}}
	var data [][]byte
	for _, tc := range []struct {
		window      string
		wantPayload bool
	}{{"", false}, {"10s", true}} {
		keys := config.MapGetter{"dest_host": "127.0.0.1:1", "dest_email": "soc@example.com", "from_email": "fb@example.com",
			"secret_key": "a-long-enough-test-secret-key", "digest_window": tc.window}
		log := &recorder{Max: LevelInfo}
		in := Open(keys, log, Options{})
		if in == nil {
			t.Fatalf("Open failed:\n%s", log.all())
		}
		e, err := in.render.Render(rec)
		if err != nil {
			t.Fatalf("digest_window %q: Render: %v", tc.window, err)
		}
		if got := e.Payload != nil; got != tc.wantPayload {
			t.Errorf("digest_window %q: Email.Payload set %v, want %v", tc.window, got, tc.wantPayload)
		}
		data = append(data, e.Data)
		if err := in.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(data[0], data[1]) {
		t.Errorf("the email differs with and without digests:\n%q\n%q", data[0], data[1])
	}
}

// BenchmarkFlushOwnCost is BenchmarkFlushLedger/off with a sender that costs nothing
// (nullSender; the fake sender of the other benchmarks records every email in maps, a fifth of
// their CPU): decode, render, ledger, resolve and classify, 100 distinct records per flush. It
// reports CPU µs per email (user + system, whole process).
func BenchmarkFlushOwnCost(b *testing.B) {
	in := NewInstance(newRenderer(b), nullSender{}, &recorder{Max: LevelInfo}, Options{})
	defer in.Close()
	b.ReportAllocs()
	flushChunks(b, in)
}
