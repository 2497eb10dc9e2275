package mailer

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/smtpout/smtpout/config"

	"github.com/google/go-cmp/cmp"
)

func TestClassify(t *testing.T) {
	rej := func(codes ...int) []RecipientError {
		var out []RecipientError
		for i, c := range codes {
			out = append(out, RecipientError{Address: fmt.Sprintf("r%d@example.com", i), Code: c})
		}
		return out
	}
	step := func(s Step, code int) error { return &StepError{Step: s, Code: code} }
	netErr := &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
	for _, tc := range []struct {
		name     string
		accepted int
		rejected []RecipientError
		err      error
		want     Outcome
	}{
		{"all accepted", 3, nil, nil, Delivered},
		{"one 550 of three", 2, rej(550), nil, Delivered},
		{"one 451 of three: delivered, not retried", 2, rej(451), nil, Delivered},
		{"all recipients 550", 0, rej(550, 550), step(StepRCPT, 550), Rejected},
		{"all recipients refused, one 452", 0, rej(550, 452), step(StepRCPT, 452), Retry},
		{"all recipients 452", 0, rej(452, 452), step(StepRCPT, 452), Retry},
		{"RCPT 421 closing", 1, rej(421), step(StepRCPT, 421), Retry},
		{"connection lost among RCPTs", 0, rej(550), &StepError{Step: StepRCPT, Err: netErr}, Retry},
		{"MAIL 451", 0, nil, step(StepMAIL, 451), Retry},
		{"MAIL 550", 0, nil, step(StepMAIL, 550), Rejected},
		{"MAIL 552 too big", 0, nil, step(StepMAIL, 552), Rejected},
		{"MAIL 530 auth required: operator", 0, nil, replyError(StepMAIL, "x", &textproto.Error{Code: 530, Msg: "5.7.0 Authentication required"}), Retry},
		{"DATA command 554", 2, nil, step(StepDATA, 554), Rejected},
		{"DATA 451 after the dot", 2, nil, step(StepDATA, 451), Retry},
		{"DATA 550 after the dot", 2, nil, step(StepDATA, 550), Rejected},
		{"dropped during DATA", 2, nil, &StepError{Step: StepDATA, Err: io.ErrUnexpectedEOF}, Retry},
		{"AUTH 535", 0, nil, &StepError{Step: StepAUTH, Code: 535, operator: true}, Retry},
		{"AUTH 454", 0, nil, step(StepAUTH, 454), Retry},
		{"EHLO 550", 0, nil, step(StepEHLO, 550), Retry},
		{"greeting 554", 0, nil, step(StepGreeting, 554), Retry},
		{"TLS unknown authority", 0, nil, tlsError(StepTLS, "x", "h", false, x509.UnknownAuthorityError{}), Retry},
		{"dial refused", 0, nil, &StepError{Step: StepDial, Err: syscall.ECONNREFUSED}, Retry},
		{"timeout", 0, nil, &StepError{Step: StepMAIL, Err: os.ErrDeadlineExceeded}, Retry},
		{"context cancelled", 0, nil, context.Canceled, Retry},
		{"closed mailer", 0, nil, ErrClosed, Retry},
		{"plain error", 0, nil, errors.New("boom"), Retry},
		{"invalid address", 0, nil, &StepError{Step: StepRCPT, Err: ErrInvalidAddress}, Rejected},
		{"wrapped 550", 0, nil, fmt.Errorf("ctx: %w", step(StepMAIL, 550)), Rejected},
		{"no error, nothing accepted, all 5xx", 0, rej(550), nil, Rejected},
		{"no error, nothing at all", 0, nil, nil, Retry},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Classify(tc.accepted, tc.rejected, tc.err); got != tc.want {
				t.Errorf("Classify(%d, %v, %v) = %v, want %v", tc.accepted, tc.rejected, tc.err, got, tc.want)
			}
		})
	}
}

func TestOutcomeString(t *testing.T) {
	got := []string{Delivered.String(), Rejected.String(), Retry.String(), Outcome(9).String()}
	want := []string{"delivered", "rejected", "retry", "Outcome(9)"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("String (-want +got):\n%s", diff)
	}
}

func TestStepErrorText(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"reply with enhanced code",
			replyError(StepRCPT, "bob@example.com", &textproto.Error{Code: 550, Msg: "5.1.1 no such user"}),
			"smtp RCPT bob@example.com: 550 5.1.1 no such user"},
		{"reply without enhanced code",
			replyError(StepMAIL, "mx:465", &textproto.Error{Code: 451, Msg: "try later"}),
			"smtp MAIL mx:465: 451 try later"},
		{"multi-line reply",
			replyError(StepDATA, "mx:465", &textproto.Error{Code: 554, Msg: "5.6.0 bad\n5.6.0 really"}),
			"smtp DATA mx:465: 554 5.6.0 bad; 5.6.0 really"},
		{"network error",
			&StepError{Step: StepDial, Addr: "mx:465", Err: errors.New("connection refused")},
			"smtp dial mx:465: connection refused"},
		{"hint",
			&StepError{Step: StepAUTH, Addr: "mx:465", Code: 535, EnhancedCode: "5.7.8", Message: "bad", Hint: "check it"},
			"smtp AUTH mx:465: 535 5.7.8 bad (check it)"},
		{"recipient error",
			RecipientError{Address: "a@b", Code: 452, EnhancedCode: "4.5.3", Message: "too many"},
			"smtp RCPT a@b: 452 4.5.3 too many"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.err.Error(); got != tc.want {
				t.Errorf("Error() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestSplitEnhanced(t *testing.T) {
	for _, tc := range []struct {
		code          int
		msg           string
		wantEnh, want string
	}{
		{550, "5.1.1 user unknown", "5.1.1", "user unknown"},
		{452, "4.5.3 Maximum limit reached", "4.5.3", "Maximum limit reached"},
		{550, "4.1.1 mismatched class", "", "4.1.1 mismatched class"},
		{550, "user unknown", "", "user unknown"},
		{550, "5.1 short", "", "5.1 short"},
		{250, "2.0.0", "2.0.0", ""},
	} {
		enh, text := splitEnhanced(tc.code, tc.msg)
		if enh != tc.wantEnh || text != tc.want {
			t.Errorf("splitEnhanced(%d, %q) = %q, %q; want %q, %q", tc.code, tc.msg, enh, text, tc.wantEnh, tc.want)
		}
	}
}

func TestTLSHints(t *testing.T) {
	for _, tc := range []struct {
		name     string
		err      error
		startTLS bool
		hint     string // substring
		operator bool
	}{
		{"plaintext port", tls.RecordHeaderError{RecordHeader: [5]byte{'2', '2', '0', ' ', 'l'}}, false, "set is_starttls true", true},
		{"unknown CA", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}, false, "set tls_ca_file", true},
		{"wrong name", x509.HostnameError{Host: "mx"}, false, "set tls_server_name", true},
		{"reset", syscall.ECONNRESET, false, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			se := tlsError(StepTLS, "mx:465", "mx", tc.startTLS, tc.err)
			if !strings.Contains(se.Hint, tc.hint) || (tc.hint == "") != (se.Hint == "") {
				t.Errorf("Hint = %q, want it to contain %q", se.Hint, tc.hint)
			}
			if se.Operator() != tc.operator {
				t.Errorf("Operator() = %v, want %v", se.Operator(), tc.operator)
			}
			if !errors.Is(se, tc.err) && !errors.As(se, new(*tls.CertificateVerificationError)) {
				t.Errorf("StepError does not wrap %v", tc.err)
			}
		})
	}
}

func TestDotStuffing(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"a\r\nb\r\n", "a\r\nb\r\n"},
		{".a\r\n", "..a\r\n"},
		{"a\r\n.\r\nb\r\n", "a\r\n..\r\nb\r\n"},
		{"a\r\n..b\r\n.c", "a\r\n...b\r\n..c"},
		{"a.b\r\nc. d\r\n", "a.b\r\nc. d\r\n"},
	} {
		var b strings.Builder
		w := bufio.NewWriter(&b)
		writeDotStuffed(w, []byte(tc.in))
		w.Flush()
		if got := b.String(); got != tc.want {
			t.Errorf("writeDotStuffed(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func BenchmarkDotStuffing(b *testing.B) {
	data := []byte(strings.Repeat("line of a message, quoted-printable encoded=\r\n.dot\r\n", 40))
	w := bufio.NewWriterSize(io.Discard, 4096)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		writeDotStuffed(w, data)
	}
}

// TestNewHonoursPipeliningKeys checks that the pipelining and chunking keys reach the session.
func TestNewHonoursPipeliningKeys(t *testing.T) {
	for _, tc := range []struct{ disP, disC, wantP, wantC bool }{
		{false, false, true, true}, {true, false, false, true}, {false, true, true, false}, {true, true, false, false},
	} {
		m, err := New(config.Config{Host: "localhost", Port: 465, DisablePipelining: tc.disP, DisableChunking: tc.disC})
		if err != nil {
			t.Fatal(err)
		}
		if m.pipelining != tc.wantP || m.chunking != tc.wantC {
			t.Errorf("Disable(P,C)=(%v,%v): pipelining=%v chunking=%v, want %v %v", tc.disP, tc.disC, m.pipelining, m.chunking, tc.wantP, tc.wantC)
		}
	}
}
