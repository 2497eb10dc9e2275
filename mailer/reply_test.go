package mailer

import (
	"bufio"
	"fmt"
	"net/textproto"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/wneessen/go-mail/smtp"
)

// replyRead is one reply as a reader returned it, comparable.
type replyRead struct {
	Code int
	Text string
	Err  string // "%T: %v" of the error, "" for none
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return fmt.Sprintf("%T: %v", err, err)
}

// readAllWith reads replies from in through a bufio.Reader of the given size until the
// first error (included), at most 50.
func readAllWith(in string, size int, read func(*bufio.Reader) (int, string, error)) []replyRead {
	r := bufio.NewReaderSize(strings.NewReader(in), size)
	var out []replyRead
	for range 50 {
		code, text, err := read(r)
		out = append(out, replyRead{code, text, errString(err)})
		if err != nil {
			break
		}
	}
	return out
}

// referenceReplies is what net/textproto's ReadResponse(0), which the session used before
// replyReader, makes of in.
func referenceReplies(in string, size int) []replyRead {
	return readAllWith(in, size, func(r *bufio.Reader) (int, string, error) {
		return textproto.NewReader(r).ReadResponse(0)
	})
}

func replyReaderReplies(in string, size int) []replyRead {
	var rr replyReader
	return readAllWith(in, size, func(r *bufio.Reader) (int, string, error) {
		code, text, err := rr.read(r)
		return code, string(text), err
	})
}

// replyInputs are server replies, well and badly formed, each read through buffers of every
// size in replyBufferSizes, so that lines and their CRLF also fall across buffer refills.
var replyInputs = []string{
	"",
	"250 ok\r\n",
	"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n",
	"250-localhost\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 8BITMIME\r\n",
	"550-5.1.1 <b@example.com>: Recipient address rejected\r\n550 5.1.1 User unknown\r\n250 ok\r\n",
	"250-a\r\n251-b\r\n250 c\r\n",         // a continuation line with another code: kept whole
	"250-a\r\nxyz\r\n250-\r\n250 c\r\n",   // a malformed continuation line, an empty one
	"250-a\r\n250 b\r\r\n250 c\n221 bye",  // a CR before CRLF, a bare LF, no line end at EOF
	"250-a\r\n251 b\r\n250 c\r\n",         // "251 b" does not end the reply: its code differs
	"250 ok\r\n250",                       // a short line at EOF
	"250\r\n",                             // short
	"2500 x\r\n",                          // no separator
	"abc x\r\n250 ok\r\n",                 // not a code
	"099 x\r\n",                           // below 100
	"+12 x\r\n", "-12 x\r\n", " 25 x\r\n", // what strconv.Atoi would take, or not
	"abc-x\r\n250 ok\r\n250 more\r\n", // a malformed first line that announces more
	"099-x\r\n250 ok\r\n",             //
	"250-" + strings.Repeat("x", 100) + "\r\n250 " + strings.Repeat("y", 70) + "\r\n", // longer than a buffer
	"250 " + strings.Repeat("z", 11) + "\r\n250 " + strings.Repeat("z", 12) + "\r\n",  // CRLF at a buffer's end
	"\r\n250 ok\r\n",
	"451 4.3.0 Error: queue file write error\r\n",
	"554-5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException;\r\n554 5.2.0 Failed to process message\r\n",
	"421 4.7.0 closing\r\n",
	"250 \xff\xfe invalid UTF-8\r\n",
}

var replyBufferSizes = []int{16, 17, 18, 19, 4096}

// TestReplyReaderMatchesTextproto: replyReader reads every reply as net/textproto's
// ReadResponse(0) read it: the same codes, texts (multi-line ones joined), errors and where
// the next reply starts.
func TestReplyReaderMatchesTextproto(t *testing.T) {
	for _, in := range replyInputs {
		for _, size := range replyBufferSizes {
			want := referenceReplies(in, size)
			got := replyReaderReplies(in, size)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("replies of %q, buffer %d (-textproto +replyReader):\n%s", in, size, diff)
			}
		}
	}
}

// TestReplyReaderExamples pins what the session relies on, written out by hand.
func TestReplyReaderExamples(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []replyRead
	}{
		{"250 2.0.0 Ok: queued as 4ZYB\r\n", []replyRead{{250, "2.0.0 Ok: queued as 4ZYB", ""}, {0, "", "*errors.errorString: EOF"}}},
		{"550-5.1.1 first\r\n550 5.1.1 second\r\n", []replyRead{{550, "5.1.1 first\n5.1.1 second", ""}, {0, "", "*errors.errorString: EOF"}}},
		{"250-a\r\n251-b\r\n250 c\r\n", []replyRead{{250, "a\n251-b\nc", ""}, {0, "", "*errors.errorString: EOF"}}},
		{"250\r\n", []replyRead{{0, "", `textproto.ProtocolError: short response: "250"`}}},
		{"abc-x\r\n250 ok\r\n", []replyRead{{0, "", "*errors.errorString: EOF"}}},
	} {
		if diff := cmp.Diff(tc.want, replyReaderReplies(tc.in, 4096)); diff != "" {
			t.Errorf("replies of %q (-want +got):\n%s", tc.in, diff)
		}
	}
}

// FuzzReplyReader compares replyReader with net/textproto's ReadResponse(0) on any input,
// through buffers of any size from bufio's smallest up.
func FuzzReplyReader(f *testing.F) {
	for _, in := range replyInputs {
		f.Add([]byte(in), uint8(0))
		f.Add([]byte(in), uint8(3))
	}
	f.Fuzz(func(t *testing.T, in []byte, size uint8) {
		want := referenceReplies(string(in), 16+int(size))
		got := replyReaderReplies(string(in), 16+int(size))
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("replies of %q, buffer %d (-textproto +replyReader):\n%s", in, 16+int(size), diff)
		}
	})
}

// TestReadReplyKeepsTheUnexpected: a session keeps the text of every reply but the one its
// step expects (any 2xx for replyOK, the code itself otherwise), and marks itself broken on a
// 421 or a reply it could not read.
func TestReadReplyKeepsTheUnexpected(t *testing.T) {
	for _, tc := range []struct {
		in         string
		want       int
		wantCode   int
		wantMsg    string
		wantErr    bool
		wantBroken bool
	}{
		{in: "250 2.1.0 Ok\r\n", want: replyOK, wantCode: 250},
		{in: "251 2.1.5 forwarded\r\n", want: replyOK, wantCode: 251},
		{in: "354 go ahead\r\n", want: 354, wantCode: 354},
		{in: "354 go ahead\r\n", want: replyOK, wantCode: 354, wantMsg: "go ahead"},
		{in: "250 2.0.0 Ok\r\n", want: 354, wantCode: 250, wantMsg: "2.0.0 Ok"},
		{in: "550-5.1.1 first\r\n550 5.1.1 second\r\n", want: replyOK, wantCode: 550, wantMsg: "5.1.1 first\n5.1.1 second"},
		{in: "452 4.5.3 too many\r\n", want: 354, wantCode: 452, wantMsg: "4.5.3 too many"},
		{in: "421 4.3.2 shutting down\r\n", want: replyOK, wantCode: 421, wantMsg: "4.3.2 shutting down", wantBroken: true},
		{in: "25", want: replyOK, wantErr: true, wantBroken: true},
		{in: "", want: replyOK, wantErr: true, wantBroken: true},
	} {
		s := &session{client: &smtp.Client{Text: textproto.NewConn(readOnly{strings.NewReader(tc.in)})}}
		r := s.readReply(tc.want)
		if r.code != tc.wantCode || r.msg != tc.wantMsg || (r.err != nil) != tc.wantErr || s.broken != tc.wantBroken {
			t.Errorf("readReply(%d) of %q = code %d, msg %q, err %v, broken %v; want %d, %q, error %v, broken %v",
				tc.want, tc.in, r.code, r.msg, r.err, s.broken, tc.wantCode, tc.wantMsg, tc.wantErr, tc.wantBroken)
		}
	}
}

// readOnly is a reader as the io.ReadWriteCloser textproto.NewConn takes.
type readOnly struct{ *strings.Reader }

func (readOnly) Write(p []byte) (int, error) { return len(p), nil }
func (readOnly) Close() error                { return nil }

// TestReadReplyAllocatesNothing: reading an expected reply, single or multi-line, allocates
// nothing once the session's buffers have grown.
func TestReadReplyAllocatesNothing(t *testing.T) {
	flight := "250 2.0.0 Ok: queued as 4ZYB\r\n250 2.0.0 Ok\r\n250-2.1.0 Ok\r\n250 2.1.0 more\r\n250 2.1.5 Ok\r\n354 End data\r\n"
	in := strings.NewReader("")
	s := &session{client: &smtp.Client{Text: textproto.NewConn(readOnly{in})}}
	read := func() {
		in.Reset(flight)
		for _, want := range []int{replyOK, replyOK, replyOK, replyOK, 354} {
			if r := s.readReply(want); r.err != nil || r.msg != "" {
				t.Fatalf("readReply(%d) = %+v", want, r)
			}
		}
	}
	read()
	if n := testing.AllocsPerRun(100, read); n != 0 {
		t.Errorf("reading a flight of expected replies allocated %v times, want 0", n)
	}
}

// BenchmarkReadReplies reads the five replies a chained email gets in one flight (the body's,
// RSET's, MAIL's, RCPT's and DATA's 354) from memory: what net/textproto's ReadResponse(0)
// cost the session and what replyReader costs, parsing only (no TLS, no system call).
func BenchmarkReadReplies(b *testing.B) {
	flight := "250 2.0.0 Ok: queued as 4ZYBD1c2Lpz3\r\n250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
	in := strings.NewReader("")
	br := bufio.NewReaderSize(in, 4096)
	b.Run("textproto", func(b *testing.B) {
		tr := textproto.NewReader(br)
		b.ReportAllocs()
		for b.Loop() {
			in.Reset(flight)
			for range 5 {
				if _, _, err := tr.ReadResponse(0); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("replyReader", func(b *testing.B) {
		var rr replyReader
		b.ReportAllocs()
		for b.Loop() {
			in.Reset(flight)
			for range 5 {
				if _, _, err := rr.read(br); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}
