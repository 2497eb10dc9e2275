package mailer

import (
	"errors"
	"fmt"
	"net/textproto"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/emersion/go-smtp"
	"github.com/google/go-cmp/cmp"
)

// replyLine builds the StepError a server's reply line ("554 5.2.0 text") gives at step.
func replyLine(step Step, line string) *StepError {
	code, msg, _ := strings.Cut(line, " ")
	n := 0
	for _, r := range code {
		n = n*10 + int(r-'0')
	}
	return replyError(step, "smtp.example.com:587", &textproto.Error{Code: n, Msg: msg})
}

// TestQuotaReplies: the providers' quota and throttling replies (../shared/FACTS.md) are
// retried, never rejected, and name their provider; real rejections stay rejections.
func TestQuotaReplies(t *testing.T) {
	type want struct {
		Outcome     Outcome
		Provider    string // "" when not a quota reply
		Connections bool
	}
	for _, tc := range []struct {
		name string
		step Step
		line string
		want want
	}{
		{"Exchange daily recipients", StepDATA, "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to process message due to a permanent exception with message [BeginDiagnosticData]Cannot submit message.", want{Retry, "Exchange Online", false}},
		{"Exchange daily recipients at MAIL", StepMAIL, "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException", want{Retry, "Exchange Online", false}},
		{"Exchange sender throttled 5.2.251", StepDATA, "550 5.2.251 Sender throttled due to continuous invalid recipients errors", want{Retry, "Exchange Online", false}},
		{"Exchange sender throttled 5.2.253", StepMAIL, "550 5.2.253 Sender throttled", want{Retry, "Exchange Online", false}},
		{"Exchange sender throttled 5.2.255", StepDATA, "550 5.2.255 Sender throttled", want{Retry, "Exchange Online", false}},
		{"Exchange Sent Items full", StepDATA, "554 5.2.2 mailbox full; STOREDRV.Submission.Exception:QuotaExceededException", want{Retry, "Exchange Online", false}},
		{"Exchange concurrent connections at greeting", StepGreeting, "432 4.3.2 Concurrent connections limit exceeded. Visit https://aka.ms/concurrent_sending for more information.", want{Retry, "Exchange Online", true}},
		{"Exchange concurrent connections after AUTH", StepAUTH, "432 4.3.2 Concurrent connections limit exceeded", want{Retry, "Exchange Online", true}},
		{"Gmail daily user limit at MAIL", StepMAIL, "550 5.4.5 Daily user sending limit exceeded. For more information on Gmail sending limits go to https://support.google.com/a/answer/166852", want{Retry, "Gmail", false}},
		{"Gmail daily user limit at DATA", StepDATA, "550 5.4.5 Daily user sending limit exceeded.", want{Retry, "Gmail", false}},
		{"Gmail daily relay limit", StepDATA, "550 5.4.5 Daily SMTP relay limit exceeded for customer.", want{Retry, "Gmail SMTP relay", false}},
		{"Gmail peak relay limit", StepMAIL, "450 4.2.1 Peak SMTP relay limit exceeded for customer.", want{Retry, "Gmail SMTP relay", false}},
		// Real rejections stay rejections.
		{"user unknown at DATA", StepDATA, "550 5.1.1 user unknown", want{Rejected, "", false}},
		{"relay denied", StepMAIL, "550 5.7.1 Relaying denied", want{Rejected, "", false}},
		{"message too big", StepDATA, "552 5.3.4 Message size exceeds fixed limit", want{Rejected, "", false}},
		{"spam", StepDATA, "554 5.7.1 Message rejected as spam", want{Rejected, "", false}},
		{"Exchange send-as denied", StepDATA, "550 5.7.60 SMTP; Client does not have permissions to send as this sender", want{Rejected, "", false}},
		{"other 5.2.x", StepDATA, "552 5.2.3 Message length exceeds administrative limit", want{Rejected, "", false}},
		{"4.3.2 without the connections text", StepGreeting, "421 4.3.2 System not accepting network messages", want{Retry, "", false}},
		{"no enhanced code", StepDATA, "554 Transaction failed", want{Rejected, "", false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := replyLine(tc.step, tc.line)
			var got want
			got.Outcome = Classify(1, nil, err)
			if l, ok := QuotaOf(err); ok {
				got.Provider, got.Connections = l.Provider, l.Connections
				if l.Code == 0 || l.EnhancedCode == "" || l.What == "" {
					t.Errorf("QuotaOf(%q) = %+v: code, enhanced code or limit missing", tc.line, l)
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("%s %q (-want +got):\n%s", tc.step, tc.line, diff)
			}
		})
	}
}

// TestQuotaRecipients: a provider's quota reply to every RCPT retries the message (and its
// recipient is owed it); a recipient's own full mailbox at RCPT stays a rejection.
func TestQuotaRecipients(t *testing.T) {
	gmail := RecipientError{Address: "a@example.com", Code: 550, EnhancedCode: "5.4.5", Message: "Daily user sending limit exceeded."}
	full := RecipientError{Address: "b@example.com", Code: 552, EnhancedCode: "5.2.2", Message: "mailbox full"}
	unknown := RecipientError{Address: "c@example.com", Code: 550, EnhancedCode: "5.1.1", Message: "user unknown"}
	for _, tc := range []struct {
		name     string
		rejected []RecipientError
		want     Outcome
		quota    bool
	}{
		{"every recipient over the daily limit", []RecipientError{gmail}, Retry, true},
		{"one over the limit, one unknown", []RecipientError{unknown, gmail}, Retry, true},
		{"recipient's mailbox full", []RecipientError{full}, Rejected, false},
		{"unknown user", []RecipientError{unknown}, Rejected, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errs := make([]error, len(tc.rejected))
			for i, r := range tc.rejected {
				errs[i] = r
			}
			last := tc.rejected[len(tc.rejected)-1]
			err := &StepError{Step: StepRCPT, Addr: last.Address, Code: last.Code, EnhancedCode: last.EnhancedCode, Message: last.Message}
			if got := Classify(0, tc.rejected, err); got != tc.want {
				t.Errorf("Classify = %v, want %v", got, tc.want)
			}
			if _, ok := QuotaOf(errors.Join(errs...)); ok != tc.quota {
				t.Errorf("QuotaOf(joined refusals) = %v, want %v", ok, tc.quota)
			}
		})
	}
}

// TestQuotaReplyStopsSending: after a quota reply the mailer sends no more of the call's
// messages into it: they come back as Retry carrying the reply, and the server sees one
// refused transaction, not one per message.
func TestQuotaReplyStopsSending(t *testing.T) {
	var datas atomic.Int64
	be := &fakeBackend{data: func(*smtp.Conn, []byte) error {
		if datas.Add(1) > 2 {
			return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 2, 0}, Message: "STOREDRV.Submission.Exception:SubmissionQuotaExceededException"}
		}
		return nil
	}}
	srv := startGoSMTP(t, be, false, nil)
	m := newMailer(t, testConfig(t, srv.addr, srv.cert, false))
	msgs := make([]Message, 10)
	for i := range msgs {
		msgs[i] = msg(fmt.Sprintf("q%d", i))
	}
	rs := m.Send(t.Context(), msgs)
	var got []string
	for _, r := range rs {
		s := r.Outcome.String()
		if l, ok := QuotaOf(r.Err); ok {
			s += " " + l.Provider
		}
		got = append(got, s)
	}
	want := []string{"delivered", "delivered"}
	for range 8 {
		want = append(want, "retry Exchange Online")
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("results (-want +got):\n%s", diff)
	}
	if n := datas.Load(); n != 3 {
		t.Errorf("server read %d messages, want 3 (two stored, one refused, then none)", n)
	}
}

// TestSplitCodeIsStrict: an enhanced status code is one digit, a dot, and two groups of one to
// three digits; signs, spaces, empty or longer groups are not one (strconv.Atoi took "+1").
func TestSplitCodeIsStrict(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want [3]int
		ok   bool
	}{
		{"5.2.251", [3]int{5, 2, 251}, true},
		{"4.3.2", [3]int{4, 3, 2}, true},
		{"5.+1.1", [3]int{}, false},
		{"5.-1.1", [3]int{}, false},
		{"5.1.1000", [3]int{}, false},
		{"55.1.1", [3]int{}, false},
		{"5..1", [3]int{}, false},
		{"5.1", [3]int{}, false},
		{"5.1.1.1", [3]int{}, false},
		{"5.1. 1", [3]int{}, false},
	} {
		c, s, d, ok := splitCode(tc.in)
		if diff := cmp.Diff(struct {
			N  [3]int
			OK bool
		}{tc.want, tc.ok}, struct {
			N  [3]int
			OK bool
		}{[3]int{c, s, d}, ok}); diff != "" {
			t.Errorf("splitCode(%q) (-want +got):\n%s", tc.in, diff)
		}
	}
}

// TestRecipientOwed: a recipient is owed the email after anything but a permanent 5xx, and
// after a provider's quota reply even when it is a 5xx.
func TestRecipientOwed(t *testing.T) {
	for _, tc := range []struct {
		r    RecipientError
		want bool
	}{
		{RecipientError{Code: 450, EnhancedCode: "4.2.1"}, true},
		{RecipientError{Code: 550, EnhancedCode: "5.1.1", Message: "user unknown"}, false},
		{RecipientError{Code: 550, EnhancedCode: "5.4.5", Message: "Daily user sending limit exceeded"}, true},
		{RecipientError{Code: 554, EnhancedCode: "5.2.0", Message: "STOREDRV.Submission.Exception:SubmissionQuotaExceededException"}, true},
		{RecipientError{Code: 0}, true},
	} {
		if got := tc.r.Owed(); got != tc.want {
			t.Errorf("%d %s %q: Owed() = %v, want %v", tc.r.Code, tc.r.EnhancedCode, tc.r.Message, got, tc.want)
		}
	}
}
