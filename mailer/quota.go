package mailer

import (
	"errors"
	"strings"
)

// Limit is a mail provider's quota or throttling limit that a server's reply says was hit:
// the message is fine and will be accepted once the limit allows it, so it is retried, never
// rejected. QuotaReply recognises the replies; QuotaOf finds one in a Result's error.
type Limit struct {
	// Provider is who publishes the limit: "Exchange Online", "Gmail" or "Gmail SMTP relay".
	Provider string
	// What names the limit that was hit, for the operator.
	What string
	// Code, EnhancedCode and Message are the server's reply.
	Code         int
	EnhancedCode string
	Message      string
	// Connections: the limit is on concurrent connections (Exchange's 432 4.3.2): the pool
	// must shrink, the sending need not pause.
	Connections bool
}

// QuotaReply reports whether the reply code, enhanced code and text of a failed step are a
// provider's quota or throttling reply (../shared/FACTS.md, "Mail providers' limits"). It is
// deliberately narrow: a reply about one recipient (5.1.x bad address, a recipient's own full
// mailbox at RCPT) stays a rejection.
//   - Exchange Online: SubmissionQuotaExceeded in the text (554 5.2.0, recipients per rolling
//     day); 5.2.251-5.2.255 (sender throttled); 5.2.2 outside RCPT (the sender's Sent Items
//     full); 432 4.3.2 "Concurrent connections limit exceeded" (Connections).
//   - Gmail: 4.4.5/5.4.5 (RFC 3463 "mail system congestion"; Gmail's daily user and relay
//     sending limits); 4.2.1 whose text says a limit was exceeded (Peak SMTP relay limit).
func QuotaReply(step Step, code int, enhanced, text string) (Limit, bool) {
	l := Limit{Code: code, EnhancedCode: enhanced, Message: text}
	lower := strings.ToLower(text)
	class, subject, detail, ok := splitCode(enhanced)
	switch {
	case strings.Contains(lower, "submissionquotaexceeded"):
		l.Provider, l.What = "Exchange Online", "recipients per rolling 24 h (10,000 per mailbox)"
	case ok && class >= 4 && subject == 3 && detail == 2 && (code == 432 || strings.Contains(lower, "concurrent connection")):
		l.Provider, l.What, l.Connections = "Exchange Online", "concurrent connections per mailbox (3)", true
	case ok && class == 5 && subject == 2 && detail >= 251 && detail <= 255:
		l.Provider, l.What = "Exchange Online", "sender throttled after repeated errors"
	case ok && class == 5 && subject == 2 && detail == 2 && step != StepRCPT:
		l.Provider, l.What = "Exchange Online", "the sender's mailbox (Sent Items) is full"
	case ok && class >= 4 && subject == 4 && detail == 5:
		l.Provider, l.What = "Gmail", "daily sending limit (about 2,000 recipients per user per rolling day)"
		if strings.Contains(lower, "relay") {
			l.Provider, l.What = "Gmail SMTP relay", "daily SMTP relay limit"
		}
	case ok && class == 4 && subject == 2 && detail == 1 && strings.Contains(lower, "limit exceeded"):
		l.Provider, l.What = "Gmail SMTP relay", "peak SMTP relay limit"
	default:
		return Limit{}, false
	}
	return l, true
}

// splitCode parses an enhanced status code "5.2.251" into its three numbers (RFC 3463: a class
// of one digit, a subject and a detail of one to three digits each).
func splitCode(enhanced string) (class, subject, detail int, ok bool) {
	parts := strings.Split(enhanced, ".")
	if len(parts) != 3 || len(parts[0]) != 1 {
		return 0, 0, 0, false
	}
	var n [3]int
	for i, p := range parts {
		if p == "" || len(p) > 3 {
			return 0, 0, 0, false
		}
		for _, r := range p {
			if r < '0' || r > '9' {
				return 0, 0, 0, false
			}
			n[i] = n[i]*10 + int(r-'0')
		}
	}
	return n[0], n[1], n[2], true
}

// QuotaOf returns the provider limit a failed step or refused recipient in err says was hit:
// err is a Result's Err (a *StepError, or RecipientErrors joined).
func QuotaOf(err error) (Limit, bool) {
	if err == nil {
		return Limit{}, false
	}
	var se *StepError
	if errors.As(err, &se) && se.Code != 0 {
		if l, ok := QuotaReply(se.Step, se.Code, se.EnhancedCode, se.Message); ok {
			return l, true
		}
	}
	var rc RecipientError
	if errors.As(err, &rc) {
		if l, ok := rc.quota(); ok {
			return l, true
		}
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			if l, ok := QuotaOf(e); ok {
				return l, true
			}
		}
	}
	return Limit{}, false
}

// quota reports whether the recipient's refusal is a provider's quota reply.
func (r RecipientError) quota() (Limit, bool) {
	return QuotaReply(StepRCPT, r.Code, r.EnhancedCode, r.Message)
}

// Quota reports whether the recipient was refused because a provider's quota or throttling
// limit was hit (QuotaReply): the recipient is owed the email, as after a 4xx.
func (r RecipientError) Quota() bool {
	_, ok := r.quota()
	return ok
}

// Owed reports whether the recipient is still owed the email: it was refused for now (any
// reply but a 5xx) or by a provider's quota reply (Quota), not for good. The email is sent
// again to the owed recipients only.
func (r RecipientError) Owed() bool {
	return r.Code < 500 || r.Code >= 600 || r.Quota()
}

// pauses reports whether err carries a quota reply after which sending stops (any but the
// connection limit, which only lowers the number of connections).
func pauses(err error) bool {
	l, ok := QuotaOf(err)
	return ok && !l.Connections
}
